"""Replay recorded engine measurements through llmhost's resolver and estimator, and score the error.

Shared by `benchmarks/accuracy_llamacpp.py`, `benchmarks/vllm_validation.py` and `tests/accuracy/`:
the benchmarks print and publish the tables, the tests assert the targets on the same numbers.

llama.cpp: every recorded model is rebuilt as a GGUF with the recorded header and zero-filled tensor
data (`_gguf_shapes.write_replica`), resolved with `llmhost.models.resolve` like any local file, and
estimated with `llmhost.estimate.llamacpp_memory` on a CPU-only "device" (the measurements come from
the CPU backend). vLLM: every recorded model's config.json facts are written to a directory, resolved
the same way, and estimated with `llmhost.estimate.vllm_gpu_memory`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

# Its sibling modules import by name: benchmarks/ is sys.path[0] when a benchmark runs as a script, and
# pytest puts it there for tests/accuracy (pyproject's pythonpath).
HERE = Path(__file__).resolve().parent

# llmhost.estimate imports llmhost.plan (roofline -> plan.models) which imports llmhost.estimate back;
# importing the plan package first resolves the cycle in the order the CLI does.
from _gguf_shapes import write_replica  # noqa: E402
from _llamacpp_logs import MIB, RESOLUTION_MIB, totals_mib  # noqa: E402

import llmhost.plan  # noqa: E402, F401
from llmhost import estimate as est  # noqa: E402
from llmhost.models import resolve  # noqa: E402
from llmhost.models.spec import ModelSpec  # noqa: E402

GIB = 1024**3
LLAMACPP_DATA = HERE / "data" / "llamacpp_measurements.json"
VLLM_DATA = HERE / "data" / "vllm_startup_logs.json"
COMPONENTS = ("model", "kv", "compute", "output")
COMPONENT_TOLERANCE = 0.05
TOTAL_TOLERANCE = 0.03
VLLM_WEIGHTS_TOLERANCE = 0.02
VLLM_KV_MEDIAN_TOLERANCE = 0.10
# vLLM prints GiB with two decimals: a figure is known to +-0.005 GiB.
VLLM_RESOLUTION_GIB = 0.005


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def rel_error(predicted: float, measured: float) -> float:
    if measured == 0:
        return 0.0 if predicted == 0 else math.inf
    return (predicted - measured) / measured


# ---------------------------------------------------------------------------------------------- llama.cpp


@functools.cache
def _replica_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="llmhost-acc-replicas-"))


LLAMACPP_SPECS = HERE / "data" / "llamacpp_specs.json"
# Fields that name where the replica was written, not what the model is.
VOLATILE_SPEC_FIELDS = ("ref", "name", "files", "bytes_read")


def llamacpp_spec(model_name: str, header: str) -> ModelSpec:
    """The ModelSpec llmhost resolves from a GGUF with the recorded header (cached per model)."""
    return _llamacpp_spec_cached(model_name, header)


def resolve_llamacpp_specs(data: dict[str, Any]) -> dict[str, ModelSpec]:
    """Resolve every recorded model (slow for big vocabularies: the gguf reader parses every token)."""
    return {
        name: llamacpp_spec(name, json.dumps(model["gguf"], sort_keys=True))
        for name, model in data["models"].items()
    }


def spec_facts(spec: ModelSpec) -> dict[str, Any]:
    """A spec as JSON, without the fields that depend on where the file was."""
    facts: dict[str, Any] = spec.model_dump(mode="json", exclude=set(VOLATILE_SPEC_FIELDS))
    return facts


def write_spec_snapshot(specs: dict[str, ModelSpec], path: Path = LLAMACPP_SPECS) -> None:
    """Keep what the resolver made of each recorded model, so tests can skip the slow GGUF parse."""
    snapshot = {name: _placeless(name, spec.model_dump(mode="json")) for name, spec in sorted(specs.items())}
    path.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")


def _placeless(name: str, dumped: dict[str, Any]) -> dict[str, Any]:
    """The replica was written to a fresh temp dir: name it by the model instead, so a re-run of the
    benchmark leaves the snapshot byte-identical."""
    where = f"<replica>/{name}.gguf"
    dumped["ref"] = where
    for f in dumped.get("files", []):
        f["path"] = where
    return dumped


def load_spec_snapshot(path: Path = LLAMACPP_SPECS) -> dict[str, ModelSpec]:
    raw: dict[str, Any] = json.loads(path.read_text())
    return {name: ModelSpec.model_validate(value) for name, value in raw.items()}


@functools.cache
def _llamacpp_spec_cached(model_name: str, header: str) -> ModelSpec:
    path = _replica_dir() / f"{model_name}.gguf"
    write_replica(json.loads(header), path)
    try:
        return resolve(str(path))
    finally:
        path.unlink(missing_ok=True)


def llamacpp_settings(case: dict[str, Any]) -> est.LlamaCppSettings:
    s = case["settings"]
    context = case["measured_mib"]["context"]
    # "auto" is resolved by llama.cpp itself and printed back as enabled/disabled.
    flash = context.get("flash_attn", s["flash_attn"]) in ("enabled", "on", "1", "true")
    return est.LlamaCppSettings(
        n_ctx_seq=s["n_ctx"] // s["n_seq"],
        n_parallel=s["n_seq"],
        gpu_layers=0,
        n_batch=s["n_batch"],
        n_ubatch=s["n_ubatch"],
        flash_attn=flash,
        cache_type_k=s["type_k"],
        cache_type_v=s["type_v"],
        swa_full=s["swa_full"],
        kv_unified=s["kv_unified"],
        # as llama.cpp resolved it (0 asks for n_batch): the logits rows the graph is reserved for
        n_outputs_max=int(context.get("n_outputs_max", s["n_batch"])),
    )


def llamacpp_predicted_mib(
    spec: ModelSpec, settings: est.LlamaCppSettings, compute_probe: est.ComputeProbe | None = None
) -> dict[str, float]:
    """The estimator's CPU-backend buffers, in MiB, named like the measured ones."""
    layout = est.weights_layout(spec, est.own_quantization(spec))
    host = est.Device(name="cpu", kind="cpu", capacity_bytes=1 << 50, context_bytes=0)
    (cpu,) = est.llamacpp_memory(spec, layout, settings, [], host, compute_probe=compute_probe)
    # With no host context, the host overhead is the output (logits) buffer alone.
    out = {
        "model": cpu.model_bytes / MIB,
        "kv": cpu.kv_bytes / MIB,
        "compute": cpu.compute_bytes / MIB,
        "output": cpu.overhead_bytes / MIB,
    }
    out["total"] = sum(out[c] for c in COMPONENTS)
    return out


