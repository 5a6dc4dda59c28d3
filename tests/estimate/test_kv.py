"""KV cache bytes per token and per engine: every layout the estimator must get right."""

from __future__ import annotations

import pytest

from llmhost.estimate import kv_bits_per_element, kv_bytes_per_token, kv_layout, vllm_request_kv_bytes
from llmhost.estimate.kv import llamacpp_kv_cells
from llmhost.estimate.llamacpp import LlamaCppSettings, layer_kv_bytes
from support.llmhost_test_specs import MiB, deepseek_v3, dense_spec


def test_gqa_uses_kv_heads_not_attention_heads() -> None:
    # Llama-3.1-8B: 32 layers x 8 KV heads x 128 x (K+V) x 2 bytes = 128 KiB per token.
    assert kv_bytes_per_token(dense_spec(), "bf16") == 32 * 8 * 128 * 2 * 2 == 131072
    mha = dense_spec(kv_heads=32)
    assert kv_bytes_per_token(mha, "bf16") == 4 * 131072


def test_explicit_head_dim_overrides_hidden_over_heads() -> None:
    # Qwen3-0.6B: hidden 1024, 16 heads, but head_dim 128 (not 64), 8 KV heads, 28 layers.
    spec = dense_spec(
        layers=28, hidden=1024, heads=16, kv_heads=8, head_dim=128, intermediate=3072, vocab=151936
    )
    assert kv_bytes_per_token(spec, "bf16") == 28 * 8 * 128 * 2 * 2 == 114688


def test_separate_k_and_v_lengths() -> None:
    spec = dense_spec(layers=2, kv_heads=2, head_dim=192, head_dim_v=128)
    assert kv_bytes_per_token(spec, "f16", engine="llamacpp") == 2 * 2 * (192 + 128) * 2


def test_per_layer_kv_heads_and_layers_without_cache() -> None:
    # LFM2-style: conv layers have 0 KV heads and no cache.
    heads = [0, 0, 8, 0, 4, 8]
    kinds = ["linear", "linear", "full", "linear", "full", "full"]
    spec = dense_spec(layers=6, kv_heads=heads, kinds=kinds, recurrent_state=3 * MiB)
    assert kv_bytes_per_token(spec, "f16", engine="llamacpp") == (8 + 4 + 8) * 128 * 2 * 2
    layout = kv_layout(spec, "f16", engine="llamacpp")
    assert layout.full_layers == 3 and layout.recurrent_bytes_per_seq == 3 * MiB


def test_hybrid_only_attention_layers_grow_with_context() -> None:
    # Qwen3-Next-like: 1 full-attention layer in 4; linear-attention layers keep a fixed state per sequence.
    layers = 48
    kinds = ["full" if i % 4 == 3 else "linear" for i in range(layers)]
    heads = [2 if k == "full" else 0 for k in kinds]
    spec = dense_spec(layers=layers, kv_heads=heads, head_dim=256, kinds=kinds, recurrent_state=50 * MiB)
    per_token = kv_bytes_per_token(spec, "bf16")
    assert per_token == 12 * 2 * 256 * 2 * 2
    layout = kv_layout(spec, "bf16", engine="vllm")
    short = vllm_request_kv_bytes(layout, 1024, 2048)
    long = vllm_request_kv_bytes(layout, 2048, 2048)
    # Doubling the context adds only the attention layers' tokens; the recurrent state stays fixed.
    assert long - short == 1024 * per_token
    assert short == 1024 * per_token + 50 * MiB


def test_mla_latent_deepseek_v3() -> None:
    # 61 layers x (512 + 64) x 2 bytes = 70,272 bytes per token (hf-mem's MHA formula is ~25x this).
    spec = deepseek_v3()
    assert kv_bytes_per_token(spec, "bf16", engine="vllm") == 61 * 576 * 2 == 70272
    assert kv_bytes_per_token(spec, "f16", engine="llamacpp") == 70272  # K-only cache (llama.cpp #19067)
    assert kv_bytes_per_token(spec, "fp8", engine="vllm") == 61 * 576


def test_kv_dtype_sizes() -> None:
    assert kv_bits_per_element("f16") == 16
    assert kv_bits_per_element("bf16") == 16
    assert kv_bits_per_element("fp8") == 8
    assert kv_bits_per_element("q8_0") == 8.5
    assert kv_bits_per_element("q4_0") == 4.5
    assert kv_bits_per_element("q4_1") == 5.0
    assert kv_bits_per_element("q5_0") == 5.5
    assert kv_bits_per_element("q5_1") == 6.0
    spec = dense_spec()
    assert kv_bytes_per_token(spec, "q8_0", engine="llamacpp") == 131072 * 34 // 64


