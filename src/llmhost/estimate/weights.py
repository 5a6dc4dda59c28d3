"""Weight bytes of a model at a given quantization, split the way engines place them.

Exact when the quantization is the checkpoint's own (the resolver summed the tensor headers:
safetensors dtypes or GGUF per-tensor types). Otherwise hypothetical, from per-role parameter counts:

- bf16/fp16: 2 bytes per parameter.
- fp8 (vLLM online quantization of a 16-bit checkpoint): 1 byte per linear-layer weight; embeddings and
  lm_head stay 16-bit, as vLLM's Fp8LinearMethod only replaces linear layers.
- awq/gptq 4-bit, group 128: 4 bits + one fp16 scale and one 4-bit zero per 128 weights = 4.156 bits
  for the linear layers; embeddings and lm_head stay 16-bit.
- GGUF k-quant mixes: llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp) rules, approximated per
  tensor role: `output.weight` is Q6_K (Q8_0 for Q8_0 files; a tied model's token_embd is treated as the
  output), `attn_v` and `ffn_down` get more bits on "use_more_bits" layers (the first and last eighth and
  every third layer between: about half of the layers) for Q4_K_M/Q5_K_M, Q3_K_M/Q2_K raise attn_v,
  attn_output and ffn_down one step. Checked against Llama-3.1-8B Q4_K_M: 4.91 GB predicted vs 4.92 GB file.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmhost.estimate.dtypes import ggml_bits_per_weight, ggml_blocks
from llmhost.models.spec import ModelSpec

# Higher is better quality; used by the planner's quality-first policy.
QUALITY: dict[str, int] = {
    "fp32": 101,
    "bf16": 100,
    "fp16": 100,
    "F32": 101,
    "BF16": 100,
    "F16": 100,
    "fp8": 92,
    "Q8_0": 90,
    # MLX affine quantization, 16-bit scale and bias per 64 weights: 8-bit ~ Q8_0, 6-bit ~ Q6_K,
    # 4-bit (4.5 bits per weight) between Q4_0 and Q4_K_M (mlx-community's formats).
    "mlx-8bit": 90,
    "mlx-6bit": 86,
    "mlx-5bit": 80,
    "mlx-4bit": 74,
    "mlx-3bit": 58,
    "Q6_K": 86,
    "Q5_K_M": 82,
    "Q5_K_S": 80,
    "Q5_0": 79,
    "Q4_K_M": 76,
    "awq": 75,
    "gptq": 75,
    "mxfp4": 75,
    "compressed-tensors": 75,
    "IQ4_XS": 74,
    "Q4_K_S": 74,
    "Q4_0": 72,
    "IQ4_NL": 72,
    "Q3_K_L": 64,
    "Q3_K_M": 62,
    "IQ3_M": 61,
    "Q3_K_S": 58,
    "IQ3_XXS": 55,
    "Q2_K": 45,
    "IQ2_M": 44,
    "IQ2_XS": 40,
    "IQ2_XXS": 36,
    "IQ1_M": 30,
    "IQ1_S": 25,
}

GGUF_STANDARD_QUANTS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
SIXTEEN_BIT = ("bf16", "fp16")

_AWQ_GPTQ_BYTES = (4 + 16 / 128 + 4 / 128) / 8


def quality_score(quant: str) -> int:
    return QUALITY.get(quant, QUALITY.get(quant.upper(), 50))


def normalize_gguf_tag(tag: str) -> str:
    """'q4_k_m', 'MOSTLY_Q4_K_M' -> 'Q4_K_M'; 'f16' -> 'F16'."""
    cleaned = tag.strip().upper()
    return cleaned.removeprefix("MOSTLY_").removeprefix("LLAMA_FTYPE_MOSTLY_")


def own_quantization(spec: ModelSpec) -> str:
    """The checkpoint's own quantization in the planner's vocabulary."""
    method = spec.quantization.method
    if method == "gguf":
        if spec.quantization.gguf_file_type:
            return normalize_gguf_tag(spec.quantization.gguf_file_type)
        return "GGUF"
    if method in ("awq", "gptq", "fp8", "mxfp4", "compressed-tensors"):
        return method
    if method == "bitsandbytes":
        return "bnb"
    if method == "other":
        return "other"
    dtype = (spec.torch_dtype or "bfloat16").lower()
    if dtype in ("float16", "fp16", "half"):
        return "fp16"
    if dtype in ("float32", "fp32"):
        return "fp32"
    return "bf16"


@dataclass(frozen=True)
class WeightsLayout:
    """Weight bytes by placement role. `output_bytes` is 0 when the output reuses the embeddings."""

    quantization: str
    embedding_bytes: int
    output_bytes: int
    layer_bytes: tuple[int, ...]
    other_bytes: int
    exact: bool
    tied_embeddings: bool

    @property
    def total_bytes(self) -> int:
        return self.embedding_bytes + self.output_bytes + sum(self.layer_bytes) + self.other_bytes

    @property
    def num_layers(self) -> int:
        return len(self.layer_bytes)


def _layer_parameters(spec: ModelSpec) -> list[int]:
    n = spec.attention.num_layers
    if len(spec.layer_parameters) == n and n > 0:
        return list(spec.layer_parameters)
    rest = max(spec.parameters - spec.embedding_parameters - spec.output_parameters, 0)
    embedding = spec.embedding_parameters or spec.vocab_size * spec.hidden_size
    if not spec.embedding_parameters:
        rest = max(rest - embedding - (0 if spec.tied_embeddings else embedding), 0)
    per = rest // n if n else 0
    return [per] * n


def _embedding_parameters(spec: ModelSpec) -> tuple[int, int]:
    emb = spec.embedding_parameters or spec.vocab_size * spec.hidden_size
    if spec.tied_embeddings:
        return emb, 0
    out = spec.output_parameters or spec.vocab_size * spec.hidden_size
    return emb, out


def _layer_bytes_exact(spec: ModelSpec) -> list[int]:
    n = spec.attention.num_layers
    if len(spec.layer_bytes) == n and n > 0:
        return list(spec.layer_bytes)
    rest = max(spec.weights_bytes - spec.embedding_bytes - spec.output_bytes - spec.other_bytes, 0)
    per = rest // n if n else 0
    return [per] * n


def exact_layout(spec: ModelSpec) -> WeightsLayout:
    """The checkpoint as stored (tensor headers)."""
    return WeightsLayout(
        quantization=own_quantization(spec),
        embedding_bytes=spec.embedding_bytes,
        output_bytes=spec.output_bytes,
        layer_bytes=tuple(_layer_bytes_exact(spec)),
        other_bytes=spec.other_bytes,
        exact=spec.parameters_source == "tensors",
        tied_embeddings=spec.tied_embeddings or (spec.output_bytes == 0 and spec.output_parameters == 0),
    )


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    # llama-quant.cpp: first and last eighth of the layers, and every third layer in between.
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _role_fractions(spec: ModelSpec, layer_params: int, i_layer: int) -> tuple[float, float, float]:
    """Shares of a layer's parameters in attn_v, attn_output and ffn_down."""
    att = spec.attention
    kv_heads = att.num_kv_heads[i_layer] if i_layer < len(att.num_kv_heads) else 0
    h = spec.hidden_size
    q = h * att.num_attention_heads * att.head_dim_k
    k = h * kv_heads * att.head_dim_k
    v = h * kv_heads * att.head_dim_v
    o = att.num_attention_heads * att.head_dim_v * h
    if layer_params <= 0:
        return 0.0, 0.0, 0.0
    ffn = max(layer_params - (q + k + v + o), 0)
    return min(v / layer_params, 1.0), min(o / layer_params, 1.0), min(ffn / 3 / layer_params, 1.0)


