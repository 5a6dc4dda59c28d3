"""Parameter counts from config.json alone, for when no tensor table is available.

Counts every weight matrix, bias and norm vector the transformers implementation creates, per block,
for dense, GQA, MoE (routed + shared experts, dense-first layers), MLA (DeepSeek V2/V3), hybrid
(Qwen3-Next gated DeltaNet, Jamba/Mamba) and gpt-oss blocks, plus a ViT estimate for the vision tower
of multimodal configs. Accuracy against published totals is tested per fixture (within 1%).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmhost.models import hf_config as hc

Config = dict[str, Any]

# Families whose MLP is up/down only (no gate projection).
_UNGATED = ("gpt2", "gpt_neox", "gptj", "falcon", "phi", "starcoder2", "bloom", "opt", "gpt_bigcode", "mpt")
# Families with q/k/v biases although config.json does not say so.
_QKV_BIAS_DEFAULT = ("qwen2", "qwen2_moe", "qwen2_vl", "qwen2_5_vl")
# Real multipliers scale the feed-forward width by 1-2x; 100 is far above that and keeps int(mult * ff)
# finite (a float multiplier near 1e308 would overflow it).
_MAX_FF_MULTIPLIER = 100
_QK_NORM = ("qwen3", "qwen3_moe", "qwen3_next", "gemma3", "gemma3_text", "lfm2", "lfm2_moe")


@dataclass(frozen=True)
class Matrix:
    """`count` weight matrices of `rows` x `cols` (out x in features), as a quantizer sees them."""

    count: int
    rows: int
    cols: int
    expert: bool = False  # a routed expert's projection (MXFP4 quantizes only these)

    @property
    def parameters(self) -> int:
        return self.count * self.rows * self.cols


@dataclass
class ConfigCount:
    parameters: int
    active_parameters: int
    embedding_parameters: int
    output_parameters: int
    layer_parameters: list[int] = field(default_factory=list)
    other_parameters: int = 0  # final norm, vision tower, projector
    # Per block, the linear projections a quantized checkpoint stores quantized (attention and MLP /
    # expert projections; not routers, norms, biases, convolutions or recurrent-state parameters).
    layer_matrices: list[list[Matrix]] = field(default_factory=list)


def _mlp(h: int, inter: int, *, gated: bool, bias: bool = False) -> int:
    n = (3 if gated else 2) * h * inter
    if bias:
        n += (2 if gated else 1) * inter + h
    return n


def _attention_matrices(cfg: Config, h: int) -> list[Matrix]:
    """The attention block's projections (the ones `_attention` counts), out x in."""
    mt = str(cfg.get("model_type", ""))
    heads = hc.num_heads(cfg)
    if hc.is_mla(cfg):
        nope = hc.get_int(cfg, "qk_nope_head_dim", default=128) or 128
        rope = hc.get_int(cfg, "qk_rope_head_dim", default=64) or 64
        v = hc.get_int(cfg, "v_head_dim", default=128) or 128
        kv_rank = hc.get_int(cfg, "kv_lora_rank") or 512
        q_rank = hc.get_int(cfg, "q_lora_rank")
        q = (
            [Matrix(1, q_rank, h), Matrix(1, heads * (nope + rope), q_rank)]
            if q_rank
            else [Matrix(1, heads * (nope + rope), h)]
        )
        kv = [Matrix(1, kv_rank + rope, h), Matrix(1, heads * (nope + v), kv_rank)]
        return [*q, *kv, Matrix(1, h, heads * v)]
    kv_heads = hc.num_kv_heads(cfg)
    hd = hc.head_dim(cfg)
    gated_out = mt == "qwen3_next" or cfg.get("attn_output_gate") is True
    q_out = heads * hd * (2 if gated_out else 1)
    return [Matrix(1, q_out, h), Matrix(2, kv_heads * hd, h), Matrix(1, h, heads * hd)]


def _mlp_matrices(h: int, inter: int, *, gated: bool, count: int = 1, expert: bool = False) -> list[Matrix]:
    """gate + up (in -> inter) and down (inter -> out) of `count` identical MLPs."""
    return [Matrix(count * (2 if gated else 1), inter, h, expert), Matrix(count, h, inter, expert)]


def _routing_bias(cfg: Config, mt: str) -> bool:
    """The router's per-expert selection bias (`mlp.gate.e_score_correction_bias`, fp32, one per routed
    expert): DeepSeek-V3's `noaux_tc` routing (its modeling_deepseek.py MoEGate creates it when
    `topk_method == "noaux_tc"`), GLM-4.5 (always) and configs with `use_routing_bias` (MiniMax)."""
    return cfg.get("topk_method") == "noaux_tc" or cfg.get("use_routing_bias") is True or mt == "glm4_moe"


