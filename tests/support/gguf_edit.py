"""Edit the header of a well-formed GGUF in place: where each part is, and key-addressed rewrites.

The `gguf` package writes only valid files; hostile-input tests need the invalid ones (a block count
stored as a string, a duplicated key, a count of 2^63). `layout` walks a little-endian GGUF v3 and notes
where its counts, length prefixes, types, numbers and strings are; `set_value` / `drop_key` /
`duplicate_key` rewrite one metadata entry and keep the tensor data at an aligned offset after the
header, so the damage is exactly the one asked for.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

ALIGNMENT = 32  # GGUF's default; files written by tests set no general.alignment
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}
KV_COUNT_AT = 16  # offset of the metadata entry count (after magic, version, tensor count)
# GGUF value types (gguf.GGUFValueType)
UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = 4, 5, 6, 7, 8, 9, 10, 11, 12


@dataclass
class Layout:
    counts: list[int] = field(default_factory=list)  # offsets of the tensor and kv counts (uint64)
    lengths: list[int] = field(default_factory=list)  # uint64 length prefixes: strings and arrays
    types: list[int] = field(default_factory=list)  # uint32 value / item / tensor types
    scalars: list[tuple[int, int]] = field(default_factory=list)  # (offset, size) of numbers
    strings: list[tuple[int, int]] = field(default_factory=list)  # (offset, size) of string bytes
    keys: list[str] = field(default_factory=list)  # metadata keys, in file order
    values: list[tuple[int, int]] = field(default_factory=list)  # (type offset, end) of each value
    kvs: list[tuple[int, int]] = field(default_factory=list)  # (start, end) of each metadata entry
    tensor_infos: list[tuple[str, int]] = field(default_factory=list)  # (name, offset of its info)
    header_end: int = 0  # end of the tensor infos
    data_start: int = 0  # where tensor data begins (header_end padded to the alignment)


@lru_cache(maxsize=16)
def layout(data: bytes) -> Layout:
    """Where each part of a well-formed little-endian GGUF v3 is (struct.error / KeyError if it is not)."""
    lay = Layout(counts=[8, KV_COUNT_AT])
    (n_tensors, n_kv) = struct.unpack_from("<QQ", data, 8)
    offs = 24

    def string(offs: int) -> int:
        (n,) = struct.unpack_from("<Q", data, offs)
        lay.lengths.append(offs)
        lay.strings.append((offs + 8, n))
        return offs + 8 + n

    def value(vtype: int, offs: int) -> int:
        if vtype == STRING:
            return string(offs)
        if vtype == ARRAY:
            (itype, n) = struct.unpack_from("<IQ", data, offs)
            lay.types.append(offs)
            lay.lengths.append(offs + 4)
            offs += 12
            for _ in range(n):
                offs = value(itype, offs)
            return offs
        size = _SCALAR_SIZES[vtype]
        lay.scalars.append((offs, size))
        return offs + size

    for _ in range(n_kv):
        start = offs
        offs = string(offs)
        lay.keys.append(data[start + 8 : offs].decode("utf-8", errors="replace"))
        (vtype,) = struct.unpack_from("<I", data, offs)
        lay.types.append(offs)
        type_at = offs
        offs = value(vtype, offs + 4)
        lay.values.append((type_at, offs))
        lay.kvs.append((start, offs))
    for _ in range(n_tensors):
        info_at = offs
        offs = string(offs)
        lay.tensor_infos.append((data[info_at + 8 : offs].decode("utf-8", errors="replace"), info_at))
        (n_dims,) = struct.unpack_from("<I", data, offs)
        lay.scalars.append((offs, 4))
        offs += 4
        lay.scalars.extend((offs + 8 * i, 8) for i in range(n_dims))
        offs += 8 * n_dims
        lay.types.append(offs)
        lay.scalars.append((offs + 4, 8))  # the tensor's data offset
        offs += 12
    lay.header_end = offs
    lay.data_start = offs + -offs % ALIGNMENT
    return lay


def reassemble(head: bytes, data: bytes, lay: Layout) -> bytes:
    """A header whose length changed, followed by `data`'s tensor data at an aligned offset again:
    damage to one metadata value is then not hidden behind every tensor moving out of place."""
    return head + bytes(-len(head) % ALIGNMENT) + data[lay.data_start :]


def encode(vtype: int, value: Any, item_type: int | None = None) -> bytes:
    """A metadata value as stored after its key: type, then payload (arrays: item type, length, items)."""
    if vtype == STRING:
        raw = value if isinstance(value, bytes) else str(value).encode()
        return struct.pack("<IQ", STRING, len(raw)) + raw
    if vtype == ARRAY:
        assert item_type is not None
        items = b"".join(encode(item_type, v)[4:] for v in value)
        return struct.pack("<IIQ", ARRAY, item_type, len(value)) + items
    return struct.pack("<I" + _SCALAR_FORMATS[vtype], vtype, value)


def _edit_kv(data: bytes, key: str, how: str, encoded: bytes = b"") -> bytes:
    lay = layout(data)
    i = lay.keys.index(key)
    head = bytearray(data[: lay.header_end])
    (n_kv,) = struct.unpack_from("<Q", head, KV_COUNT_AT)
    start, end = lay.kvs[i]
    if how == "set":
        head[lay.values[i][0] : end] = encoded
    elif how == "drop":
        del head[start:end]
        struct.pack_into("<Q", head, KV_COUNT_AT, n_kv - 1)
    else:
        head[end:end] = head[start:end]
        struct.pack_into("<Q", head, KV_COUNT_AT, n_kv + 1)
    return reassemble(bytes(head), data, lay)


def set_value(data: bytes, key: str, encoded: bytes) -> bytes:
    """`data` with the value of `key` replaced by `encoded` (see `encode`), of any type or length."""
    return _edit_kv(data, key, "set", encoded)


def drop_key(data: bytes, key: str) -> bytes:
    return _edit_kv(data, key, "drop")


def duplicate_key(data: bytes, key: str) -> bytes:
    return _edit_kv(data, key, "duplicate")
