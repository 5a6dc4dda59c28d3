"""Plans that between them produce every reason and every piece of advice the planner writes.

`tests/plan/test_reasons_pinned.py` compares them with `data/reasons_pinned.json`, recorded from the planner
before reasons became codes (issue 9): `plan --json`'s `reasons` and `advice` strings, and the human view,
must read exactly as they did. Re-record only when a message is meant to change:

    PYTHONPATH=src:tests python tests/support/reason_scenarios.py
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmhost.estimate.llamacpp import LlamaCppSettings
from llmhost.hardware.models import GPU, GPUProcess, Hardware
from llmhost.models.spec import ModelSpec, Quantization, QuantizedVariant
from llmhost.plan import PlanRequest, make_plan
from llmhost.plan.models import Plan
from support.llmhost_test_specs import GiB, deepseek_v3, dense_spec, gpu, h100, llama8b_q4km_gguf, machine

PINNED = Path(__file__).parents[1] / "plan" / "data" / "reasons_pinned.json"
# Scenarios whose whole `plan --json` document is pinned (the rest pin reasons and advice only).
FULL_JSON = ("h100-8b-fp8-online", "mac-mlx-bf16", "two-nodes-405b-bf16", "mac-needs-gguf")
HUMAN = ("h100-8b-fp8-online", "offload-1650", "nothing-fits-deepseek", "mac-mlx-bf16", "siblings-14b")


def _mac(ram_gib: float = 32, free_gib: float = 28) -> Hardware:
    """An M2 Max-like Mac: the Metal working set is 2/3 of RAM (what hardware/apple.py reports)."""
    base = machine([], os="darwin", arch="arm64", ram_gib=ram_gib)
    metal = GPU(
        index=0,
        vendor="apple",
        name="Apple M2 Max",
        memory_total_bytes=int(ram_gib * GiB * 2 / 3),
        memory_bandwidth_bytes_per_s=400e9,
        unified_memory=True,
        memory_limit_source="2/3 of RAM",
    )
    return base.model_copy(update={"gpus": [metal], "ram_available_bytes": int(free_gib * GiB)})


def _big14b() -> ModelSpec:
    return dense_spec(
        name="Big-14B", layers=48, hidden=5120, heads=40, kv_heads=8, intermediate=13824, vocab=152064
    )


def _405b() -> ModelSpec:
    return dense_spec(
        name="Llama-3.1-405B-Instruct", layers=126, hidden=16384, heads=128, kv_heads=8, intermediate=53248
    )


def _gemma_like() -> ModelSpec:
    kinds = (["sliding"] * 5 + ["full"]) * 8
    return dense_spec(name="Gemma-like", layers=48, kinds=kinds, sliding_window=1024, head_dim=256)


def _probe(settings: LlamaCppSettings) -> int | None:
    return 64 * 1024**2 + settings.n_ubatch * 1024


def _siblings() -> list[QuantizedVariant]:
    return [
        QuantizedVariant(repo_id="org/Big-14B-AWQ", method="awq", downloads=5000),
        QuantizedVariant(repo_id="org/Big-14B-GGUF", method="gguf", downloads=900),
    ]


def scenarios() -> dict[str, Callable[[], Plan]]:
    busy = h100(used=20 * GiB, processes=[GPUProcess(pid=42, name="python", used_memory_bytes=20 * GiB)])
    rtx4090 = machine([gpu("RTX 4090", 24, cc="8.9")])
    eight_h100 = machine([h100(i) for i in range(8)])
    mlx_4bit = dense_spec(
        name="Tiny-4bit-mlx",
        quant=Quantization(method="other", bits=4, raw={"bits": 4, "group_size": 64}),
        bytes_per_param=0.5625,
    )
    gguf = llama8b_q4km_gguf()
    return {
        "h100-8b-fp8-online": lambda: make_plan(dense_spec(), machine([h100()]), PlanRequest(context=8192)),
        "h100-8b-latency": lambda: make_plan(
            dense_spec(), machine([h100()]), PlanRequest(context=8192, goal="latency")
        ),
        "h100-8b-throughput": lambda: make_plan(
            dense_spec(), machine([h100()]), PlanRequest(context=8192, goal="throughput")
        ),
        "busy-h100-lowered": lambda: make_plan(dense_spec(), machine([busy]), PlanRequest(context=8192)),
        "busy-h100-forced-util": lambda: make_plan(
            dense_spec(),
            machine([busy]),
            PlanRequest(context=8192, gpu_memory_utilization=0.9, engine="vllm"),
        ),
        "default-context-lowered": lambda: make_plan(
            dense_spec(max_context=131072), rtx4090, PlanRequest(engine="vllm", quantization="bf16")
        ),
        "two-3060-tp": lambda: make_plan(
            dense_spec(),
            machine([gpu("RTX 3060", 12, index=0, cc="8.6"), gpu("RTX 3060", 12, index=1, cc="8.6")]),
            PlanRequest(context=4096),
        ),
        "tp8-kv-replicated": lambda: make_plan(
            dense_spec(kv_heads=4, heads=64, hidden=8192, layers=8),
            eight_h100,
            PlanRequest(context=4096, tensor_parallel_size=8, engine="vllm"),
        ),
        "mla-8xh100": lambda: make_plan(deepseek_v3(), eight_h100, PlanRequest(context=32768, engine="vllm")),
        "dp8-ep-8xh100": lambda: make_plan(
            deepseek_v3(),
            eight_h100,
            PlanRequest(context=32768, engine="vllm", data_parallel_size=8, enable_expert_parallel=True),
        ),
        "nothing-fits-deepseek": lambda: make_plan(
            deepseek_v3(), machine([gpu("RTX 4060", 8, cc="8.9")], ram_gib=16), PlanRequest(context=8192)
        ),
        "shorter-context-advice": lambda: make_plan(
            dense_spec(), rtx4090, PlanRequest(context=131072, engine="vllm", quantization="bf16")
        ),
        "fp8-kv-advice": lambda: make_plan(
            dense_spec(), rtx4090, PlanRequest(context=131072, engine="vllm", quantization="fp8")
        ),
        "q8-kv-advice": lambda: make_plan(
            gguf.model_copy(update={"max_context": 131072}),
            machine([gpu("RTX 4060", 8, cc="8.9")], ram_gib=8),
            PlanRequest(context=131072, engine="llamacpp"),
        ),
        "smaller-quant-advice": lambda: make_plan(
            dense_spec(),
            machine([gpu("RTX 3060", 12, cc="8.6")], ram_gib=8),
            PlanRequest(quantization="bf16"),
        ),
        "cpu-only-vllm-and-llamacpp": lambda: make_plan(
            dense_spec(), machine([], ram_gib=64), PlanRequest(context=8192)
        ),
        "cpu-vllm-too-small": lambda: make_plan(
            dense_spec(), machine([], ram_gib=12), PlanRequest(context=8192, engine="vllm")
        ),
        "offload-1650": lambda: make_plan(
            gguf, machine([gpu("GTX 1650", 4, cc="7.5", bw=192e9)], ram_gib=64), PlanRequest(concurrency=4)
        ),
        "llamacpp-two-gpus": lambda: make_plan(
            gguf,
            machine([gpu("RTX 3060", 12, index=0, cc="8.6"), gpu("RTX 3060", 12, index=1, cc="8.6")]),
            PlanRequest(context=32768),
        ),
        "llamacpp-cpu-dry-run": lambda: make_plan(
            gguf, machine([], ram_gib=64), PlanRequest(context=4096), compute_probes={"model.gguf": _probe}
        ),
        "llamacpp-cpu-does-not-fit": lambda: make_plan(
            gguf, machine([], ram_gib=4), PlanRequest(context=4096, engine="llamacpp")
        ),
        "llama-cpp-python-4": lambda: make_plan(
            gguf, machine([h100()]), PlanRequest(concurrency=4, llamacpp_runtime="llama-cpp-python")
        ),
        "llama-cpp-python-1": lambda: make_plan(
            gguf, machine([h100()]), PlanRequest(llamacpp_runtime="llama-cpp-python")
        ),
        "siblings-14b": lambda: make_plan(
            _big14b(),
            machine([gpu("RTX 3090", 24, cc="8.6")]),
            PlanRequest(context=8192),
            siblings=_siblings(),
        ),
        "siblings-14b-cpu": lambda: make_plan(
            _big14b(),
            machine([], os="darwin", arch="x86_64", ram_gib=64),
            PlanRequest(),
            siblings=_siblings(),
        ),
        "pipeline-3x3090": lambda: make_plan(
            dense_spec(name="Mid-20B", layers=48, hidden=6144, heads=48, kv_heads=8, intermediate=16384),
            machine([gpu("RTX 3090", 24, index=i, cc="8.6") for i in range(3)]),
            PlanRequest(context=8192, engine="vllm"),
        ),
        "two-nodes-405b-bf16": lambda: make_plan(
            _405b(), eight_h100, PlanRequest(nodes=2, quantization="bf16", context=8192)
        ),
        "two-nodes-405b-one-suffices": lambda: make_plan(_405b(), eight_h100, PlanRequest(nodes=2)),
        "mac-needs-gguf": lambda: make_plan(
            dense_spec(), machine([], os="darwin", arch="arm64", ram_gib=32), PlanRequest(context=8192)
        ),
        "mac-mlx-bf16": lambda: make_plan(
            dense_spec(), _mac(64, 60), PlanRequest(context=8192, concurrency=3)
        ),
        "mac-mlx-convert-advice": lambda: make_plan(_gemma_like(), _mac(), PlanRequest(context=4096)),
        "mac-mlx-sliding": lambda: make_plan(_gemma_like(), _mac(64, 60), PlanRequest(context=8192)),
        "mac-mlx-4bit-checkpoint": lambda: make_plan(mlx_4bit, _mac(), PlanRequest(context=8192)),
        "linux-mlx-forced": lambda: make_plan(
            dense_spec(), machine([], ram_gib=64), PlanRequest(engine="mlx", context=4096)
        ),
        "awq-no-gpu": lambda: make_plan(
            dense_spec(quant=Quantization(method="awq", bits=4), bytes_per_param=0.5),
            machine([], ram_gib=64),
            PlanRequest(context=8192),
        ),
        "fp8-checkpoint-cpu": lambda: make_plan(
            dense_spec(quant=Quantization(method="fp8", bits=8), bytes_per_param=1.0),
            machine([], ram_gib=64),
            PlanRequest(context=8192),
        ),
        "gguf-on-vllm": lambda: make_plan(gguf, machine([h100()]), PlanRequest(engine="vllm")),
        "llamacpp-fp8-kv": lambda: make_plan(
            gguf, machine([h100()]), PlanRequest(engine="llamacpp", kv_cache_dtype="fp8")
        ),
        "vllm-q4-kv": lambda: make_plan(
            dense_spec(), machine([h100()]), PlanRequest(engine="vllm", kv_cache_dtype="q4_0")
        ),
        "no-engine-for-quant": lambda: make_plan(
            dense_spec(), machine([h100()]), PlanRequest(engine="llamacpp", quantization="awq")
        ),
        "llamacpp-context-lowered-gpu": lambda: make_plan(
            gguf, machine([gpu("RTX 4060", 8, cc="8.9")]), PlanRequest()
        ),
        "llamacpp-context-lowered-ram": lambda: make_plan(gguf, machine([], ram_gib=8), PlanRequest()),
        "vllm-context-lowered": lambda: make_plan(
            dense_spec(), machine([gpu("RTX 4000 Ada", 20, cc="8.9")]), PlanRequest(quantization="bf16")
        ),
        "vllm-cpu-context-lowered": lambda: make_plan(dense_spec(), machine([], ram_gib=22), PlanRequest()),
        "mlx-context-lowered": lambda: make_plan(dense_spec(), _mac(28, 26), PlanRequest()),
        "kv-fewer-sequences": lambda: make_plan(
            dense_spec(), machine([h100()]), PlanRequest(context=131072, concurrency=8, engine="vllm")
        ),
        "q8-kv-advice-cpu": lambda: make_plan(
            gguf, machine([], ram_gib=12), PlanRequest(context=65536, engine="llamacpp")
        ),
        "smaller-quant-fp8": lambda: make_plan(
            dense_spec(),
            machine([gpu("RTX 4080", 16, cc="8.9")]),
            PlanRequest(quantization="bf16", context=8192),
        ),
        # The ways vLLM fails at start-up (issue 11), each planned from the figures that decide it.
        "vllm-no-kv-memory": lambda: make_plan(
            dense_spec(),
            machine([gpu("X", 18)]),
            PlanRequest(engine="vllm", quantization="bf16", context=4096),
        ),
        "vllm-max-num-seqs-below": lambda: make_plan(
            dense_spec(),
            machine([h100()]),
            PlanRequest(context=4096, concurrency=8, engine="vllm", max_num_seqs=4),
        ),
        "vllm-graphs-after-kv": lambda: make_plan(
            dense_spec(),
            machine([h100()]),
            PlanRequest(context=8192, engine="vllm", vllm_version="0.8.5", gpu_memory_utilization=0.98),
        ),
        "vllm-on-a-mac": lambda: make_plan(dense_spec(), _mac(), PlanRequest(engine="vllm")),
        "nothing-at-all": lambda: make_plan(
            dense_spec(), machine([], os="darwin", arch="arm64"), PlanRequest(engine="mlx")
        ),
    }


def human(plan: Plan) -> str:
    """`plan --all`'s human view. (Rendered into a buffer: `Console.capture()` + `export_text()` gave
    "", so the human pins recorded that way pinned nothing.)"""
    import io

    from rich.console import Console

    from llmhost.cli.plan import render_plan

    buffer = io.StringIO()
    console = Console(file=buffer, width=160, color_system=None, force_terminal=False)
    render_plan(console, plan, show_all=True)
    return buffer.getvalue()


def _without_structured(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_structured(v) for k, v in value.items() if k not in STRUCTURED}
    if isinstance(value, list):
        return [_without_structured(v) for v in value]
    return value


STRUCTURED = {"reasons_detail", "advice_detail"}


def record(name: str, plan: Plan) -> dict[str, Any]:
    """What is pinned of one plan: every candidate's reasons, the advice, and (some) the whole JSON."""
    dumped = plan.model_dump(mode="json")
    out: dict[str, Any] = {
        "chosen": plan.chosen,
        "reasons": [c["reasons"] for c in dumped["candidates"]],
        "advice": dumped["advice"],
    }
    if name in FULL_JSON:  # as it was before the structured reasons: without the fields they added
        out["json"] = _without_structured(dumped)
    if name in HUMAN:
        out["human"] = human(plan)
    return out


def main() -> None:
    recorded = {name: record(name, build()) for name, build in scenarios().items()}
    PINNED.parent.mkdir(exist_ok=True)
    PINNED.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {PINNED} ({len(recorded)} plans)", file=sys.stderr)


if __name__ == "__main__":
    main()
