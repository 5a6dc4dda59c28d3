"""KV cache bytes per token, per layer, the way each engine lays the cache out.

- Full attention: K and V rows of `kv_heads x head_dim_k` and `kv_heads x head_dim_v` elements per token
  (GQA via per-layer `num_kv_heads`, explicit head dims, separate K/V lengths from GGUF).
- MLA (DeepSeek V2/V3, Kimi): one latent of `kv_lora_rank + qk_rope_head_dim` elements per layer per
  token, no separate V. vLLM: `MLAAttentionSpec` (vllm/v1/kv_cache_interface.py); llama.cpp: K-only
  cache since ggml-org/llama.cpp#19067 ("V-less cache", 2026-01).
- Sliding-window layers grow like full layers until the window, then are capped per engine:
  vLLM (hybrid KV cache manager) keeps `cdiv(min(window - 1 + max_num_batched_tokens, len), 16) + 1`
  blocks per request (`SlidingWindowSpec.max_memory_usage_bytes`); llama.cpp keeps
  `pad256(min(n_ctx_seq, n_swa * (unified ? n_seq : 1) + n_ubatch))` cells per stream
  (src/llama-kv-cache-iswa.cpp), or the full context with `--swa-full`.
- Linear-attention / Mamba layers: no per-token cache, a fixed recurrent state per sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmhost.engine_ids import VLLM
from llmhost.estimate.dtypes import kv_row_bytes
from llmhost.models.spec import ModelSpec

VLLM_BLOCK_TOKENS = 16
LLAMACPP_SWA_PAD = 256


def _kv_heads(spec: ModelSpec, layer: int, tp: int, engine: str) -> int:
    heads = spec.attention.num_kv_heads
    n = heads[layer] if layer < len(heads) else (heads[-1] if heads else 0)
    if n <= 0 or tp <= 1 or engine != VLLM:
        return n
    # vLLM ModelConfig.get_num_kv_heads: KV heads are split over TP ranks, replicated when TP > heads.
    return max(1, n // tp)


def layer_kv_bytes_per_token(spec: ModelSpec, layer: int, kv_dtype: str, *, engine: str, tp: int = 1) -> int:
    """Bytes one token adds to layer `layer`'s cache (one TP rank's share for vLLM)."""
    att = spec.attention
    kind = att.layer_kinds[layer] if layer < len(att.layer_kinds) else "full"
    if kind in ("linear", "mamba", "none"):
        return 0
    if kind == "mla":
        if att.kv_lora_rank is not None:
            latent = att.kv_lora_rank + (att.qk_rope_head_dim or 0)
        else:  # GGUF MLA: a single KV head whose key_length is the latent
            latent = att.head_dim_k * max(_kv_heads(spec, layer, 1, engine), 1)
        # MLA's latent is replicated on every TP rank, not split.
        return kv_row_bytes(kv_dtype, latent)
    heads = _kv_heads(spec, layer, tp, engine)
    if heads <= 0:
        return 0
    return kv_row_bytes(kv_dtype, heads * att.head_dim_k) + kv_row_bytes(kv_dtype, heads * att.head_dim_v)


@dataclass(frozen=True)
class KVLayout:
    """KV bytes per token split by how the layers grow (for one TP rank when tp > 1)."""

    full_bytes_per_token: int
    sliding_bytes_per_token: int
    sliding_window: int | None
    recurrent_bytes_per_seq: int
    full_layers: int
    sliding_layers: int

    @property
    def bytes_per_token(self) -> int:
        """While the context is shorter than every window: what one token adds to the whole cache."""
        return self.full_bytes_per_token + self.sliding_bytes_per_token


def kv_layout(spec: ModelSpec, kv_dtype: str, *, engine: str, tp: int = 1) -> KVLayout:
    att = spec.attention
    full = sliding = 0
    n_full = n_sliding = 0
    window = att.sliding_window
    for layer in range(att.num_layers):
        kind = att.layer_kinds[layer] if layer < len(att.layer_kinds) else "full"
        size = layer_kv_bytes_per_token(spec, layer, kv_dtype, engine=engine, tp=tp)
        if size == 0:
            continue
        if kind == "sliding" and window:
            sliding += size
            n_sliding += 1
        else:
            full += size
            n_full += 1
    return KVLayout(
        full_bytes_per_token=full,
        sliding_bytes_per_token=sliding,
        sliding_window=window if n_sliding else None,
        recurrent_bytes_per_seq=att.recurrent_state_bytes_per_seq,
        full_layers=n_full,
        sliding_layers=n_sliding,
    )


def kv_bytes_per_token(spec: ModelSpec, kv_dtype: str, *, engine: str = VLLM) -> int:
    """What one token adds to the engine's cache: all layers and KV heads, before any window caps."""
    return kv_layout(spec, kv_dtype, engine=engine).bytes_per_token


def vllm_request_kv_bytes(
    layout: KVLayout, tokens: int, max_num_batched_tokens: int, *, hybrid_manager: bool = True
) -> int:
    """KV bytes vLLM reserves for one request of `tokens` (its own per-rank page arithmetic).

    Full layers take `cdiv(tokens, 16)` blocks; sliding layers at most
    `cdiv(min(window - 1 + mnbt, tokens), 16) + 1` blocks. Without the hybrid KV cache manager
    (`--disable-hybrid-kv-cache-manager`, or a KV connector) sliding layers are sized like full ones.
    """
    bs = VLLM_BLOCK_TOKENS
    full = math.ceil(tokens / bs) * bs * layout.full_bytes_per_token
    sliding = 0
    if layout.sliding_bytes_per_token and not hybrid_manager:
        sliding = math.ceil(tokens / bs) * bs * layout.sliding_bytes_per_token
    elif layout.sliding_bytes_per_token:
        window = layout.sliding_window or tokens
        capped = min(window - 1 + max_num_batched_tokens, tokens)
        # +1: the window may not start at a block boundary (vLLM's own comment).
        blocks = math.ceil(capped / bs) + 1
        sliding = blocks * bs * layout.sliding_bytes_per_token
    return full + sliding + layout.recurrent_bytes_per_seq


def llamacpp_kv_cells(
    n_ctx_seq: int, n_seq: int, *, window: int | None, n_ubatch: int, swa_full: bool, unified: bool
) -> tuple[int, int]:
    """(cells of full layers, cells of sliding layers), all streams together.

    With one stream per slot (llama-server's default when `-np` is given) every stream holds
    `n_ctx_seq` cells; the SWA cache holds `pad256(min(n_ctx_seq, n_swa + n_ubatch))` per stream.
    """
    streams = 1 if unified else n_seq
    size_base = n_ctx_seq * (n_seq if unified else 1)
    if window is None or swa_full:
        size_swa = size_base
    else:
        want = window * (n_seq if unified else 1) + n_ubatch
        size_swa = math.ceil(min(size_base, want) / LLAMACPP_SWA_PAD) * LLAMACPP_SWA_PAD
    return size_base * streams, size_swa * streams
