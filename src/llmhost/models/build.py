"""Assemble a `ModelSpec` from what was read: config.json (+ tensor table) or GGUF header(s)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmhost.errors import ModelError
from llmhost.models import hf_config as hc
from llmhost.models.config_params import Matrix, count_from_config
from llmhost.models.gguf_fields import (
    MAX_CONTEXT,
    MAX_EMBEDDING,
    MAX_EXPERTS,
    MAX_HEAD_DIM,
    MAX_HEADS,
    MAX_VOCAB,
    MAX_WIDTH,
    GGUFFields,
)
from llmhost.models.spec import (
    MAX_LAYERS,
    Attention,
    GGUFVariant,
    LayerKind,
    ModelFile,
    ModelSpec,
    MoE,
    Quantization,
    SourceKind,
)
from llmhost.models.tensors import TensorRecord, TensorSummary, summarize

if TYPE_CHECKING:  # gguf_header (the header reader): only GGUF inputs load it
    from llmhost.models.gguf_header import GGUFHeader

_DTYPE_BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "float8_e4m3fn": 1.0}


def _active(total: int, summary: TensorSummary, moe: MoE | None) -> int:
    if moe is None or not summary.expert_parameters:
        return total
    idle = summary.expert_parameters * (moe.num_experts - moe.num_experts_per_tok) // moe.num_experts
    return total - idle


def _summary_fields(s: TensorSummary) -> dict[str, Any]:
    """The ModelSpec weight fields that come straight from a tensor table's summary."""
    return {
        "weights_bytes": s.weights_bytes,
        "embedding_parameters": s.embedding_parameters,
        "embedding_bytes": s.embedding_bytes,
        "output_parameters": s.output_parameters,
        "output_bytes": s.output_bytes,
        "layer_parameters": s.layer_parameters,
        "layer_bytes": s.layer_bytes,
        "other_bytes": s.other_bytes,
        "bytes_by_dtype": s.bytes_by_dtype,
    }


def spec_from_hf(
    *,
    ref: str,
    kind: SourceKind,
    name: str,
    config: dict[str, Any],
    tensors: list[TensorRecord] | None,
    files: list[ModelFile],
    repo_id: str | None = None,
    revision: str | None = None,
    bytes_read: int = 0,
    notes: list[str] | None = None,
) -> ModelSpec:
    if not isinstance(config, dict):
        raise ModelError(f"{ref}: config.json is not a JSON object.")
    cfg = hc.text_part(config)
    attention = hc.attention_from_config(cfg)
    moe = hc.moe_from_config(cfg)
    quant = hc.quantization_from_config(config)
    tied = hc.tied_embeddings(cfg)
    notes = list(notes or [])
    common: dict[str, Any] = {
        "ref": ref,
        "kind": kind,
        "name": name,
        "repo_id": repo_id,
        "revision": revision,
        "architecture": hc.architecture(config),
        "model_type": str(cfg.get("model_type") or config.get("model_type") or "") or None,
        "hidden_size": hc.hidden_size(cfg),
        "intermediate_size": hc.get_int(cfg, "intermediate_size", "n_inner", "ffn_hidden_size"),
        "vocab_size": hc.vocab_size(cfg),
        "max_context": hc.max_context(cfg),
        "torch_dtype": hc.torch_dtype(cfg) or hc.torch_dtype(config),
        "tied_embeddings": tied,
        "attention": attention,
        "moe": moe,
        "quantization": quant,
        "files": files,
        "trust_remote_code": "auto_map" in config,
        "bytes_read": bytes_read,
    }
    if tensors:
        s = summarize(
            tensors,
            num_layers=attention.num_layers,
            tied_embeddings=tied,
            method=quant.method,
            bits=quant.bits,
        )
        return ModelSpec(
            **common,
            parameters=s.parameters,
            active_parameters=_active(s.parameters, s, moe),
            parameters_source="tensors",
            **_summary_fields(s),
            notes=notes,
        )
    count = count_from_config(config)
    per_param = _bytes_per_param(common["torch_dtype"], quant)
    layer_bytes = [
        _layer_bytes(params, matrices, quant, per_param)
        for params, matrices in zip(count.layer_parameters, count.layer_matrices, strict=True)
    ]
    notes.append(
        f"No tensor table: parameters derived from the architecture; {_priced_as(quant, per_param)}."
    )
    # Quantized checkpoints keep embeddings and lm_head in 16-bit.
    emb_pp = 2.0 if quant.method != "none" else per_param
    embedding_bytes = round(count.embedding_parameters * emb_pp)
    output_bytes = round(count.output_parameters * emb_pp)
    other_bytes = round(count.other_parameters * 2.0)
    return ModelSpec(
        **common,
        parameters=count.parameters,
        active_parameters=count.active_parameters,
        parameters_source="config",
        weights_bytes=embedding_bytes + output_bytes + sum(layer_bytes) + other_bytes,
        embedding_parameters=count.embedding_parameters,
        embedding_bytes=embedding_bytes,
        output_parameters=count.output_parameters,
        output_bytes=output_bytes,
        layer_parameters=count.layer_parameters,
        layer_bytes=layer_bytes,
        other_bytes=other_bytes,
        notes=notes,
    )


