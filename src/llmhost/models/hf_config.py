"""Architecture facts from a Hugging Face config.json: layers, attention kinds, KV heads, MoE, quantization.

Multimodal configs nest the language model under `text_config` (Gemma 3, Llama 4, Qwen2.5-VL since
transformers 4.5x, Mistral 3) or `llm_config` (InternVL); `text_part` flattens that so every other
function sees one dict.
"""

from __future__ import annotations

from typing import Any

from llmhost.errors import ModelError
from llmhost.models.spec import MAX_LAYERS, Attention, LayerKind, MoE, Quantization, QuantMethod

Config = dict[str, Any]

F32_BYTES = 4  # llama.cpp keeps recurrent (conv/SSM) state in F32; so do we (see docs/models.md)

_NESTED_KEYS = ("text_config", "llm_config", "language_config", "thinker_config")

# transformers config-class defaults that published configs rely on by leaving the key out
# (e.g. google/gemma-3-*-it's text_config has no vocab_size, head_dim or sliding_window_pattern).
_CLASS_DEFAULTS: dict[str, Config] = {
    "gemma3_text": {
        "vocab_size": 262208,
        "head_dim": 256,
        "max_position_embeddings": 131072,
        "sliding_window_pattern": 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
    },
    "gemma2": {"sliding_window": 4096, "head_dim": 256},
}


def text_part(cfg: Config) -> Config:
    """The language-model part of a (possibly multimodal) config, with top-level fallbacks merged in."""
    for key in _NESTED_KEYS:
        inner = cfg.get(key)
        if isinstance(inner, dict) and ("num_hidden_layers" in inner or "hidden_size" in inner):
            if key == "thinker_config" and isinstance(inner.get("text_config"), dict):
                inner = inner["text_config"]
            merged = {**_CLASS_DEFAULTS.get(str(inner.get("model_type", "")), {}), **inner}
            for k in ("tie_word_embeddings", "torch_dtype", "dtype", "quantization_config", "architectures"):
                if k not in merged and k in cfg:
                    merged[k] = cfg[k]
            return merged
    defaults = _CLASS_DEFAULTS.get(str(cfg.get("model_type", "")))
    return {**defaults, **cfg} if defaults else cfg


# Bounds on what a config.json may claim, far above any real model, so that a corrupt or hostile file
# is refused before it sizes per-layer tables or overflows float arithmetic in the estimator.
# Layers: `spec.MAX_LAYERS`, shared with the GGUF reader.
MAX_CONFIG_INT = 2**40  # no architecture number is near 10^12 (largest: contexts of ~ 10^7 tokens)

_CORRUPT = "corrupt or unsupported config?"
_CONFIG_HINT = "Check the model's config.json (re-download it), or pass the model's .gguf file."


def bad_value(key: str, value: Any, rule: str) -> ModelError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:20] + "..."  # 400-digit numbers
    return ModelError(f"config.json: {key} is {shown}; it must be {rule} ({_CORRUPT})", hint=_CONFIG_HINT)


def get_int(cfg: Config, *keys: str, default: int | None = None) -> int | None:
    """The first of `keys` holding a number, as an int; non-numbers are skipped (as before), numbers
    that no model can have (negative, non-finite, past MAX_CONFIG_INT) are refused."""
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if not 0 <= v <= MAX_CONFIG_INT:  # also refuses NaN and infinities (every comparison is false)
            raise bad_value(k, v, f"an integer from 0 to {MAX_CONFIG_INT}")
        return int(v)
    return default


def require_int(cfg: Config, *keys: str) -> int:
    v = get_int(cfg, *keys)
    if v is None:
        raise ModelError(
            f"config.json has no {keys[0]!r}; cannot tell the model's shape.",
            hint="Pass the config.json of a transformers language model, or the model's .gguf file.",
        )
    return v


def require_positive(cfg: Config, *keys: str, most: int = MAX_CONFIG_INT) -> int:
    """A dimension or period that must be at least 1 (a 0 would divide by zero or mean no model)."""
    v = require_int(cfg, *keys)
    if not 1 <= v <= most:
        key = next(k for k in keys if get_int(cfg, k) is not None)
        raise bad_value(key, v, f"a positive integer of at most {most}" if v else "a positive integer")
    return v


