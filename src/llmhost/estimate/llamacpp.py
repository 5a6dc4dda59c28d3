"""llama.cpp's buffers per device, the way `llama-server` allocates them.

- Model buffers by `-ngl` (src/llama-model.cpp `load_tensors`): with n layers, layer i is offloaded
  when `i >= n + 1 - ngl`, and the output layer (index n) as soon as `ngl >= 1`: the output goes
  first. Token embeddings always stay on the CPU (the input layer); a model without `output.weight`
  loads a second copy of `token_embd` as its output. Offloaded layers are split over GPUs in
  proportion to their free memory (the default `--split-mode layer` tensor split).
- KV cache: `-c` cells in total, one stream of `-c / -np` cells per slot; each layer's cache lives with
  its layer. Sliding-window layers keep `pad256(n_swa + n_ubatch)` cells per stream unless `--swa-full`.
- Compute buffer (ggml graph allocator's peak): the largest of the FFN block
  (3 x n_ff + 3 x n_embd floats per ubatch token), attention with flash attention (layer input, normed
  input, Q, K, V and the n_head x head_dim_v output), attention without flash attention
  (the f32 KQ matrix n_kv x n_head per token plus Q/K/V; MLA models: see `_mla_attention_bytes`) and the
  output head
  (n_vocab x n_seq logits, since llama-context.cpp reserves one output per sequence), plus the KQ mask.
  Calibrated on the H100 reference: 8B, n_ubatch 512, 4 streams of 2048: 110 MiB (FA on) and
  168 MiB (off) predicted and measured.
- Host output buffer: n_vocab x n_seq x 4 bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from llmhost.engine_ids import LLAMACPP
from llmhost.estimate import overheads as oh
from llmhost.estimate.dtypes import ggml_bits_per_weight
from llmhost.estimate.kv import layer_kv_bytes_per_token, llamacpp_kv_cells
from llmhost.estimate.vllm import ffn_width
from llmhost.estimate.weights import WeightsLayout
from llmhost.models.spec import ModelSpec


@dataclass(frozen=True)
class LlamaCppSettings:
    n_ctx_seq: int
    n_parallel: int = 1
    gpu_layers: int = 0
    n_batch: int = oh.LLAMACPP_DEFAULT_N_BATCH
    n_ubatch: int = oh.LLAMACPP_DEFAULT_N_UBATCH
    flash_attn: bool = True
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    swa_full: bool = False
    kv_unified: bool = False
    # Logits rows the graph is reserved for. llama-server keeps one output per sequence (None = n_seq);
    # llama-cpp-python's `Llama` asks for a whole batch (n_outputs_max = n_batch), so its compute
    # buffer holds n_vocab x n_ubatch f32 logits.
    n_outputs_max: int | None = None
    # The CPU backend copies weights of some types into an interleaved layout (`CPU_REPACK` buffer)
    # for the layers it runs, on top of the mmap'd file (llama.cpp `--repack`, on by default).
    cpu_repack: bool = True

    @property
    def n_ctx(self) -> int:
        return self.n_ctx_seq * self.n_parallel


# settings -> the compute buffer bytes llama.cpp reserves for them, or None when it cannot say.
ComputeProbe = Callable[[LlamaCppSettings], int | None]


@dataclass(frozen=True)
class Device:
    """Where llama.cpp may put buffers: a GPU or the host."""

    name: str
    kind: str  # "cuda", "rocm", "metal", "cpu"
    capacity_bytes: int
    context_bytes: int = 0


@dataclass
class DeviceBuffers:
    device: Device
    layers: list[int] = field(default_factory=list)
    model_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0
    overhead_bytes: int = 0
    # Mapped file pages superseded by the CPU repack copy: counted in `model_bytes` (llama.cpp reports
    # both buffers) but clean, file-backed pages the OS can drop, so not needed to fit.
    reclaimable_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.kv_bytes + self.compute_bytes + self.overhead_bytes

    @property
    def resident_bytes(self) -> int:
        """What must stay in memory: the buffers minus mapped pages the repack made unused."""
        return self.total_bytes - self.reclaimable_bytes

    @property
    def fits(self) -> bool:
        return self.resident_bytes <= self.device.capacity_bytes


# Architectures whose sliding window llama.cpp ignores: Phi-3 (and Phi-3.5-MoE) GGUFs carry
# `phi3.attention.sliding_window`, but llama.cpp sets `swa_type = LLAMA_SWA_TYPE_NONE`, `n_swa = 0` when it
# finds one ("Phi SWA is currently disabled", llama.cpp PR #13676; src/models/phi3.cpp in the llama.cpp
# llmhost builds), so every layer keeps the whole context.
LLAMACPP_SWA_DISABLED = ("phi3", "phimoe")


def llamacpp_sliding_window(spec: ModelSpec) -> int | None:
    """The sliding window llama.cpp applies to `spec` (None: every layer attends to the whole context)."""
    names = {spec.architecture.lower(), (spec.model_type or "").lower()}
    if any(name.removesuffix("forcausallm") in LLAMACPP_SWA_DISABLED for name in names):
        return None
    return spec.attention.sliding_window


def pad_ctx(tokens: int) -> int:
    return max(math.ceil(tokens / oh.LLAMACPP_CTX_PAD) * oh.LLAMACPP_CTX_PAD, oh.LLAMACPP_CTX_PAD)


def layer_kv_bytes(
    spec: ModelSpec, settings: LlamaCppSettings, layer: int, cells: tuple[int, int] | None = None
) -> int:
    """Bytes of layer `layer`'s K and V cache, all streams (`cells`: precomputed `llamacpp_kv_cells`)."""
    cells_here = _cells_for(spec, layer, cells or _kv_cells(spec, settings))
    if cells_here == 0:  # a recurrent (or attention-free) layer keeps no K/V cache
        return 0
    return cells_here * _layer_token_bytes(spec, settings, layer)


