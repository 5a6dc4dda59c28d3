"""vLLM candidates: the GPU build (TP/PP, quantizations, utilization) and the CPU build."""

from __future__ import annotations

import math
from typing import Any

from llmhost.bisection import last_true
from llmhost.engine_ids import VLLM
from llmhost.errors import UsageError
from llmhost.estimate import overheads as oh
from llmhost.estimate import vllm_versions as vv
from llmhost.estimate.dtypes import VLLM_KV_TYPES, normalize_kv_dtype
from llmhost.estimate.kv import kv_bytes_per_token
from llmhost.estimate.vllm import (
    StartFailure,
    VllmMemory,
    VllmSettings,
    has_nvswitch,
    max_gpu_memory_utilization,
    moe_sharding,
    start_failure,
    vllm_cpu_memory,
    vllm_gpu_memory,
    vllm_total_bytes,
)
from llmhost.estimate.weights import SIXTEEN_BIT, own_quantization, weights_layout
from llmhost.hardware.models import GPU, Hardware
from llmhost.models.spec import ModelSpec
from llmhost.plan.common import (
    SPEED_CONTEXT,
    GiB,
    Target,
    max_length,
    source_of,
    sum_breakdowns,
    tokens_per_s,
    weight_read_bytes,
)
from llmhost.plan.hardware_view import (
    bf16_capable,
    device_name,
    fp8_capable,
    gpu_free_bytes,
    gpu_held_bytes,
    host_capacity_bytes,
)
from llmhost.plan.models import Candidate, DeviceMemory, MemoryBreakdown, PlanRequest
from llmhost.plan.options import VllmOptions
from llmhost.plan.reasons import Reason, ReasonCode


def vllm_quants(spec: ModelSpec, gpus: list[GPU]) -> list[str]:
    own = own_quantization(spec)
    if spec.quantization.method == "gguf":
        return []
    if own in SIXTEEN_BIT or own == "fp32":
        base = own if own in SIXTEEN_BIT else "bf16"
        if gpus and not all(bf16_capable(g) for g in gpus):
            base = "fp16"
        quants = [base]
        if gpus and all(fp8_capable(g) for g in gpus):
            quants.append("fp8")
        return quants
    return [own]


def tp_sizes(spec: ModelSpec, n_gpus: int, request: PlanRequest) -> list[int]:
    heads = spec.attention.num_attention_heads
    kv = max(spec.attention.num_kv_heads, default=1) or 1
    if request.tensor_parallel_size is not None:
        tp = request.tensor_parallel_size
        if heads % tp:
            valid = [t for t in (1, 2, 4, 8, 16) if heads % t == 0 and t <= max(n_gpus, 1)]
            raise UsageError(
                f"Tensor parallel size {tp} does not divide {spec.name}'s {heads} attention heads.",
                hint=f"Use one of: {', '.join(map(str, valid))}.",
            )
        return [tp] if tp <= n_gpus else []
    sizes = []
    t = 1
    while t <= n_gpus:
        if heads % t == 0 and (kv % t == 0 or t % kv == 0):
            sizes.append(t)
        t *= 2
    return sizes


def _vllm_kv_dtype(quant_dtype: str, request: PlanRequest) -> str | None:
    if request.kv_cache_dtype is None:
        return "fp16" if quant_dtype == "fp16" else "bf16"
    kv = normalize_kv_dtype(request.kv_cache_dtype)
    if kv in ("f16", "fp16"):
        return "fp16"
    if kv == "auto":
        return "fp16" if quant_dtype == "fp16" else "bf16"
    return kv if kv in VLLM_KV_TYPES else None


def _vllm_engine_kv(kv: str) -> str:
    return "auto" if kv in ("bf16", "fp16") else kv


def _vllm_dtype(quant: str, gpus: list[GPU]) -> str:
    if quant == "fp16" or (gpus and not all(bf16_capable(g) for g in gpus)):
        return "float16"
    if quant == "bf16":
        return "bfloat16"
    return "auto"


def planned_vllm_version(request: PlanRequest) -> vv.VllmVersion:
    """The vLLM release the plan is made for: --vllm-version, the installed engine's (the app layer
    fills it in), else the newest release whose memory accounting llmhost models."""
    return vv.parse_version(request.vllm_version or vv.NEWEST_MODELLED)


