"""llama.cpp candidates: GGUF quantizations, GPU layers (partial offload), context and slots."""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmhost.bisection import last_true
from llmhost.engine_ids import LLAMA_CPP_PYTHON, LLAMACPP
from llmhost.estimate import overheads as oh
from llmhost.estimate.dtypes import LLAMACPP_KV_TYPES, is_quantized_kv, normalize_kv_dtype
from llmhost.estimate.kv import kv_bytes_per_token
from llmhost.estimate.llamacpp import (
    ComputeProbe,
    Device,
    DeviceBuffers,
    LlamaCppSettings,
    layer_kv_per_token,
    llamacpp_memory,
    pad_ctx,
)
from llmhost.estimate.roofline import active_weight_fraction
from llmhost.estimate.weights import (
    GGUF_STANDARD_QUANTS,
    SIXTEEN_BIT,
    WeightsLayout,
    normalize_gguf_tag,
    own_quantization,
    weights_layout,
)
from llmhost.hardware.models import Hardware
from llmhost.models.spec import ModelSpec
from llmhost.plan.common import (
    SPEED_CONTEXT,
    Target,
    fmt_gib,
    max_concurrency_for,
    max_length,
    source_of,
    sum_breakdowns,
    tokens_per_s,
)
from llmhost.plan.hardware_view import device_name, gpu_free_bytes, host_capacity_bytes
from llmhost.plan.models import Candidate, DeviceMemory, MemoryBreakdown, PlanRequest
from llmhost.plan.options import LlamaCppOptions
from llmhost.plan.reasons import Reason, ReasonCode

# Quantized checkpoints llama.cpp's convert_hf_to_gguf.py reads: FP8 block-scaled weights are dequantized
# on the way (DeepSeek-V3, Qwen3-FP8), and gpt-oss's MXFP4 experts map onto GGUF's own MXFP4 type.
GGUF_CONVERTIBLE = ("fp8", "mxfp4")


def llamacpp_quants(spec: ModelSpec) -> list[tuple[str, str | None, bool]]:
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
    if own not in (*SIXTEEN_BIT, "fp32", *GGUF_CONVERTIBLE):
        return []  # AWQ/GPTQ checkpoints have no GGUF conversion path (their scales are not llama.cpp's)
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
    compute_probe: ComputeProbe | None = None,
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
        n_outputs_max=base.n_outputs_max,
        cpu_repack=base.cpu_repack,
        swa_full=base.swa_full,
    )
    buffers = llamacpp_memory(spec, layout, settings, gpus, host, kv_per_token, compute_probe)
    return _LlamaEval(settings, buffers, _buffers_fit(buffers, unified))


def amx_host(hardware: Hardware) -> bool:
    """An x86 CPU with AMX units: llama.cpp's AMX/repack buffer types are turned off there."""
    return "amx" in hardware.cpu.isa_flags


