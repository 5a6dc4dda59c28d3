"""MLX LM candidates: bf16 and the mlx-community 8-bit / 4-bit formats, on Apple Silicon.

Offered on Apple Silicon (Metal), and on Linux only when `--engine mlx` forces it (mlx-cpu runs the same
mlx_lm there, on the CPU: how the tests serve it). MLX LM loads safetensors checkpoints, never GGUF.

Weights (mlx_lm 0.32, `utils.quantize_model` and `nn.quantize`):
- a 16-bit checkpoint loads as stored: its safetensors bytes, exact;
- an MLX-quantized checkpoint (config `quantization` / `quantization_config`: `bits`, `group_size`, no
  `quant_method`) loads as stored too: the bytes from its safetensors headers (packed uint32 weights plus
  a 16-bit scale and bias per group), exact;
- an N-bit option for a 16-bit checkpoint needs `mlx_lm.convert -q --q-bits N --q-group-size 64` first
  (the server cannot quantize on load). Every Linear and Embedding matrix becomes N/8 bytes per weight
  plus a scale and a bias (16-bit each) per 64 weights: 4-bit = 4.5 bits, 8-bit = 8.5 bits per weight;
  norms (1-D) stay 16-bit. Estimated from the parameter counts: 2 x hidden 1-D weights per layer (the two
  RMSNorms of a llama block), the rest matrices.
KV cache (`models/cache.py`): K and V rows in the activations' 16-bit dtype, allocated in steps of 256
tokens (`KVCache.step`); sliding-window layers get a `RotatingKVCache` capped at the window; a batch of
sequences (`BatchKVCache`) holds one padded cache per sequence. mlx_lm.server has no `--max-kv-size`
(only `mlx_lm.generate` does), so nothing else caps it: the plan's KV bytes become `--prompt-cache-bytes`.
Memory: on a Mac the Metal working-set limit (`recommendedMaxWorkingSetSize`, from the hardware module)
bounds what the GPU may wire: weights + KV + activations; the process's own memory comes from RAM beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from llmhost.engine_ids import MLX
from llmhost.estimate.dtypes import normalize_kv_dtype
from llmhost.estimate.kv import layer_kv_bytes_per_token
from llmhost.estimate.weights import SIXTEEN_BIT, WeightsLayout, exact_layout, own_quantization
from llmhost.hardware.models import GPU, Hardware
from llmhost.models.spec import ModelSpec
from llmhost.plan.common import (
    SPEED_CONTEXT,
    Target,
    max_concurrency_for,
    max_length,
    source_of,
    tokens_per_s,
    weight_read_bytes,
)
from llmhost.plan.hardware_view import device_name, host_capacity_bytes
from llmhost.plan.models import Candidate, DeviceMemory, MemoryBreakdown, PlanRequest
from llmhost.plan.options import MlxOptions
from llmhost.plan.reasons import Reason, ReasonCode

GROUP_SIZE = 64  # mlx_lm.convert's default --q-group-size, and the mlx-community checkpoints'
CONVERT_BITS = (8, 4)
KV_STEP = 256  # mlx_lm KVCache.step: the cache grows by this many tokens at a time
ACT_BYTES = 2  # activations, KV rows, scales and biases: the checkpoint's 16-bit dtype
PREFILL_STEP = 2048  # mlx_lm.server --prefill-step-size default: tokens per prompt chunk
PROMPT_CONCURRENCY_CAP = 8  # mlx_lm.server --prompt-concurrency default (engines/mlx.py uses the same cap)
# Not measured on Metal here: the Metal allocator's pools and command buffers beside the tensors.
METAL_RUNTIME_BYTES = 256 * 1024**2
# Measured here: mlx_lm.server (Python, mlx, the tokenizer) serving the tiny checkpoint held 88 MiB RSS
# on mlx-cpu; rounded up for a real tokenizer's vocabulary and the HTTP threads.
PROCESS_BYTES = 128 * 1024**2
MLX_QUANT_KEYS = ("group_size", "bits", "mode")
KV_DTYPES = ("auto", "f16", "fp16", "bf16", "float16", "bfloat16")


def mlx_quant_name(bits: int | float) -> str:
    return f"mlx-{int(bits)}bit"


@dataclass(frozen=True)
class _MlxOption:
    quant: str
    layout: WeightsLayout
    needs_conversion: bool
    bits: int | None
    group_size: int | None


def mlx_quantization_of(spec: ModelSpec) -> tuple[int, int] | None:
    """(bits, group size) of an MLX-quantized checkpoint, from its config's quantization block."""
    raw = spec.quantization.raw
    if spec.quantization.method != "other" or "quant_method" in raw:
        return None
    # mlx_lm writes group_size, bits, mode, and per-module overrides keyed by module path
    # ("model.layers.0.mlp.down_proj": {"bits": 8, ...} or false); any other setting (desc_act, sym,
    # zero_point...) is another tool's quantizer, not MLX's.
    if any(k not in MLX_QUANT_KEYS and not ("." in k and isinstance(v, dict | bool)) for k, v in raw.items()):
        return None
    bits, group = raw.get("bits"), raw.get("group_size", GROUP_SIZE)
    if not isinstance(bits, int) or isinstance(bits, bool) or not isinstance(group, int) or group <= 0:
        return None
    return bits, group