def start_failure_reason(
    failure: StartFailure,
    mem: VllmMemory,
    free: int,
    held: int,
    context: int,
    max_ctx: int,
    used: list[GPU],
) -> Reason:
    """Why vLLM would not start, said the way vLLM fails, with what would help."""
    util = mem.requested_bytes / mem.total_bytes if mem.total_bytes else 0.0
    budget = {"utilization": util, "total_bytes": mem.total_bytes}
    if failure == "utilization_exceeds_free":
        return Reason.of(
            ReasonCode.VLLM_UTILIZATION_EXCEEDS_FREE,
            free_bytes=max(free - mem.context_bytes, 0),
            device=device_name(used[0]),
            held_bytes=held,
            at_most=max_gpu_memory_utilization(mem.total_bytes, free),
            **budget,
        )
    if failure == "weights_exceed_budget":
        return Reason.of(ReasonCode.VLLM_WEIGHTS_EXCEED_BUDGET, weights_bytes=mem.weights_bytes, **budget)
    if failure == "no_kv_memory":
        return Reason.of(
            ReasonCode.VLLM_NO_KV_MEMORY,
            weights_bytes=mem.weights_bytes,
            activation_bytes=mem.activation_bytes,
            **budget,
        )
    if failure == "max_len_exceeds_kv":
        return Reason.of(
            ReasonCode.VLLM_MAX_LEN_EXCEEDS_KV,
            context=context,
            request_bytes=mem.request_bytes(context),
            kv_cache_bytes=mem.kv_cache_bytes,
            max_context=max_ctx,
        )
    return Reason.of(ReasonCode.VLLM_CUDA_GRAPHS_AFTER_KV, cudagraph_bytes=mem.cudagraph_bytes, **budget)


