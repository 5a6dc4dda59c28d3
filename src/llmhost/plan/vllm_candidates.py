"""vLLM candidates: the GPU build (TP/PP, quantizations, utilization) and the CPU build."""

from __future__ import annotations

import math

from llmhost.bisection import last_true
from llmhost.errors import UsageError
from llmhost.estimate import overheads as oh
from llmhost.estimate.dtypes import VLLM_KV_TYPES, normalize_kv_dtype
from llmhost.estimate.kv import kv_bytes_per_token
from llmhost.estimate.vllm import (
    VllmSettings,
    cudagraph_bytes,
    default_max_num_batched_tokens,
    max_gpu_memory_utilization,
    vllm_cpu_memory,
    vllm_gpu_memory,
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
) -> Candidate | None:
    used = gpus[: tp * pp]
    kv_dtype = _vllm_kv_dtype(quant, request)
    if kv_dtype is None:
        return None
    reasons: list[Reason] = []
    if source:
        reasons.append(Reason.of(ReasonCode.PRE_QUANTIZED_SIBLING, quantization=quant, repo=source))
    total = min(g.memory_total_bytes for g in used)
    free = min(gpu_free_bytes(g) for g in used)
    graphs = cudagraph_bytes(spec, VllmSettings(0.9, 1, 1))
    util_cap = max_gpu_memory_utilization(total, free, graphs)
    util = request.gpu_memory_utilization or oh.VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
    util_ok = True
    held = max(gpu_held_bytes(g) for g in used)
    if util > util_cap:
        if request.gpu_memory_utilization is None and util_cap > 0.3:
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
        else:
            util_ok = False
            reasons.append(
                Reason.of(
                    ReasonCode.GPU_MEMORY_UTILIZATION_TOO_HIGH,
                    utilization=util,
                    total_bytes=total,
                    free_bytes=free,
                    held_bytes=held,
                    at_most=util_cap,
                )
            )
    mnbt = default_max_num_batched_tokens(total, used[0].name)
    max_num_seqs = max(oh.VLLM_DEFAULT_MAX_NUM_SEQS, target.concurrency)
    settings = VllmSettings(
        gpu_memory_utilization=util,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=mnbt,
        tensor_parallel_size=tp,
        kv_cache_dtype=kv_dtype,
        pipeline_parallel_size=pp,
    )
    layout = weights_layout(spec, quant)
    mem = vllm_gpu_memory(spec, layout, settings, total)
    context = target.context
    max_ctx = mem.max_context(spec.max_context)
    if not target.explicit and max_ctx < context and max_ctx >= target.floor:
        context = max_ctx // 256 * 256 if max_ctx >= 256 else max_ctx
        reasons.append(Reason.of(ReasonCode.CONTEXT_LOWERED, context=context, limit="kv_cache"))
    one = mem.request_bytes(context)
    max_conc = mem.max_concurrency(context)
    fits = util_ok and mem.kv_cache_bytes > 0 and max_conc >= target.concurrency
    if mem.kv_cache_bytes <= 0:
        reasons.append(
            Reason.of(
                ReasonCode.WEIGHTS_EXCEED_GPU,
                weights_bytes=mem.weights_bytes,
                utilization=util,
                total_bytes=total,
            )
        )
    elif max_conc < 1:
        reasons.append(
            Reason.of(
                ReasonCode.KV_CACHE_BELOW_ONE_SEQUENCE,
                context=context,
                request_bytes=one,
                kv_cache_bytes=mem.kv_cache_bytes,
                max_context=max_ctx,
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
    options: dict[str, str | int | float | bool] = {
        "gpu_memory_utilization": util,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": mnbt,
        "max_model_len": context,
        "enable_prefix_caching": True,
        "dtype": _vllm_dtype(quant, used),
        "kv_cache_dtype": _vllm_engine_kv(kv_dtype),
        "tensor_parallel_size": tp,
        "pipeline_parallel_size": pp,
    }
    if quant == "fp8" or quant in ("awq", "gptq"):
        options["quantization"] = quant
        # Only an online quantization needs vLLM's --quantization flag; a pre-quantized checkpoint
        # declares its method in config.json (and a mismatching flag makes vLLM refuse to start).
        options["quantize_online"] = quant == "fp8" and own_quantization(spec) != "fp8" and not source
    return Candidate(
        engine="vllm",
        quantization=quant,
        kv_cache_dtype=kv_dtype,
        context_length=context,
        concurrency=target.concurrency,
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        gpu_layers=None,
        fits=fits,
        memory=memory,
        per_device=per_device,
        kv_bytes_per_token=kv_bytes_per_token(spec, kv_dtype, engine="vllm"),
        max_context=min(max_ctx, spec.max_context),
        max_concurrency=max_conc,
        decode_tokens_per_s=speed,
        reasons_detail=reasons,
        model_source=source or source_of(spec),
        engine_options=options,
    )


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
    return Candidate(
        engine="vllm",
        quantization=quant,
        kv_cache_dtype=kv_dtype,
        context_length=context,
        concurrency=target.concurrency,
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
        kv_bytes_per_token=kv_bytes_per_token(spec, kv_dtype, engine="vllm"),
        max_context=max_ctx,
        max_concurrency=max_conc,
        decode_tokens_per_s=speed,
        reasons_detail=reasons,
        model_source=source_of(spec),
        engine_options={
            "device": "cpu",
            "cpu_kv_cache_gib": kv_gib,
            "max_num_seqs": settings.max_num_seqs,
            "max_num_batched_tokens": settings.max_num_batched_tokens,
            "max_model_len": context,
            "enable_prefix_caching": True,
            "dtype": "bfloat16",
            "kv_cache_dtype": _vllm_engine_kv(kv_dtype),
            "threads": hardware.cpu.physical_cores or hardware.cpu.logical_cores,
        },
    )