def _attention(cfg: Config, h: int) -> int:
    mt = str(cfg.get("model_type", ""))
    heads = hc.num_heads(cfg)
    n = sum(m.parameters for m in _attention_matrices(cfg, h))
    if hc.is_mla(cfg):  # + the q_a and kv_a latent norms
        return n + (hc.get_int(cfg, "q_lora_rank") or 0) + (hc.get_int(cfg, "kv_lora_rank") or 512)
    kv_heads = hc.num_kv_heads(cfg)
    hd = hc.head_dim(cfg)
    gated_out = mt == "qwen3_next" or cfg.get("attn_output_gate") is True
    q_out = heads * hd * (2 if gated_out else 1)  # Qwen3-Next/3.5 gate the attention output
    qkv_bias = cfg.get("attention_bias", mt in _QKV_BIAS_DEFAULT)
    if qkv_bias:
        n += q_out + 2 * kv_heads * hd
        if mt not in _QKV_BIAS_DEFAULT:
            n += h  # o_proj bias (Llama-style attention_bias, gpt-oss)
    if mt in _QK_NORM:
        n += 2 * hd
    if mt == "gpt_oss":
        n += heads  # attention sinks
    return n


def _linear_attention(cfg: Config, h: int) -> int:
    """Qwen3-Next gated DeltaNet block."""
    nk = hc.get_int(cfg, "linear_num_key_heads", default=16) or 16
    nv = hc.get_int(cfg, "linear_num_value_heads", default=32) or 32
    dk = hc.get_int(cfg, "linear_key_head_dim", default=128) or 128
    dv = hc.get_int(cfg, "linear_value_head_dim", default=128) or 128
    kernel = hc.get_int(cfg, "linear_conv_kernel_dim", default=4) or 4
    key_dim, value_dim = nk * dk, nv * dv
    in_proj = h * (2 * key_dim + 2 * value_dim) + h * 2 * nv
    conv = (2 * key_dim + value_dim) * kernel
    return in_proj + conv + 2 * nv + dv + value_dim * h


def _short_conv(cfg: Config, h: int) -> int:
    """LFM2 gated short-convolution block: in_proj (3h), depthwise conv of L_cache taps, out_proj."""
    l_cache = hc.get_int(cfg, "conv_L_cache", default=3) or 3
    bias = bool(cfg.get("conv_bias", False))
    return h * 3 * h + h * l_cache + h * h + (3 * h + h + h if bias else 0)