def _converted_layout(spec: ModelSpec, bits: int) -> WeightsLayout:
    """The weights after `mlx_lm.convert -q --q-bits bits --q-group-size 64` of a 16-bit checkpoint."""
    per_weight = bits / 8 + 2 * ACT_BYTES / GROUP_SIZE

    def matrices(params: int, vectors: int = 0) -> int:
        return round(max(params - vectors, 0) * per_weight) + vectors * ACT_BYTES

    norms = 2 * spec.hidden_size
    layers = spec.layer_parameters or [0] * spec.attention.num_layers
    base = exact_layout(spec)
    return WeightsLayout(
        quantization=mlx_quant_name(bits),
        embedding_bytes=matrices(spec.embedding_parameters),
        output_bytes=matrices(spec.output_parameters),
        layer_bytes=tuple(matrices(p, norms) for p in layers),
        other_bytes=base.other_bytes,  # the final norm: 1-D, kept in 16-bit
        exact=False,
        tied_embeddings=base.tied_embeddings,
    )


def mlx_options(spec: ModelSpec) -> list[_MlxOption]:
    """What MLX LM can run of this checkpoint: as stored, and (16-bit) its 8- and 4-bit conversions."""
    if spec.quantization.method == "gguf":
        return []
    own = own_quantization(spec)
    mlx_q = mlx_quantization_of(spec)
    if mlx_q is not None:
        bits, group = mlx_q
        return [_MlxOption(mlx_quant_name(bits), exact_layout(spec), False, bits, group)]
    if own not in (*SIXTEEN_BIT, "fp32"):
        return []  # AWQ/GPTQ/FP8...: not an mlx_lm format this plan sizes
    stored = _MlxOption(own, exact_layout(spec), False, None, None)
    if own == "fp32":
        return [stored]
    converted = [
        _MlxOption(mlx_quant_name(b), _converted_layout(spec, b), True, b, GROUP_SIZE) for b in CONVERT_BITS
    ]
    return [stored, *converted]


def kv_bytes(spec: ModelSpec, context: int, sequences: int) -> int:
    """KV bytes mlx_lm allocates for `sequences` sequences of `context` tokens."""
    att = spec.attention
    steps = math.ceil(context / KV_STEP) * KV_STEP
    total = 0
    for layer in range(att.num_layers):
        row = layer_kv_bytes_per_token(spec, layer, "f16", engine=MLX)
        kind = att.layer_kinds[layer] if layer < len(att.layer_kinds) else "full"
        # RotatingKVCache grows by 256 until max_size, then stops exactly at the window.
        tokens = min(steps, att.sliding_window) if kind == "sliding" and att.sliding_window else steps
        total += row * tokens
    return (total + att.recurrent_state_bytes_per_seq) * sequences


def compute_bytes(spec: ModelSpec, context: int, sequences: int) -> int:
    """Activations of one prefill chunk per prompt in flight, and the last-token logits (an estimate:
    mlx evaluates lazily, so only the chunk's hidden states and MLP intermediates are live at once)."""
    chunk = min(PREFILL_STEP, context)
    prompts = min(sequences, PROMPT_CONCURRENCY_CAP)
    inter = spec.intermediate_size or 4 * spec.hidden_size
    per_token = (4 * spec.hidden_size + 2 * inter) * ACT_BYTES
    return chunk * per_token * prompts + spec.vocab_size * 4 * sequences


@dataclass(frozen=True)
class _Place:
    device: str
    gpu_capacity: int  # what the GPU may wire (Metal working set); the host's capacity on the CPU
    host_capacity: int
    bandwidth: float | None
    reason: Reason


def _placement(hardware: Hardware, forced: bool) -> _Place | None:
    apple: list[GPU] = [g for g in hardware.gpus if g.vendor == "apple"]
    host = host_capacity_bytes(hardware)
    if apple:
        g = apple[0]
        working_set = min(g.memory_total_bytes, hardware.ram_available_bytes)
        return _Place(
            device_name(g),
            working_set,
            host,
            g.memory_bandwidth_bytes_per_s,
            Reason.of(ReasonCode.MLX_ON_METAL, working_set_bytes=working_set, rule=g.memory_limit_source),
        )
    if forced and hardware.os == "linux":
        return _Place(
            "cpu",
            host,
            host,
            hardware.cpu.memory_bandwidth_bytes_per_s,
            Reason.of(ReasonCode.MLX_ON_CPU),
        )
    return None


def mlx_candidates(
    spec: ModelSpec, hardware: Hardware, request: PlanRequest, target: Target, quant: str | None
) -> list[Candidate]:
    """Every MLX option for this checkpoint that `quant` (the requested one, or None) allows."""
    place = _placement(hardware, forced=request.engine == MLX)
    kv_req = normalize_kv_dtype(request.kv_cache_dtype) if request.kv_cache_dtype else "auto"
    if place is None or kv_req not in KV_DTYPES:
        return []  # --kv-bits (quantized KV) turns mlx_lm's batching off: not planned
    out = []
    for option in mlx_options(spec):
        if quant is not None and quant.lower() != option.quant.lower():
            continue
        out.append(_candidate(spec, hardware, target, option, place))
    return out


