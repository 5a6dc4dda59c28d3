"""llama.cpp memory accuracy: what llmhost.estimate predicts against what llama.cpp itself allocates.

    python benchmarks/accuracy_llamacpp.py measure   # build ~20 tiny GGUFs, load each in llama.cpp
                                                      # (llama-cpp-python) under many settings, record
                                                      # every buffer it reports into
                                                      # benchmarks/data/llamacpp_measurements.json
    python benchmarks/accuracy_llamacpp.py compare   # replay the recorded cases through llmhost's
                                                      # resolver + estimator, print the error table and
                                                      # write it into docs/accuracy.md
    python benchmarks/accuracy_llamacpp.py            # both (measure is skipped without llama_cpp)
    ... measure --only NAME [NAME ...]                # re-measure some models, keep the others
    ... compare --write-known-misses                  # also refresh tests/accuracy/known_misses.json

Models are synthetic (tiny hidden sizes, real vocabularies, head dims, GQA ratios, layer counts, sliding
windows, quantization types), built with the `gguf` package and quantized by llama.cpp's own quantizer.
Each model is loaded in a child process (a llama.cpp abort must not end the sweep); its log lines are
captured through `llama_log_set` and parsed by `_llamacpp_logs`.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _gguf_shapes import Shape, describe_gguf, quantize, write_gguf  # noqa: E402
from _llamacpp_logs import CONTEXT_PREFIXES, is_memory_line, parse_lines  # noqa: E402

DATA = HERE / "data" / "llamacpp_measurements.json"
KV_LIMIT_BYTES = 1536 * 1024 * 1024  # keep each context's KV cache (which llama.cpp zero-fills) small

SHAPES: list[Shape] = [
    Shape("llama-v256-gqa1-hd64-L2-f32", "llama", 256, 4, 4, 64, 2, 512, 256, ftype="F32"),
    Shape("llama-v32k-gqa4-hd64-L8-f16", "llama", 256, 8, 2, 64, 8, 768, 32000),
    Shape("llama-v32k-gqa4-hd64-L8-q5km", "llama", 256, 8, 2, 64, 8, 768, 32000, ftype="Q5_K_M"),
    Shape("llama-v32k-gqa4-hd64-L8-q3km", "llama", 256, 8, 2, 64, 8, 768, 32000, ftype="Q3_K_M"),
    Shape("llama-v32k-gqa4-hd64-L8-iq4nl", "llama", 256, 8, 2, 64, 8, 768, 32000, ftype="IQ4_NL"),
    Shape("llama-v32k-gqa4-hd64-L8-q4_0", "llama", 256, 8, 2, 64, 8, 768, 32000, ftype="Q4_0"),
    Shape("llama3-v128k-gqa8-hd128-L4-q8_0", "llama", 512, 16, 2, 128, 4, 1024, 128256, ftype="Q8_0"),
    Shape("llama-v32k-gqa3-hd96-L16-q2k", "llama", 512, 6, 2, 96, 16, 1024, 32064, ftype="Q2_K"),
    Shape("llama3-v128k-gqa8-hd128-L32-q4km", "llama", 512, 16, 2, 128, 32, 1024, 128256, ftype="Q4_K_M"),
    Shape("qwen2-v152k-gqa2-hd64-L12-q4km", "qwen2", 256, 4, 2, 64, 12, 512, 151936, ftype="Q4_K_M"),
    Shape(
        "qwen3-v152k-gqa2-hd128-L28-bf16-tied",
        "qwen3",
        256,
        8,
        4,
        128,
        28,
        256,
        151936,
        tied=True,
        ftype="BF16",
    ),
    # Phi-3-mini's layout (vocab 32064, MHA, head_dim 96) with its 2047-token sliding window, which
    # llama.cpp ignores for Phi-3 (PR #13676): every layer keeps the whole context. (Named without
    # "phi3": llama.cpp's vocabulary loader looks up Phi-3's special tokens when the name says phi3.)
    Shape(
        "phimini-swa2047-v32k-mha-hd96-L4-f16",
        "phi3",
        384,
        4,
        4,
        96,
        4,
        512,
        32064,
        4096,
        sliding_window=2047,
        ftype="F16",
    ),
    Shape("qwen3-v49k-gqa4-hd256-L40-q4_0", "qwen3", 256, 4, 1, 256, 40, 256, 49152, ftype="Q4_0"),
    Shape("qwen3-v152k-gqa1-hd128-L6-q6k", "qwen3", 512, 4, 4, 128, 6, 512, 151936, ftype="Q6_K"),
    Shape(
        "qwen3moe-8x2-v32k-gqa2-hd128-L6-q4km",
        "qwen3moe",
        256,
        4,
        2,
        128,
        6,
        512,
        32000,
        n_expert=8,
        n_expert_used=2,
        n_ff_exp=256,
        ftype="Q4_K_M",
    ),
    # MLA, DeepSeek-V3 layout: one 576-element latent per token per layer (K only, no V cache)
    Shape(
        "deepseek2-mla-v32k-L4-f16",
        "deepseek2",
        256,
        8,
        1,
        192,
        4,
        512,
        32000,
        n_expert=8,
        n_expert_used=2,
        n_ff_exp=256,
        q_lora_rank=384,
        kv_lora_rank=512,
        qk_rope_dim=64,
        v_head_dim=128,
        n_expert_shared=1,
        n_dense_lead=1,
    ),
    Shape(
        "deepseek2-mla-v129k-L6-q4km",
        "deepseek2",
        512,
        16,
        1,
        192,
        6,
        1024,
        129280,
        n_expert=16,
        n_expert_used=4,
        n_ff_exp=256,
        q_lora_rank=512,
        kv_lora_rank=512,
        qk_rope_dim=64,
        v_head_dim=128,
        n_expert_shared=2,
        n_dense_lead=1,
        ftype="Q4_K_M",
    ),
    Shape(
        "gemma2-swa256-v64k-gqa2-hd256-L6-f16", "gemma2", 256, 4, 2, 256, 6, 512, 65536, sliding_window=256
    ),
    Shape(
        "gemma3-swa512-p6-v100k-gqa4-hd256-L12-q8_0",
        "gemma3",
        256,
        4,
        1,
        256,
        12,
        512,
        100352,
        sliding_window=512,
        swa_pattern=6,
        tied=True,
        ftype="Q8_0",
    ),
    Shape(
        "gemma3-swa1024-p6-v32k-gqa2-hd128-L26-q6k",
        "gemma3",
        512,
        8,
        4,
        128,
        26,
        512,
        32000,
        sliding_window=1024,
        swa_pattern=6,
        ftype="Q6_K",
    ),
]

# llama-server's defaults are n_batch 2048, n_ubatch 512, kv_unified off, swa_full off. n_outputs_max 0
# means n_batch (llama-cpp-python's `Llama` and the C API default: the graph is reserved for logits of
# a whole ubatch); llama-server asks for one output per slot (tools/server: n_outputs_max = n_parallel).
BASE = {
    "n_batch": 2048,
    "n_ubatch": 512,
    "type_k": "f16",
    "type_v": "f16",
    "flash_attn": "off",
    "kv_unified": False,
    "swa_full": False,
    "n_outputs_max": 0,
}
SETTINGS: list[dict[str, Any]] = [
    {"n_ctx": 512, "n_seq": 1},
    {"n_ctx": 4096, "n_seq": 1, "flash_attn": "on"},
    {"n_ctx": 8192, "n_seq": 4},
    {"n_ctx": 32768, "n_seq": 1, "type_k": "q8_0", "type_v": "q8_0", "flash_attn": "on"},
    {"n_ctx": 16384, "n_seq": 8, "n_ubatch": 256, "type_k": "q8_0"},
    {"n_ctx": 2048, "n_seq": 2, "n_ubatch": 2048, "flash_attn": "auto", "kv_unified": True},
    {"n_ctx": 32768, "n_seq": 1},
    {"n_ctx": 8192, "n_seq": 4, "n_ubatch": 128, "type_k": "q4_0", "type_v": "q4_0", "flash_attn": "on"},
    {"n_ctx": 4096, "n_seq": 2, "n_batch": 512, "type_v": "q8_0", "flash_attn": "on", "kv_unified": True},
    # a quantized V cache without flash attention: llama.cpp refuses it; recorded to show the refusal
    {"n_ctx": 1024, "n_seq": 1, "type_k": "q8_0", "type_v": "q8_0", "flash_attn": "off"},
    # llama-server's own context: one output per slot, flash attention left on auto
    {"n_ctx": 4096, "n_seq": 1, "flash_attn": "auto", "n_outputs_max": 1},
    {"n_ctx": 16384, "n_seq": 4, "flash_attn": "auto", "n_outputs_max": 4},
    {"n_ctx": 32768, "n_seq": 2, "n_outputs_max": 2},
]
SWA_EXTRA: list[dict[str, Any]] = [
    {"n_ctx": 8192, "n_seq": 2, "swa_full": True},
    {"n_ctx": 32768, "n_seq": 4, "flash_attn": "on"},
]
# The shapes that only change the weights' quantization get the first three settings only.
WEIGHTS_ONLY_SETTINGS = 3

FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


def settings_for(shape: Shape) -> list[dict[str, Any]]:
    chosen = SETTINGS
    if shape.name.endswith(("-q5km", "-q3km", "-iq4nl", "-q4_0")) and shape.arch == "llama":
        chosen = SETTINGS[:WEIGHTS_ONLY_SETTINGS]
    if shape.sliding_window:
        chosen = chosen + SWA_EXTRA
    out = []
    for s in chosen:
        full = {**BASE, **s}
        kv_bytes = 2 * shape.n_layer * full["n_ctx"] * shape.n_head_kv * shape.head_dim * 2
        if kv_bytes <= KV_LIMIT_BYTES:
            out.append(full)
    return out


# ---------------------------------------------------------------------------------------------- child


def _child_load(gguf_path: str, settings_json: str, extra_bufts: bool = True) -> None:
    """Runs in a child process: load the model once, create one context per setting, print JSON.

    `extra_bufts=False` for float files: no CPU_REPACK layout exists for them, so on most machines it
    changes nothing, but a CPU with AMX otherwise keeps a second, AMX-tiled copy of the weights (an
    "AMX model buffer") that the recorded data (AMD EPYC) never had.
    """
    import llama_cpp

    from llmhost.engines._llamacpp_dryrun_child import context_params

    lines: list[str] = []
    errors: list[str] = []
    level_of_last = [2]

    @llama_cpp.llama_log_callback
    def on_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        if level != 5:  # GGML_LOG_LEVEL_CONT continues the previous message
            level_of_last[0] = level
        if level_of_last[0] == 1:  # drop DEBUG
            return
        lines.append(text.decode("utf-8", "replace"))
        if level_of_last[0] == 4:  # GGML_LOG_LEVEL_ERROR
            errors.append(text.decode("utf-8", "replace").strip())

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    params.use_extra_bufts = extra_bufts
    model = llama_cpp.llama_model_load_from_file(gguf_path.encode(), params)
    if not model:
        print(json.dumps({"error": "model failed to load", "log": "".join(lines)}))
        return
    model_lines = [ln for ln in "".join(lines).splitlines() if is_memory_line(ln)]
    results = []
    for s in json.loads(settings_json):
        lines.clear()
        errors.clear()
        cp = context_params(
            llama_cpp, {**s, "n_seq_max": s["n_seq"], "flash_attn": FLASH_ATTN[s["flash_attn"]]}
        )
        ctx = llama_cpp.llama_init_from_model(model, cp)
        text = "".join(lines).splitlines()
        keep = [ln for ln in text if is_memory_line(ln) or ln.startswith(CONTEXT_PREFIXES)]
        if not ctx:
            results.append({"settings": s, "error": errors[-3:] or ["context creation failed"]})
            continue
        results.append({"settings": s, "lines": keep})
        llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    print(json.dumps({"model_lines": model_lines, "results": results}))


# ---------------------------------------------------------------------------------------------- measure


def _build(shape: Shape, workdir: Path) -> Path:
    base = workdir / f"{shape.name}.base.gguf"
    if shape.ftype in ("F32", "F16"):
        write_gguf(shape, base, float_type=shape.ftype)
        return base
    write_gguf(shape, base, float_type="F16")
    out = workdir / f"{shape.name}.gguf"
    quantize(base, out, shape.ftype)
    base.unlink()
    return out


def _quantize_quietly(fn: Any, *args: Any) -> Any:
    """llama.cpp's quantizer logs every tensor to stderr; keep the sweep's output readable."""
    sys.stdout.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            return fn(*args)
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def measure(only: list[str] | None) -> dict[str, Any]:
    import llama_cpp

    shapes = [s for s in SHAPES if not only or s.name in only]
    record: dict[str, Any] = {
        "about": (
            "Buffers llama.cpp reported (MiB, 2 decimals) when loading synthetic GGUFs on the CPU "
            "backend. Regenerate with: python benchmarks/accuracy_llamacpp.py measure"
        ),
        "llama_cpp_python": llama_cpp.__version__,
        "machine": (
            f"{_cpu_name()}, {platform.system()} {platform.machine()}, Python {platform.python_version()}"
        ),
        "models": {},
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="llmhost-acc-") as tmp:
        for shape in shapes:
            started = time.monotonic()
            path = _quantize_quietly(_build, shape, Path(tmp))
            header = describe_gguf(path)
            settings = settings_for(shape)
            proc = subprocess.run(
                [sys.executable, __file__, "_load", str(path), json.dumps(settings)]
                + (["float"] if shape.ftype in ("F32", "F16", "BF16") else []),
                capture_output=True,
                text=True,
                timeout=600,
            )
            path.unlink()
            if proc.returncode != 0 or not proc.stdout.strip():
                print(f"{shape.name}: child failed ({proc.returncode}): {proc.stderr[-400:]}")
                continue
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            if "error" in child:
                print(f"{shape.name}: {child['error']}: {child['log'][-600:]}")
                continue
            record["models"][shape.name] = {"shape": dataclasses.asdict(shape), "gguf": header}
            model_parsed = parse_lines(child["model_lines"])
            for i, res in enumerate(child["results"]):
                case: dict[str, Any] = {
                    "id": f"{shape.name}#{i}",
                    "model": shape.name,
                    "settings": res["settings"],
                }
                if "error" in res:
                    case["error"] = res["error"]
                else:
                    parsed = parse_lines(res["lines"])
                    parsed["model_buffers"] = model_parsed["model_buffers"]
                    case["measured_mib"] = parsed
                    case["raw_lines"] = child["model_lines"] + res["lines"]
                record["cases"].append(case)
            print(
                f"{shape.name}: {len(child['results'])} contexts in {time.monotonic() - started:.1f} s",
                flush=True,
            )
    return record


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Replace the re-measured models (`--only`) in the recorded data, keep the others."""
    fresh = set(new["models"])
    merged = {**old, "models": {**old["models"], **new["models"]}}
    merged["cases"] = [c for c in old["cases"] if c["model"] not in fresh] + new["cases"]
    return merged


