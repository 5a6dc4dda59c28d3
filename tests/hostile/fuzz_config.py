"""Fuzz target `config`: hostile config.json files in a model directory, through resolve -> make_plan
-> JSON serialisation (what `llmhost inspect DIR --json` and `llmhost plan DIR --json` do).

Seeds are the real configs in tests/fixtures/configs (dense, GQA, MoE, MLA, hybrid, sliding-window,
multimodal, quantized); mutations are structure-aware (the keys llmhost reads set to 0, -1, 2^63,
1e308, NaN, inf, "abc", [], {}, null, nested thousands deep, deleted, duplicated) plus raw byte damage.
"""

from __future__ import annotations

import random
from pathlib import Path

from support.jsonmut import mutate_json, plan_and_serialise

CASES = 20000
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "configs"

# Every key hf_config.py and config_params.py read, and the nested sections they descend into.
KEYS = [
    "num_hidden_layers", "n_layer", "num_layers", "hidden_size", "n_embd", "d_model",
    "num_attention_heads", "n_head", "num_key_value_heads", "multi_query", "head_dim", "kv_channels",
    "vocab_size", "intermediate_size", "max_position_embeddings", "model_max_length", "model_type",
    "architectures", "tie_word_embeddings", "torch_dtype", "kv_lora_rank", "q_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "layer_types", "hybrid_override_pattern",
    "attn_layer_period", "attn_layer_offset", "full_attention_interval", "full_attn_idxs",
    "sliding_window", "use_sliding_window", "sliding_window_pattern", "linear_num_key_heads",
    "linear_num_value_heads", "linear_key_head_dim", "linear_conv_kernel_dim", "conv_L_cache",
    "mamba_d_state", "mamba_d_conv", "mamba_expand", "mamba_n_heads", "mamba_d_head", "mamba_n_groups",
    "mamba_dt_rank", "num_local_experts", "num_experts", "n_routed_experts", "num_experts_per_tok",
    "n_shared_experts", "shared_expert_intermediate_size", "moe_intermediate_size",
    "first_k_dense_replace", "moe_layer_freq", "expert_layer_period", "expert_layer_offset",
    "mlp_only_layers", "decoder_sparse_step", "block_ff_dim", "block_auto_adjust_ff_dim",
    "block_ffn_dim_multiplier", "block_multiple_of", "attention_bias", "attn_output_gate",
    "quantization_config", "compression_config", "quant_method", "bits", "group_size", "config_groups",
    "weights", "num_bits", "load_in_4bit", "text_config", "llm_config", "thinker_config",
    "vision_config", "patch_size", "image_size", "auto_map",
]  # fmt: skip


def seeds(workdir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(FIXTURES.glob("*.json"))]


def mutate(data: bytes, rng: random.Random) -> bytes:
    return mutate_json(data, rng, KEYS)


def check(data: bytes, workdir: Path) -> None:
    (workdir / "config.json").write_bytes(data)
    plan_and_serialise(workdir)