def _kv_cells(spec: ModelSpec, settings: LlamaCppSettings) -> tuple[int, int]:
    """`llamacpp_kv_cells` (full layers, sliding layers) for `spec` at these settings."""
    return llamacpp_kv_cells(
        settings.n_ctx_seq,
        settings.n_parallel,
        window=llamacpp_sliding_window(spec),
        n_ubatch=settings.n_ubatch,
        swa_full=settings.swa_full,
        unified=settings.kv_unified,
    )


def layer_kv_per_token(spec: ModelSpec, settings: LlamaCppSettings) -> list[int]:
    """Per layer: bytes one cached token takes at the settings' K/V types (0 for recurrent layers)."""
    return [_layer_token_bytes(spec, settings, il) for il in range(spec.attention.num_layers)]


def _layer_token_bytes(spec: ModelSpec, settings: LlamaCppSettings, layer: int) -> int:
    """Bytes one cached token takes in layer `layer` at the settings' K and V cache types."""
    if settings.cache_type_k == settings.cache_type_v:
        return layer_kv_bytes_per_token(spec, layer, settings.cache_type_k, engine=LLAMACPP)
    k_only = _half(spec, layer, settings.cache_type_k, k=True)
    return k_only + _half(spec, layer, settings.cache_type_v, k=False)


def _half(spec: ModelSpec, layer: int, dtype: str, *, k: bool) -> int:
    from llmhost.estimate.dtypes import kv_row_bytes

    att = spec.attention
    kind = att.layer_kinds[layer] if layer < len(att.layer_kinds) else "full"
    if kind == "mla":
        return layer_kv_bytes_per_token(spec, layer, dtype, engine=LLAMACPP) if k else 0
    heads = att.num_kv_heads[layer] if layer < len(att.num_kv_heads) else 0
    return kv_row_bytes(dtype, heads * (att.head_dim_k if k else att.head_dim_v))


def _cells_for(spec: ModelSpec, layer: int, cells: tuple[int, int]) -> int:
    att = spec.attention
    kind = att.layer_kinds[layer] if layer < len(att.layer_kinds) else "full"
    if kind in ("linear", "mamba", "none"):
        return 0
    return cells[1] if kind == "sliding" and llamacpp_sliding_window(spec) else cells[0]