def main(argv: list[str]) -> int:
    if argv[:1] == ["_load"]:
        _child_load(argv[1], argv[2], extra_bufts=argv[3:4] != ["float"])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", default="all", choices=["all", "measure", "compare"])
    parser.add_argument("--only", nargs="*", help="measure only these model names")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--write-known-misses",
        action="store_true",
        help="record today's misses in tests/accuracy/known_misses.json (the tests' strict xfail list)",
    )
    args = parser.parse_args(argv)
    if args.command in ("all", "measure"):
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            if args.command == "measure":
                print("llama-cpp-python is not installed: pip install 'llmhost[llamacpp]'")
                return 1
            print("llama-cpp-python is not installed: comparing the recorded measurements only")
        else:
            record = measure(args.only)
            if args.only and args.data.exists():
                record = _merge(json.loads(args.data.read_text()), record)
            args.data.parent.mkdir(parents=True, exist_ok=True)
            args.data.write_text(json.dumps(record, indent=1) + "\n")
            print(f"wrote {len(record['cases'])} cases to {args.data}")
    if args.command in ("all", "compare"):
        rc = compare(args.data, write_docs=args.data == DATA)
        if args.write_known_misses:
            import _accuracy_compare as acc

            print(f"known misses written: {acc.write_known_misses()}")
        return rc
    return 0