def component_ok(predicted: float, measured: float, tolerance: float) -> bool:
    if abs(predicted - measured) <= 2 * RESOLUTION_MIB:
        return True
    return abs(rel_error(predicted, measured)) <= tolerance


def score_llamacpp_case(
    spec: ModelSpec, case: dict[str, Any], compute_probe: est.ComputeProbe | None = None
) -> dict[str, Any]:
    predicted = llamacpp_predicted_mib(spec, llamacpp_settings(case), compute_probe)
    measured = totals_mib(case["measured_mib"])
    row: dict[str, Any] = {"id": case["id"], "settings": case["settings"], "measured": measured}
    row["predicted"] = predicted
    row["error"] = {k: rel_error(predicted[k], measured[k]) for k in (*COMPONENTS, "total")}
    row["ok"] = {k: component_ok(predicted[k], measured[k], COMPONENT_TOLERANCE) for k in COMPONENTS}
    row["ok"]["total"] = component_ok(predicted["total"], measured["total"], TOTAL_TOLERANCE)
    row["repack_mib"] = case["measured_mib"]["model_buffers"].get("CPU_REPACK", 0.0)
    return row


def score_llamacpp(data: dict[str, Any], specs: dict[str, ModelSpec]) -> list[dict[str, Any]]:
    return [score_llamacpp_case(specs[c["model"]], c) for c in data["cases"] if "measured_mib" in c]