def num_layers(cfg: Config) -> int:
    return require_positive(cfg, "num_hidden_layers", "n_layer", "num_layers", "n_layers", most=MAX_LAYERS)


def hidden_size(cfg: Config) -> int:
    return require_positive(cfg, "hidden_size", "n_embd", "d_model", "dim")


def num_heads(cfg: Config) -> int:
    return require_positive(cfg, "num_attention_heads", "n_head", "num_heads", "n_heads")


def num_kv_heads(cfg: Config) -> int:
    if cfg.get("multi_query") is True:
        return 1
    return get_int(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num") or (
        num_heads(cfg)
    )


def head_dim(cfg: Config) -> int:
    explicit = get_int(cfg, "head_dim", "attention_head_dim", "kv_channels")
    return explicit or hidden_size(cfg) // num_heads(cfg)


def is_mla(cfg: Config) -> bool:
    return get_int(cfg, "kv_lora_rank") is not None


def layer_kinds(cfg: Config) -> list[LayerKind]:
    """One kind per block: which layers keep a KV cache, which slide, which are recurrent."""
    n = num_layers(cfg)
    mt = str(cfg.get("model_type", ""))
    if is_mla(cfg):
        return ["mla"] * n
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == n:
        return [_kind_from_name(str(t)) for t in types]
    pattern = cfg.get("hybrid_override_pattern")  # Nemotron-H: M = mamba, * = attention, - = MLP
    if isinstance(pattern, str) and len(pattern) == n:
        return [{"M": "mamba", "*": "full"}.get(c, "none") for c in pattern]  # type: ignore[misc]
    if "attn_layer_period" in cfg:  # Jamba
        period = require_positive(cfg, "attn_layer_period")
        offset = get_int(cfg, "attn_layer_offset", default=0) or 0
        return ["full" if i % period == offset else "mamba" for i in range(n)]
    if "full_attention_interval" in cfg:  # Qwen3-Next before configs carried layer_types
        interval = require_positive(cfg, "full_attention_interval")
        return ["full" if (i + 1) % interval == 0 else "linear" for i in range(n)]
    if isinstance(cfg.get("full_attn_idxs"), list):  # early LFM2 configs
        idxs = {i for i in cfg["full_attn_idxs"] if isinstance(i, int)}
        return ["full" if i in idxs else "mamba" for i in range(n)]
    window = sliding_window(cfg)
    if window is None:
        return ["full"] * n
    swa_pattern = get_int(cfg, "sliding_window_pattern", "_sliding_window_pattern")
    if mt.startswith("gemma2"):
        return ["sliding" if i % 2 == 0 else "full" for i in range(n)]
    if swa_pattern:  # Gemma 3 (6: five sliding then one full), Cohere2 (4)
        return ["full" if (i + 1) % swa_pattern == 0 else "sliding" for i in range(n)]
    if mt.startswith("gemma3"):
        return ["full" if (i + 1) % 6 == 0 else "sliding" for i in range(n)]
    if mt == "cohere2":
        return ["full" if (i + 1) % 4 == 0 else "sliding" for i in range(n)]
    if mt == "gpt_oss":
        return ["sliding" if i % 2 == 0 else "full" for i in range(n)]
    return ["sliding"] * n  # Mistral v0.1, Phi-3: every layer uses the window


def _kind_from_name(name: str) -> LayerKind:
    name = name.lower()
    if "sliding" in name or name in ("local", "local_attention", "chunked_attention"):
        return "sliding"
    if "linear" in name:
        return "linear"
    if name in ("mamba", "mamba2", "conv", "ssm", "recurrent", "short_conv"):
        return "mamba"
    if "attention" in name or name in ("full", "global", "attn"):
        return "full"
    return "none"


