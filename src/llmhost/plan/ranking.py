"""The ranking policy (docs/planning.md): what comes first for each goal, and why in words."""

from __future__ import annotations

from llmhost.engine_ids import LLAMACPP, MLX, VLLM
from llmhost.estimate.weights import quality_score
from llmhost.plan.common import QUALITY_FLOOR
from llmhost.plan.models import Candidate
from llmhost.plan.reasons import Reason, ReasonCode

# At equal quality: vLLM first where it runs (GPUs, batching); on a Mac MLX LM before llama.cpp Metal:
# it loads the safetensors checkpoint itself (a 16-bit one as is, a quantized one by one
# `mlx_lm.convert`, no GGUF toolchain) and batches concurrent decodes. Never both vLLM and MLX on one plan.
ENGINE_PREFERENCE = {VLLM: 2, MLX: 1}


def _placement(c: Candidate, n_layers: int) -> int:
    """2: everything on accelerators; 1: llama.cpp partial CPU offload; 0: CPU only."""
    on_gpu = [d for d in c.per_device if d.device != "cpu" and d.breakdown.total_bytes > 0]
    if not on_gpu:
        return 0
    if c.engine == LLAMACPP and (c.gpu_layers or 0) < n_layers + 1:
        return 1
    return 2


def launchable(c: Candidate) -> bool:
    return not c.engine_options.needs_conversion


def sort_key(c: Candidate, goal: str, n_layers: int) -> tuple[float, ...]:
    can_launch = launchable(c)
    q = quality_score(c.quantization)
    decent = q >= QUALITY_FLOOR
    speed = c.decode_tokens_per_s or 0.0
    engine_pref = ENGINE_PREFERENCE.get(c.engine, 0)
    head = (float(c.fits), float(can_launch), float(decent), float(_placement(c, n_layers)))
    if goal == "latency":
        return (*head, speed, q, -c.tensor_parallel_size * c.pipeline_parallel_size)
    if goal == "throughput":
        return (*head, engine_pref, c.max_concurrency, speed, q)
    return (*head, q, engine_pref, -c.tensor_parallel_size * c.pipeline_parallel_size, speed)


def why_chosen(c: Candidate, goal: str) -> Reason:
    if goal == "latency":
        return Reason.of(ReasonCode.CHOSEN_FOR_LATENCY, speed=c.decode_tokens_per_s or 0.0, engine=c.engine)
    if goal == "throughput":
        return Reason.of(ReasonCode.CHOSEN_FOR_THROUGHPUT, sequences=c.max_concurrency, engine=c.engine)
    return Reason.of(ReasonCode.CHOSEN_FOR_QUALITY, quantization=c.quantization)