def score_llamacpp_dry_run(
    data: dict[str, Any], specs: dict[str, ModelSpec], only: set[str] | None = None
) -> list[dict[str, Any]]:
    """Score what `plan` shows for a local GGUF on the CPU: compute from the installed llama.cpp's no-alloc
    dry run (`llmhost.engines.llamacpp_dryrun`), run on a replica of each recorded header.

    Rows of cases the probe could not answer (llama-cpp-python missing) have `"dry_run": False`.
    """
    from llmhost.engines.llamacpp_dryrun import ComputeProbe

    rows: list[dict[str, Any]] = []
    cases = [c for c in data["cases"] if "measured_mib" in c and (only is None or c["id"] in only)]
    for name in dict.fromkeys(c["model"] for c in cases):
        path = _replica_dir() / f"{name}.dry.gguf"
        write_replica(data["models"][name]["gguf"], path)
        try:
            probe = ComputeProbe.for_file(path, disk_cache=False)
            try:
                for case in (c for c in cases if c["model"] == name):
                    answered = probe is not None and probe(llamacpp_settings(case)) is not None
                    row = score_llamacpp_case(specs[name], case, probe if answered else None)
                    rows.append({**row, "dry_run": answered})
            finally:
                if probe is not None:
                    probe.close()
        finally:
            path.unlink(missing_ok=True)
    return rows


def _pct(x: float) -> str:
    return "n/a" if math.isinf(x) else f"{x * 100:+.1f}%"


def _settings_label(s: dict[str, Any]) -> str:
    extra = []
    if s["n_ubatch"] != 512:
        extra.append(f"ub{s['n_ubatch']}")
    if s["kv_unified"]:
        extra.append("unified")
    if s["swa_full"]:
        extra.append("swa-full")
    kv = s["type_k"] if s["type_k"] == s["type_v"] else f"{s['type_k']}/{s['type_v']}"
    return f"c{s['n_ctx']} np{s['n_seq']} {kv} fa-{s['flash_attn']}" + (
        " " + " ".join(extra) if extra else ""
    )


def llamacpp_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| case | settings | model MiB meas/pred | KV MiB meas/pred | compute MiB meas/pred "
        "| output MiB meas/pred | total err | pass |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        m, p, e = r["measured"], r["predicted"], r["error"]
        cells = [
            f"{m[k]:.2f} / {p[k]:.2f} ({_pct(e[k])})" + ("" if r["ok"][k] else " **miss**")
            for k in COMPONENTS
        ]
        ok = "yes" if all(r["ok"].values()) else "no"
        lines.append(
            f"| {r['id']} | {_settings_label(r['settings'])} | "
            + " | ".join(cells)
            + f" | {_pct(e['total'])} | {ok} |"
        )
    return head + "\n".join(lines) + "\n"


def llamacpp_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"cases": len(rows)}
    for k in (*COMPONENTS, "total"):
        errs = [abs(r["error"][k]) for r in rows if not math.isinf(r["error"][k])]
        summary[k] = {
            "pass": sum(r["ok"][k] for r in rows),
            "median_abs_error": statistics.median(errs) if errs else 0.0,
            "max_abs_error": max(errs) if errs else 0.0,
        }
    summary["all_pass"] = sum(all(r["ok"].values()) for r in rows)
    return summary


# ---------------------------------------------------------------------------------------------- vLLM


@functools.cache
def vllm_spec(model: str, config: str) -> ModelSpec:
    """The ModelSpec llmhost resolves from a directory holding only the recorded config.json."""
    directory = Path(tempfile.mkdtemp(prefix="llmhost-acc-config-"))
    (directory / "config.json").write_text(config)
    return resolve(str(directory / "config.json"))


