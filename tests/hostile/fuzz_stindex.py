"""Fuzz target `stindex`: hostile safetensors headers and model.safetensors.index.json files in a model
directory with a small real config.json, through resolve -> make_plan -> JSON serialisation.

A case is the index (empty: no index file) and each shard file, joined by SEP. Mutations edit the
index's weight_map or a shard's header table structure-aware (dtypes, shapes, data_offsets, names set
to extreme values or the wrong type), damage a header's length prefix, truncate a shard's data, or
flip raw bytes anywhere.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

from support.jsonmut import mutate_bytes, mutate_json, plan_and_serialise

CASES = 20000
SEP = b"\n--8<-- shard --8<--\n"

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 32,
    "max_position_embeddings": 256,
    "torch_dtype": "bfloat16",
    "tie_word_embeddings": False,
}
_BYTES = {"BF16": 2, "F32": 4, "I32": 4, "U8": 1, "F8_E4M3": 1}
KEYS = [
    "weight_map", "metadata", "total_size", "dtype", "shape", "data_offsets", "__metadata__",
    "model.embed_tokens.weight", "lm_head.weight", "model.layers.0.mlp.up_proj.weight",
    "model.layers.99999999999.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.qweight",
]  # fmt: skip


def _tensors(dtype: str = "BF16") -> list[tuple[str, str, list[int]]]:
    h, inter, vocab, kv = 16, 32, 32, 8
    out = [("model.embed_tokens.weight", dtype, [vocab, h])]
    for i in range(2):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", dtype, [h]),
            (p + "self_attn.q_proj.weight", dtype, [h, h]),
            (p + "self_attn.k_proj.weight", dtype, [kv, h]),
            (p + "self_attn.v_proj.weight", dtype, [kv, h]),
            (p + "self_attn.o_proj.weight", dtype, [h, h]),
            (p + "mlp.gate_proj.weight", "F32", [inter, h]),
            (p + "mlp.up_proj.weight", "I32", [inter, h // 8]),
            (p + "mlp.down_proj.weight", "U8", [h, inter]),
        ]
    return [*out, ("model.norm.weight", dtype, [h]), ("lm_head.weight", dtype, [vocab, h])]


def shard(tensors: list[tuple[str, str, list[int]]], data: bool = True) -> bytes:
    """A safetensors file: length prefix, header JSON, zero-filled data (or none)."""
    table: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in tensors:
        n = _BYTES[dtype]
        for d in shape:
            n *= d
        table[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(table).encode()
    return struct.pack("<Q", len(raw)) + raw + (bytes(offset) if data else b"")


def _index(parts: list[list[tuple[str, str, list[int]]]]) -> bytes:
    names = [f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors" for i in range(len(parts))]
    weight_map = {t[0]: names[i] for i, part in enumerate(parts) for t in part}
    return json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}).encode()


def seeds(workdir: Path) -> list[bytes]:
    t = _tensors()
    halves = [t[:9], t[9:]]
    return [
        SEP.join([b"", shard(t)]),
        SEP.join([_index(halves), *(shard(h) for h in halves)]),
        SEP.join([_index([t]), shard(_tensors("F32"))]),
    ]


def _mutate_header(blob: bytes, rng: random.Random) -> bytes:
    if len(blob) < 8:
        return mutate_bytes(blob, rng)
    (n,) = struct.unpack("<Q", blob[:8])
    header, data = blob[8 : 8 + n], blob[8 + n :]
    roll = rng.random()
    if roll < 0.6:
        header = mutate_json(header, rng, KEYS)
        return struct.pack("<Q", len(header)) + header + data
    if roll < 0.75:
        prefix = rng.choice([0, 1, len(header) + 1, len(header) * 2, 2**63, 2**64 - 1, 100 * 2**20])
        return struct.pack("<Q", prefix) + header + data
    if roll < 0.9:
        return blob[: rng.randrange(len(blob) + 1)]  # a truncated download
    return mutate_bytes(blob, rng)


def mutate(data: bytes, rng: random.Random) -> bytes:
    parts = data.split(SEP)
    which = rng.randrange(len(parts))
    if which == 0:
        parts[0] = mutate_json(parts[0], rng, KEYS) if parts[0] else _index([_tensors()])
    else:
        parts[which] = _mutate_header(parts[which], rng)
    return SEP.join(parts)


def check(data: bytes, workdir: Path) -> None:
    index, *shards = data.split(SEP)
    (workdir / "config.json").write_text(json.dumps(CONFIG))
    if index:
        (workdir / "model.safetensors.index.json").write_bytes(index)
    for i, blob in enumerate(shards):
        name = (
            f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" if index else f"model{i or ''}.safetensors"
        )
        (workdir / name).write_bytes(blob)
    plan_and_serialise(workdir)