def _lfm2_ff(cfg: Config, inter: int) -> int:
    """LFM2 shrinks block_ff_dim like Llama's SwiGLU sizing (2/3, multiplier, round up)."""
    ff = hc.get_int(cfg, "block_ff_dim") or inter
    if cfg.get("block_auto_adjust_ff_dim"):
        ff = int(2 * ff / 3)
        mult = cfg.get("block_ffn_dim_multiplier")
        if isinstance(mult, int | float) and not isinstance(mult, bool):
            if not 0 < mult <= _MAX_FF_MULTIPLIER:
                raise hc.bad_value(
                    "block_ffn_dim_multiplier", mult, f"above 0 and at most {_MAX_FF_MULTIPLIER}"
                )
            ff = int(mult * ff)
        multiple = hc.get_int(cfg, "block_multiple_of", default=256) or 256
        ff = multiple * -(-ff // multiple)
    return ff


def _mamba(cfg: Config, h: int) -> int:
    d_state = hc.get_int(cfg, "mamba_d_state", "state_size", default=16) or 16
    d_conv = hc.get_int(cfg, "mamba_d_conv", "conv_kernel", default=4) or 4
    expand = hc.get_int(cfg, "mamba_expand", "expand", default=2) or 2
    d_inner = expand * h
    dt_rank = hc.get_int(cfg, "mamba_dt_rank") or -(-h // 16)
    conv_bias = cfg.get("mamba_conv_bias", True)
    proj_bias = bool(cfg.get("mamba_proj_bias", False))
    n = h * 2 * d_inner
    n += d_inner * d_conv + (d_inner if conv_bias else 0)
    n += d_inner * (dt_rank + 2 * d_state)
    n += dt_rank * d_inner + d_inner
    n += d_inner * d_state + d_inner
    n += d_inner * h + (h if proj_bias else 0)
    if str(cfg.get("model_type", "")) == "jamba":
        n += dt_rank + 2 * d_state  # dt/B/C layernorms
    return n


def _moe_layer(cfg: Config, h: int, mt: str) -> tuple[int, int]:
    """(all parameters, active parameters) of one MoE feed-forward block."""
    moe = hc.moe_from_config(cfg)
    assert moe is not None
    inter = moe.moe_intermediate_size or hc.require_int(cfg, "intermediate_size")
    gpt_oss = mt == "gpt_oss"
    expert = _mlp(h, inter, gated=True, bias=gpt_oss)
    router = moe.num_experts * h + (moe.num_experts if gpt_oss or _routing_bias(cfg, mt) else 0)
    shared_inter = hc.get_int(cfg, "shared_expert_intermediate_size")
    shared = 0
    if shared_inter:  # Qwen2-MoE / Qwen3-Next: one shared expert plus a sigmoid gate
        shared = _mlp(h, shared_inter, gated=True) + h
    elif moe.num_shared_experts:
        shared = moe.num_shared_experts * _mlp(h, inter, gated=True)
    total = router + moe.num_experts * expert + shared
    active = router + moe.num_experts_per_tok * expert + shared
    return total, active


def _moe_matrices(cfg: Config, h: int) -> list[Matrix]:
    """The projections `_moe_layer` counts: routed experts (flagged) and shared experts."""
    moe = hc.moe_from_config(cfg)
    assert moe is not None
    inter = moe.moe_intermediate_size or hc.require_int(cfg, "intermediate_size")
    out = _mlp_matrices(h, inter, gated=True, count=moe.num_experts, expert=True)
    shared_inter = hc.get_int(cfg, "shared_expert_intermediate_size")
    if shared_inter:
        out += _mlp_matrices(h, shared_inter, gated=True)
    elif moe.num_shared_experts:
        out += _mlp_matrices(h, inter, gated=True, count=moe.num_shared_experts)
    return out


def _is_moe_layer(cfg: Config, i: int, mt: str) -> bool:
    if hc.moe_from_config(cfg) is None:
        return False
    if "first_k_dense_replace" in cfg:  # DeepSeek
        freq = hc.get_int(cfg, "moe_layer_freq", default=1) or 1
        return i >= (hc.get_int(cfg, "first_k_dense_replace") or 0) and i % freq == 0
    if "expert_layer_period" in cfg:  # Jamba
        period = hc.require_positive(cfg, "expert_layer_period")
        return i % period == (hc.get_int(cfg, "expert_layer_offset", default=0) or 0)
    dense_only = cfg.get("mlp_only_layers")
    if isinstance(dense_only, list) and i in dense_only:
        return False
    step = hc.get_int(cfg, "decoder_sparse_step", default=1) or 1
    return (i + 1) % step == 0


def _vision_tower(full_cfg: Config) -> int:
    """ViT (SigLIP/CLIP-style) estimate for multimodal configs: blocks, patch and position embeddings."""
    v = full_cfg.get("vision_config")
    if not isinstance(v, dict):
        return 0
    h = hc.get_int(v, "hidden_size", "embed_dim", "width")
    layers = hc.get_int(v, "num_hidden_layers", "depth", "num_layers")
    if not h or not layers:
        return 0
    inter = hc.get_int(v, "intermediate_size") or 4 * h
    patch = hc.get_int(v, "patch_size", default=14) or 14
    image = hc.get_int(v, "image_size", default=224) or 224
    channels = hc.get_int(v, "num_channels", default=3) or 3
    block = 4 * h * h + 4 * h + 2 * h * inter + inter + h + 4 * h
    n = layers * block + channels * patch * patch * h + h + (image // patch) ** 2 * h + 2 * h
    text_h = hc.get_int(hc.text_part(full_cfg), "hidden_size") or h
    n += h * text_h + h  # projector into the text model (one linear + norm for Gemma 3)
    return n


def count_from_config(full_cfg: Config) -> ConfigCount:
    cfg = hc.text_part(full_cfg)
    mt = str(cfg.get("model_type", ""))
    h = hc.hidden_size(cfg)
    vocab = hc.vocab_size(cfg)
    inter = hc.get_int(cfg, "intermediate_size", "n_inner", "ffn_hidden_size") or 4 * h
    kinds = hc.layer_kinds(cfg)
    gated = mt not in _UNGATED
    norms_per_layer = 4 if mt.startswith(("gemma2", "gemma3")) else 1 if mt.startswith("cohere") else 2
    if mt.startswith("lfm2"):
        inter = _lfm2_ff(cfg, inter)
    layers: list[int] = []
    matrices: list[list[Matrix]] = []
    active_total = 0
    for i, kind in enumerate(kinds):
        block: list[Matrix] = []
        if kind == "linear":
            mixer = _linear_attention(cfg, h)
        elif kind == "mamba":
            mixer = _short_conv(cfg, h) if mt.startswith("lfm2") else _mamba(cfg, h)
        elif kind == "none":
            mixer = 0
        else:
            mixer = _attention(cfg, h)
            block += _attention_matrices(cfg, h)
        if _is_moe_layer(cfg, i, mt):
            ffn, ffn_active = _moe_layer(cfg, h, mt)
            block += _moe_matrices(cfg, h)
        else:
            ffn = ffn_active = _mlp(h, inter, gated=gated, bias=not gated)
            block += _mlp_matrices(h, inter, gated=gated)
        matrices.append(block)
        norms = norms_per_layer * h * (2 if not gated and mt != "phi" else 1)
        layers.append(mixer + ffn + norms)
        active_total += mixer + ffn_active + norms
    embedding = vocab * h
    output = 0 if hc.tied_embeddings(cfg) else vocab * h
    other = h + _vision_tower(full_cfg)  # final norm (+ vision tower)
    total = embedding + output + sum(layers) + other
    return ConfigCount(
        parameters=total,
        active_parameters=embedding + output + active_total + other,
        embedding_parameters=embedding,
        output_parameters=output,
        layer_parameters=layers,
        other_parameters=other,
        layer_matrices=matrices,
    )