def vllm_gpu_candidate(
    spec: ModelSpec,
    hardware: Hardware,
    request: PlanRequest,
    target: Target,
    quant: str,
    tp: int,
    gpus: list[GPU],
    source: str | None = None,
    pp: int = 1,
    dp: int = 1,
) -> Candidate | None:
    used = gpus[: tp * pp * dp]
    kv_dtype = _vllm_kv_dtype(quant, request)
    if kv_dtype is None:
        return None
    reasons: list[Reason] = []
    if source:
        reasons.append(Reason.of(ReasonCode.PRE_QUANTIZED_SIBLING, quantization=quant, repo=source))
    version = planned_vllm_version(request)
    gen = vv.default_generation(version)
    accounting = vv.accounting(version, gen)
    total = vllm_total_bytes(min(g.memory_total_bytes for g in used))
    # torch's free memory: NVML's free, never above the total torch reports.
    free = min(min(gpu_free_bytes(g) for g in used), total)
    held = max(gpu_held_bytes(g) for g in used)
    free_check = gen == "v1" and version >= vv.VllmVersion(0, 9, 0)
    # vLLM's start-up check (V1 from 0.9): free memory after its CUDA context >= total x util.
    util_cap = max_gpu_memory_utilization(total, free)
    util = request.gpu_memory_utilization or oh.VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
    if util > util_cap and request.gpu_memory_utilization is None and util_cap > 0.3:
        reasons.append(
            Reason.of(
                ReasonCode.GPU_MEMORY_UTILIZATION_LOWERED,
                held_bytes=held,
                device=device_name(used[0]),
                planned=util,
                lowered=util_cap,
            )
        )
        util = util_cap
    defaults = vv.scheduler_defaults(version, total, used[0].name, target.context, gen)
    mnbt = request.max_num_batched_tokens or defaults.max_num_batched_tokens
    if request.max_num_seqs is not None:
        max_num_seqs = request.max_num_seqs
    else:
        # Capped at the token budget as vLLM 0.11+ caps its default (and as every vLLM requires of
        # the value llmhost passes: max_num_batched_tokens >= max_num_seqs).
        max_num_seqs = min(max(defaults.max_num_seqs, target.concurrency), mnbt)
    settings = VllmSettings(
        gpu_memory_utilization=util,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=mnbt,
        tensor_parallel_size=tp,
        kv_cache_dtype=kv_dtype,
        pipeline_parallel_size=pp,
        accounting=accounting,
        nvswitch=tp * pp * dp > 1 and all(has_nvswitch(g.name, g.compute_capability) for g in used),
        data_parallel_size=dp,
        enable_expert_parallel=request.enable_expert_parallel,
    )
    layout = weights_layout(spec, quant)
    mem = vllm_gpu_memory(spec, layout, settings, total)
    context = target.context
    max_ctx = mem.max_context(spec.max_context)
    if not target.explicit and max_ctx < context and max_ctx >= target.floor:
        context = max_ctx // 256 * 256 if max_ctx >= 256 else max_ctx
        reasons.append(Reason.of(ReasonCode.CONTEXT_LOWERED, context=context, limit="kv_cache"))
    # vLLM schedules at most max_num_seqs sequences at once, whatever the KV cache holds; with data
    # parallelism each of the dp replicas has its own scheduler and KV pool.
    max_conc = min(mem.max_concurrency(context), max_num_seqs) * dp
    failure = start_failure(mem, free, context, free_check=free_check)
    fits = failure is None and max_conc >= target.concurrency
    if failure is not None:
        reasons.append(start_failure_reason(failure, mem, free, held, context, max_ctx, used))
    elif max_num_seqs * dp < target.concurrency:
        fits = False
        reasons.append(
            Reason.of(
                ReasonCode.MAX_NUM_SEQS_BELOW_CONCURRENCY, max_num_seqs=max_num_seqs, asked=target.concurrency
            )
        )
    elif max_conc < target.concurrency:
        reasons.append(
            Reason.of(
                ReasonCode.KV_CACHE_FEWER_SEQUENCES,
                sequences=max_conc,
                context=context,
                asked=target.concurrency,
            )
        )
    else:
        reasons.append(
            Reason.of(
                ReasonCode.KV_CACHE_SEQUENCES,
                kv_cache_bytes=mem.kv_cache_bytes,
                sequences=max_conc,
                context=context,
            )
        )
    if tp > 1:
        kv_heads = max(spec.attention.num_kv_heads, default=0)
        if "mla" in spec.attention.layer_kinds:
            reasons.append(Reason.of(ReasonCode.TENSOR_PARALLEL_MLA, tp=tp))
        elif kv_heads and tp > kv_heads:
            reasons.append(
                Reason.of(
                    ReasonCode.TENSOR_PARALLEL_KV_REPLICATED,
                    tp=tp,
                    kv_heads=kv_heads,
                    replicas=tp // kv_heads,
                )
            )
        else:
            reasons.append(Reason.of(ReasonCode.TENSOR_PARALLEL, tp=tp))
    if pp > 1:
        reasons.append(Reason.of(ReasonCode.PIPELINE_PARALLEL, pp=pp))
    if dp > 1:
        _, ep = moe_sharding(settings)
        experts = "none" if spec.moe is None else "whole" if ep > 1 else "sliced"
        reasons.append(Reason.of(ReasonCode.DATA_PARALLEL, dp=dp, gpus=tp * dp, experts=experts))
    if quant == "fp8" and own_quantization(spec) != "fp8" and not source:
        reasons.append(Reason.of(ReasonCode.FP8_ONLINE))
    kv_pool = max(mem.kv_cache_bytes, 0)
    per_rank = MemoryBreakdown(
        weights_bytes=mem.weights_bytes,
        kv_cache_bytes=kv_pool,
        compute_bytes=mem.activation_bytes + mem.cudagraph_bytes,
        overhead_bytes=mem.non_torch_bytes + mem.context_bytes,
        total_bytes=mem.weights_bytes
        + kv_pool
        + mem.activation_bytes
        + mem.cudagraph_bytes
        + mem.non_torch_bytes
        + mem.context_bytes,
    )
    read = weight_read_bytes(spec, layout) // (tp * pp)
    per_device = [
        DeviceMemory(
            device=device_name(g),
            breakdown=per_rank,
            capacity_bytes=gpu_free_bytes(g),
            decode_read_bytes=read,
        )
        for g in used
    ]
    memory = sum_breakdowns([d.breakdown for d in per_device])
    kv_rank = mem.kv.bytes_per_token
    # Tensor-parallel ranks read at the same time; pipeline stages one after another.
    speed = tokens_per_s(
        [(read + kv_rank * min(context, SPEED_CONTEXT), g.memory_bandwidth_bytes_per_s) for g in used[:tp]],
        parallel=True,
    )
    if speed is not None and pp > 1:
        speed = round(speed / pp, 1)
    quantized = quant == "fp8" or quant in ("awq", "gptq")
    # Only an online quantization needs vLLM's --quantization flag; a pre-quantized checkpoint declares
    # its method in config.json (and a mismatching flag makes vLLM refuse to start).
    online = quant == "fp8" and own_quantization(spec) != "fp8" and not source
    options = VllmOptions(
        gpu_memory_utilization=util,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=mnbt,
        max_model_len=context,
        enable_prefix_caching=True,
        dtype=_vllm_dtype(quant, used),
        kv_cache_dtype=_vllm_engine_kv(kv_dtype),
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        data_parallel_size=dp if dp > 1 else None,
        enable_expert_parallel=True if request.enable_expert_parallel else None,
        quantization=quant if quantized else None,
        quantize_online=online if quantized else None,
    )
    return Candidate(
        **_shared(spec, quant, kv_dtype, context, target, options),
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        fits=fits,
        memory=memory,
        per_device=per_device,
        max_context=min(max_ctx, spec.max_context),
        max_concurrency=max_conc,
        decode_tokens_per_s=speed,
        reasons_detail=reasons,
        model_source=source or source_of(spec),
    )