def test_unknown_kv_dtype_is_a_usage_error() -> None:
    from llmhost.errors import UsageError

    with pytest.raises(UsageError):
        kv_bytes_per_token(dense_spec(), "int3")


def _gemma3_like():  # type: ignore[no-untyped-def]
    layers = 12
    kinds = ["full" if i % 6 == 5 else "sliding" for i in range(layers)]
    return dense_spec(layers=layers, kv_heads=4, head_dim=256, kinds=kinds, sliding_window=512)


def test_sliding_window_llamacpp_caps_at_window_plus_ubatch_per_stream() -> None:
    spec = _gemma3_like()
    s = LlamaCppSettings(n_ctx_seq=32768, n_parallel=1, n_ubatch=512)
    full = layer_kv_bytes(spec, s, 5)
    swa = layer_kv_bytes(spec, s, 0)
    per_token = 4 * 256 * 2 * 2
    assert full == 32768 * per_token
    assert swa == 1024 * per_token  # pad256(512 + 512)
    # --swa-full keeps the whole context for sliding layers too.
    assert layer_kv_bytes(spec, LlamaCppSettings(n_ctx_seq=32768, swa_full=True), 0) == full
    # Recorded from llama.cpp (benchmarks/data): gemma3 swa512, -c 32768: 39.31 MiB over 12 layers.
    total = sum(layer_kv_bytes(spec.model_copy(update={}), s, i) for i in range(12))
    assert total == (2 * 32768 + 10 * 1024) * per_token


def test_llamacpp_kv_cells_streams() -> None:
    assert llamacpp_kv_cells(2048, 4, window=None, n_ubatch=512, swa_full=False, unified=False) == (
        8192,
        8192,
    )
    assert llamacpp_kv_cells(2048, 4, window=256, n_ubatch=512, swa_full=False, unified=False) == (
        8192,
        4 * 768,
    )
    # Unified: one stream of n_ctx cells, the window counted once per sequence.
    assert llamacpp_kv_cells(2048, 4, window=256, n_ubatch=512, swa_full=False, unified=True) == (8192, 1536)


def test_sliding_window_vllm_caps_at_window_plus_batched_tokens() -> None:
    spec = _gemma3_like()
    layout = kv_layout(spec, "bf16", engine="vllm")
    per_layer = 4 * 256 * 2 * 2
    assert layout.full_bytes_per_token == 2 * per_layer and layout.sliding_bytes_per_token == 10 * per_layer
    need = vllm_request_kv_bytes(layout, 32768, 2048)
    capped_tokens = (-(-(512 - 1 + 2048) // 16) + 1) * 16  # vLLM SlidingWindowSpec: cdiv(..)+1 blocks
    assert need == 32768 * 2 * per_layer + capped_tokens * 10 * per_layer
    # A short request is not capped.
    assert vllm_request_kv_bytes(layout, 256, 2048) == 256 * 2 * per_layer + (16 + 1) * 16 * 10 * per_layer


def test_tensor_parallel_splits_kv_heads_and_replicates_past_their_count() -> None:
    spec = dense_spec()  # 8 KV heads
    one = kv_layout(spec, "bf16", engine="vllm", tp=1).bytes_per_token
    assert kv_layout(spec, "bf16", engine="vllm", tp=2).bytes_per_token == one // 2
    assert kv_layout(spec, "bf16", engine="vllm", tp=8).bytes_per_token == one // 8
    # TP 16 > 8 heads: each rank still holds one whole head (replicated 2x in total).
    assert kv_layout(spec, "bf16", engine="vllm", tp=16).bytes_per_token == one // 8


def test_mla_latent_replicated_on_every_rank() -> None:
    spec = deepseek_v3()
    assert kv_layout(spec, "bf16", engine="vllm", tp=8).bytes_per_token == 70272


def test_vllm_without_hybrid_manager_sizes_sliding_layers_fully() -> None:
    layout = kv_layout(_gemma3_like(), "bf16", engine="vllm")
    capped = vllm_request_kv_bytes(layout, 32768, 2048)
    full = vllm_request_kv_bytes(layout, 32768, 2048, hybrid_manager=False)
    assert full == 32768 * layout.bytes_per_token > 4 * capped