def _bytes_per_param(dtype: str | None, quant: Quantization) -> float:
    """Bytes per weight for methods priced as one flat rate (unquantized; bitsandbytes, MLX, other)."""
    if quant.method != "none" and quant.bits:
        extra = 16 / quant.group_size if quant.group_size else 0.0  # one 16-bit scale per group
        return (quant.bits + extra) / 8
    return _DTYPE_BYTES.get(str(dtype), 2.0)


_LAYOUT_PRICED = ("mxfp4", "fp8", "awq", "gptq", "compressed-tensors")


def _priced_as(quant: Quantization, per_param: float) -> str:
    if quant.method in _LAYOUT_PRICED:
        return f"bytes priced from the {quant.method} tensor layout, the rest of each block 16-bit"
    return f"bytes assume {per_param:g} per weight"


def _layer_bytes(params: int, matrices: list[Matrix], quant: Quantization, per_param: float) -> int:
    """One block's stored bytes: its quantized projections as the method lays them out, everything
    else (norms, biases, routers, convolutions, unquantized projections) in 16-bit."""
    if quant.method not in _LAYOUT_PRICED:
        return round(params * per_param)
    quantized = [m for m in matrices if m.expert or quant.method != "mxfp4"]
    rest = params - sum(m.parameters for m in quantized)
    return sum(_matrix_bytes(m, quant) for m in quantized) + 2 * rest


