"""Tiny GGUF models of many shapes, for measuring what llama.cpp allocates.

`write_gguf(shape, path)` writes a loadable model (llama, qwen2, qwen3, qwen3moe, gemma2, gemma3) with
small hidden sizes but real-world vocabularies, head dims, GQA ratios, layer counts and sliding windows.
`quantize(src, dst, ftype)` runs llama.cpp's own quantizer through llama-cpp-python.
`describe_gguf(path)` records what the header says (metadata and every tensor's type, shape, bytes), and
`write_replica(record, path)` writes a GGUF with exactly that header and zero-filled tensor data, so the
recorded measurements can be replayed through llmhost's resolver without llama.cpp or the original files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gguf
import numpy as np

ARCHS = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
    "qwen3moe": gguf.MODEL_ARCH.QWEN3MOE,
    "gemma2": gguf.MODEL_ARCH.GEMMA2,
    "gemma3": gguf.MODEL_ARCH.GEMMA3,
    "deepseek2": gguf.MODEL_ARCH.DEEPSEEK2,
    "phi3": gguf.MODEL_ARCH.PHI3,
}
T = gguf.MODEL_TENSOR


@dataclasses.dataclass(frozen=True)
class Shape:
    """One synthetic model. Sizes are tiny except where a memory buffer scales with them."""

    name: str
    arch: str
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_layer: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int = 32768
    tied: bool = False
    sliding_window: int | None = None
    swa_pattern: int | None = None  # one full-attention layer every `swa_pattern` layers
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    # MLA (DeepSeek V2/V3 layout): latent ranks and the rope/nope/value head split
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_rope_dim: int = 0
    v_head_dim: int = 0
    n_expert_shared: int = 0
    n_dense_lead: int = 0
    ftype: str = "F16"  # the file type after quantization (F16/BF16/F32 are written directly)

    @property
    def gqa(self) -> int:
        return self.n_head // self.n_head_kv


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte-level alphabet: the 256 single-character tokens every byte-level BPE vocab has."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    by_byte = dict(zip(bs, cs, strict=True))
    return [chr(by_byte[b]) for b in range(256)]


def synthetic_vocab(n_vocab: int) -> tuple[list[str], list[str]]:
    """A byte-level BPE vocabulary of exactly `n_vocab` tokens, and merges that build the first few.

    The 256 byte tokens come first (so any text tokenizes); the rest are distinct multi-byte strings.
    """
    alphabet = _bytes_to_unicode()
    tokens = alphabet[: min(n_vocab, 256)]
    letters = "abcdefghijklmnopqrstuvwxyz"
    # llama.cpp refuses a BPE vocab without merges, even one made of the 256 byte tokens only
    merges = [f"Ġ {c}" for c in letters]
    i = 0
    while len(tokens) < n_vocab:
        # base-26 spelling of i, prefixed with the GPT-2 space marker: "Ġa", "Ġb", ..., "Ġba", ...
        word, k = "", i
        while True:
            word = letters[k % 26] + word
            k //= 26
            if k == 0:
                break
        tokens.append("Ġ" + word)
        i += 1
    return tokens, merges


def _tensor_specs(s: Shape) -> list[tuple[str, tuple[int, ...]]]:
    """(name, ggml shape ne0..) of every tensor llama.cpp expects for this architecture."""
    name = gguf.TENSOR_NAMES
    q_dim, kv_dim = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    out: list[tuple[str, tuple[int, ...]]] = [
        (name[T.TOKEN_EMBD] + ".weight", (s.n_embd, s.n_vocab)),
        (name[T.OUTPUT_NORM] + ".weight", (s.n_embd,)),
    ]
    if not s.tied and s.arch != "gemma2":
        out.append((name[T.OUTPUT] + ".weight", (s.n_embd, s.n_vocab)))
    for i in range(s.n_layer):

        def n(t: gguf.MODEL_TENSOR, suffix: str = "weight", i: int = i) -> str:
            return name[t].format(bid=i) + "." + suffix

        if s.arch == "deepseek2":
            out += _mla_layer(s, n, i)
            continue
        if s.arch == "phi3":
            # Phi-3 as convert_hf_to_gguf.py writes it (llama.cpp src/models/phi3.cpp): one fused QKV
            # projection and one fused gate+up projection.
            out += [
                (n(T.ATTN_NORM), (s.n_embd,)),
                (n(T.ATTN_QKV), (s.n_embd, q_dim + 2 * kv_dim)),
                (n(T.ATTN_OUT), (q_dim, s.n_embd)),
                (n(T.FFN_NORM), (s.n_embd,)),
                (n(T.FFN_UP), (s.n_embd, 2 * s.n_ff)),
                (n(T.FFN_DOWN), (s.n_ff, s.n_embd)),
            ]
            continue
        out += [
            (n(T.ATTN_NORM), (s.n_embd,)),
            (n(T.ATTN_Q), (s.n_embd, q_dim)),
            (n(T.ATTN_K), (s.n_embd, kv_dim)),
            (n(T.ATTN_V), (s.n_embd, kv_dim)),
            (n(T.ATTN_OUT), (q_dim, s.n_embd)),
            (n(T.FFN_NORM), (s.n_embd,)),
        ]
        if s.arch == "qwen2":
            out += [(n(T.ATTN_Q, "bias"), (q_dim,)), (n(T.ATTN_K, "bias"), (kv_dim,))]
            out += [(n(T.ATTN_V, "bias"), (kv_dim,))]
        if s.arch in ("qwen3", "qwen3moe", "gemma3"):
            out += [(n(T.ATTN_Q_NORM), (s.head_dim,)), (n(T.ATTN_K_NORM), (s.head_dim,))]
        if s.arch in ("gemma2", "gemma3"):
            out += [(n(T.ATTN_POST_NORM), (s.n_embd,)), (n(T.FFN_POST_NORM), (s.n_embd,))]
        if s.n_expert:
            out += [
                (n(T.FFN_GATE_INP), (s.n_embd, s.n_expert)),
                (n(T.FFN_GATE_EXP), (s.n_embd, s.n_ff_exp, s.n_expert)),
                (n(T.FFN_UP_EXP), (s.n_embd, s.n_ff_exp, s.n_expert)),
                (n(T.FFN_DOWN_EXP), (s.n_ff_exp, s.n_embd, s.n_expert)),
            ]
        else:
            out += [
                (n(T.FFN_GATE), (s.n_embd, s.n_ff)),
                (n(T.FFN_UP), (s.n_embd, s.n_ff)),
                (n(T.FFN_DOWN), (s.n_ff, s.n_embd)),
            ]
    return out


def _mla_layer(s: Shape, n: Any, layer: int) -> list[tuple[str, tuple[int, ...]]]:
    """One DeepSeek-V3-style block: low-rank Q, the shared KV latent, per-head K/V up-projections
    (split into attn_k_b / attn_v_b as llama.cpp's converter writes them), a dense FFN for the
    leading blocks and routed + shared experts after."""
    nope = s.head_dim - s.qk_rope_dim
    out: list[tuple[str, tuple[int, ...]]] = [
        (n(T.ATTN_NORM), (s.n_embd,)),
        (n(T.ATTN_Q_A_NORM), (s.q_lora_rank,)),
        (n(T.ATTN_KV_A_NORM), (s.kv_lora_rank,)),
        (n(T.ATTN_Q_A), (s.n_embd, s.q_lora_rank)),
        (n(T.ATTN_Q_B), (s.q_lora_rank, s.n_head * s.head_dim)),
        (n(T.ATTN_KV_A_MQA), (s.n_embd, s.kv_lora_rank + s.qk_rope_dim)),
        (n(T.ATTN_K_B), (nope, s.kv_lora_rank, s.n_head)),
        (n(T.ATTN_V_B), (s.kv_lora_rank, s.v_head_dim, s.n_head)),
        (n(T.ATTN_OUT), (s.n_head * s.v_head_dim, s.n_embd)),
        (n(T.FFN_NORM), (s.n_embd,)),
    ]
    if layer < s.n_dense_lead:
        out += [
            (n(T.FFN_GATE), (s.n_embd, s.n_ff)),
            (n(T.FFN_UP), (s.n_embd, s.n_ff)),
            (n(T.FFN_DOWN), (s.n_ff, s.n_embd)),
        ]
        return out
    shared = s.n_ff_exp * s.n_expert_shared
    out += [
        (n(T.FFN_GATE_INP), (s.n_embd, s.n_expert)),
        (n(T.FFN_GATE_EXP), (s.n_embd, s.n_ff_exp, s.n_expert)),
        (n(T.FFN_UP_EXP), (s.n_embd, s.n_ff_exp, s.n_expert)),
        (n(T.FFN_DOWN_EXP), (s.n_ff_exp, s.n_embd, s.n_expert)),
        (n(T.FFN_GATE_SHEXP), (s.n_embd, shared)),
        (n(T.FFN_UP_SHEXP), (s.n_embd, shared)),
        (n(T.FFN_DOWN_SHEXP), (shared, s.n_embd)),
    ]
    return out


def _add_metadata(w: gguf.GGUFWriter, s: Shape) -> None:
    w.add_name(s.name)
    w.add_context_length(s.n_ctx_train)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    if s.arch == "deepseek2":
        # MLA as llama.cpp's converter writes it: one KV "head" holding the latent (+ its rope part),
        # and the per-head sizes after decompression in the *_mla keys.
        w.add_key_length(s.kv_lora_rank + s.qk_rope_dim)
        w.add_value_length(s.kv_lora_rank)
        w.add_key_length_mla(s.head_dim)
        w.add_value_length_mla(s.v_head_dim)
        w.add_rope_dimension_count(s.qk_rope_dim)
        w.add_q_lora_rank(s.q_lora_rank)
        w.add_kv_lora_rank(s.kv_lora_rank)
        w.add_leading_dense_block_count(s.n_dense_lead)
        w.add_expert_shared_count(s.n_expert_shared)
        w.add_expert_weights_scale(1.0)
    else:
        w.add_key_length(s.head_dim)
        w.add_value_length(s.head_dim)
        w.add_rope_dimension_count(s.head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    if s.sliding_window:
        w.add_sliding_window(s.sliding_window)
    if s.swa_pattern:
        w.add_sliding_window_pattern(s.swa_pattern)
    if s.n_expert:
        w.add_expert_count(s.n_expert)
        w.add_expert_used_count(s.n_expert_used)
        w.add_expert_feed_forward_length(s.n_ff_exp)
    tokens, merges = synthetic_vocab(s.n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
    w.add_token_merges(merges)
    w.add_bos_token_id(min(1, s.n_vocab - 1))
    w.add_eos_token_id(min(2, s.n_vocab - 1))


_FLOAT_FTYPES = {
    "F32": (np.float32, gguf.LlamaFileType.ALL_F32),
    "F16": (np.float16, gguf.LlamaFileType.MOSTLY_F16),
}


def write_gguf(s: Shape, path: Path, *, float_type: str = "F16") -> None:
    """Write `s` with every matrix in `float_type` (F32/F16) and every norm/bias in F32."""
    dtype, ftype = _FLOAT_FTYPES[float_type]
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[ARCHS[s.arch]])
    _add_metadata(w, s)
    w.add_file_type(ftype)
    rng = np.random.default_rng(abs(hash(s.name)) % 2**32)
    block = rng.normal(0.0, 0.02, size=1 << 16).astype(np.float32)
    for name, ne in _tensor_specs(s):
        count = int(np.prod(ne))
        # norms and biases stay F32, as convert_hf_to_gguf.py writes them
        data = (
            np.ones(ne, dtype=np.float32)
            if len(ne) == 1
            else np.resize(block, count).reshape(tuple(reversed(ne))).astype(dtype)
        )
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src: Path, dst: Path, ftype: str) -> None:
    """Quantize with llama.cpp's own quantizer (the same code as `llama-quantize`)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({ftype}) failed with {rc}")


def _field_value(field: Any) -> Any:
    value = field.contents()
    return value


def describe_gguf(path: Path, reader: gguf.GGUFReader | None = None) -> dict[str, Any]:
    """What the header of `path` says: metadata (token arrays by length only) and every tensor.
    `reader`: the file already open in gguf's reader (a 32k vocabulary takes it seconds to read)."""
    reader = reader or gguf.GGUFReader(str(path))
    metadata: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"):
            metadata[key] = {"array_len": len(field.data)}
            continue
        vtype = field.types[0]
        entry: dict[str, Any] = {"type": vtype.name, "value": _field_value(field)}
        if vtype == gguf.GGUFValueType.ARRAY:
            entry["item_type"] = field.types[-1].name
        metadata[key] = entry
    tensors = [
        {
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(x) for x in t.shape],
            "n_bytes": int(t.n_bytes),
        }
        for t in reader.tensors
    ]
    return {
        "file_bytes": path.stat().st_size,
        "alignment": int(reader.alignment),
        "data_offset": int(reader.data_offset),
        "metadata": metadata,
        "tensors": tensors,
    }


