"""Assemble a `ModelSpec` from what was read: config.json (+ tensor table) or GGUF header(s)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmhost.errors import ModelError
from llmhost.models import hf_config as hc
from llmhost.models.config_params import count_from_config
from llmhost.models.spec import (
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

if TYPE_CHECKING:  # gguf_header imports gguf and numpy: only GGUF inputs pay for them
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
    notes.append(
        f"No tensor table: parameters derived from the architecture; bytes assume {per_param:g} per weight."
    )
    layer_bytes = [round(p * per_param) for p in count.layer_parameters]
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
    if quant.method != "none" and quant.bits:
        extra = 16 / quant.group_size if quant.group_size else 0.0  # one 16-bit scale per group
        return (quant.bits + extra) / 8
    return _DTYPE_BYTES.get(str(dtype), 2.0)


# --- GGUF -----------------------------------------------------------------------------------------

_RECURRENT_LINEAR_ARCHS = ("qwen3next",)
# llama.cpp's per-architecture sliding-window layouts (llama-model.cpp set_swa_pattern):
# the period n means layers with il % n < n - 1 slide and every n-th layer is full.
_SWA_PERIOD = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "gpt-oss": 2}


def _as_list(value: Any, n: int, default: int) -> list[int]:
    if value is None:
        return [default] * n
    if isinstance(value, list):
        vals = [int(v) for v in value]
        if len(vals) != n:
            raise ModelError(f"GGUF per-layer array has {len(vals)} entries for {n} layers.")
        return vals
    return [int(value)] * n


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
    h0 = headers[0]
    arch = h0.architecture
    f = h0.arch_field
    n_layers = f("block_count")
    hidden = f("embedding_length")
    if not isinstance(n_layers, int) or not isinstance(hidden, int):
        raise ModelError(f"{ref}: GGUF header lacks {arch}.block_count / {arch}.embedding_length.")
    heads_list = _as_list(f("attention.head_count"), n_layers, 0)
    heads = max(heads_list) if heads_list else 0
    kv_list = _as_list(f("attention.head_count_kv"), n_layers, heads)
    default_hd = hidden // heads if heads else 0
    head_k = int(f("attention.key_length", default_hd) or default_hd)
    head_v = int(f("attention.value_length", default_hd) or default_hd)
    window = f("attention.sliding_window")
    kv_lora = f("attention.kv_lora_rank")
    kinds: list[LayerKind]
    recurrent_kind: LayerKind = "linear" if arch in _RECURRENT_LINEAR_ARCHS else "mamba"
    if kv_lora:
        kinds = ["mla"] * n_layers
    elif f("full_attention_interval"):
        interval = int(f("full_attention_interval"))
        kinds = ["full" if (i + 1) % interval == 0 else recurrent_kind for i in range(n_layers)]
    else:
        kinds = ["full" if kv > 0 else recurrent_kind for kv in kv_list]
        if heads == 0 or arch in ("mamba", "mamba2", "rwkv6", "rwkv7"):
            kinds = [recurrent_kind] * n_layers
        pattern = f("attention.sliding_window_pattern")
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
        sliding_window=int(window) if window and "sliding" in kinds else None,
        kv_lora_rank=int(kv_lora) if kv_lora else None,
        qk_rope_head_dim=int(f("rope.dimension_count")) if kv_lora and f("rope.dimension_count") else None,
        recurrent_state_bytes_per_seq=_gguf_recurrent_bytes(h0, kinds, hidden),
    )
    experts = f("expert_count")
    moe = None
    if experts and int(experts) > 1:
        moe = MoE(
            num_experts=int(experts),
            num_experts_per_tok=int(f("expert_used_count", 2) or 2),
            num_shared_experts=int(f("expert_shared_count", 0) or 0),
            moe_intermediate_size=f("expert_feed_forward_length"),
        )
    tensors = [
        TensorRecord(t.name, t.ggml_type, t.shape, t.n_bytes, logical_elements=t.n_elements)
        for h in headers
        for t in h.tensors
    ]
    names = {t.name for t in tensors}
    tied = "output.weight" not in names
    s = summarize(tensors, num_layers=n_layers, tied_embeddings=tied)
    vocab = f("vocab_size") or h0.array_lengths.get("tokenizer.ggml.tokens") or 0
    if not vocab:
        emb = next((t for t in tensors if t.name == "token_embd.weight"), None)
        vocab = emb.shape[1] if emb and len(emb.shape) > 1 else 0
    ff = f("feed_forward_length")
    tag = h0.file_type_tag
    bits = round(s.weights_bytes * 8 / s.parameters, 2) if s.parameters else None
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
        intermediate_size=(max(ff) if isinstance(ff, list) else ff) or None,
        vocab_size=int(vocab),
        max_context=int(f("context_length", 2048) or 2048),
        torch_dtype=None,
        tied_embeddings=tied,
        attention=attention,
        moe=moe,
        quantization=Quantization(method="gguf", bits=bits, gguf_file_type=tag),
        **_summary_fields(s),
        files=files,
        gguf_variants=variants or [],
        bytes_read=bytes_read,
        notes=list(notes or []),
    )


def _gguf_recurrent_bytes(h: GGUFHeader, kinds: list[LayerKind], hidden: int) -> int:
    f = h.arch_field
    n_rec = sum(1 for k in kinds if k in ("linear", "mamba"))
    if not n_rec:
        return 0
    l_cache = f("shortconv.l_cache")
    if l_cache:  # LFM2
        return (int(l_cache) - 1) * hidden * n_rec * hc.F32_BYTES
    d_conv = int(f("ssm.conv_kernel", 4) or 4)
    d_inner = int(f("ssm.inner_size", 2 * hidden) or 2 * hidden)
    d_state = int(f("ssm.state_size", 16) or 16)
    groups = int(f("ssm.group_count", 0) or 0)
    if "linear" in kinds:  # Qwen3-Next: state_size = key head dim, group_count = key heads
        conv = (d_conv - 1) * (2 * groups * d_state + d_inner)
        ssm = d_state * d_inner
    else:
        conv = (d_conv - 1) * (d_inner + 2 * groups * d_state)
        ssm = d_state * d_inner
    return (conv + ssm) * n_rec * hc.F32_BYTES
