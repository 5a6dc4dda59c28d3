"""Bare config.json of real models -> parameter counts within 1% of the published totals; KV facts exact.

The fixtures and the source of every published figure are listed in tests/fixtures/configs/README.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmhost.models import resolve

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"

# name -> published total parameter count (README.md says where each comes from)
PUBLISHED = {
    "meta-llama--Llama-3.1-8B-Instruct": 8_030_261_248,
    "meta-llama--Llama-3.1-70B-Instruct": 70_553_706_496,
    "meta-llama--Llama-3.2-1B-Instruct": 1_235_814_400,
    "Qwen--Qwen2.5-7B-Instruct": 7_615_616_512,
    "Qwen--Qwen2.5-7B-Instruct-AWQ": 7_615_616_512,
    "Qwen--Qwen3-8B": 8_190_735_360,
    "Qwen--Qwen3-8B-FP8": 8_190_735_360,
    "Qwen--Qwen3-30B-A3B": 30_532_122_624,
    "Qwen--Qwen3-Next-80B-A3B-Instruct": 80_000_000_000,
    "mistralai--Mistral-7B-v0.1": 7_241_732_096,
    "mistralai--Mistral-Small-24B-Instruct-2501": 23_572_403_200,
    "mistralai--Mixtral-8x7B-v0.1": 46_702_792_704,
    "google--gemma-2-9b": 9_241_705_984,
    "google--gemma-3-12b-it": 12_187_325_040,
    "microsoft--Phi-3-mini-4k-instruct": 3_821_079_552,
    "microsoft--phi-4": 14_659_507_200,
    "deepseek-ai--DeepSeek-V2-Lite": 15_706_484_224,
    "deepseek-ai--DeepSeek-V3": 671_000_000_000,
    "openai--gpt-oss-20b": 20_914_757_184,
    "ai21labs--Jamba-v0.1": 51_570_000_000,
    "LiquidAI--LFM2-1.2B": 1_170_340_608,
    "CohereForAI--c4ai-command-r7b-12-2024": 8_028_033_024,
    "TheBloke--Llama-2-7B-Chat-GPTQ": 6_738_415_616,
    "RedHatAI--Meta-Llama-3.1-8B-Instruct-FP8": 8_030_261_248,
}
# Published active-parameter counts for MoE models (vendors count embeddings in: Mixtral 12.9B,
# Qwen3-30B-A3B 3.3B, DeepSeek-V3 37B; gpt-oss's 3.6B excludes the 0.58B embedding table).
PUBLISHED_ACTIVE = {
    "mistralai--Mixtral-8x7B-v0.1": 12.9e9,
    "Qwen--Qwen3-30B-A3B": 3.3e9,
    "deepseek-ai--DeepSeek-V3": 37e9,
    "openai--gpt-oss-20b": 3.61e9 + 201_088 * 2880,
}


def test_every_fixture_has_a_published_total() -> None:
    names = {p.stem for p in CONFIGS.glob("*.json")}
    assert names == set(PUBLISHED)
    assert len(names) >= 20


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_within_one_percent(name: str) -> None:
    spec = resolve(str(CONFIGS / f"{name}.json"))
    assert spec.parameters_source == "config" and spec.kind == "local_config"
    assert spec.parameters == pytest.approx(PUBLISHED[name], rel=0.01)
    blocks = spec.embedding_parameters + spec.output_parameters + sum(spec.layer_parameters)
    assert 0 < spec.parameters - blocks < 0.05 * spec.parameters  # final norm (+ vision tower)
    assert len(spec.layer_parameters) == spec.attention.num_layers
    assert spec.weights_bytes > 0


@pytest.mark.parametrize("name", sorted(PUBLISHED_ACTIVE))
def test_moe_active_parameters(name: str) -> None:
    spec = resolve(str(CONFIGS / f"{name}.json"))
    assert spec.moe is not None
    assert spec.active_parameters == pytest.approx(PUBLISHED_ACTIVE[name], rel=0.03)


def _spec(name: str):  # type: ignore[no-untyped-def]
    return resolve(str(CONFIGS / f"{name}.json"))


def test_gqa_and_explicit_head_dim() -> None:
    llama = _spec("meta-llama--Llama-3.1-8B-Instruct").attention
    assert (llama.num_layers, llama.num_attention_heads, llama.head_dim_k) == (32, 32, 128)
    assert llama.num_kv_heads == [8] * 32 and llama.layer_kinds == ["full"] * 32
    small = _spec("mistralai--Mistral-Small-24B-Instruct-2501").attention
    assert small.head_dim_k == small.head_dim_v == 128  # not 5120 / 32 = 160
    qwen3 = _spec("Qwen--Qwen3-8B").attention
    assert qwen3.head_dim_k == 128 and qwen3.num_kv_heads == [8] * 36
    phi3 = _spec("microsoft--Phi-3-mini-4k-instruct").attention
    assert phi3.num_kv_heads == [32] * 32 and phi3.head_dim_k == 96
    qwen25 = _spec("Qwen--Qwen2.5-7B-Instruct").attention
    assert qwen25.sliding_window is None and set(qwen25.layer_kinds) == {"full"}  # use_sliding_window false


def test_sliding_window_layouts() -> None:
    g2 = _spec("google--gemma-2-9b").attention
    assert g2.sliding_window == 4096 and g2.head_dim_k == 256
    assert g2.layer_kinds == ["sliding", "full"] * 21
    g3 = _spec("google--gemma-3-12b-it")
    assert g3.hidden_size == 3840 and g3.vocab_size == 262208  # nested text_config + class defaults
    assert g3.attention.sliding_window == 1024 and g3.attention.num_kv_heads == [8] * 48
    assert g3.attention.layer_kinds == (["sliding"] * 5 + ["full"]) * 8
    oss = _spec("openai--gpt-oss-20b").attention
    assert oss.sliding_window == 128 and oss.layer_kinds == ["sliding", "full"] * 12
    assert (oss.head_dim_k, oss.num_kv_heads[0]) == (64, 8)
    cohere = _spec("CohereForAI--c4ai-command-r7b-12-2024").attention
    assert cohere.layer_kinds == (["sliding"] * 3 + ["full"]) * 8 and cohere.sliding_window == 4096
    mistral = _spec("mistralai--Mistral-7B-v0.1").attention
    assert mistral.layer_kinds == ["sliding"] * 32 and mistral.sliding_window == 4096


def test_mla_latent() -> None:
    for name, layers in (("deepseek-ai--DeepSeek-V3", 61), ("deepseek-ai--DeepSeek-V2-Lite", 27)):
        att = _spec(name).attention
        assert att.layer_kinds == ["mla"] * layers
        assert (att.kv_lora_rank, att.qk_rope_head_dim) == (512, 64)  # 576 cached elements per token
        assert (att.head_dim_k, att.head_dim_v) == (192, 128)


def test_hybrid_layers_and_recurrent_state() -> None:
    nxt = _spec("Qwen--Qwen3-Next-80B-A3B-Instruct").attention
    assert nxt.layer_kinds == (["linear"] * 3 + ["full"]) * 12
    assert nxt.num_kv_heads == ([0] * 3 + [2]) * 12 and nxt.head_dim_k == 256
    # per linear layer: conv (4-1) * (2*16*128 + 32*128) + state 32*128*128, F32, 36 layers
    assert nxt.recurrent_state_bytes_per_seq == (3 * (2 * 2048 + 4096) + 32 * 128 * 128) * 4 * 36
    jamba = _spec("ai21labs--Jamba-v0.1").attention
    assert [i for i, k in enumerate(jamba.layer_kinds) if k == "full"] == [4, 12, 20, 28]
    assert jamba.recurrent_state_bytes_per_seq == (3 * 8192 + 8192 * 16) * 4 * 28
    lfm2 = _spec("LiquidAI--LFM2-1.2B").attention
    assert [i for i, k in enumerate(lfm2.layer_kinds) if k == "full"] == [2, 5, 8, 10, 12, 14]
    assert lfm2.recurrent_state_bytes_per_seq == 2 * 2048 * 4 * 10


def test_moe_facts() -> None:
    mixtral = _spec("mistralai--Mixtral-8x7B-v0.1").moe
    assert mixtral is not None and (mixtral.num_experts, mixtral.num_experts_per_tok) == (8, 2)
    v3 = _spec("deepseek-ai--DeepSeek-V3").moe
    assert v3 is not None and (v3.num_experts, v3.num_experts_per_tok, v3.num_shared_experts) == (256, 8, 1)
    assert v3.moe_intermediate_size == 2048
    oss = _spec("openai--gpt-oss-20b").moe
    assert oss is not None and (oss.num_experts, oss.num_experts_per_tok) == (32, 4)


@pytest.mark.parametrize(
    ("name", "method", "bits", "group"),
    [
        ("Qwen--Qwen2.5-7B-Instruct-AWQ", "awq", 4, 128),
        ("TheBloke--Llama-2-7B-Chat-GPTQ", "gptq", 4, 128),
        ("Qwen--Qwen3-8B-FP8", "fp8", 8, None),
        ("RedHatAI--Meta-Llama-3.1-8B-Instruct-FP8", "compressed-tensors", 8, None),
        ("openai--gpt-oss-20b", "mxfp4", 4.25, 32),
        ("deepseek-ai--DeepSeek-V3", "fp8", 8, None),
        ("meta-llama--Llama-3.1-8B-Instruct", "none", None, None),
    ],
)
def test_quantization_config(name: str, method: str, bits: float | None, group: int | None) -> None:
    q = _spec(name).quantization
    assert (q.method, q.bits, q.group_size) == (method, bits, group)


def test_config_only_bytes_follow_quantization() -> None:
    dense = _spec("Qwen--Qwen2.5-7B-Instruct")
    awq = _spec("Qwen--Qwen2.5-7B-Instruct-AWQ")
    assert dense.weights_bytes == pytest.approx(2 * dense.parameters, rel=0.001)
    # 4-bit blocks (+ a 16-bit scale per 128) with 16-bit embeddings and lm_head: about 5.5 GB
    assert 5.0e9 < awq.weights_bytes < 6.0e9


def test_trust_remote_code_flag() -> None:
    assert _spec("deepseek-ai--DeepSeek-V3").trust_remote_code
    assert not _spec("meta-llama--Llama-3.1-8B-Instruct").trust_remote_code


# Well-known f16 KV cache sizes per token (all layers, K and V, before any sliding-window cap):
# Llama-3.1-8B 128 KiB, 70B 320 KiB, Qwen2.5-7B 56 KiB, Phi-3-mini 384 KiB, DeepSeek-V3 MLA
# 61 x 576 elements, hybrids only on their attention layers.
KV_F16_BYTES_PER_TOKEN = {
    "meta-llama--Llama-3.1-8B-Instruct": 131_072,
    "meta-llama--Llama-3.1-70B-Instruct": 327_680,
    "Qwen--Qwen2.5-7B-Instruct": 57_344,
    "Qwen--Qwen3-8B": 147_456,
    "mistralai--Mistral-Small-24B-Instruct-2501": 163_840,
    "mistralai--Mixtral-8x7B-v0.1": 131_072,
    "google--gemma-2-9b": 344_064,
    "google--gemma-3-12b-it": 393_216,
    "microsoft--Phi-3-mini-4k-instruct": 393_216,
    "microsoft--phi-4": 204_800,
    "deepseek-ai--DeepSeek-V3": 61 * 576 * 2,
    "deepseek-ai--DeepSeek-V2-Lite": 27 * 576 * 2,
    "openai--gpt-oss-20b": 49_152,
    "Qwen--Qwen3-Next-80B-A3B-Instruct": 24_576,
    "ai21labs--Jamba-v0.1": 16_384,
    "LiquidAI--LFM2-1.2B": 12_288,
    "CohereForAI--c4ai-command-r7b-12-2024": 131_072,
}


def _kv_f16_per_token(spec) -> int:  # type: ignore[no-untyped-def]
    att = spec.attention
    total = 0
    for kind, heads in zip(att.layer_kinds, att.num_kv_heads, strict=True):
        if kind == "mla":
            total += (att.kv_lora_rank + att.qk_rope_head_dim) * 2
        elif kind in ("full", "sliding"):
            total += heads * (att.head_dim_k + att.head_dim_v) * 2
    return total


@pytest.mark.parametrize("name", sorted(KV_F16_BYTES_PER_TOKEN))
def test_kv_bytes_per_token_exact(name: str) -> None:
    assert _kv_f16_per_token(_spec(name)) == KV_F16_BYTES_PER_TOKEN[name]