def _add_field(w: gguf.GGUFWriter, key: str, entry: dict[str, Any]) -> None:
    vtype = gguf.GGUFValueType[entry["type"]]
    if vtype == gguf.GGUFValueType.ARRAY:
        w.add_key_value(key, entry["value"], vtype, sub_type=gguf.GGUFValueType[entry["item_type"]])
    else:
        w.add_key_value(key, entry["value"], vtype)


def write_replica(record: dict[str, Any], path: Path) -> None:
    """Write a GGUF whose header equals the recorded one; tensor data is zeros of the recorded size."""
    meta = record["metadata"]
    arch = meta["general.architecture"]["value"]
    w = gguf.GGUFWriter(str(path), arch)
    n_vocab = meta["tokenizer.ggml.tokens"]["array_len"]
    tokens, merges = synthetic_vocab(n_vocab)
    for key, entry in meta.items():
        if key in ("general.architecture", "general.alignment"):
            continue
        if key == "tokenizer.ggml.tokens":
            w.add_token_list(tokens)
        elif key == "tokenizer.ggml.token_type":
            w.add_token_types([gguf.TokenType.NORMAL] * n_vocab)
        elif key == "tokenizer.ggml.merges":
            w.add_token_merges(merges[: entry["array_len"]])
        else:
            _add_field(w, key, entry)
    for t in record["tensors"]:
        qtype = gguf.GGMLQuantizationType[t["type"]]
        # element shape in numpy order (the writer reverses it back to ggml's ne0, ne1, ...)
        w.add_tensor_info(
            t["name"], list(reversed(t["shape"])), np.dtype(np.float32), t["n_bytes"], raw_dtype=qtype
        )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    alignment = w.data_alignment
    w.close()

    # The tensor data is all zeros: extend the file to its full size without writing it (a sparse file),
    # so a 150k-vocabulary replica costs no disk and no time. Readers only check the offsets fit.
    def aligned(n: int) -> int:
        return -(-n // alignment) * alignment

    data_offset = aligned(path.stat().st_size)
    os.truncate(path, data_offset + sum(aligned(t["n_bytes"]) for t in record["tensors"]))


def shapes_by_name(shapes: Iterable[Shape]) -> dict[str, Shape]:
    return {s.name: s for s in shapes}
