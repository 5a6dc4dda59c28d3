"""What would fit when nothing does: shorter context, fp8/q8_0 KV, other quantization, more GPUs."""

from __future__ import annotations

import math
from collections.abc import Callable

from llmhost.estimate import overheads as oh
from llmhost.estimate.dtypes import LLAMACPP_KV_TYPES, VLLM_KV_TYPES, normalize_kv_dtype
from llmhost.estimate.weights import SIXTEEN_BIT, own_quantization, quality_score
from llmhost.hardware.models import Hardware
from llmhost.models.spec import ModelSpec
from llmhost.plan.common import GiB, Target, fmt_gib
from llmhost.plan.hardware_view import gpu_free_bytes, host_capacity_bytes, vllm_gpus
from llmhost.plan.models import Candidate, PlanRequest
from llmhost.plan.ranking import ENGINE_TITLES, launchable


def advise(
    spec: ModelSpec,
    hardware: Hardware,
    request: PlanRequest,
    target: Target,
    cands: list[Candidate],
    evaluate: Callable[[PlanRequest], list[Candidate]],
) -> list[str]:
    """Advice when nothing launchable fits; `evaluate` re-plans a changed request (fp8 KV, no --quant)."""
    advice: list[str] = []
    if any(c.fits and launchable(c) for c in cands):
        return advice
    convertible = [c for c in cands if c.fits and not launchable(c)]
    if convertible:
        best = convertible[0]  # already ranked
        speed = f" (~{best.decode_tokens_per_s:.0f} tok/s)" if best.decode_tokens_per_s else ""
        mlx_convert = best.engine_options.get("convert_command")
        gguf = next((r for r in best.reasons if "llmhost plan" in r), None)
        how = (
            gguf.split(": ", 1)[1].split(" (")[0]
            if gguf
            else "convert it with llama.cpp's convert_hf_to_gguf.py and llama-quantize, or plan a -GGUF repo"
        )
        if isinstance(mlx_convert, str):  # the MLX option's own conversion command
            advice.append(
                f"This checkpoint cannot run here as is, but its {best.quantization} MLX conversion would "
                f"fit with MLX LM{speed}. {mlx_convert}"
            )
        else:
            advice.append(
                f"This checkpoint cannot run here as is, but a {best.quantization} GGUF of it would fit "
                f"with llama.cpp{speed}: {how}."
            )
    if not cands:
        advice.append(_why_no_candidates(spec, hardware, request))
        return advice
    best_short = max(
        cands, key=lambda c: (c.max_context >= 1024, quality_score(c.quantization), c.max_context)
    )
    if 0 < best_short.max_context < target.context:
        engine = ENGINE_TITLES.get(best_short.engine, best_short.engine)
        advice.append(
            f"Shorter context: {best_short.quantization} on {engine} fits "
            f"`--context {best_short.max_context}`"
            + (" with one sequence" if target.concurrency > 1 else "")
            + "."
        )
    if request.kv_cache_dtype is None:
        trial = request.model_copy(update={"kv_cache_dtype": "fp8"})
        if any(c.fits and launchable(c) for c in evaluate(trial)):
            advice.append("An fp8 KV cache halves its size and fits: `--kv-cache-dtype fp8` (vLLM).")
        else:
            trial = request.model_copy(update={"kv_cache_dtype": "q8_0"})
            if any(c.fits and launchable(c) for c in evaluate(trial)):
                advice.append("A q8_0 KV cache fits: `--kv-cache-dtype q8_0` (llama.cpp).")
    if request.quantization is not None:
        free = request.model_copy(update={"quantization": None})
        fitting = [c for c in evaluate(free) if c.fits and launchable(c)]
        if fitting:
            best = max(fitting, key=lambda c: quality_score(c.quantization))
            advice.append(f"A smaller quantization fits: `--quant {best.quantization}`.")
    gpus = hardware.gpus
    smallest = min(cands, key=lambda c: c.memory.weights_bytes)
    if gpus:
        per_gpu = gpus[0].memory_total_bytes * oh.VLLM_DEFAULT_GPU_MEMORY_UTILIZATION - 2 * GiB
        kv_need = smallest.kv_bytes_per_token * target.context * target.concurrency
        need = smallest.memory.weights_bytes + kv_need
        n = max(1, math.ceil(need / per_gpu)) if per_gpu > 0 else 0
        n_pow = 1 << (n - 1).bit_length() if n else 0
        if n_pow > len(gpus):
            what_if = f" (try `--hardware {gpus[0].catalog_id}:{n_pow}`)" if gpus[0].catalog_id else ""
            advice.append(
                f"More GPUs: about {fmt_gib(need)} for {smallest.quantization} weights and KV needs {n_pow}x "
                f"{gpus[0].name}{what_if}."
            )
    ram = host_capacity_bytes(hardware)
    if smallest.memory.weights_bytes > ram + sum(gpu_free_bytes(g) for g in gpus):
        advice.append(
            f"Even {smallest.quantization} weights ({fmt_gib(smallest.memory.weights_bytes)}) exceed "
            "this machine's "
            f"free RAM and GPU memory together ({fmt_gib(ram + sum(gpu_free_bytes(g) for g in gpus))})."
        )
    return advice


def _why_no_candidates(spec: ModelSpec, hardware: Hardware, request: PlanRequest) -> str:
    own = own_quantization(spec)
    kv = normalize_kv_dtype(request.kv_cache_dtype) if request.kv_cache_dtype else None
    if kv is not None and request.engine == "llamacpp" and kv not in LLAMACPP_KV_TYPES:
        return f"llama.cpp has no {kv} KV cache; use `--kv-cache-dtype q8_0` (or q4_0, f16)."
    if kv is not None and request.engine == "vllm" and kv not in VLLM_KV_TYPES and kv != "auto":
        return f"vLLM has no {kv} KV cache; use `--kv-cache-dtype fp8` (or bf16)."
    if spec.quantization.method == "gguf" and request.engine == "vllm":
        return "llmhost runs GGUF files with llama.cpp; use `--engine llamacpp` (or the original checkpoint)."
    if request.quantization is not None:
        return (
            f"No engine here runs {spec.name} as {request.quantization}; drop `--quant` to see every option."
        )
    if spec.quantization.method != "gguf" and own not in (*SIXTEEN_BIT, "fp32") and not vllm_gpus(hardware):
        return (
            f"A {own} checkpoint needs vLLM on an NVIDIA or AMD GPU under Linux; here, use the original "
            "16-bit model or a GGUF version of it with llama.cpp."
        )
    if request.engine == "vllm":
        return (
            "vLLM needs Linux with an NVIDIA/AMD GPU (or an x86 CPU without GPUs) and a safetensors "
            "checkpoint; try `--engine llamacpp`."
        )
    return "No engine can run this model here; try another quantization or `--engine`."