def _gguf_layer_bits(spec: ModelSpec, tag: str, i: int, n: int, params: int) -> float:
    """Average bits per weight of transformer block `i` in a llama.cpp `tag` quantization."""
    v_frac, o_frac, down_frac = _role_fractions(spec, params, i)
    gqa = spec.attention.num_attention_heads / max(max(spec.attention.num_kv_heads, default=1), 1)
    bits = ggml_bits_per_weight
    if tag in ("Q4_K_M", "Q5_K_M"):
        base = bits("Q4_K") if tag == "Q4_K_M" else bits("Q5_K")
        hi = bits("Q6_K") if _use_more_bits(i, n) else base
        return base * (1 - v_frac - down_frac) + hi * (v_frac + down_frac)
    if tag == "Q3_K_M":
        base = bits("Q3_K")
        v_bits = bits("Q5_K") if i < 2 else bits("Q4_K")
        if i < n // 16:
            down_bits = bits("Q5_K")
        elif _use_more_bits(i, n):
            down_bits = bits("Q4_K")
        else:
            down_bits = base
        rest = 1 - v_frac - o_frac - down_frac
        return base * rest + v_bits * v_frac + bits("Q4_K") * o_frac + down_bits * down_frac
    if tag == "Q2_K":
        base = bits("Q2_K")
        v_bits = bits("Q4_K") if gqa >= 4 else bits("Q3_K")
        rest = 1 - v_frac - o_frac - down_frac
        return base * rest + v_bits * v_frac + bits("Q3_K") * (o_frac + down_frac)
    uniform = {"Q8_0": "Q8_0", "Q6_K": "Q6_K", "F16": "F16", "BF16": "BF16", "F32": "F32"}.get(tag)
    if uniform:
        return bits(uniform)
    base_type = _base_ggml_type(tag)
    return bits(base_type) if base_type else 4.5


