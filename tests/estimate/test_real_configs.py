"""KV bytes per token on real config.json files (tests/fixtures/configs), resolved by llmhost.models.

Each expected figure is worked out by hand from the config (layers x KV heads x head dims x 2 bytes),
the way each engine lays its cache out: these are the numbers existing tools get wrong (MLA, hybrid,
head_dim overrides, sliding windows).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmhost.estimate import kv_bytes_per_token, kv_layout, vllm_request_kv_bytes
from llmhost.models import resolve

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"

EXPECTED = {
    # name: bf16 bytes per token (why in the comment)
    "meta-llama--Llama-3.1-8B-Instruct": 32 * 8 * 128 * 2 * 2,  # GQA 8 of 32 heads
    "meta-llama--Llama-3.1-70B-Instruct": 80 * 8 * 128 * 2 * 2,
    "Qwen--Qwen3-8B": 36 * 8 * 128 * 2 * 2,  # head_dim 128 (not 4096/32)
    "mistralai--Mistral-Small-24B-Instruct-2501": 40 * 8 * 128 * 2 * 2,  # head_dim 128, not 5120/32 = 160
    "deepseek-ai--DeepSeek-V3": 61 * (512 + 64) * 2,  # MLA latent, ~70 KB (MHA formula: ~25x)
    "deepseek-ai--DeepSeek-V2-Lite": 27 * (512 + 64) * 2,
    "Qwen--Qwen3-Next-80B-A3B-Instruct": 12 * 2 * 256 * 2 * 2,  # 1 attention layer in 4
    "ai21labs--Jamba-v0.1": 4 * 8 * 128 * 2 * 2,  # 1 attention layer in 8
    "LiquidAI--LFM2-1.2B": 6 * 8 * 64 * 2 * 2,  # 6 attention layers, 10 conv layers
    "openai--gpt-oss-20b": 24 * 8 * 64 * 2 * 2,  # head_dim 64, not 2880/64 = 45
    "google--gemma-3-12b-it": 48 * 8 * 256 * 2 * 2,  # head_dim 256, not 3840/16 = 240
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_kv_bytes_per_token_is_exact(name: str) -> None:
    spec = resolve(str(CONFIGS / f"{name}.json"))
    assert kv_bytes_per_token(spec, "bf16", engine="vllm") == EXPECTED[name]
    assert kv_bytes_per_token(spec, "fp8", engine="vllm") == EXPECTED[name] // 2


def test_hybrid_models_carry_a_fixed_state_per_sequence() -> None:
    for name in ("Qwen--Qwen3-Next-80B-A3B-Instruct", "ai21labs--Jamba-v0.1", "LiquidAI--LFM2-1.2B"):
        spec = resolve(str(CONFIGS / f"{name}.json"))
        layout = kv_layout(spec, "bf16", engine="vllm")
        assert layout.recurrent_bytes_per_seq > 0
        one = vllm_request_kv_bytes(layout, 4096, 8192)
        two = vllm_request_kv_bytes(layout, 8192, 8192)
        assert two - one == 4096 * EXPECTED[name]


def test_sliding_layers_make_long_contexts_cheap_in_vllm() -> None:
    spec = resolve(str(CONFIGS / "google--gemma-3-12b-it.json"))
    layout = kv_layout(spec, "bf16", engine="vllm")
    assert layout.sliding_layers == 40 and layout.full_layers == 8 and layout.sliding_window == 1024
    per_layer = 8 * 256 * 2 * 2
    need = vllm_request_kv_bytes(layout, 131072, 2048)
    # 8 full layers hold the whole context, 40 sliding layers about window + batch.
    assert need == 131072 * 8 * per_layer + (-(-(1024 - 1 + 2048) // 16) + 1) * 16 * 40 * per_layer
    assert need < 0.25 * 131072 * EXPECTED["google--gemma-3-12b-it"]