def compare(path: Path, *, write_docs: bool) -> int:
    """Print measured vs predicted for every case and publish the table in docs/accuracy.md."""
    import _accuracy_compare as acc

    started = time.monotonic()
    data = acc.load(path)
    specs = acc.resolve_llamacpp_specs(data)
    if write_docs:
        acc.write_spec_snapshot(specs)
    rows = acc.score_llamacpp(data, specs)
    summary = acc.llamacpp_summary(rows)
    table = acc.llamacpp_table(rows)
    print(table)
    refused = [c for c in data["cases"] if "error" in c]
    lines = [
        f"{summary['all_pass']}/{summary['cases']} cases meet every target "
        f"(each buffer within {acc.COMPONENT_TOLERANCE:.0%}, total within {acc.TOTAL_TOLERANCE:.0%}).",
        "",
        "| buffer | cases within target | median abs error | max abs error |",
        "|---|---|---|---|",
    ]
    for k in (*acc.COMPONENTS, "total"):
        s = summary[k]
        lines.append(
            f"| {k} | {s['pass']}/{summary['cases']} "
            f"| {s['median_abs_error']:.1%} | {s['max_abs_error']:.1%} |"
        )
    repack = [r for r in rows if r["repack_mib"]]
    lines += [
        "",
        f"{len(repack)} cases carry a `CPU_REPACK` model buffer (llama.cpp's AVX2 re-layout of "
        "Q4_0/Q4_K/IQ4_NL weights, an extra copy on the CPU backend only); it is counted in the measured "
        "model buffer.",
        f"{len(refused)} contexts were refused by llama.cpp, as it should: a quantized V cache without "
        "flash attention, and different K/V types on an MLA model (its cache has no V): "
        + "; ".join(sorted({c["error"][-1] for c in refused}))
        + ".",
    ]
    lines += ["", *_dry_run_lines(data, specs, rows)]
    summary_md = "\n".join(lines)
    print(summary_md)
    print(f"(compared {len(rows)} cases in {time.monotonic() - started:.1f} s)")
    if write_docs:
        body = (
            f"Measured with llama-cpp-python {data['llama_cpp_python']} on {data['machine']} "
            "(CPU backend).\n\n" + summary_md + "\n\n" + table
        )
        if acc.replace_block(acc.ACCURACY_DOC, "llamacpp", body):
            print(f"updated {acc.ACCURACY_DOC}")
        acc.replace_block(acc.ESTIMATOR_DOC, "accuracy-llamacpp", summary_md)
    return 0