def llamacpp_candidate(
    spec: ModelSpec,
    hardware: Hardware,
    request: PlanRequest,
    target: Target,
    quant: str,
    gguf_file: str | None,
    needs_conversion: bool,
    gguf_repo: str | None = None,
    compute_probe: ComputeProbe | None = None,
) -> Candidate | None:
    kv_req = normalize_kv_dtype(request.kv_cache_dtype) if request.kv_cache_dtype else "f16"
    if kv_req == "auto":
        kv_req = "f16"
    if kv_req not in LLAMACPP_KV_TYPES:
        return None
    gpus, host = _llamacpp_devices(hardware)
    unified = any(g.unified_memory for g in hardware.gpus)
    layout = weights_layout(spec, quant)
    # On an AMX CPU llmhost runs llama.cpp without its extra CPU buffer types (`--no-repack`): with them
    # llama.cpp 0.3.36 segfaults loading Gemma 3 Q4_K_M and aborts reserving deepseek2's graph here.
    amx = amx_host(hardware)
    base = LlamaCppSettings(
        n_ctx_seq=256, cache_type_k=kv_req, cache_type_v=kv_req, flash_attn=True, cpu_repack=not amx
    )
    if request.llamacpp_runtime == LLAMA_CPP_PYTHON:
        # Its `Llama` asks llama.cpp for a whole batch of logits (n_outputs_max = n_batch), where
        # llama-server asks for one per slot: the output and compute buffers grow by n_vocab x n_batch.
        # It also leaves `swa_full` at llama.cpp's library default (true, llama_context_default_params),
        # where llama-server's common params turn it off: sliding-window layers keep the whole context
        # (`make demo`'s `ps`: Gemma 3 270M at 2048 tokens planned 21.0 MiB of KV, allocated 36.0 MiB).
        base = replace(base, n_outputs_max=base.n_batch, swa_full=True)
    kv_table = layer_kv_per_token(spec, base)
    n = spec.attention.num_layers
    full = n + 1 if gpus else 0
    n_par = target.concurrency
    reasons: list[Reason] = []
    one_at_a_time = request.llamacpp_runtime == LLAMA_CPP_PYTHON
    if one_at_a_time:
        # Its server holds one `Llama` (one sequence, n_ctx tokens of KV) behind a lock: it serves one
        # request at a time and queues the rest. Planning N slots sized a KV cache N times the one it
        # allocates (`llmhost ps`: planned 8192 tokens, actual 4096).
        n_par = 1
        reasons.append(Reason.of(ReasonCode.LLAMA_CPP_PYTHON_ONE_REQUEST, asked=target.concurrency))

    def ev(ctx: int, ngl: int, par: int = n_par, probe: ComputeProbe | None = compute_probe) -> _LlamaEval:
        return _llama_eval(spec, layout, base, ctx, par, ngl, gpus, host, unified, kv_table, probe)

    def best_ngl(ctx: int) -> int | None:
        if not gpus:
            return 0 if ev(ctx, 0).fits else None
        if ev(ctx, full).fits:
            return full
        if not ev(ctx, 0).fits:
            # The host cannot hold everything; more offload may still make it fit.
            for ngl in range(full, -1, -1):
                if ev(ctx, ngl).fits:
                    return ngl
            return None
        return last_true(lambda ngl: ev(ctx, ngl).fits, 0, full)  # 0 layers fit, all of them do not

    context = target.context
    ngl = best_ngl(context)
    if not target.explicit and (ngl is None or ngl < full):
        # Prefer a shorter (but >= floor) context that stays fully offloaded / fits at all.
        want = full
        fit_len = (
            max_length(lambda c: ev(c, want).fits, context)
            if gpus
            else max_length(lambda c: ev(c, 0).fits, context)
        )
        if fit_len >= target.floor:
            context = fit_len // 256 * 256 if fit_len >= 256 else fit_len
            ngl = want if gpus else 0
            limit = "accelerator" if gpus else "ram"
            reasons.append(Reason.of(ReasonCode.CONTEXT_LOWERED, context=context, limit=limit))
    fits = ngl is not None
    used_ngl = ngl if ngl is not None else full
    result = ev(context, used_ngl)
    if gpus and fits and used_ngl < full:
        on_gpu = max(used_ngl - 1, 0)
        reasons.append(Reason.of(ReasonCode.PARTIAL_OFFLOAD, gpu_layers=on_gpu, layers=n))
    elif gpus and fits:
        reasons.append(Reason.of(ReasonCode.ALL_LAYERS_ON_GPU, layers=n, gpus=len(gpus)))
    elif not gpus and fits:
        reasons.append(Reason.of(ReasonCode.CPU_ONLY))
    compute_source = "estimate"
    if compute_probe is not None and not gpus and compute_probe(result.settings) is not None:
        compute_source = "llama.cpp dry run"
        reasons.append(Reason.of(ReasonCode.COMPUTE_MEASURED))
    if not fits:
        short = [b for b in result.buffers if not b.fits]
        where = ", ".join(
            f"{b.device.name} needs {fmt_gib(b.resident_bytes)} of {fmt_gib(b.device.capacity_bytes)}"
            for b in short
        )
        reasons.append(Reason.of(ReasonCode.DOES_NOT_FIT_WITH_OFFLOAD, shortfall=where))
    if needs_conversion and gguf_repo:
        reasons.append(Reason.of(ReasonCode.NEEDS_GGUF_SIBLING, quantization=quant, repo=gguf_repo))
    elif needs_conversion:
        reasons.append(Reason.of(ReasonCode.NEEDS_GGUF_CONVERSION, quantization=quant))
    # The limits are searched with the estimated compute buffer: where the search lands depends on the
    # free memory of the moment, so with the dry run every plan asked llama.cpp a new question and a
    # "warm" plan of Gemma 3 270M reloaded it in a child (4-5 s instead of under 2 s).
    max_ctx = max_length(lambda c: ev(c, used_ngl, 1, None).fits, spec.max_context)
    max_conc = max_concurrency_for(lambda p: ev(context, used_ngl, p, None).fits)
    if one_at_a_time:
        max_conc = min(max_conc, 1)
    per_device: list[DeviceMemory] = []
    frac = active_weight_fraction(spec)
    reads: list[tuple[int, float | None]] = []
    kv_tok = kv_bytes_per_token(spec, kv_req, engine=LLAMACPP)
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
    speed = tokens_per_s(reads, parallel=False)
    if gpus and fits and used_ngl < full and speed is not None:
        reasons.append(Reason.of(ReasonCode.OFFLOAD_SPEED, speed=speed))
    s = result.settings
    flash = s.flash_attn or is_quantized_kv(kv_req)
    options = LlamaCppOptions(
        n_parallel=s.n_parallel,
        n_ctx=s.n_ctx,
        n_batch=s.n_batch,
        n_ubatch=s.n_ubatch,
        flash_attn=flash,
        cache_type_k=kv_req,
        cache_type_v=kv_req,
        n_gpu_layers=used_ngl,
        threads=hardware.cpu.physical_cores or hardware.cpu.logical_cores,
        needs_gguf_conversion=True if needs_conversion else None,
        repack=None if s.cpu_repack else False,
    )
    return Candidate(
        engine=LLAMACPP,
        quantization=quant,
        kv_cache_dtype=kv_req,
        context_length=context,
        concurrency=n_par,
        gpu_layers=used_ngl,
        fits=fits,
        memory=sum_breakdowns([d.breakdown for d in per_device]),
        per_device=per_device,
        kv_bytes_per_token=kv_tok,
        max_context=max_ctx,
        max_concurrency=max_conc,
        decode_tokens_per_s=speed,
        reasons_detail=reasons,
        model_source=source_of(spec),
        gguf_file=gguf_file,
        engine_options=options,
        compute_source=compute_source,
    )


def _bandwidth(hardware: Hardware, device: Device) -> float | None:
    if device.kind == "cpu":
        return hardware.cpu.memory_bandwidth_bytes_per_s
    for g in hardware.gpus:
        if device_name(g) == device.name:
            return g.memory_bandwidth_bytes_per_s
    return None