def sliding_window(cfg: Config) -> int | None:
    if cfg.get("use_sliding_window") is False:
        return None
    w = get_int(cfg, "sliding_window", "attention_window_size")
    if not w:
        return None
    types = cfg.get("layer_types")
    if isinstance(types, list) and not any("sliding" in str(t) for t in types):
        return None
    return w


def recurrent_state_bytes(cfg: Config, kinds: list[LayerKind]) -> int:
    """Fixed per-sequence state of all linear/mamba layers, in F32 bytes (formula in docs/models.md)."""
    h = hidden_size(cfg)
    mt = str(cfg.get("model_type", ""))
    per_layer = 0
    if "linear" in kinds:  # Qwen3-Next gated DeltaNet
        nk = get_int(cfg, "linear_num_key_heads", default=16) or 16
        nv = get_int(cfg, "linear_num_value_heads", default=32) or 32
        dk = get_int(cfg, "linear_key_head_dim", default=128) or 128
        dv = get_int(cfg, "linear_value_head_dim", default=128) or 128
        kernel = get_int(cfg, "linear_conv_kernel_dim", default=4) or 4
        conv = (kernel - 1) * (2 * nk * dk + nv * dv)
        ssm = nv * dk * dv
        per_layer = conv + ssm
        return per_layer * F32_BYTES * kinds.count("linear")
    if "mamba" not in kinds:
        return 0
    if mt.startswith("lfm2"):  # short convolution: (L_cache - 1) x hidden
        l_cache = get_int(cfg, "conv_L_cache", default=3) or 3
        per_layer = (l_cache - 1) * h
    else:
        d_state = get_int(cfg, "mamba_d_state", "state_size", "ssm_state_size", default=16) or 16
        d_conv = get_int(cfg, "mamba_d_conv", "conv_kernel", default=4) or 4
        expand = get_int(cfg, "mamba_expand", "expand", default=2) or 2
        n_heads = get_int(cfg, "mamba_n_heads")
        d_head = get_int(cfg, "mamba_d_head", "mamba_head_dim")
        d_inner = n_heads * d_head if n_heads and d_head else expand * h
        groups = get_int(cfg, "mamba_n_groups", "n_groups")
        if groups:  # Mamba2 (Granite-4-H, Nemotron-H, Falcon-H1): conv over x, B and C
            per_layer = (d_conv - 1) * (d_inner + 2 * groups * d_state) + d_inner * d_state
        else:  # Mamba1 (Jamba)
            per_layer = (d_conv - 1) * d_inner + d_inner * d_state
    return per_layer * F32_BYTES * kinds.count("mamba")


def attention_from_config(cfg: Config) -> Attention:
    n = num_layers(cfg)
    kinds = layer_kinds(cfg)
    heads = num_heads(cfg)
    if is_mla(cfg):
        nope = get_int(cfg, "qk_nope_head_dim", default=128) or 128
        rope = get_int(cfg, "qk_rope_head_dim", default=64) or 64
        v = get_int(cfg, "v_head_dim", default=128) or 128
        return Attention(
            num_layers=n,
            num_attention_heads=heads,
            num_kv_heads=[heads] * n,
            head_dim_k=nope + rope,
            head_dim_v=v,
            layer_kinds=kinds,
            kv_lora_rank=get_int(cfg, "kv_lora_rank"),
            qk_rope_head_dim=rope,
        )
    kv = num_kv_heads(cfg)
    hd = head_dim(cfg)
    kv_per_layer = [kv if k in ("full", "sliding") else 0 for k in kinds]
    return Attention(
        num_layers=n,
        num_attention_heads=heads,
        num_kv_heads=kv_per_layer,
        head_dim_k=hd,
        head_dim_v=hd,
        layer_kinds=kinds,
        sliding_window=sliding_window(cfg) if "sliding" in kinds else None,
        recurrent_state_bytes_per_seq=recurrent_state_bytes(cfg, kinds),
    )