def recurrent_state_bytes(spec: ModelSpec, settings: LlamaCppSettings) -> int:
    return spec.attention.recurrent_state_bytes_per_seq * settings.n_parallel


def compute_buffer_bytes(spec: ModelSpec, settings: LlamaCppSettings) -> int:
    """Peak of the graph allocator on a device that runs transformer layers."""
    att = spec.attention
    t = min(settings.n_ubatch, settings.n_ctx)
    h = spec.hidden_size
    kv_heads = max(att.num_kv_heads, default=0)
    kv_dim = kv_heads * (att.head_dim_k + att.head_dim_v)
    full_cells, _ = llamacpp_kv_cells(
        settings.n_ctx_seq,
        settings.n_parallel,
        window=None,
        n_ubatch=settings.n_ubatch,
        swa_full=True,
        unified=settings.kv_unified,
    )
    streams = 1 if settings.kv_unified else settings.n_parallel
    n_kv = full_cells // streams
    ffn = t * 4 * (3 * ffn_width(spec) + 3 * h)
    if "mla" in att.layer_kinds:
        attn = _mla_attention_bytes(spec, settings, t, n_kv, full_cells)
        mask = n_kv * t * (2 if settings.flash_attn else 4)
    elif settings.flash_attn:
        # build_attn (src/llama-graph.cpp) computes Q, V, K in that order from the normed input, stores
        # K/V into the cache, then allocates the flash-attention output (n_head x head_dim_v). The K and
        # V blocks freed by the cache copy sit beside Q, so the output lands above them: peak = layer
        # input + normed input + Q + K + V + output (equal to 3 x hidden + K + V when the output width
        # equals the hidden size, as in Llama; larger for Qwen3/Gemma whose n_head x head_dim > hidden).
        attn = t * 4 * (2 * h + att.num_attention_heads * (att.head_dim_k + att.head_dim_v) + kv_dim)
        mask = n_kv * t * 2
    else:
        attn = t * 4 * (n_kv * att.num_attention_heads + 4 * h + kv_dim)
        mask = n_kv * t * 4
    if "sliding" in att.layer_kinds and llamacpp_sliding_window(spec):
        # Models with sliding-window layers get a second mask over the SWA cache's cells
        # (build_attn_inp_kv_iswa, src/llama-graph.cpp), an input live as long as the first.
        _, swa_cells = _kv_cells(spec, settings)
        mask += (swa_cells // streams) * t * (2 if settings.flash_attn else 4)
    n_seqs = 1 if settings.kv_unified else settings.n_parallel
    n_outputs = min(t, settings.n_outputs_max) if settings.n_outputs_max else min(t, max(n_seqs, 1))
    out = spec.vocab_size * n_outputs * 4 + 2 * t * h * 4
    # The KQ mask lives through the layers but is freed before the output head runs.
    return max(max(ffn, attn) + mask, out)


def _mla_attention_bytes(
    spec: ModelSpec, settings: LlamaCppSettings, t: int, n_kv: int, full_cells: int
) -> int:
    """Peak live tensors of an MLA (DeepSeek V2/V3) attention block with the absorption optimization.

    llama.cpp (src/models/deepseek2.cpp) turns MLA into MQA over the cached latent: per head the query
    becomes `kv_lora_rank + qk_rope` wide (`head_dim_k` in the spec) and the attention output
    `kv_lora_rank` wide (`head_dim_v`), decompressed by `wv_b` afterwards.
    """
    att = spec.attention
    h = spec.hidden_size
    heads = att.num_attention_heads
    rope = att.qk_rope_head_dim or 0
    latent = att.kv_lora_rank or att.head_dim_v
    if settings.flash_attn:
        # At `Qcur = ggml_concat(q_nope_absorbed, q_pe)` these are live at once: the layer input and the
        # normed input (still needed by wkv_a_mqa), the decompressed query q (freed just before the
        # concat, its block too small to hold it), q_nope_absorbed (latent per head), the roped q_pe and
        # the concatenation itself (`head_dim_k` per head). The attention output (latent per head) is
        # placed later into the blocks freed here.
        q_head = oh.LLAMACPP_MLA_QK_NOPE_HEAD_DIM + rope
        return t * 4 * (2 * h + heads * (q_head + latent + rope + att.head_dim_k))
    # Without flash attention, build_attn_mha (src/llama-graph.cpp) multiplies by V = a view of the
    # K cache (MLA has no V cache), which is not transposed, so it takes the `ggml_cont(ggml_transpose(v))`
    # branch: a copy of every cell's latent at the cache type. Live with it at `kqv = mul_mat(v, kq)`:
    # the f32 scores (n_kv per head per token), the query (`head_dim_k` per head), the product (latent
    # per head) and the layer input.
    from llmhost.estimate.dtypes import kv_row_bytes

    v_copy = full_cells * kv_row_bytes(settings.cache_type_k, latent)
    return t * 4 * (h + heads * (n_kv + att.head_dim_k + latent)) + v_copy


def host_compute_bytes(spec: ModelSpec, settings: LlamaCppSettings) -> int:
    """The small host-side compute buffer (input embeddings of a ubatch) when all layers are offloaded."""
    return 3 * spec.hidden_size * min(settings.n_ubatch, settings.n_ctx) * 4


def output_buffer_bytes(spec: ModelSpec, settings: LlamaCppSettings) -> int:
    return spec.vocab_size * settings.n_parallel * 4


# ggml-cpu repacks these types on x86 AVX2 (ggml/src/ggml-cpu/repack.cpp); measured with
# llama-cpp-python 0.3.36 (benchmarks/data/llamacpp_measurements.json): Q4_0, Q4_K, IQ4_NL and Q2_K
# tensors of the blocks are copied, token_embd (read by get_rows) and Q3_K/Q5_K/Q6_K/Q8_0 are not.
REPACKED_TYPES = ("Q4_0", "Q4_K", "IQ4_NL", "Q2_K")
# Share of the block weights in a repacked type, for hypothetical files (from the recorded files:
# Q4_K_M 0.885, Q2_K 0.71, Q3_K_M 0.45).
_REPACK_SHARE = {"Q4_K_M": 0.885, "Q4_K_S": 1.0, "Q4_0": 1.0, "IQ4_NL": 1.0, "Q2_K": 0.71, "Q3_K_M": 0.45}


def cpu_repack_share(spec: ModelSpec, weights: WeightsLayout) -> float:
    """Share of the block weight bytes the CPU backend duplicates into its repack buffer."""
    layers = sum(weights.layer_bytes)
    if layers <= 0:
        return 0.0
    if weights.exact and spec.quantization.method == "gguf" and spec.bytes_by_dtype:
        repacked = sum(spec.bytes_by_dtype.get(t, 0) for t in REPACKED_TYPES)
        if repacked and spec.embedding_parameters:
            emb_bits = spec.embedding_bytes * 8 / spec.embedding_parameters
            emb_repackable = any(
                abs(emb_bits - ggml_bits_per_weight(t)) < 0.01 and spec.bytes_by_dtype.get(t)
                for t in REPACKED_TYPES
            )
            if emb_repackable:
                repacked -= spec.embedding_bytes
        return min(max(repacked, 0) / layers, 1.0)
    return _REPACK_SHARE.get(weights.quantization.upper(), 0.0)


def assign_layers(n_layers: int, gpu_layers: int, gpus: list[Device]) -> list[int]:
    """Device index (into `gpus`, or -1 for the CPU) of each layer 0..n_layers (n_layers = output)."""
    i_gpu_start = max(n_layers + 1 - gpu_layers, 0)
    act = min(gpu_layers, n_layers + 1)
    total = sum(max(g.capacity_bytes, 0) for g in gpus)
    splits: list[float] = []
    acc = 0.0
    for g in gpus:
        acc += max(g.capacity_bytes, 0) / total if total else 1 / len(gpus)
        splits.append(acc)
    placement: list[int] = []
    idx = 0
    for il in range(n_layers + 1):
        if not gpus or il < i_gpu_start or act <= 0:
            placement.append(-1)
            continue
        frac = (il - i_gpu_start) / act
        while idx < len(splits) - 1 and frac >= splits[idx]:  # layers come in order: the split only grows
            idx += 1
        placement.append(idx)
    return placement


def llamacpp_memory(
    spec: ModelSpec,
    weights: WeightsLayout,
    settings: LlamaCppSettings,
    gpus: list[Device],
    host: Device,
    kv_per_token: list[int] | None = None,
    compute_probe: ComputeProbe | None = None,
) -> list[DeviceBuffers]:
    """Buffers on each GPU (in order) and then on the host.

    `kv_per_token` (from `layer_kv_per_token`) may be passed to skip recomputing it in a search loop.
    `compute_probe` (CPU-only runs): the compute buffer llama.cpp itself reserves for these settings
    (`llmhost.engines.llamacpp_dryrun`), used instead of the analytic peak when it answers.
    """
    n = spec.attention.num_layers
    placement = assign_layers(n, settings.gpu_layers, gpus)
    buffers = [DeviceBuffers(device=g) for g in gpus]
    cpu = DeviceBuffers(device=host)
    layer_bytes = list(weights.layer_bytes) + [0] * max(n - len(weights.layer_bytes), 0)
    cells = _kv_cells(spec, settings)
    per_token = kv_per_token if kv_per_token is not None else layer_kv_per_token(spec, settings)
    for il in range(n):
        target = cpu if placement[il] < 0 else buffers[placement[il]]
        target.layers.append(il)
        target.model_bytes += layer_bytes[il]
        target.kv_bytes += _cells_for(spec, il, cells) * per_token[il]
    # Output layer (and the final norm with it).
    out_target = cpu if placement[n] < 0 else buffers[placement[n]]
    # A tied model's output reuses token_embd; a second copy is loaded only on a GPU.
    tied_copy = weights.embedding_bytes if out_target is not cpu else 0
    output = weights.output_bytes if weights.output_bytes > 0 else tied_copy
    out_target.model_bytes += output + weights.other_bytes
    cpu.model_bytes += weights.embedding_bytes
    # Recurrent state lives with the layers; put it where most layers are.
    recurrent = recurrent_state_bytes(spec, settings)
    if recurrent:
        holder = max([*buffers, cpu], key=lambda b: len(b.layers))
        holder.kv_bytes += recurrent
    if settings.cpu_repack and cpu.layers:
        cpu_layer_bytes = sum(layer_bytes[il] for il in cpu.layers)
        repacked = round(cpu_layer_bytes * cpu_repack_share(spec, weights))
        cpu.model_bytes += repacked
        cpu.reclaimable_bytes = repacked
    compute = compute_buffer_bytes(spec, settings)
    # Op offload (on by default): with CPU-resident layers, batches of >= 32 tokens run their matrix
    # products on the GPU, which copies that layer's weights into its compute buffer first.
    staged = max((layer_bytes[il] for il in cpu.layers), default=0) if settings.n_ubatch >= 32 else 0
    first_gpu = next((b for b in buffers if b.layers or b is out_target), None)
    for b in buffers:
        if b.layers or b is out_target:
            b.compute_bytes = compute + (staged if b is first_gpu else 0)
            b.overhead_bytes = b.device.context_bytes
    cpu.compute_bytes = compute if cpu.layers else host_compute_bytes(spec, settings)
    if compute_probe is not None and not gpus and cpu.layers:
        measured = compute_probe(settings)
        if measured is not None:
            cpu.compute_bytes = measured
    cpu.overhead_bytes = output_buffer_bytes(spec, settings) + host.context_bytes
    return [*buffers, cpu]


def max_gpu_layers(
    spec: ModelSpec, weights: WeightsLayout, settings: LlamaCppSettings, gpus: list[Device], host: Device
) -> int | None:
    """Largest `-ngl` whose buffers fit every device (None: not even the CPU alone fits)."""
    n = spec.attention.num_layers
    best: int | None = None
    for ngl in range(n + 1, -1, -1) if gpus else [0]:
        trial = LlamaCppSettings(**{**settings.__dict__, "gpu_layers": ngl})
        if all(b.fits for b in llamacpp_memory(spec, weights, trial, gpus, host)):
            best = ngl
            break
    return best