def _base_ggml_type(tag: str) -> str | None:
    """Q4_K_S -> Q4_K, IQ4_XS -> IQ4_XS, Q4_0 -> Q4_0."""
    blocks = ggml_blocks()
    if tag in blocks:
        return tag
    for suffix in ("_S", "_M", "_L", "_XL"):
        if tag.endswith(suffix) and tag.removesuffix(suffix) in blocks:
            return tag.removesuffix(suffix)
    return None


def _gguf_output_bits(tag: str) -> float:
    if tag in ("Q8_0", "F16", "BF16", "F32"):
        return ggml_bits_per_weight(tag)
    return ggml_bits_per_weight("Q6_K")


def _gguf_embedding_bits(tag: str) -> float:
    base = {"Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K", "Q3_K_M": "Q3_K"}.get(tag) or _base_ggml_type(tag) or "Q4_K"
    return ggml_bits_per_weight(base)


def hypothetical_layout(spec: ModelSpec, quant: str) -> WeightsLayout:
    """Weight bytes if the model were quantized to `quant` (see the module docstring for the rules)."""
    layers = _layer_parameters(spec)
    emb_params, out_params = _embedding_parameters(spec)
    n = len(layers)
    other = spec.other_bytes
    if quant in SIXTEEN_BIT or quant == "fp32":
        per = 4 if quant == "fp32" else 2
        layer_bytes = [p * per for p in layers]
        emb, out = emb_params * per, out_params * per
    elif quant == "fp8":
        layer_bytes = [p for p in layers]
        emb, out = emb_params * 2, out_params * 2
    elif quant in ("awq", "gptq"):
        layer_bytes = [round(p * _AWQ_GPTQ_BYTES) for p in layers]
        emb, out = emb_params * 2, out_params * 2
    else:
        tag = normalize_gguf_tag(quant)
        layer_bytes = [round(p * _gguf_layer_bits(spec, tag, i, n, p) / 8) for i, p in enumerate(layers)]
        emb = round(emb_params * _gguf_embedding_bits(tag) / 8)
        out = round(out_params * _gguf_output_bits(tag) / 8)
        if out_params == 0:
            # llama.cpp quantizes a tied token_embd as if it were the output tensor.
            emb = round(emb_params * _gguf_output_bits(tag) / 8)
    return WeightsLayout(
        quantization=quant,
        embedding_bytes=emb,
        output_bytes=out,
        layer_bytes=tuple(layer_bytes),
        other_bytes=other,
        exact=False,
        tied_embeddings=out_params == 0,
    )


def _scaled(layout: WeightsLayout, target_total: int) -> WeightsLayout:
    """Scale a hypothetical layout so it sums to a known file size (a GGUF variant's bytes)."""
    total = layout.total_bytes
    if total <= 0 or target_total <= 0:
        return layout
    f = target_total / total
    return WeightsLayout(
        quantization=layout.quantization,
        embedding_bytes=round(layout.embedding_bytes * f),
        output_bytes=round(layout.output_bytes * f),
        layer_bytes=tuple(round(b * f) for b in layout.layer_bytes),
        other_bytes=round(layout.other_bytes * f),
        exact=False,
        tied_embeddings=layout.tied_embeddings,
    )


def weights_layout(spec: ModelSpec, quant: str) -> WeightsLayout:
    """Weight bytes of `spec` at `quant`: exact for the checkpoint's own quantization, else estimated.

    For a GGUF repo variant the per-role estimate is scaled to the variant's real file size.
    """
    own = own_quantization(spec)
    if quant == own or (quant in SIXTEEN_BIT and own in SIXTEEN_BIT):
        layout = exact_layout(spec)
        return WeightsLayout(
            quantization=quant,
            embedding_bytes=layout.embedding_bytes,
            output_bytes=layout.output_bytes,
            layer_bytes=layout.layer_bytes,
            other_bytes=layout.other_bytes,
            exact=layout.exact,
            tied_embeddings=layout.tied_embeddings,
        )
    layout = hypothetical_layout(spec, quant)
    for variant in spec.gguf_variants:
        if normalize_gguf_tag(variant.tag) == normalize_gguf_tag(quant) and variant.size_bytes > 0:
            return _scaled(layout, variant.size_bytes)
    return layout


def weights_bytes(spec: ModelSpec, quant: str) -> int:
    """Total weight bytes of `spec` at `quant` (see `weights_layout`)."""
    return weights_layout(spec, quant).total_bytes