def _matrix_bytes(m: Matrix, quant: Quantization) -> int:
    """Stored bytes of `m` in the checkpoint's own tensor layout (docs/estimator.md, "Quantized layouts").

    - mxfp4 (gpt-oss): `*_blocks` U8 [.., rows, cols/32, 16] (two fp4 values a byte) + `*_scales` U8
      [.., rows, cols/32] (one E8M0 exponent per 32 values): 4.25 bits a weight.
    - fp8: F8_E4M3 [rows, cols] + F32 `weight_scale_inv` [ceil(rows/128), ceil(cols/128)] with
      `weight_block_size` [128, 128] (DeepSeek-V3, Qwen3-FP8), else one F32 scale per tensor.
    - awq: `qweight` I32 [cols, rows*bits/32], `qzeros` I32 [groups, rows*bits/32], `scales` F16 [groups,
      rows], groups = cols / group_size. gptq: `qweight` I32 [cols*bits/32, rows], the same `qzeros` and
      `scales`, plus `g_idx` I32 [cols].
    - compressed-tensors: 8-bit float/int `weight` [rows, cols] + F32 `weight_scale` per output channel
      (strategy "channel") or per tensor; pack-quantized 4-bit `weight_packed` I32 [rows, cols*bits/32] +
      BF16 `weight_scale` [rows, groups] + I64 `weight_shape` [2].
    """
    n, rows, cols = m.count, m.rows, m.cols
    bits = quant.bits or 4
    raw = quant.raw
    if quant.method == "mxfp4":
        return n * (rows * -(-cols // 32) * 16 + rows * -(-cols // 32))
    if quant.method == "fp8":
        block = raw.get("weight_block_size")
        if isinstance(block, list) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block):
            block_rows, block_cols = int(block[0]), int(block[1])
            scales = -(-rows // block_rows) * -(-cols // block_cols)
        else:
            scales = 1
        return n * (rows * cols + 4 * scales)
    group = quant.group_size or cols  # group_size -1 / absent: one group over the whole input
    groups = -(-cols // group)
    packed = rows * cols * bits / 8
    if quant.method in ("awq", "gptq"):
        zeros = groups * rows * bits / 8
        g_idx = 4 * cols if quant.method == "gptq" else 0
        return round(n * (packed + zeros + 2 * groups * rows + g_idx))
    # compressed-tensors
    if bits >= 8:
        strategy = _ct_weight_strategy(raw)
        return n * (rows * cols + 4 * (rows if strategy == "channel" else 1))
    return round(n * (packed + 2 * rows * groups + 16))


def _ct_weight_strategy(raw: dict[str, Any]) -> str | None:
    groups = raw.get("config_groups")
    for grp in groups.values() if isinstance(groups, dict) else ():
        weights = grp.get("weights") if isinstance(grp, dict) else None
        if isinstance(weights, dict):
            strategy = weights.get("strategy")
            return strategy if isinstance(strategy, str) else None
    return None


# --- GGUF -----------------------------------------------------------------------------------------

_RECURRENT_LINEAR_ARCHS = ("qwen3next",)
# Architectures without attention: every layer is recurrent (no heads, no KV cache).
_ATTENTION_FREE_ARCHS = ("mamba", "mamba2", "rwkv6", "rwkv7")
# Keys of recurrent layers: a model that has them may have no attention heads.
_RECURRENT_KEYS = (".ssm.", ".wkv.", ".shortconv.")
# llama.cpp's per-architecture sliding-window layouts (llama-model.cpp set_swa_pattern):
# the period n means layers with il % n < n - 1 slide and every n-th layer is full.
_SWA_PERIOD = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "gpt-oss": 2}
NO_CHAT_TEMPLATE_NOTE = (
    "base model, no chat template (no tokenizer.chat_template in the GGUF): use completions, or give a "
    "template (profile `chat_template`)."
)
_REFETCH = "Re-download it or pick another file (corrupt or not a model file?)."


def spec_from_gguf(
    *,
    ref: str,
    kind: SourceKind,
    name: str,
    headers: list[GGUFHeader],
    files: list[ModelFile],
    repo_id: str | None = None,
    revision: str | None = None,
    bytes_read: int = 0,
    variants: list[GGUFVariant] | None = None,
    notes: list[str] | None = None,
) -> ModelSpec:
    if not any(h.tensors for h in headers):
        raise ModelError(f"{ref}: the GGUF file has no tensors (metadata only, not a model).", hint=_REFETCH)
    h0 = headers[0]
    g = GGUFFields(h0, ref)
    arch = g.arch
    n_layers = g.required("block_count", high=MAX_LAYERS, what="layers")
    hidden = g.required("embedding_length", high=MAX_EMBEDDING, what="embedding width")
    heads_list = g.per_layer("attention.head_count", n_layers, high=MAX_HEADS, what="heads")
    heads = max(heads_list) if heads_list else 0
    recurrent_only = arch in _ATTENTION_FREE_ARCHS
    if heads == 0 and not recurrent_only and not any(m in k for k in h0.fields for m in _RECURRENT_KEYS):
        raise ModelError(
            f"{ref}: {g.key('attention.head_count')} is {'0' if heads_list else 'missing'}, and a {arch} "
            "model without attention heads has no recurrent layers either.",
            hint=_REFETCH,
        )
    kv_list = g.per_layer("attention.head_count_kv", n_layers, high=MAX_HEADS, what="KV heads")
    kv_list = kv_list or [heads] * n_layers
    default_hd = hidden // heads if heads else 0
    head_k = g.count("attention.key_length", high=MAX_HEAD_DIM, what="key dimensions") or default_hd
    head_v = g.count("attention.value_length", high=MAX_HEAD_DIM, what="value dimensions") or default_hd
    window = g.count("attention.sliding_window", high=MAX_CONTEXT, what="tokens of sliding window")
    kv_lora = g.count("attention.kv_lora_rank", high=MAX_HEAD_DIM, what="latent dimensions")
    interval = g.count("full_attention_interval", high=MAX_LAYERS, what="layers")
    kinds: list[LayerKind]
    recurrent_kind: LayerKind = "linear" if arch in _RECURRENT_LINEAR_ARCHS else "mamba"
    if kv_lora:
        kinds = ["mla"] * n_layers
    elif interval:
        kinds = ["full" if (i + 1) % interval == 0 else recurrent_kind for i in range(n_layers)]
    else:
        kinds = ["full" if kv > 0 else recurrent_kind for kv in kv_list]
        if heads == 0 or recurrent_only:
            kinds = [recurrent_kind] * n_layers
        pattern = g.raw("attention.sliding_window_pattern")
        if window and isinstance(pattern, list) and len(pattern) == n_layers:
            kinds = ["sliding" if (p and k == "full") else k for p, k in zip(pattern, kinds, strict=True)]
        elif window and arch in _SWA_PERIOD:
            period = _SWA_PERIOD[arch]
            kinds = [
                "sliding" if (k == "full" and i % period < period - 1) else k for i, k in enumerate(kinds)
            ]
        elif window:
            kinds = ["sliding" if k == "full" else k for k in kinds]
    kv_list = [kv if k in ("full", "sliding", "mla") else 0 for kv, k in zip(kv_list, kinds, strict=True)]
    attention = Attention(
        num_layers=n_layers,
        num_attention_heads=heads,
        num_kv_heads=kv_list,
        head_dim_k=head_k,
        head_dim_v=head_v,
        layer_kinds=kinds,
        sliding_window=window if window and "sliding" in kinds else None,
        kv_lora_rank=kv_lora or None,
        qk_rope_head_dim=_rope_dims(g) if kv_lora else None,
        recurrent_state_bytes_per_seq=_gguf_recurrent_bytes(g, kinds, hidden),
    )
    moe = _gguf_moe(g)
    tensors = [
        TensorRecord(t.name, t.ggml_type, t.shape, t.n_bytes, logical_elements=t.n_elements)
        for h in headers
        for t in h.tensors
    ]
    names = {t.name for t in tensors}
    tied = "output.weight" not in names
    s = summarize(tensors, num_layers=n_layers, tied_embeddings=tied)
    vocab = g.count("vocab_size", high=MAX_VOCAB, what="tokens") or h0.array_lengths.get(
        "tokenizer.ggml.tokens"
    )
    if not vocab:
        emb = next((t for t in tensors if t.name == "token_embd.weight"), None)
        vocab = emb.shape[1] if emb and len(emb.shape) > 1 else 0
    ff = g.per_layer("feed_forward_length", n_layers, high=MAX_WIDTH, what="feed-forward width")
    tag = h0.file_type_tag
    bits = round(s.weights_bytes * 8 / s.parameters, 2) if s.parameters else None
    # A base model's GGUF has no template; llama.cpp then falls back to a default one (chatml) without a
    # word, and chat requests get turn markers the model never saw. The fact travels so plan and serve
    # can say so.
    template = h0.fields.get("tokenizer.chat_template")
    has_template = isinstance(template, str) and bool(template.strip())
    notes = list(notes or [])
    if not has_template:
        notes.append(NO_CHAT_TEMPLATE_NOTE)
    return ModelSpec(
        ref=ref,
        kind=kind,
        name=name,
        repo_id=repo_id,
        revision=revision,
        architecture=arch,
        model_type=arch,
        parameters=s.parameters,
        active_parameters=_active(s.parameters, s, moe),
        parameters_source="tensors",
        hidden_size=hidden,
        intermediate_size=(max(ff) or None) if ff else None,
        vocab_size=vocab,
        max_context=g.count("context_length", high=MAX_CONTEXT, what="tokens of context") or 2048,
        torch_dtype=None,
        tied_embeddings=tied,
        attention=attention,
        moe=moe,
        quantization=Quantization(method="gguf", bits=bits, gguf_file_type=tag),
        **_summary_fields(s),
        files=files,
        gguf_variants=variants or [],
        bytes_read=bytes_read,
        notes=notes,
        has_chat_template=has_template,
    )


def _rope_dims(g: GGUFFields) -> int | None:
    return g.count("rope.dimension_count", high=MAX_HEAD_DIM, what="rope dimensions") or None


def _gguf_moe(g: GGUFFields) -> MoE | None:
    experts = g.count("expert_count", high=MAX_EXPERTS, what="experts")
    if not experts or experts <= 1:
        return None
    used = g.count("expert_used_count", high=MAX_EXPERTS, what="experts") or 2
    if used > experts:
        raise ModelError(
            f"{g.label}: {g.key('expert_used_count')} is {used}, more than the {experts} experts of "
            f"{g.key('expert_count')}.",
            hint=_REFETCH,
        )
    return MoE(
        num_experts=experts,
        num_experts_per_tok=used,
        num_shared_experts=g.count("expert_shared_count", high=MAX_EXPERTS, what="experts") or 0,
        moe_intermediate_size=g.count(
            "expert_feed_forward_length", high=MAX_WIDTH, what="feed-forward width"
        ),
    )


def _gguf_recurrent_bytes(g: GGUFFields, kinds: list[LayerKind], hidden: int) -> int:
    n_rec = sum(1 for k in kinds if k in ("linear", "mamba"))
    if not n_rec:
        return 0

    def size(name: str) -> int | None:
        return g.count(name, high=MAX_WIDTH, what="elements")

    l_cache = size("shortconv.l_cache")
    if l_cache:  # LFM2
        return (l_cache - 1) * hidden * n_rec * hc.F32_BYTES
    d_conv = size("ssm.conv_kernel") or 4
    d_inner = size("ssm.inner_size") or 2 * hidden
    d_state = size("ssm.state_size") or 16
    groups = size("ssm.group_count") or 0
    if "linear" in kinds:  # Qwen3-Next: state_size = key head dim, group_count = key heads
        conv = (d_conv - 1) * (2 * groups * d_state + d_inner)
        ssm = d_state * d_inner
    else:
        conv = (d_conv - 1) * (d_inner + 2 * groups * d_state)
        ssm = d_state * d_inner
    return (conv + ssm) * n_rec * hc.F32_BYTES
