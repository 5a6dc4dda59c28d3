"""Sizes of weight and KV-cache element types, in bytes, from the engines' own tables.

GGML types (llama.cpp weights and KV cache) come from `gguf.constants.GGML_QUANT_SIZES`, the table
llama.cpp's Python package ships (a copy in `llmhost.models.ggml_types`): a block of `block_size`
elements takes `type_size` bytes, so a row of `n` elements takes `n / block_size * type_size` bytes
(`ggml_row_size`).
"""

from __future__ import annotations

import math
from functools import lru_cache

from llmhost.errors import UsageError


@lru_cache(maxsize=1)
def ggml_blocks() -> dict[str, tuple[int, int]]:
    """GGML type name -> (block size, bytes per block).

    From llmhost's copy of `gguf.constants.GGML_QUANT_SIZES` (tests/test_startup.py checks it equals
    gguf's): executing gguf's constants module alone took 40-140 ms of a `plan`.
    """
    from llmhost.models.ggml_types import GGML_TYPES

    return {name: (block, size) for name, block, size in GGML_TYPES.values()}


# KV cache types each engine accepts (`--cache-type-k/-v` in llama.cpp, `--kv-cache-dtype` in vLLM).
LLAMACPP_KV_TYPES = ("f16", "bf16", "f32", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
VLLM_KV_TYPES = ("bf16", "fp16", "fp8", "fp8_e4m3", "fp8_e5m2")
_ALIASES = {
    "float16": "f16",
    "half": "f16",
    "fp16": "f16",
    "bfloat16": "bf16",
    "float32": "f32",
    "auto": "auto",
}


@lru_cache(maxsize=256)
def normalize_kv_dtype(name: str) -> str:
    """Canonical spelling of a KV cache type: f16, bf16, f32, fp8, fp8_e4m3, q8_0, q4_0..."""
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def ggml_row_bytes(type_name: str, n_elements: int) -> int:
    """Bytes of one row of `n_elements` of GGML type `type_name` (llama.cpp's `ggml_row_size`)."""
    block, size = ggml_blocks()[type_name.upper()]
    return math.ceil(n_elements / block) * size


def ggml_bits_per_weight(type_name: str) -> float:
    block, size = ggml_blocks()[type_name.upper()]
    return size * 8 / block


@lru_cache(maxsize=4096)
def kv_row_bytes(kv_dtype: str, n_elements: int) -> int:
    """Bytes one token's K (or V) row of `n_elements` takes in the cache at `kv_dtype`.

    fp8 variants are vLLM's 1-byte cache; GGML types are block-quantized rows (q8_0 = 34 bytes per 32
    elements = 8.5 bits, q4_0 = 18 per 32 = 4.5 bits).
    """
    dtype = normalize_kv_dtype(kv_dtype)
    if dtype in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        return n_elements
    if dtype == "auto":
        dtype = "f16"
    if dtype.upper() not in ggml_blocks() or dtype not in LLAMACPP_KV_TYPES:
        raise UsageError(
            f"Unknown KV cache type {kv_dtype!r}.",
            hint=f"Use one of: {', '.join(sorted(set(LLAMACPP_KV_TYPES) | set(VLLM_KV_TYPES)))}.",
        )
    return ggml_row_bytes(dtype, n_elements)


def kv_bits_per_element(kv_dtype: str) -> float:
    """Bits one cached element takes (f16 16, fp8 8, q8_0 8.5, q4_0 4.5...)."""
    return kv_row_bytes(kv_dtype, 256) * 8 / 256


def is_quantized_kv(kv_dtype: str) -> bool:
    """llama.cpp block-quantized cache types (a quantized V cache needs flash attention)."""
    return normalize_kv_dtype(kv_dtype) in ("q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