def _kv_dtype(flag: str | None) -> str:
    return "fp8" if flag and flag.startswith("fp8") else "bf16"


def vllm_prediction(record: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """What llmhost predicts for one recorded vLLM start-up (per TP rank)."""
    spec = vllm_spec(record["model"], json.dumps(config, sort_keys=True))
    flags = record["flags"]
    tp = flags["tensor_parallel_size"] or 1
    total_gib = record["gpu"].get("total_gib")
    total = int((total_gib or 80.0) * GIB)
    mnbt = flags.get("max_num_batched_tokens") or est.vllm.default_max_num_batched_tokens(
        total, record["gpu"]["name"]
    )
    settings = est.VllmSettings(
        gpu_memory_utilization=flags["gpu_memory_utilization"],
        max_num_seqs=flags.get("max_num_seqs") or est.overheads.VLLM_DEFAULT_MAX_NUM_SEQS,
        max_num_batched_tokens=mnbt,
        tensor_parallel_size=tp,
        kv_cache_dtype=_kv_dtype(flags.get("kv_cache_dtype")),
        enforce_eager=bool(flags.get("enforce_eager")),
    )
    layout = est.weights_layout(spec, est.own_quantization(spec))
    memory = est.vllm_gpu_memory(spec, layout, settings, total)
    out: dict[str, Any] = {
        "weights_gib": memory.weights_bytes / GIB,
        "kv_bytes_per_token": memory.kv.bytes_per_token,
        "available_kv_gib": memory.kv_cache_bytes / GIB if total_gib else None,
        "activation_gib": memory.activation_bytes / GIB,
        "non_torch_gib": memory.non_torch_bytes / GIB,
        "cudagraph_gib": memory.cudagraph_bytes / GIB,
    }
    printed = record["printed"]
    if printed.get("available_kv_gib") is not None:
        # Given vLLM's own pool size, how many tokens llmhost's KV layout says fit, and the longest
        # request that fits (vLLM's binary search in kv_cache_utils.estimate_max_model_len).
        pool = dataclasses.replace(memory, kv_cache_bytes=int(printed["available_kv_gib"] * GIB))
        block = 16 * max(memory.kv.bytes_per_token, 1)
        out["kv_tokens"] = int(pool.kv_cache_bytes // block) * 16
        limit = flags.get("max_model_len") or spec.max_context
        out["kv_needed_gib"] = pool.request_bytes(limit) / GIB
        out["estimated_max_model_len"] = pool.max_context(limit)
    return out


def score_vllm(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for record in data["records"]:
        predicted = vllm_prediction(record, data["configs"][record["model"]])
        printed = record["printed"]
        errors: dict[str, float] = {}
        for key in (
            "weights_gib",
            "available_kv_gib",
            "kv_tokens",
            "kv_needed_gib",
            "estimated_max_model_len",
        ):
            if printed.get(key) is not None and predicted.get(key) is not None:
                errors[key] = rel_error(predicted[key], printed[key])
        rows.append({"id": record["id"], "record": record, "predicted": predicted, "error": errors})
    return rows


def weights_ok(row: dict[str, Any]) -> bool:
    predicted, printed = row["predicted"]["weights_gib"], row["record"]["printed"]["weights_gib"]
    return abs(predicted - printed) <= VLLM_RESOLUTION_GIB or abs(row["error"]["weights_gib"]) <= (
        VLLM_WEIGHTS_TOLERANCE
    )


def vllm_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"records": len(rows)}
    for key in ("weights_gib", "available_kv_gib", "kv_tokens", "kv_needed_gib", "estimated_max_model_len"):
        errs = [abs(r["error"][key]) for r in rows if key in r["error"]]
        summary[key] = {
            "n": len(errs),
            "median_abs_error": statistics.median(errs) if errs else None,
            "max_abs_error": max(errs) if errs else None,
        }
    weights = [r for r in rows if "weights_gib" in r["error"]]
    summary["weights_gib"]["pass"] = sum(weights_ok(r) for r in weights)
    return summary


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def vllm_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| record | model | GPU x n | TP | weights GiB printed / pred | KV GiB printed / pred "
        "| KV tokens printed / pred | source |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        rec, p, e = r["record"], r["predicted"], r["error"]
        pr = rec["printed"]

        def pair(key: str, fmt: str, p: dict[str, Any] = p, pr: dict[str, Any] = pr) -> str:
            if pr.get(key) is None:
                return "–"
            err = f" ({_pct(e[key])})" if key in e else ""
            return f"{_num(pr[key], fmt)} / {_num(p.get(key), fmt)}{err}"

        lines.append(
            f"| {r['id']} | {rec['model']} | {rec['gpu']['name']} x{rec['gpu']['count']} "
            f"| {rec['flags']['tensor_parallel_size']} | {pair('weights_gib', '.2f')} "
            f"| {pair('available_kv_gib', '.2f')} | {pair('kv_tokens', ',d')} "
            f"| [link]({rec['source']['url']}) |"
        )
    return head + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- docs

DOCS = HERE.parent / "docs"
ACCURACY_DOC = DOCS / "accuracy.md"
ESTIMATOR_DOC = DOCS / "estimator.md"


def replace_block(path: Path, name: str, body: str) -> bool:
    """Replace the text between `<!-- name:begin -->` and `<!-- name:end -->` in `path`."""
    if not path.exists():
        return False
    text = path.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{body.rstrip()}\n{end}{tail}")
    return True


# ---------------------------------------------------------------------------------------------- known misses

KNOWN_MISSES = HERE.parent / "tests" / "accuracy" / "known_misses.json"
VLLM_TOKENS_TOLERANCE = 0.01


def llamacpp_miss_reason(row: dict[str, Any]) -> str | None:
    m, p, e = row["measured"], row["predicted"], row["error"]
    bad = [k for k, ok in row["ok"].items() if not ok]
    if not bad:
        return None
    return "; ".join(f"{k} {m[k]:.2f} MiB measured, {p[k]:.2f} predicted ({e[k]:+.1%})" for k in bad)


def write_known_misses(path: Path = KNOWN_MISSES) -> dict[str, int]:
    """Record which cases miss today (with the error), for the tests' strict xfail marks."""
    data = load(LLAMACPP_DATA)
    specs = load_spec_snapshot()
    llama: dict[str, str] = {}
    for case in data["cases"]:
        if "measured_mib" in case and (
            reason := llamacpp_miss_reason(score_llamacpp_case(specs[case["model"]], case))
        ):
            llama[case["id"]] = reason
    weights: dict[str, str] = {}
    tokens: dict[str, str] = {}
    for row in score_vllm(load(VLLM_DATA)):
        printed, predicted, error = row["record"]["printed"], row["predicted"], row["error"]
        if "weights_gib" in error and not weights_ok(row):
            weights[row["id"]] = (
                f"weights {printed['weights_gib']} GiB printed, {predicted['weights_gib']:.2f} predicted "
                f"({error['weights_gib']:+.1%})"
            )
        if "kv_tokens" in error and abs(error["kv_tokens"]) > VLLM_TOKENS_TOLERANCE:
            tokens[row["id"]] = (
                f"{printed['kv_tokens']:,} tokens printed, {predicted['kv_tokens']:,} predicted "
                f"({error['kv_tokens']:+.1%})"
            )
    known = json.loads(path.read_text()) if path.exists() else {}
    known.update({"llamacpp": llama, "vllm_weights": weights, "vllm_kv_tokens": tokens})
    path.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    return {"llamacpp": len(llama), "vllm_weights": len(weights), "vllm_kv_tokens": len(tokens)}
