"""Turn a tensor table (names, dtypes, shapes, stored bytes) into parameter and byte breakdowns.

Works the same for safetensors headers and GGUF tensor tables. Two things need care:
- Quantized checkpoints store packed integers and scales. `parameters` is the *logical* count: an
  int32 GPTQ/AWQ `qweight` holds 32/bits weights, an mxfp4 or bitsandbytes-4bit byte holds two, and
  scales, zero points and group indices are quantization metadata, not parameters (their bytes count).
- Tensors outside the transformer blocks (vision towers, projectors, MTP heads) go to "other".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Bytes per element of safetensors dtypes.
SAFETENSORS_DTYPE_BYTES: dict[str, float] = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}

_EMBED_RE = re.compile(
    r"(?:^|\.)(?:embed_tokens|wte|tok_embeddings|word_embeddings|token_embd|embedding|embeddings)\.weight$"
)
_OUTPUT_RE = re.compile(r"(?:^|\.)(?:lm_head|embed_out)\.weight$|^output\.weight$")
# At most 9 digits: a block index is < 10^9, and int() of a longer run (a hostile tensor name can hold
# thousands of digits) costs quadratic time and raises past Python's 4300-digit limit.
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|blk|block)\.(\d{1,9})\.")
_NON_TEXT_RE = re.compile(
    r"vision|visual|image|audio|mm_projector|multi_modal|mm_input|patch_embed|speech|^v\.|^mm\.|^a\."
)
# Quantization metadata: stored bytes, zero parameters.
_METADATA_SUFFIXES = (
    "qzeros",
    "scales",
    "g_idx",
    "weight_scale",
    "weight_scale_inv",
    "input_scale",
    "weight_zero_point",
    "weight_shape",
    "weight_global_scale",
    "input_global_scale",
    "absmax",
    "quant_map",
    "nested_absmax",
    "nested_quant_map",
    "SCB",
    "k_scale",
    "v_scale",
    "_scales",
)


@dataclass(frozen=True)
class TensorRecord:
    name: str
    dtype: str  # safetensors dtype ("BF16", "I32", ...) or ggml type name ("Q4_K", "F16", ...)
    shape: tuple[int, ...]
    n_bytes: int
    logical_elements: int | None = None  # set when the caller knows (GGUF); else derived

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class TensorSummary:
    parameters: int = 0
    weights_bytes: int = 0
    embedding_parameters: int = 0
    embedding_bytes: int = 0
    output_parameters: int = 0
    output_bytes: int = 0
    layer_parameters: list[int] = field(default_factory=list)
    layer_bytes: list[int] = field(default_factory=list)
    other_bytes: int = 0
    other_parameters: int = 0
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    expert_parameters: int = 0  # routed-expert weights (all experts), for active-parameter maths
    tensor_count: int = 0


def logical_parameters(t: TensorRecord, *, method: str, bits: float | None) -> int:
    """Weights a tensor represents, undoing integer packing; 0 for quantization metadata."""
    if t.logical_elements is not None:
        return t.logical_elements
    leaf = t.name.rsplit(".", 1)[-1]
    if leaf in _METADATA_SUFFIXES or any(t.name.endswith(s) for s in ("_scales", "weight_scale_inv")):
        return 0
    n = t.n_elements
    if t.dtype in ("I32", "U32") and (leaf in ("qweight", "weight_packed") or method in ("gptq", "awq")):
        return n * (32 // int(bits or 4))
    if t.dtype == "U8" and (leaf.endswith("_blocks") or method == "mxfp4"):
        return n * 2  # two fp4 values per byte
    if t.dtype == "U8" and method == "bitsandbytes" and (bits or 4) <= 4:
        return n * 2
    if t.dtype == "F4":
        return n
    return n


def summarize(
    tensors: list[TensorRecord],
    *,
    num_layers: int,
    tied_embeddings: bool,
    method: str = "none",
    bits: float | None = None,
) -> TensorSummary:
    s = TensorSummary(layer_parameters=[0] * num_layers, layer_bytes=[0] * num_layers)
    has_output = any(_OUTPUT_RE.search(t.name) and not _NON_TEXT_RE.search(t.name) for t in tensors)
    for t in tensors:
        params = logical_parameters(t, method=method, bits=bits)
        s.tensor_count += 1
        s.bytes_by_dtype[t.dtype] = s.bytes_by_dtype.get(t.dtype, 0) + t.n_bytes
        s.parameters += params
        s.weights_bytes += t.n_bytes
        if _NON_TEXT_RE.search(t.name):
            s.other_bytes += t.n_bytes
            s.other_parameters += params
            continue
        if _OUTPUT_RE.search(t.name):
            s.output_parameters += params
            s.output_bytes += t.n_bytes
            continue
        layer = _LAYER_RE.search(t.name)
        if layer is not None:
            idx = int(layer.group(1))
            if idx < num_layers:
                s.layer_parameters[idx] += params
                s.layer_bytes[idx] += t.n_bytes
                if "exps" in t.name or ".experts." in t.name:
                    s.expert_parameters += params
            else:  # e.g. DeepSeek-V3's multi-token-prediction block: loaded by some engines only
                s.other_bytes += t.n_bytes
                s.other_parameters += params
            continue
        if _EMBED_RE.search(t.name):
            s.embedding_parameters += params
            s.embedding_bytes += t.n_bytes
            continue
        s.other_bytes += t.n_bytes
        s.other_parameters += params
    if tied_embeddings and has_output and s.embedding_parameters:
        # A checkpoint that stores both copies of a tied matrix: the engine keeps one.
        s.parameters -= s.output_parameters
        s.weights_bytes -= s.output_bytes
        s.output_parameters = 0
        s.output_bytes = 0
    return s