def _dry_run_lines(data: dict[str, Any], specs: dict[str, Any], analytic: list[dict[str, Any]]) -> list[str]:
    """The same cases with llama.cpp's own no-alloc dry run for the compute buffer (`plan`'s figure for a
    GGUF on the CPU), side by side with the analytic model where that one misses."""
    import _accuracy_compare as acc

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return ["(llama-cpp-python is not installed: the dry-run comparison was skipped.)"]
    started = time.monotonic()
    rows = acc.score_llamacpp_dry_run(data, specs)
    answered = [r for r in rows if r["dry_run"]]
    summary = acc.llamacpp_summary(answered)
    compute = summary["compute"]
    lines = [
        "With the compute buffer from llama.cpp's own no-alloc dry run "
        "(`llmhost.engines.llamacpp_dryrun`, what `plan` uses for a GGUF run on the CPU; "
        f"{len(answered)} cases in {time.monotonic() - started:.0f} s): "
        f"**{summary['all_pass']}/{summary['cases']} cases meet every target**; compute within "
        f"{compute['max_abs_error']:.2%} at worst (median {compute['median_abs_error']:.2%}), "
        f"total within {summary['total']['max_abs_error']:.1%}.",
    ]
    dry = {r["id"]: r for r in answered}
    missed = [r for r in analytic if not all(r["ok"].values()) and r["id"] in dry]
    if missed:
        lines += [
            "",
            "| case the analytic model misses | compute MiB measured | analytic | dry run |",
            "|---|---|---|---|",
        ]
        for r in missed:
            d = dry[r["id"]]
            lines.append(
                f"| {r['id']} | {r['measured']['compute']:.2f} | {r['predicted']['compute']:.2f} "
                f"({acc._pct(r['error']['compute'])}) | {d['predicted']['compute']:.2f} "
                f"({acc._pct(d['error']['compute'])}) |"
            )
    return lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