def _candidate(
    spec: ModelSpec, hardware: Hardware, target: Target, option: _MlxOption, place: _Place
) -> Candidate:
    weights = option.layout.total_bytes
    unified = place.device != "cpu"

    def memory(context: int, seqs: int) -> MemoryBreakdown:
        kv = kv_bytes(spec, context, seqs)
        comp = compute_bytes(spec, context, seqs)
        over = (METAL_RUNTIME_BYTES if unified else 0) + PROCESS_BYTES
        return MemoryBreakdown(
            weights_bytes=weights,
            kv_cache_bytes=kv,
            compute_bytes=comp,
            overhead_bytes=over,
            total_bytes=weights + kv + comp + over,
        )

    def fits(context: int, seqs: int) -> bool:
        m = memory(context, seqs)
        wired = m.weights_bytes + m.kv_cache_bytes + m.compute_bytes + (METAL_RUNTIME_BYTES if unified else 0)
        return wired <= place.gpu_capacity and m.total_bytes <= place.host_capacity

    reasons = [place.reason]
    context, conc = target.context, target.concurrency
    if not fits(context, conc) and not target.explicit:
        shorter = max_length(lambda c: fits(c, conc), context)
        if shorter >= target.floor:
            context = shorter // KV_STEP * KV_STEP if shorter >= KV_STEP else shorter
            reasons.append(Reason.of(ReasonCode.CONTEXT_LOWERED, context=context, limit="memory"))
    ok = fits(context, conc)
    mem = memory(context, conc)
    att = spec.attention
    sliding = sum(1 for k in att.layer_kinds if k == "sliding") if att.sliding_window else 0
    reasons.append(
        Reason.of(
            ReasonCode.MLX_KV_CACHE,
            step=KV_STEP,
            tokens=math.ceil(context / KV_STEP) * KV_STEP,
            sequences=conc,
            kv_cache_bytes=mem.kv_cache_bytes,
            sliding_layers=sliding,
            window=att.sliding_window,
        )
    )
    # A config.json given alone stands for the checkpoint directory that holds it.
    source = str(Path(spec.ref).parent) if spec.kind == "local_config" else source_of(spec)
    convert = (
        f"mlx_lm.convert --hf-path {source} --mlx-path DIR -q --q-bits {option.bits} "
        f"--q-group-size {GROUP_SIZE}"
    )
    if option.needs_conversion:
        reasons.append(Reason.of(ReasonCode.NEEDS_MLX_CONVERSION, bits=option.bits, command=convert))
    elif option.bits is not None:
        reasons.append(
            Reason.of(ReasonCode.MLX_QUANTIZED_CHECKPOINT, bits=option.bits, group_size=option.group_size)
        )
    if unified and spec.quantization.method != "gguf":
        reasons.append(Reason.of(ReasonCode.MLX_LOADS_AS_IS))
    if not ok:
        reasons.append(
            Reason.of(
                ReasonCode.MLX_DOES_NOT_FIT,
                need_bytes=mem.total_bytes,
                available_bytes=min(place.gpu_capacity, place.host_capacity),
            )
        )
    read = weight_read_bytes(spec, option.layout)
    kv_tok = sum(layer_kv_bytes_per_token(spec, i, "f16", engine=MLX) for i in range(att.num_layers))
    speed = tokens_per_s([(read + kv_tok * min(context, SPEED_CONTEXT), place.bandwidth)], parallel=False)
    options = MlxOptions(
        device="metal" if unified else "cpu",
        decode_concurrency=conc,
        prompt_concurrency=min(conc, PROMPT_CONCURRENCY_CAP),
        prompt_cache_bytes=mem.kv_cache_bytes,
        q_bits=option.bits,
        q_group_size=None if option.bits is None else option.group_size or GROUP_SIZE,
        needs_mlx_conversion=True if option.needs_conversion else None,
        convert_command=f"Convert it first: `{convert}`, then serve DIR."
        if option.needs_conversion
        else None,
    )
    capacity = min(place.gpu_capacity, place.host_capacity)
    return Candidate(
        engine=MLX,
        quantization=option.quant,
        kv_cache_dtype="fp16" if (spec.torch_dtype or "").lower() in ("float16", "fp16") else "bf16",
        context_length=context,
        concurrency=conc,
        fits=ok,
        memory=mem,
        per_device=[
            DeviceMemory(device=place.device, breakdown=mem, capacity_bytes=capacity, decode_read_bytes=read)
        ],
        kv_bytes_per_token=kv_tok,
        max_context=max_length(lambda c: fits(c, 1), spec.max_context),
        max_concurrency=max_concurrency_for(lambda n: fits(context, n)),
        decode_tokens_per_s=speed,
        reasons_detail=reasons,
        model_source=source_of(spec),
        engine_options=options,
    )
