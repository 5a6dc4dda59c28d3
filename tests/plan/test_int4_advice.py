"""A 16-bit checkpoint that only fits in 4 bits: plan names what an AWQ/GPTQ INT4 checkpoint would do."""

from __future__ import annotations

from pathlib import Path

from llmhost.hardware import hardware_for
from llmhost.models import resolve
from llmhost.plan import PlanRequest, make_plan

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"


def test_llama_70b_on_two_rtx_4090_gets_the_awq_option() -> None:
    spec = resolve(str(CONFIGS / "meta-llama--Llama-3.1-70B-Instruct.json"))
    plan = make_plan(spec, hardware_for("rtx-4090-24gb:2"), PlanRequest(context=4096, engine="vllm"))
    assert not any(c.fits for c in plan.candidates)  # bf16 (141 GB) and online fp8 (70 GB) do not fit
    [line] = [a for a in plan.advice if a.startswith("An AWQ or GPTQ 4-bit checkpoint")]
    # 4.156 bits for the 80 blocks, 16-bit embeddings and lm_head: 37.0 GiB over the two GPUs, which
    # leaves room for one request of 2048 tokens (vLLM's own binary search), not 4096.
    assert "tensor parallel 2 (37.0 GiB of weights over 2 GPU(s), up to `--context 2048`)" in line
    short = make_plan(spec, hardware_for("rtx-4090-24gb:2"), PlanRequest(context=1024, engine="vllm"))
    [fits] = [a for a in short.advice if a.startswith("An AWQ or GPTQ 4-bit checkpoint")]
    assert "tensor parallel 2" in fits and "x 1024 tokens of KV cache" in fits


def test_no_int4_line_when_the_checkpoint_already_fits() -> None:
    spec = resolve(str(CONFIGS / "meta-llama--Llama-3.1-8B-Instruct.json"))
    plan = make_plan(spec, hardware_for("rtx-4090-24gb:2"), PlanRequest(context=4096, engine="vllm"))
    assert not any("AWQ or GPTQ" in a for a in plan.advice)
