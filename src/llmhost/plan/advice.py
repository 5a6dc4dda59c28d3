"""What would fit when nothing does: shorter context, fp8/q8_0 KV, other quantization, more GPUs.

Advice is made of `Reason`s too (`Plan.advice_detail`); what it needs from a candidate it reads from that
candidate's reason fields (the MLX conversion command, the GGUF sibling's repo), never from its sentences.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from llmhost.engine_ids import LLAMACPP, VLLM
from llmhost.estimate import overheads as oh
from llmhost.estimate.dtypes import LLAMACPP_KV_TYPES, VLLM_KV_TYPES, normalize_kv_dtype
from llmhost.estimate.weights import SIXTEEN_BIT, own_quantization, quality_score
from llmhost.hardware.models import Hardware
from llmhost.models.spec import ModelSpec
from llmhost.plan.common import GiB, Target
from llmhost.plan.hardware_view import gpu_free_bytes, host_capacity_bytes, vllm_gpus
from llmhost.plan.models import Candidate, PlanRequest
from llmhost.plan.ranking import launchable
from llmhost.plan.reasons import Reason, first
from llmhost.plan.reasons import ReasonCode as Code


def advise(
    spec: ModelSpec,
    hardware: Hardware,
    request: PlanRequest,
    target: Target,
    cands: list[Candidate],
    evaluate: Callable[[PlanRequest], list[Candidate]],
) -> list[Reason]:
    """Advice when nothing launchable fits; `evaluate` re-plans a changed request (fp8 KV, no --quant)."""
    advice: list[Reason] = []
    if any(c.fits and launchable(c) for c in cands):
        return advice
    convertible = [c for c in cands if c.fits and not launchable(c)]
    if convertible:
        best = convertible[0]  # already ranked
        speed = best.decode_tokens_per_s
        mlx = first(best.reasons_detail, Code.NEEDS_MLX_CONVERSION)
        if mlx is not None:  # the MLX option's own conversion command
            command = mlx.fields["command"]
            advice.append(
                Reason.of(
                    Code.ADVICE_MLX_CONVERSION, quantization=best.quantization, speed=speed, command=command
                )
            )
        else:
            sibling = first(best.reasons_detail, Code.NEEDS_GGUF_SIBLING)
            repo = sibling.fields["repo"] if sibling is not None else None
            advice.append(
                Reason.of(Code.ADVICE_GGUF_CONVERSION, quantization=best.quantization, speed=speed, repo=repo)
            )
    int4 = _prequantized_int4_advice(spec, hardware, request, target, cands)
    if int4:
        advice.append(int4)
    if not cands:
        advice.append(_why_no_candidates(spec, hardware, request))
        return advice
    best_short = max(
        cands, key=lambda c: (c.max_context >= 1024, quality_score(c.quantization), c.max_context)
    )
    if 0 < best_short.max_context < target.context:
        advice.append(
            Reason.of(
                Code.ADVICE_SHORTER_CONTEXT,
                quantization=best_short.quantization,
                engine=best_short.engine,
                context=best_short.max_context,
                one_sequence=target.concurrency > 1,
            )
        )
    if request.kv_cache_dtype is None:
        trial = request.model_copy(update={"kv_cache_dtype": "fp8"})
        if any(c.fits and launchable(c) for c in evaluate(trial)):
            advice.append(Reason.of(Code.ADVICE_FP8_KV_CACHE))
        else:
            trial = request.model_copy(update={"kv_cache_dtype": "q8_0"})
            if any(c.fits and launchable(c) for c in evaluate(trial)):
                advice.append(Reason.of(Code.ADVICE_Q8_0_KV_CACHE))
    if request.quantization is not None:
        free = request.model_copy(update={"quantization": None})
        fitting = [c for c in evaluate(free) if c.fits and launchable(c)]
        if fitting:
            best = max(fitting, key=lambda c: quality_score(c.quantization))
            advice.append(Reason.of(Code.ADVICE_SMALLER_QUANTIZATION, quantization=best.quantization))
    gpus = hardware.gpus
    smallest = min(cands, key=lambda c: c.memory.weights_bytes)
    if gpus:
        per_gpu = gpus[0].memory_total_bytes * oh.VLLM_DEFAULT_GPU_MEMORY_UTILIZATION - 2 * GiB
        kv_need = smallest.kv_bytes_per_token * target.context * target.concurrency
        need = smallest.memory.weights_bytes + kv_need
        n = max(1, math.ceil(need / per_gpu)) if per_gpu > 0 else 0
        n_pow = 1 << (n - 1).bit_length() if n else 0
        if n_pow > len(gpus):
            advice.append(
                Reason.of(
                    Code.ADVICE_MORE_GPUS,
                    need_bytes=need,
                    quantization=smallest.quantization,
                    count=n_pow,
                    gpu=gpus[0].name,
                    catalog_id=gpus[0].catalog_id,
                )
            )
    capacity = host_capacity_bytes(hardware) + sum(gpu_free_bytes(g) for g in gpus)
    if smallest.memory.weights_bytes > capacity:
        advice.append(
            Reason.of(
                Code.ADVICE_EXCEEDS_MACHINE,
                quantization=smallest.quantization,
                weights_bytes=smallest.memory.weights_bytes,
                capacity_bytes=capacity,
            )
        )
    return advice


def _prequantized_int4_advice(
    spec: ModelSpec, hardware: Hardware, request: PlanRequest, target: Target, cands: list[Candidate]
) -> Reason | None:
    """For a 16-bit checkpoint no vLLM option fits: what a pre-quantized AWQ/GPTQ INT4 checkpoint of the
    same model would do with vLLM (weights priced from the AWQ layout: 4-bit qweight, a 16-bit scale and
    a 4-bit zero per 128 inputs, embeddings and lm_head 16-bit). Known Hub siblings are planned as
    candidates of their own (`make_plan(siblings=...)`); this names the option when none was found."""
    from llmhost.plan.vllm_candidates import tp_sizes, vllm_gpu_candidate

    gpus = sorted(vllm_gpus(hardware), key=lambda g: g.index)
    if own_quantization(spec) not in SIXTEEN_BIT or not gpus or request.engine not in (None, VLLM):
        return None
    if request.quantization is not None or any(c.engine == VLLM and c.fits for c in cands):
        return None
    options = [
        vllm_gpu_candidate(spec, hardware, request, target, "awq", tp, gpus)
        for tp in tp_sizes(spec, len(gpus), request)
    ]
    usable = [c for c in options if c is not None and (c.fits or c.max_context >= 1024)]
    if not usable:
        return None
    c = next((c for c in usable if c.fits), usable[-1])
    return Reason.of(
        Code.ADVICE_PREQUANTIZED_INT4,
        tp=c.tensor_parallel_size,
        weights_bytes=c.memory.weights_bytes,
        concurrency=c.max_concurrency,
        context=c.context_length,
        max_context=None if c.fits else c.max_context,
        repo=spec.repo_id,
    )


def _why_no_candidates(spec: ModelSpec, hardware: Hardware, request: PlanRequest) -> Reason:
    own = own_quantization(spec)
    kv = normalize_kv_dtype(request.kv_cache_dtype) if request.kv_cache_dtype else None
    if kv is not None and request.engine == LLAMACPP and kv not in LLAMACPP_KV_TYPES:
        return Reason.of(Code.NO_LLAMACPP_KV_TYPE, kv=kv)
    if kv is not None and request.engine == VLLM and kv not in VLLM_KV_TYPES and kv != "auto":
        return Reason.of(Code.NO_VLLM_KV_TYPE, kv=kv)
    if spec.quantization.method == "gguf" and request.engine == VLLM:
        return Reason.of(Code.GGUF_NEEDS_LLAMACPP)
    if request.quantization is not None:
        return Reason.of(Code.NO_ENGINE_FOR_QUANTIZATION, model=spec.name, quantization=request.quantization)
    if spec.quantization.method != "gguf" and own not in (*SIXTEEN_BIT, "fp32") and not vllm_gpus(hardware):
        return Reason.of(Code.QUANTIZED_NEEDS_VLLM_GPU, quantization=own)
    if request.engine == VLLM:
        return Reason.of(Code.VLLM_CANNOT_RUN_HERE)
    return Reason.of(Code.NO_ENGINE)
