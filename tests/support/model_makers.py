"""Build small real model files for tests: GGUF via gguf.GGUFWriter, safetensors via the safetensors lib."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES

from support.hubserver import HubFile


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int | list[int] = 2,
    ff: int = 128,
    vocab: int = 256,
    ctx: int = 4096,
    file_type: int = 1,
    qtype: GGMLQuantizationType = GGMLQuantizationType.F16,
    tied: bool = False,
    extra: dict[str, Any] | None = None,
    split: int = 1,
) -> list[Path]:
    """A llama-shaped GGUF with `qtype` matrices and F32 norms. Returns the written file(s)."""
    tensors: list[tuple[str, tuple[int, ...], GGMLQuantizationType]] = [
        ("token_embd.weight", (vocab, hidden), qtype)
    ]
    hd = hidden // heads
    kv_max = max(kv_heads) if isinstance(kv_heads, list) else kv_heads
    for i in range(layers):
        tensors += [
            (f"blk.{i}.attn_norm.weight", (hidden,), GGMLQuantizationType.F32),
            (f"blk.{i}.attn_q.weight", (heads * hd, hidden), qtype),
            (f"blk.{i}.attn_k.weight", (kv_max * hd, hidden), qtype),
            (f"blk.{i}.attn_v.weight", (kv_max * hd, hidden), qtype),
            (f"blk.{i}.attn_output.weight", (hidden, heads * hd), qtype),
            (f"blk.{i}.ffn_norm.weight", (hidden,), GGMLQuantizationType.F32),
            (f"blk.{i}.ffn_gate.weight", (ff, hidden), qtype),
            (f"blk.{i}.ffn_up.weight", (ff, hidden), qtype),
            (f"blk.{i}.ffn_down.weight", (hidden, ff), qtype),
        ]
    tensors.append(("output_norm.weight", (hidden,), GGMLQuantizationType.F32))
    if not tied:
        tensors.append(("output.weight", (vocab, hidden), qtype))

    paths = []
    per_file = -(-len(tensors) // split)
    for part in range(split):
        p = path if split == 1 else path.with_name(f"{path.stem}-{part + 1:05d}-of-{split:05d}.gguf")
        w = GGUFWriter(str(p), arch)
        if part == 0:
            w.add_block_count(layers)
            w.add_embedding_length(hidden)
            w.add_head_count(heads)
            w.add_head_count_kv(kv_heads)  # type: ignore[arg-type]
            w.add_feed_forward_length(ff)
            w.add_context_length(ctx)
            w.add_file_type(file_type)
            w.add_name(path.stem)
            w.add_token_list([f"t{i}".encode() for i in range(vocab)])
            for key, value in (extra or {}).items():
                _add(w, key, value)
        if split > 1:
            w.add_uint16("split.no", part)
            w.add_uint16("split.count", split)
        for name, shape, t in tensors[part * per_file : (part + 1) * per_file]:
            block, tsize = GGML_QUANT_SIZES[t]
            n = int(np.prod(shape))
            if t == GGMLQuantizationType.F32:
                arr = np.zeros(shape, dtype=np.float32)
                w.add_tensor(name, arr)
            elif t == GGMLQuantizationType.F16:
                w.add_tensor(name, np.zeros(shape, dtype=np.float16))
            else:
                nbytes = n // block * tsize
                raw = np.zeros((shape[0], nbytes // shape[0]), dtype=np.uint8)
                w.add_tensor(name, raw, raw_dtype=t)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        paths.append(p)
    return paths


def _add(w: GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    elif isinstance(value, list):
        w.add_array(key, value)
    else:
        raise TypeError(key)


_ST_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "F8_E4M3": 1, "U8": 1, "I8": 1}


def safetensors_header(tensors: list[tuple[str, str, tuple[int, ...]]]) -> tuple[bytes, int]:
    """The header bytes (length prefix + JSON) of a safetensors file and the size of its data."""
    table: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in tensors:
        n = int(np.prod(shape)) * _ST_BYTES[dtype] if shape else _ST_BYTES[dtype]
        table[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(table, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offset


def write_safetensors(path: Path, tensors: list[tuple[str, str, tuple[int, ...]]]) -> None:
    """A real safetensors file (zero-filled data) with exactly these tensors."""
    header, size = safetensors_header(tensors)
    with path.open("wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + size)


def llama_tensors(cfg: dict[str, Any], dtype: str = "BF16") -> list[tuple[str, str, tuple[int, ...]]]:
    """The tensor table transformers writes for a Llama/Qwen2/Qwen3/Mistral-style dense config."""
    h = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim") or h // heads
    inter = cfg["intermediate_size"]
    vocab = cfg["vocab_size"]
    bias = cfg.get("model_type") == "qwen2"
    out: list[tuple[str, str, tuple[int, ...]]] = [("model.embed_tokens.weight", dtype, (vocab, h))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", dtype, (h,)),
            (p + "self_attn.q_proj.weight", dtype, (heads * hd, h)),
            (p + "self_attn.k_proj.weight", dtype, (kv * hd, h)),
            (p + "self_attn.v_proj.weight", dtype, (kv * hd, h)),
            (p + "self_attn.o_proj.weight", dtype, (h, heads * hd)),
            (p + "post_attention_layernorm.weight", dtype, (h,)),
            (p + "mlp.gate_proj.weight", dtype, (inter, h)),
            (p + "mlp.up_proj.weight", dtype, (inter, h)),
            (p + "mlp.down_proj.weight", dtype, (h, inter)),
        ]
        if cfg.get("model_type") in ("qwen3", "qwen3_moe"):
            out += [
                (p + "self_attn.q_norm.weight", dtype, (hd,)),
                (p + "self_attn.k_norm.weight", dtype, (hd,)),
            ]
        if bias:
            out += [
                (p + "self_attn.q_proj.bias", dtype, (heads * hd,)),
                (p + "self_attn.k_proj.bias", dtype, (kv * hd,)),
                (p + "self_attn.v_proj.bias", dtype, (kv * hd,)),
            ]
    out.append(("model.norm.weight", dtype, (h,)))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", dtype, (vocab, h)))
    return out


def hub_safetensors_repo(
    config: dict[str, Any], shards: int, dtype: str = "BF16", *, total_size: bool = True
) -> dict[str, HubFile | bytes]:
    """A fake-Hub repo: config.json, the index and `shards` virtual safetensors files whose headers list
    `llama_tensors(config)` (the weights read as zeros). `total_size`: the index's metadata states it."""
    tensors = llama_tensors(config, dtype)
    files: dict[str, HubFile | bytes] = {"config.json": json.dumps(config).encode()}
    weight_map: dict[str, str] = {}
    total = 0
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = tensors[i * len(tensors) // shards : (i + 1) * len(tensors) // shards]
        header, size = safetensors_header(part)
        files[name] = HubFile(header, size=len(header) + size, lfs=True)
        weight_map.update({t[0]: name for t in part})
        total += size
    index = {"metadata": {"total_size": total} if total_size else {}, "weight_map": weight_map}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    return files


def tiny_llama_config(**over: Any) -> dict[str, Any]:
    """The config.json of a tiny Llama (2 layers, hidden 64, 4 heads, 2 KV heads, vocab 256, bf16), `over`
    applied on top (a key already there keeps its place)."""
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "max_position_embeddings": 2048,
        "torch_dtype": "bfloat16",
    }
    cfg.update(over)
    return cfg
