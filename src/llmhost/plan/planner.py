"""`make_plan`: every engine x quantization x parallelism x context the hardware allows, ranked.

Pure and deterministic: a `ModelSpec`, a `Hardware` and a `PlanRequest` in, a `Plan` out.
Policy (docs/planning.md): candidates that fit the requested context and concurrency come first;
then, by goal,
- quality (default): launchable as is, at least ~3.5-bit quality, everything on the accelerator,
  highest-precision quantization, vLLM before llama.cpp, fewest GPUs;
- latency: the same gates, then the fastest single-stream decode;
- throughput: the same gates, vLLM first, then the most concurrent sequences at the context.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from llmhost.errors import UsageError
from llmhost.estimate import overheads as oh
from llmhost.estimate.dtypes import (
    LLAMACPP_KV_TYPES,
    VLLM_KV_TYPES,
    is_quantized_kv,
    normalize_kv_dtype,
)
from llmhost.estimate.kv import kv_bytes_per_token
from llmhost.estimate.llamacpp import (
    Device,
    DeviceBuffers,
    LlamaCppSettings,
    layer_kv_per_token,
    llamacpp_memory,
    pad_ctx,
)
from llmhost.estimate.roofline import active_weight_fraction, seconds_per_token
from llmhost.estimate.vllm import (
    VllmSettings,
    cudagraph_bytes,
    default_max_num_batched_tokens,
    max_gpu_memory_utilization,
    vllm_cpu_memory,
    vllm_gpu_memory,
)
from llmhost.estimate.weights import (
    GGUF_STANDARD_QUANTS,
    SIXTEEN_BIT,
    WeightsLayout,
    normalize_gguf_tag,
    own_quantization,
    quality_score,
    weights_layout,
)
from llmhost.hardware.models import GPU, Hardware
from llmhost.models.spec import ModelSpec, QuantizedVariant
from llmhost.plan.hardware_view import (
    bf16_capable,
    device_name,
    fp8_capable,
    gpu_free_bytes,
    gpu_held_bytes,
    host_capacity_bytes,
    vllm_cpu_supported,
    vllm_gpus,
)
from llmhost.plan.models import Candidate, DeviceMemory, MemoryBreakdown, Plan, PlanModel, PlanRequest

GiB = oh.GiB
DEFAULT_CONTEXT_CAP = 32768
DEFAULT_CONTEXT_FLOOR = 8192
SPEED_CONTEXT = 4096
MAX_PLANNED_CONCURRENCY = 1024
QUALITY_FLOOR = 60


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


@dataclass(frozen=True)
class _Target:
    context: int
    floor: int
    explicit: bool
    concurrency: int


def _validate(spec: ModelSpec, request: PlanRequest) -> _Target:
    if request.concurrency < 1:
        raise UsageError("--concurrency must be at least 1.", hint="Try `--concurrency 1`.")
    if request.context is not None and request.context < 16:
        raise UsageError(
            f"--context {request.context} is too small.", hint="Give a context of at least 16 tokens."
        )
    if request.context is not None and request.context > spec.max_context:
        raise UsageError(
            f"--context {request.context} is longer than {spec.name}'s maximum context ({spec.max_context}).",
            hint=f"Use `--context {spec.max_context}` or less.",
        )
    util = request.gpu_memory_utilization
    if util is not None and not 0 < util <= 1:
        raise UsageError(
            f"--gpu-memory-utilization {util} is out of range.",
            hint="Give a share of total memory in (0, 1].",
        )
    if request.kv_cache_dtype is not None:
        kv = normalize_kv_dtype(request.kv_cache_dtype)
        if kv not in LLAMACPP_KV_TYPES and kv not in VLLM_KV_TYPES and kv != "auto":
            raise UsageError(
                f"Unknown --kv-cache-dtype {request.kv_cache_dtype!r}.",
                hint="Use f16, bf16, fp8 (vLLM), q8_0, q5_1, q5_0, q4_1 or q4_0 (llama.cpp).",
            )
    if request.tensor_parallel_size is not None and request.tensor_parallel_size < 1:
        raise UsageError("--tensor-parallel-size must be at least 1.")
    if request.context is not None:
        return _Target(request.context, request.context, True, request.concurrency)
    cap = min(spec.max_context, DEFAULT_CONTEXT_CAP)
    return _Target(cap, min(spec.max_context, DEFAULT_CONTEXT_FLOOR), False, request.concurrency)


def _requested_quant(spec: ModelSpec, request: PlanRequest) -> str | None:
    if request.quantization is None:
        return None
    q = request.quantization.strip()
    low = q.lower()
    if low in ("bf16", "bfloat16"):
        return "bf16" if spec.quantization.method != "gguf" else "BF16"
    if low in ("fp16", "float16", "f16"):
        return "fp16" if spec.quantization.method != "gguf" else "F16"
    if low in ("fp8", "awq", "gptq"):
        return low
    tag = normalize_gguf_tag(q)
    if quality_score(tag) == 50 and tag not in {normalize_gguf_tag(v.tag) for v in spec.gguf_variants}:
        raise UsageError(
            f"Unknown quantization {request.quantization!r}.",
            hint="Use bf16, fp16, fp8, awq, gptq or a GGUF type (Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q3_K_M, Q2_K).",
        )
    return tag


# ---------------------------------------------------------------- vLLM (GPU)


def _vllm_quants(spec: ModelSpec, gpus: list[GPU]) -> list[str]:
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


def _tp_sizes(spec: ModelSpec, n_gpus: int, request: PlanRequest) -> list[int]:
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


def _vllm_gpu_candidate(
    spec: ModelSpec,
    hardware: Hardware,
    request: PlanRequest,
    target: _Target,
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
    reasons: list[str] = []
    if source:
        reasons.append(f"pre-quantized {quant} checkpoint {source} (found through the Hub's model tree)")
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
                f"other processes hold {_gib(held)} on {device_name(used[0])}: gpu_memory_utilization "
                f"lowered from {util:.2f} to {util_cap:.2f} (it is a share of TOTAL memory)"
            )
            util = util_cap
        else:
            util_ok = False
            reasons.append(
                f"vLLM would not start: gpu_memory_utilization {util:.2f} x {_gib(total)} plus its CUDA "
                f"context and graphs exceed the {_gib(free)} free (other processes hold {_gib(held)}); "
                f"at most {util_cap:.2f} works"
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
        reasons.append(f"context lowered to {context} so the KV cache holds it")
    one = mem.request_bytes(context)
    max_conc = mem.max_concurrency(context)
    fits = util_ok and mem.kv_cache_bytes > 0 and max_conc >= target.concurrency
    if mem.kv_cache_bytes <= 0:
        reasons.append(
            f"weights ({_gib(mem.weights_bytes)} per GPU) plus activations and CUDA graphs exceed "
            f"{util:.2f} x {_gib(total)}"
        )
    elif max_conc < 1:
        reasons.append(
            f"vLLM would fail at start-up: max seq len ({context}) needs {_gib(one)} of KV cache, "
            "larger than "
            f"the {_gib(mem.kv_cache_bytes)} available; `--max-model-len {max_ctx}` would work"
        )
    elif max_conc < target.concurrency:
        reasons.append(
            f"KV cache holds {max_conc} sequences of {context} tokens, "
            f"fewer than the {target.concurrency} asked"
        )
    else:
        reasons.append(
            f"KV cache {_gib(mem.kv_cache_bytes)} per GPU: {max_conc} sequences of {context} tokens at once"
        )
    if tp > 1:
        kv_heads = max(spec.attention.num_kv_heads, default=0)
        if "mla" in spec.attention.layer_kinds:
            reasons.append(
                f"tensor parallel {tp}: weights split, the MLA latent cache is replicated on every GPU"
            )
        elif kv_heads and tp > kv_heads:
            reasons.append(
                f"tensor parallel {tp} > {kv_heads} KV heads: KV heads replicated {tp // kv_heads}x"
            )
        else:
            reasons.append(f"tensor parallel {tp}: weights and KV heads split over {tp} GPUs")
    if pp > 1:
        reasons.append(
            f"pipeline parallel {pp}: each GPU holds about 1/{pp} of the layers and their KV cache "
            "(tensor parallelism cannot divide the attention heads over this many GPUs)"
        )
    if quant == "fp8" and own_quantization(spec) != "fp8" and not source:
        reasons.append("fp8 weights quantized online by vLLM (GPU compute capability >= 8.9)")
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
    read = _read_bytes(spec, layout) // (tp * pp)
    per_device = [
        DeviceMemory(
            device=device_name(g),
            breakdown=per_rank,
            capacity_bytes=gpu_free_bytes(g),
            decode_read_bytes=read,
        )
        for g in used
    ]
    memory = _sum_breakdowns([d.breakdown for d in per_device])
    kv_rank = mem.kv.bytes_per_token
    # Tensor-parallel ranks read at the same time; pipeline stages one after another.
    speed = _speed(
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
        reasons=reasons,
        model_source=source or _model_source(spec),
        engine_options=options,
    )


def _read_bytes(spec: ModelSpec, layout: WeightsLayout) -> int:
    frac = active_weight_fraction(spec)
    body = sum(layout.layer_bytes)
    output = layout.output_bytes if layout.output_bytes > 0 else layout.embedding_bytes
    return round(body * frac) + output + layout.other_bytes


def _speed(reads: list[tuple[int, float | None]], *, parallel: bool) -> float | None:
    sec = seconds_per_token(reads, parallel=parallel)
    return None if sec is None else round(1.0 / sec, 1)


def _sum_breakdowns(parts: list[MemoryBreakdown]) -> MemoryBreakdown:
    return MemoryBreakdown(
        weights_bytes=sum(p.weights_bytes for p in parts),
        kv_cache_bytes=sum(p.kv_cache_bytes for p in parts),
        compute_bytes=sum(p.compute_bytes for p in parts),
        overhead_bytes=sum(p.overhead_bytes for p in parts),
        total_bytes=sum(p.total_bytes for p in parts),
    )


def _model_source(spec: ModelSpec) -> str:
    return spec.repo_id or spec.ref


# ---------------------------------------------------------------- vLLM (CPU build)


def _vllm_cpu_candidate(
    spec: ModelSpec, hardware: Hardware, request: PlanRequest, target: _Target
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
    reasons: list[str] = []
    if budget > 0 and need > budget and not target.explicit:
        lo, hi = 16, context
        while hi - lo > 256:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if base.request_bytes(mid) * target.concurrency <= budget else (lo, mid)
        if lo >= target.floor:
            context = lo // 256 * 256
            need = base.request_bytes(context) * target.concurrency
            reasons.append(f"context lowered to {context} so the KV cache fits in RAM")
    # VLLM_CPU_KVCACHE_SPACE is whole GiB: what the context x concurrency needs, raised to vLLM's
    # 4 GiB default when RAM has room for it (spare KV is prefix-cache space).
    want = max(math.ceil(need / GiB), 1)
    room = max(budget, 0) // GiB
    kv_gib = min(max(want, oh.VLLM_CPU_DEFAULT_KV_GIB), room) if room >= want else want
    mem = vllm_cpu_memory(spec, layout, settings, kv_gib * GiB)
    fits = room >= want and mem.total_bytes <= host_capacity_bytes(hardware)
    one = mem.request_bytes(context)
    max_conc = (mem.kv_cache_bytes if fits else max(budget, 0)) // one if one else 0
    max_ctx = _max_len(lambda n: mem.request_bytes(n) <= max(budget, 0), spec.max_context)
    if fits:
        reasons.append(f"vLLM CPU build: VLLM_CPU_KVCACHE_SPACE={kv_gib} GiB of RAM for the KV cache")
    else:
        reasons.append(
            f"needs {_gib(base.total_bytes + need)} of RAM, {_gib(host_capacity_bytes(hardware))} available"
        )
    breakdown = MemoryBreakdown(
        weights_bytes=mem.weights_bytes,
        kv_cache_bytes=mem.kv_cache_bytes,
        compute_bytes=mem.activation_bytes,
        overhead_bytes=mem.runtime_bytes,
        total_bytes=mem.total_bytes,
    )
    read = _read_bytes(spec, layout)
    speed = _speed(
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
        reasons=reasons,
        model_source=_model_source(spec),
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


def _max_len(ok: object, limit: int) -> int:
    """Largest n (multiple of 16, <= limit) with ok(n), by bisection; 0 if none."""
    check = ok  # callable[[int], bool]
    assert callable(check)
    if not check(16):
        return 0
    if check(limit):
        return limit
    lo, hi = 16, limit
    while hi - lo > 16:
        mid = (lo + hi) // 2 // 16 * 16
        if mid <= lo:
            break
        lo, hi = (mid, hi) if check(mid) else (lo, mid)
    return lo


# ---------------------------------------------------------------- llama.cpp


def _llamacpp_quants(spec: ModelSpec) -> list[tuple[str, str | None, bool]]:
    """(quant, gguf file, needs conversion) for each llama.cpp option."""
    own = own_quantization(spec)
    if spec.quantization.method == "gguf":
        first = spec.files[0].path if spec.files else None
        options: list[tuple[str, str | None, bool]] = [(own, first, False)]
        explicit_tag = spec.kind in ("local_gguf", "gguf_url") or ":" in spec.ref.split("/")[-1]
        if not explicit_tag:
            for variant in spec.gguf_variants:
                tag = normalize_gguf_tag(variant.tag)
                if tag != own and (tag in GGUF_STANDARD_QUANTS or tag in ("F16", "BF16")):
                    options.append((tag, variant.files[0].path if variant.files else None, False))
        return options
    if own not in (*SIXTEEN_BIT, "fp32"):
        return []  # AWQ/GPTQ/FP8 checkpoints have no direct GGUF conversion path
    return [(q, None, True) for q in GGUF_STANDARD_QUANTS]


def _llamacpp_devices(hardware: Hardware) -> tuple[list[Device], Device]:
    gpus: list[Device] = []
    for g in hardware.gpus:
        if g.vendor == "apple":
            capacity = min(g.memory_total_bytes, hardware.ram_available_bytes)
            gpus.append(Device(device_name(g), "metal", capacity, oh.LLAMACPP_METAL_CONTEXT_BYTES))
        else:
            kind = "cuda" if g.vendor == "nvidia" else "rocm"
            gpus.append(Device(device_name(g), kind, gpu_free_bytes(g), oh.LLAMACPP_GPU_CONTEXT_BYTES))
    host = Device("cpu", "cpu", host_capacity_bytes(hardware), oh.LLAMACPP_HOST_OVERHEAD_BYTES)
    return gpus, host


def _buffers_fit(buffers: list[DeviceBuffers], unified: bool) -> bool:
    if not all(b.fits for b in buffers):
        return False
    if unified:  # Metal buffers come out of the same RAM as the host's
        host = buffers[-1]
        return sum(b.resident_bytes for b in buffers) <= host.device.capacity_bytes
    return True


@dataclass(frozen=True)
class _LlamaEval:
    settings: LlamaCppSettings
    buffers: list[DeviceBuffers]
    fits: bool


def _llama_eval(
    spec: ModelSpec,
    layout: WeightsLayout,
    base: LlamaCppSettings,
    ctx_seq: int,
    n_par: int,
    ngl: int,
    gpus: list[Device],
    host: Device,
    unified: bool,
    kv_per_token: list[int],
) -> _LlamaEval:
    settings = LlamaCppSettings(
        n_ctx_seq=pad_ctx(ctx_seq),
        n_parallel=n_par,
        gpu_layers=ngl,
        n_batch=base.n_batch,
        n_ubatch=base.n_ubatch,
        flash_attn=base.flash_attn,
        cache_type_k=base.cache_type_k,
        cache_type_v=base.cache_type_v,
    )
    buffers = llamacpp_memory(spec, layout, settings, gpus, host, kv_per_token)
    return _LlamaEval(settings, buffers, _buffers_fit(buffers, unified))


def _llamacpp_candidate(
    spec: ModelSpec,
    hardware: Hardware,
    request: PlanRequest,
    target: _Target,
    quant: str,
    gguf_file: str | None,
    needs_conversion: bool,
    gguf_repo: str | None = None,
) -> Candidate | None:
    kv_req = normalize_kv_dtype(request.kv_cache_dtype) if request.kv_cache_dtype else "f16"
    if kv_req == "auto":
        kv_req = "f16"
    if kv_req not in LLAMACPP_KV_TYPES:
        return None
    gpus, host = _llamacpp_devices(hardware)
    unified = any(g.unified_memory for g in hardware.gpus)
    layout = weights_layout(spec, quant)
    base = LlamaCppSettings(n_ctx_seq=256, cache_type_k=kv_req, cache_type_v=kv_req, flash_attn=True)
    kv_table = layer_kv_per_token(spec, base)
    n = spec.attention.num_layers
    full = n + 1 if gpus else 0
    n_par = target.concurrency
    reasons: list[str] = []

    def ev(ctx: int, ngl: int, par: int = n_par) -> _LlamaEval:
        return _llama_eval(spec, layout, base, ctx, par, ngl, gpus, host, unified, kv_table)

    def best_ngl(ctx: int) -> int | None:
        if not gpus:
            return 0 if ev(ctx, 0).fits else None
        if ev(ctx, full).fits:
            return full
        lo, hi = -1, full  # fits(lo) known true-ish boundary search over ngl
        if not ev(ctx, 0).fits:
            # The host cannot hold everything; more offload may still make it fit.
            for ngl in range(full, -1, -1):
                if ev(ctx, ngl).fits:
                    return ngl
            return None
        lo = 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ev(ctx, mid).fits else (lo, mid)
        return lo

    context = target.context
    ngl = best_ngl(context)
    if not target.explicit and (ngl is None or ngl < full):
        # Prefer a shorter (but >= floor) context that stays fully offloaded / fits at all.
        want = full
        fit_len = (
            _max_len(lambda c: ev(c, want).fits, context)
            if gpus
            else _max_len(lambda c: ev(c, 0).fits, context)
        )
        if fit_len >= target.floor:
            context = fit_len // 256 * 256 if fit_len >= 256 else fit_len
            ngl = want if gpus else 0
            reasons.append(
                f"context lowered to {context} to keep every layer on the accelerator"
                if gpus
                else f"context lowered to {context} to fit in RAM"
            )
    fits = ngl is not None
    used_ngl = ngl if ngl is not None else full
    result = ev(context, used_ngl)
    if gpus and fits and used_ngl < full:
        on_gpu = max(used_ngl - 1, 0)
        reasons.append(
            f"partial offload: {on_gpu} of {n} layers (and the output layer) on the GPU, the rest on the CPU"
        )
    elif gpus and fits:
        reasons.append(
            f"all {n} layers on the GPU" + (f"s ({len(gpus)}, split by layer)" if len(gpus) > 1 else "")
        )
    elif not gpus and fits:
        reasons.append("CPU only")
    if not fits:
        short = [b for b in result.buffers if not b.fits]
        where = ", ".join(
            f"{b.device.name} needs {_gib(b.resident_bytes)} of {_gib(b.device.capacity_bytes)}"
            for b in short
        )
        reasons.append(f"does not fit even with CPU offload: {where}" if where else "does not fit")
    if needs_conversion and gguf_repo:
        reasons.append(
            f"needs a {quant} GGUF: `llmhost plan {gguf_repo}:{quant}` (a GGUF sibling on the Hub)"
        )
    elif needs_conversion:
        reasons.append(f"needs a {quant} GGUF of this model (convert with llama.cpp or pick a -GGUF repo)")
    max_ctx = _max_len(lambda c: ev(c, used_ngl, 1).fits, spec.max_context)
    max_conc = _max_conc(lambda p: ev(context, used_ngl, p).fits)
    per_device: list[DeviceMemory] = []
    frac = active_weight_fraction(spec)
    reads: list[tuple[int, float | None]] = []
    kv_tok = kv_bytes_per_token(spec, kv_req, engine="llamacpp")
    total_kv = sum(b.kv_bytes for b in result.buffers) or 1
    for b in result.buffers:
        if b.total_bytes == 0:  # a device llama.cpp leaves unused
            continue
        layer_w = sum(layout.layer_bytes[i] for i in b.layers if i < len(layout.layer_bytes))
        out_w = b.model_bytes - b.reclaimable_bytes - layer_w
        out_w -= layout.embedding_bytes if b.device.kind == "cpu" else 0
        read = round(layer_w * frac) + max(out_w, 0)
        bw = _bandwidth(hardware, b.device)
        reads.append((read + round(kv_tok * min(context, SPEED_CONTEXT) * b.kv_bytes / total_kv), bw))
        per_device.append(
            DeviceMemory(
                device=b.device.name,
                # Resident memory: repacked weights counted once (see DeviceBuffers.reclaimable_bytes).
                breakdown=MemoryBreakdown(
                    weights_bytes=b.model_bytes - b.reclaimable_bytes,
                    kv_cache_bytes=b.kv_bytes,
                    compute_bytes=b.compute_bytes,
                    overhead_bytes=b.overhead_bytes,
                    total_bytes=b.resident_bytes,
                ),
                capacity_bytes=b.device.capacity_bytes,
                decode_read_bytes=read,
            )
        )
    speed = _speed(reads, parallel=False)
    if gpus and fits and used_ngl < full and speed is not None:
        reasons.append(f"CPU offload costs speed: ~{speed:.0f} tok/s")
    s = result.settings
    flash = s.flash_attn or is_quantized_kv(kv_req)
    options: dict[str, str | int | float | bool] = {
        "n_parallel": s.n_parallel,
        "n_ctx": s.n_ctx,
        "n_batch": s.n_batch,
        "n_ubatch": s.n_ubatch,
        "flash_attn": flash,
        "cache_type_k": kv_req,
        "cache_type_v": kv_req,
        "n_gpu_layers": used_ngl,
        "threads": hardware.cpu.physical_cores or hardware.cpu.logical_cores,
    }
    if needs_conversion:
        options["needs_gguf_conversion"] = True
    return Candidate(
        engine="llamacpp",
        quantization=quant,
        kv_cache_dtype=kv_req,
        context_length=context,
        concurrency=target.concurrency,
        gpu_layers=used_ngl,
        fits=fits,
        memory=_sum_breakdowns([d.breakdown for d in per_device]),
        per_device=per_device,
        kv_bytes_per_token=kv_tok,
        max_context=max_ctx,
        max_concurrency=max_conc,
        decode_tokens_per_s=speed,
        reasons=reasons,
        model_source=_model_source(spec),
        gguf_file=gguf_file,
        engine_options=options,
    )


def _max_conc(ok: object) -> int:
    check = ok
    assert callable(check)
    if not check(1):
        return 0
    lo, hi = 1, 2
    while hi <= MAX_PLANNED_CONCURRENCY and check(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, MAX_PLANNED_CONCURRENCY + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if check(mid) else (lo, mid)
    return lo


def _bandwidth(hardware: Hardware, device: Device) -> float | None:
    if device.kind == "cpu":
        return hardware.cpu.memory_bandwidth_bytes_per_s
    for g in hardware.gpus:
        if device_name(g) == device.name:
            return g.memory_bandwidth_bytes_per_s
    return None


# ---------------------------------------------------------------- ranking and advice


def _placement(c: Candidate, n_layers: int) -> int:
    """2: everything on accelerators; 1: llama.cpp partial CPU offload; 0: CPU only."""
    on_gpu = [d for d in c.per_device if d.device != "cpu" and d.breakdown.total_bytes > 0]
    if not on_gpu:
        return 0
    if c.engine == "llamacpp" and (c.gpu_layers or 0) < n_layers + 1:
        return 1
    return 2


def _launchable(c: Candidate) -> bool:
    return not c.engine_options.get("needs_gguf_conversion", False)


def _sort_key(c: Candidate, goal: str, n_layers: int) -> tuple[float, ...]:
    launchable = _launchable(c)
    q = quality_score(c.quantization)
    decent = q >= QUALITY_FLOOR
    speed = c.decode_tokens_per_s or 0.0
    vllm = 1 if c.engine == "vllm" else 0
    head = (float(c.fits), float(launchable), float(decent), float(_placement(c, n_layers)))
    if goal == "latency":
        return (*head, speed, q, -c.tensor_parallel_size * c.pipeline_parallel_size)
    if goal == "throughput":
        return (*head, vllm, c.max_concurrency, speed, q)
    return (*head, q, vllm, -c.tensor_parallel_size * c.pipeline_parallel_size, speed)


def _advice(
    spec: ModelSpec, hardware: Hardware, request: PlanRequest, target: _Target, cands: list[Candidate]
) -> list[str]:
    advice: list[str] = []
    if any(c.fits and _launchable(c) for c in cands):
        return advice
    convertible = [c for c in cands if c.fits and not _launchable(c)]
    if convertible:
        best = convertible[0]  # already ranked
        speed = f" (~{best.decode_tokens_per_s:.0f} tok/s)" if best.decode_tokens_per_s else ""
        gguf = next((r for r in best.reasons if "llmhost plan" in r), None)
        how = (
            gguf.split(": ", 1)[1].split(" (")[0]
            if gguf
            else "convert it with llama.cpp's convert_hf_to_gguf.py and llama-quantize, or plan a -GGUF repo"
        )
        advice.append(
            f"This checkpoint cannot run here as is, but a {best.quantization} GGUF of it would fit with "
            f"llama.cpp{speed}: {how}."
        )
    if not cands:
        advice.append(_why_no_candidates(spec, hardware, request))
        return advice
    best_short = max(
        cands, key=lambda c: (c.max_context >= 1024, quality_score(c.quantization), c.max_context)
    )
    if 0 < best_short.max_context < target.context:
        engine = "llama.cpp" if best_short.engine == "llamacpp" else "vLLM"
        advice.append(
            f"Shorter context: {best_short.quantization} on {engine} fits "
            f"`--context {best_short.max_context}`"
            + (" with one sequence" if target.concurrency > 1 else "")
            + "."
        )
    if request.kv_cache_dtype is None:
        trial = request.model_copy(update={"kv_cache_dtype": "fp8"})
        if any(c.fits for c in _all_candidates(spec, hardware, trial, target)):
            advice.append("An fp8 KV cache halves its size and fits: `--kv-cache-dtype fp8` (vLLM).")
        else:
            trial = request.model_copy(update={"kv_cache_dtype": "q8_0"})
            if any(c.fits for c in _all_candidates(spec, hardware, trial, target)):
                advice.append("A q8_0 KV cache fits: `--kv-cache-dtype q8_0` (llama.cpp).")
    if request.quantization is not None:
        free = request.model_copy(update={"quantization": None})
        fitting = [c for c in _all_candidates(spec, hardware, free, target) if c.fits]
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
                f"More GPUs: about {_gib(need)} for {smallest.quantization} weights and KV needs {n_pow}x "
                f"{gpus[0].name}{what_if}."
            )
    ram = host_capacity_bytes(hardware)
    if smallest.memory.weights_bytes > ram + sum(gpu_free_bytes(g) for g in gpus):
        advice.append(
            f"Even {smallest.quantization} weights ({_gib(smallest.memory.weights_bytes)}) exceed "
            "this machine's "
            f"free RAM and GPU memory together ({_gib(ram + sum(gpu_free_bytes(g) for g in gpus))})."
        )
    return advice


def _best_siblings(spec: ModelSpec, siblings: Sequence[QuantizedVariant]) -> dict[str, str]:
    """The most downloaded pre-quantized sibling per method (awq, gptq, fp8, gguf)."""
    best: dict[str, QuantizedVariant] = {}
    own = own_quantization(spec)
    for sib in siblings:
        method = sib.method
        if method not in ("awq", "gptq", "fp8", "gguf") or method == own:
            continue
        current = best.get(method)
        if current is None or (sib.downloads or 0) > (current.downloads or 0):
            best[method] = sib
    return {m: v.repo_id for m, v in sorted(best.items())}


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


def _all_candidates(
    spec: ModelSpec,
    hardware: Hardware,
    request: PlanRequest,
    target: _Target,
    siblings: Sequence[QuantizedVariant] = (),
) -> list[Candidate]:
    quant = _requested_quant(spec, request)
    cands: list[Candidate] = []
    found = _best_siblings(spec, siblings)
    if request.engine in (None, "vllm"):
        gpus = vllm_gpus(hardware)
        if gpus:
            gpus = sorted(gpus, key=lambda g: g.index)
            for q in _vllm_quants(spec, gpus):
                if quant is not None and q != quant:
                    continue
                tps = _tp_sizes(spec, len(gpus), request)
                for tp in tps:
                    c = _vllm_gpu_candidate(spec, hardware, request, target, q, tp, gpus)
                    if c is not None:
                        cands.append(c)
                if request.tensor_parallel_size is None and len(gpus) > max(tps, default=1):
                    # More GPUs than tensor parallelism can use: split the layers instead.
                    c = _vllm_gpu_candidate(spec, hardware, request, target, q, 1, gpus, pp=len(gpus))
                    if c is not None:
                        cands.append(c)
            for method, repo in found.items():
                if method == "gguf" or (quant is not None and method != quant):
                    continue
                if method == "fp8" and "fp8" in _vllm_quants(spec, gpus):
                    continue  # online fp8 of the original is the same size
                for tp in _tp_sizes(spec, len(gpus), request):
                    c = _vllm_gpu_candidate(spec, hardware, request, target, method, tp, gpus, source=repo)
                    if c is not None:
                        cands.append(c)
        elif vllm_cpu_supported(hardware) and quant in (None, "bf16", "fp16"):
            c = _vllm_cpu_candidate(spec, hardware, request, target)
            if c is not None:
                cands.append(c)
    if request.engine in (None, "llamacpp"):
        for q, gguf_file, needs_conversion in _llamacpp_quants(spec):
            if quant is not None and normalize_gguf_tag(q) != normalize_gguf_tag(quant):
                continue
            c = _llamacpp_candidate(
                spec, hardware, request, target, q, gguf_file, needs_conversion, found.get("gguf")
            )
            if c is not None:
                cands.append(c)
    return cands


def make_plan(
    spec: ModelSpec,
    hardware: Hardware,
    request: PlanRequest,
    *,
    siblings: Sequence[QuantizedVariant] = (),
) -> Plan:
    """Rank every way to run `spec` on `hardware` for `request`. Pure and deterministic.

    `siblings`: pre-quantized repos of the same model (`llmhost.models.find_quantized_variants`); AWQ,
    GPTQ and FP8 ones become vLLM candidates, a GGUF one is named for the llama.cpp options.
    """
    target = _validate(spec, request)
    quant = _requested_quant(spec, request)
    if quant is not None and spec.gguf_variants and spec.quantization.method == "gguf":
        offered = {normalize_gguf_tag(v.tag) for v in spec.gguf_variants} | {own_quantization(spec)}
        if quant not in offered:
            raise UsageError(
                f"{spec.name} offers no {quant} file.", hint=f"Offered: {', '.join(sorted(offered))}."
            )
    candidates = _all_candidates(spec, hardware, request, target, siblings)
    n_layers = spec.attention.num_layers
    candidates.sort(key=lambda c: _sort_key(c, request.goal, n_layers), reverse=True)
    # Only a candidate that launches as is can be chosen: `serve` runs the chosen one. One that would
    # need a GGUF conversion is reported through advice instead.
    chosen = 0 if candidates and candidates[0].fits and _launchable(candidates[0]) else None
    if chosen is not None:
        candidates[0] = candidates[0].model_copy(
            update={"reasons": [_why_chosen(candidates[0], request.goal), *candidates[0].reasons]}
        )
    advice = _advice(spec, hardware, request, target, candidates)
    return Plan(
        model=PlanModel(
            ref=spec.ref,
            name=spec.name,
            architecture=spec.architecture,
            parameters=spec.parameters,
            active_parameters=spec.active_parameters,
            max_context=spec.max_context,
            quantization=own_quantization(spec),
            weights_bytes=spec.weights_bytes,
        ),
        hardware=hardware,
        goal=request.goal,
        requested_context=request.context,
        requested_concurrency=request.concurrency,
        candidates=candidates,
        chosen=chosen,
        advice=advice,
    )


def _why_chosen(c: Candidate, goal: str) -> str:
    engine = "vLLM" if c.engine == "vllm" else "llama.cpp"
    if goal == "latency":
        speed = c.decode_tokens_per_s or 0
        return f"chosen for latency: fastest decode (~{speed:.0f} tok/s) among fitting {engine} options"
    if goal == "throughput":
        return f"chosen for throughput: {c.max_concurrency} concurrent sequences with {engine}"
    return f"chosen for quality: {c.quantization} is the highest precision that fits the requested context"
