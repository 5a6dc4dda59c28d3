"""Safetensors headers: parse the JSON table at the front of a file, from disk or from a byte prefix.

Format: 8-byte little-endian header length N, then N bytes of JSON mapping tensor names to
{"dtype", "shape", "data_offsets"} (plus an optional "__metadata__"). Only the header is read.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from llmhost.errors import ModelError
from llmhost.models.tensors import SAFETENSORS_DTYPE_BYTES, TensorRecord

# The largest real headers (MoE checkpoints with per-expert tensors) are a few MiB.
MAX_HEADER_BYTES = 100 * 1024 * 1024


def header_length(prefix: bytes, *, label: str) -> int:
    if len(prefix) < 8:
        raise ModelError(f"{label} is not a safetensors file (shorter than 8 bytes).")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n < 2 or n > MAX_HEADER_BYTES:
        raise ModelError(f"{label} is not a valid safetensors file (header length {n}).")
    return int(n)


def parse_header(raw: bytes, *, label: str) -> list[TensorRecord]:
    try:
        table = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{label} has a corrupt safetensors header: {exc}.") from exc
    if not isinstance(table, dict):
        raise ModelError(f"{label} has a corrupt safetensors header (not a JSON object).")
    return records_from_table(table, label=label)


def records_from_table(table: dict[str, Any], *, label: str) -> list[TensorRecord]:
    records: list[TensorRecord] = []
    for name, info in table.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(info["dtype"])
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{label}: tensor {name!r} has a malformed header entry.") from exc
        n_bytes = end - start
        if n_bytes < 0:
            raise ModelError(f"{label}: tensor {name!r} has negative size.")
        if dtype not in SAFETENSORS_DTYPE_BYTES:
            raise ModelError(f"{label}: tensor {name!r} has unknown dtype {dtype}.")
        records.append(TensorRecord(name=name, dtype=dtype, shape=shape, n_bytes=n_bytes))
    return records


def read_local(path: Path) -> list[TensorRecord]:
    label = str(path)
    try:
        with path.open("rb") as fh:
            n = header_length(fh.read(8), label=label)
            size = path.stat().st_size
            if 8 + n > size:
                raise ModelError(f"{label} is truncated (header claims {n} bytes, file has {size}).")
            raw = fh.read(n)
    except OSError as exc:
        raise ModelError(f"Cannot read {label}: {exc.strerror}.") from exc
    return parse_header(raw, label=label)
