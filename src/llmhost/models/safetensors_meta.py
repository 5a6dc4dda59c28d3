"""Safetensors headers: parse the JSON table at the front of a file, from disk or from a byte prefix.

Format: 8-byte little-endian header length N, then N bytes of JSON mapping tensor names to
{"dtype", "shape", "data_offsets"} (plus an optional "__metadata__"). Only the header is read.
Every entry is checked as the safetensors library checks it on load: known dtype, non-negative
dimensions, and a byte span that holds exactly shape x dtype (and, on disk, lies inside the file), so
a corrupt header cannot claim more weights than the bytes behind it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path, PurePosixPath
from typing import Any

from llmhost.errors import ModelError
from llmhost.models.files import cannot_read, open_regular, parse_json
from llmhost.models.tensors import SAFETENSORS_DTYPE_BYTES, TensorRecord

# The largest real headers (MoE checkpoints with per-expert tensors) are a few MiB.
MAX_HEADER_BYTES = 100 * 1024 * 1024
# The most-sharded real checkpoints have a few hundred files (Llama-3.1-405B: 191, DeepSeek-V3: 163);
# an index naming more is refused before one of them is opened or fetched.
MAX_SHARDS = 4096
# The largest real shards are tens of GiB; a byte span past 2^48 (256 TiB) is a corrupt header, and
# is refused before it becomes a parameter count that overflows float arithmetic downstream.
MAX_DATA_OFFSET = 2**48

_CORRUPT_HINT = "The file is corrupt or not a safetensors file: re-download it."


def header_length(prefix: bytes, *, label: str) -> int:
    if len(prefix) < 8:
        raise ModelError(f"{label} is not a safetensors file (shorter than 8 bytes).", hint=_CORRUPT_HINT)
    (n,) = struct.unpack("<Q", prefix[:8])
    if n < 2 or n > MAX_HEADER_BYTES:
        raise ModelError(f"{label} is not a valid safetensors file (header length {n}).", hint=_CORRUPT_HINT)
    return int(n)


def parse_header(raw: bytes, *, label: str, data_bytes: int | None = None) -> list[TensorRecord]:
    """The tensor table of a header; `data_bytes` (what follows the header on disk) bounds every span."""
    table = parse_json(raw, label=f"{label}'s safetensors header")
    if not isinstance(table, dict):
        raise ModelError(f"{label} has a corrupt safetensors header (not a JSON object).", hint=_CORRUPT_HINT)
    return records_from_table(table, label=label, data_bytes=data_bytes)


def _malformed(label: str, name: str, what: str) -> ModelError:
    return ModelError(f"{label}: tensor {name!r} {what}.", hint=_CORRUPT_HINT)


def _record(name: str, info: Any, *, label: str) -> tuple[TensorRecord, int]:
    """One header entry as a record, and the end of its byte span."""
    if not isinstance(info, dict):
        raise _malformed(label, name, "has a malformed header entry (not an object)")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPE_BYTES:
        raise _malformed(label, name, f"has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _malformed(label, name, "has a malformed shape (not a list of non-negative integers)")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(x) is int and x >= 0 for x in offsets)
    ):
        raise _malformed(label, name, "has malformed data_offsets (not two non-negative integers)")
    start, end = offsets
    if end > MAX_DATA_OFFSET:
        raise _malformed(label, name, f"ends at byte {end}, past any real checkpoint (corrupt header)")
    if end < start:
        raise _malformed(label, name, "has negative size")
    record = TensorRecord(name=name, dtype=dtype, shape=tuple(shape), n_bytes=end - start)
    # Sub-byte dtypes (F4, F6) make the size a multiple of a quarter byte: compare in quarters, exactly.
    quarters = round(SAFETENSORS_DTYPE_BYTES[dtype] * 4)
    if _elements_past(shape, MAX_DATA_OFFSET * 2) or record.n_elements * quarters != record.n_bytes * 4:
        raise _malformed(
            label, name, f"has {record.n_bytes} bytes for shape {shape} of {dtype} (corrupt header)"
        )
    return record, end


def _elements_past(shape: list[int], limit: int) -> bool:
    """Whether any partial product of the dimensions exceeds `limit` (a zero dimension does not excuse
    a huge one, and stopping early keeps a hostile shape from building a number of millions of digits)."""
    n = 1
    for d in shape:
        n *= max(d, 1)
        if n > limit:
            return True
    return False


def records_from_table(
    table: dict[str, Any], *, label: str, data_bytes: int | None = None
) -> list[TensorRecord]:
    records: list[TensorRecord] = []
    for name, info in table.items():
        if name == "__metadata__":
            continue
        record, end = _record(name, info, label=label)
        if data_bytes is not None and end > data_bytes:
            raise ModelError(
                f"{label} is truncated: tensor {name!r} ends at data byte {end:,} but the file holds "
                f"{data_bytes:,}.",
                hint="Finish or redo the download.",
            )
        records.append(record)
    return records


def shard_names(index: Any, *, label: str) -> list[str]:
    """The shard files a model.safetensors.index.json maps tensors to, relative to the index, sorted.

    A name must stay inside the model (no absolute path, no `..`): the index is as untrusted as the
    weights, and is not allowed to make llmhost open or fetch other files.
    """
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise ModelError(
            f"{label} has no weight_map object (tensor name -> shard file).",
            hint="Re-download the index, or remove it to read the .safetensors files in the directory.",
        )
    names: set[str] = set()
    for shard in weight_map.values():
        if not isinstance(shard, str) or not _inside(shard):
            raise ModelError(
                f"{label} maps a tensor to {shard!r}, which is not a file name inside the model.",
                hint="Re-download the index; a shard is named like model-00001-of-00004.safetensors.",
            )
        names.add(shard)
        if len(names) > MAX_SHARDS:
            raise ModelError(
                f"{label} names more than {MAX_SHARDS} shard files.",
                hint="Check the index; re-download it if it is corrupt.",
            )
    return sorted(names)


def _inside(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    printable = not any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    return bool(parts) and printable and not name.startswith(("/", "\\")) and ".." not in parts


def read_local(path: Path) -> list[TensorRecord]:
    label = str(path)
    with open_regular(path) as fh:
        try:
            n = header_length(fh.read(8), label=label)
            size = os.fstat(fh.fileno()).st_size
            if 8 + n > size:
                raise ModelError(
                    f"{label} is truncated (header claims {n} bytes, file has {size}).",
                    hint="Finish or redo the download.",
                )
            raw = fh.read(n)
        except OSError as exc:
            raise cannot_read(path, exc) from exc
    return parse_header(raw, label=label, data_bytes=size - 8 - n)