def moe_from_config(cfg: Config) -> MoE | None:
    experts = get_int(cfg, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    if not experts or experts <= 1:
        return None
    per_tok = get_int(cfg, "num_experts_per_tok", "num_experts_per_token", "experts_per_token", "moe_k")
    if per_tok is not None and per_tok > experts:
        raise bad_value("num_experts_per_tok", per_tok, f"at most the number of experts ({experts})")
    shared = get_int(cfg, "n_shared_experts", "num_shared_experts", default=0) or 0
    if not shared and get_int(cfg, "shared_expert_intermediate_size"):
        shared = 1
    return MoE(
        num_experts=experts,
        num_experts_per_tok=per_tok or 2,
        num_shared_experts=shared,
        moe_intermediate_size=get_int(cfg, "moe_intermediate_size", "expert_intermediate_size")
        or get_int(cfg, "intermediate_size"),
    )


MAX_QUANT_BITS = 32  # a quantized weight is stored in at most an int32 (GPTQ/AWQ pack 32 / bits per int32)

_METHODS: dict[str, QuantMethod] = {
    "awq": "awq",
    "gptq": "gptq",
    "fp8": "fp8",
    "fbgemm_fp8": "fp8",
    "compressed-tensors": "compressed-tensors",
    "compressed_tensors": "compressed-tensors",
    "bitsandbytes": "bitsandbytes",
    "mxfp4": "mxfp4",
}


def quantization_from_config(cfg: Config) -> Quantization:
    # mlx_lm before 0.20 wrote only `quantization` ({"group_size": 64, "bits": 4}); many mlx-community
    # checkpoints still carry just that block (no quant_method: "other", read as MLX by the planner).
    q = cfg.get("quantization_config") or cfg.get("compression_config") or cfg.get("quantization")
    if not isinstance(q, dict):
        return Quantization()
    method_name = str(q.get("quant_method", "other")).lower()
    method: QuantMethod = _METHODS.get(method_name, "other")
    bits: float | None = None
    group: int | None = None
    if method in ("awq", "gptq", "other"):
        bits = _bits(q.get("bits", q.get("w_bit")))
        group = get_int(q, "group_size", "q_group_size")
    elif method == "fp8":
        bits = 8
    elif method == "mxfp4":
        bits = 4.25  # 4-bit values plus one 8-bit scale per 32
        group = 32
    elif method == "bitsandbytes":
        bits = 4 if q.get("load_in_4bit") else 8
        group = get_int(q, "bnb_4bit_blocksize") or (64 if bits == 4 else None)
    elif method == "compressed-tensors":
        groups = q.get("config_groups")
        for grp in groups.values() if isinstance(groups, dict) else ():
            weights = grp.get("weights") if isinstance(grp, dict) else None
            if isinstance(weights, dict):
                bits = _bits(weights.get("num_bits"))
                group = get_int(weights, "group_size")
                break
    if group is not None and group <= 0:
        group = None
    return Quantization(method=method, bits=bits, group_size=group, raw=q)


def _bits(v: Any) -> float | None:
    """Nominal bits per weight, if given; outside 1..32 it would divide by zero or overflow downstream."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        return None
    if not 1 <= v <= MAX_QUANT_BITS:
        raise bad_value("quantization_config.bits", v, f"a number from 1 to {MAX_QUANT_BITS}")
    return float(v)


def tied_embeddings(cfg: Config) -> bool:
    v = cfg.get("tie_word_embeddings")
    if isinstance(v, bool):
        return v
    # Absent: each transformers config class has its own default (Gemma, GPT-2, Cohere: tied).
    mt = str(cfg.get("model_type", ""))
    return mt.startswith(("gemma", "gpt2", "cohere", "lfm2"))


def max_context(cfg: Config) -> int:
    return (
        get_int(cfg, "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
        or get_int(cfg, "model_max_length")
        or 2048
    )


def vocab_size(cfg: Config) -> int:
    return require_positive(cfg, "vocab_size", "padded_vocab_size", "n_vocab")


def architecture(full_cfg: Config) -> str:
    archs = full_cfg.get("architectures")
    if isinstance(archs, list) and archs:
        return str(archs[0])
    return str(full_cfg.get("model_type", "unknown"))


def torch_dtype(cfg: Config) -> str | None:
    v = cfg.get("torch_dtype") or cfg.get("dtype")
    return str(v) if v else None