def _shared(
    spec: ModelSpec, quant: str, kv_dtype: str, context: int, target: Target, options: VllmOptions
) -> dict[str, Any]:
    """The fields every vLLM candidate (GPU and CPU) fills in the same way."""
    return {
        "engine": VLLM,
        "quantization": quant,
        "kv_cache_dtype": kv_dtype,
        "context_length": context,
        "concurrency": target.concurrency,
        "kv_bytes_per_token": kv_bytes_per_token(spec, kv_dtype, engine=VLLM),
        "engine_options": options,
    }


def vllm_cpu_candidate(
    spec: ModelSpec, hardware: Hardware, request: PlanRequest, target: Target
) -> Candidate | None:
    own = own_quantization(spec)
    if spec.quantization.method == "gguf" or own not in (*SIXTEEN_BIT, "fp32"):
        return None
    kv_dtype = _vllm_kv_dtype("bf16", request)
    if kv_dtype is None:
        return None
    quant = "bf16"
    settings = VllmSettings(
        gpu_memory_utilization=1.0,
        max_num_seqs=max(target.concurrency, 1),
        max_num_batched_tokens=oh.VLLM_CPU_MNBT,
        kv_cache_dtype=kv_dtype,
    )
    layout = weights_layout(spec, quant)
    base = vllm_cpu_memory(spec, layout, settings, 0)
    budget = host_capacity_bytes(hardware) - base.total_bytes
    context = target.context
    need = base.request_bytes(context) * target.concurrency
    reasons: list[Reason] = []
    if budget > 0 and need > budget and not target.explicit:
        lo = last_true(lambda n: base.request_bytes(n) * target.concurrency <= budget, 16, context, step=256)
        if lo >= target.floor:
            context = lo // 256 * 256
            need = base.request_bytes(context) * target.concurrency
            reasons.append(Reason.of(ReasonCode.CONTEXT_LOWERED, context=context, limit="kv_cache_ram"))
    # VLLM_CPU_KVCACHE_SPACE is whole GiB: what the context x concurrency needs, raised to vLLM's
    # 4 GiB default when RAM has room for it (spare KV is prefix-cache space).
    want = max(math.ceil(need / GiB), 1)
    room = max(budget, 0) // GiB
    kv_gib = min(max(want, oh.VLLM_CPU_DEFAULT_KV_GIB), room) if room >= want else want
    mem = vllm_cpu_memory(spec, layout, settings, kv_gib * GiB)
    fits = room >= want and mem.total_bytes <= host_capacity_bytes(hardware)
    one = mem.request_bytes(context)
    max_conc = (mem.kv_cache_bytes if fits else max(budget, 0)) // one if one else 0
    max_ctx = max_length(lambda n: mem.request_bytes(n) <= max(budget, 0), spec.max_context)
    if fits:
        reasons.append(Reason.of(ReasonCode.VLLM_CPU_KV_CACHE, kv_cache_gib=kv_gib))
    else:
        reasons.append(
            Reason.of(
                ReasonCode.NEEDS_RAM,
                need_bytes=base.total_bytes + need,
                available_bytes=host_capacity_bytes(hardware),
            )
        )
    breakdown = MemoryBreakdown(
        weights_bytes=mem.weights_bytes,
        kv_cache_bytes=mem.kv_cache_bytes,
        compute_bytes=mem.activation_bytes,
        overhead_bytes=mem.runtime_bytes,
        total_bytes=mem.total_bytes,
    )
    read = weight_read_bytes(spec, layout)
    speed = tokens_per_s(
        [
            (
                read + mem.kv.bytes_per_token * min(context, SPEED_CONTEXT),
                hardware.cpu.memory_bandwidth_bytes_per_s,
            )
        ],
        parallel=False,
    )
    options = VllmOptions(
        device="cpu",
        cpu_kv_cache_gib=kv_gib,
        max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        max_model_len=context,
        enable_prefix_caching=True,
        dtype="bfloat16",
        kv_cache_dtype=_vllm_engine_kv(kv_dtype),
        threads=hardware.cpu.physical_cores or hardware.cpu.logical_cores,
    )
    return Candidate(
        **_shared(spec, quant, kv_dtype, context, target, options),
        fits=fits,
        memory=breakdown,
        per_device=[
            DeviceMemory(
                device="cpu",
                breakdown=breakdown,
                capacity_bytes=host_capacity_bytes(hardware),
                decode_read_bytes=read,
            )
        ],
        max_context=max_ctx,
        max_concurrency=max_conc,
        decode_tokens_per_s=speed,
        reasons_detail=reasons,
        model_source=source_of(spec),
    )
