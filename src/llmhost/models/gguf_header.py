"""Read the header of a GGUF file (metadata + tensor table) without touching tensor data.

A reader of its own, in plain Python over a memory map (struct, no numpy): it follows the `gguf`
package's `GGUFReader` (llama.cpp's own Python reader) field for field and error for error, which it
replaced because importing gguf and numpy was 0.4 s of every `llmhost plan` of a GGUF (issue 14;
`tests/models/test_gguf_reader.py` checks the two agree, on real and on damaged files). On top of
what GGUFReader does, every read is (a) bounded by the real file size and a header-size limit, so a
malformed or hostile header ("2^40 tensors", "a 1 TB string") fails at once instead of looping or
allocating, (b) signals "need more bytes" when parsing a prefix fetched over HTTP, and (c) tensor data
is never mapped: a header prefix does not contain it.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmhost.errors import ModelError
from llmhost.models.ggml_types import FILE_TYPES, GGML_TYPES

# llama.cpp headers with 256k-token vocabularies are ~15 MiB; nothing legitimate comes near this.
MAX_HEADER_BYTES = 128 * 1024 * 1024
FIRST_REMOTE_CHUNK = 1024 * 1024
# Arrays of strings longer than this (tokenizer vocab/merges) are kept as their length only.
_MAX_DECODED_STRINGS = 4096
# Strings decoded item by item over the whole header, all arrays together: a real header decodes a few
# thousand (small vocabularies, merges); past this a hostile one (thousands of 4096-string arrays)
# would hold gigabytes. Further string arrays are kept as their length only.
_MAX_DECODED_ITEMS = 1 << 16
# Metadata entries and tensors per file. Real files have ~50 entries and at most a few thousand tensors
# (DeepSeek-V3: ~1,100); 2^40 of them "fitting" in the bytes of a large file must not be attempted.
MAX_METADATA_ENTRIES = 1 << 16
# Strings in long arrays, walked one length prefix at a time (~0.3 s per million): the largest real
# vocabularies and merge lists hold well under a million together; 2^24 zero-length strings would fit
# in the header limit and take seconds.
MAX_HEADER_STRINGS = 1 << 22
MAX_TENSORS = 1 << 16
# ggml tensors have at most 4 dimensions (GGML_MAX_DIMS) and fewer than 2^63 elements (int64_t counts).
_GGML_MAX_DIMS = 4
_MAX_ELEMENTS = 2**63 - 1
_MAGIC = 0x46554747  # "GGUF" read little-endian
_SUPPORTED_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32

# GGUF value types (gguf.constants.GGUFValueType) and the struct code of the fixed-size ones.
_UINT32, _BOOL, _STRING, _ARRAY = 4, 7, 8, 9
_SCALAR_CODES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_VALUE_TYPES = {*_SCALAR_CODES, _STRING, _ARRAY}
# Smallest possible encodings, used to reject counts no file of this size could hold.
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, one byte of value


class GGUFFormatError(Exception):
    """The bytes are not a well-formed GGUF header."""


class _NeedMore(Exception):
    def __init__(self, end: int) -> None:
        super().__init__(end)
        self.end = end


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # GGUF order: ne[0] (row length) first
    ggml_type: str  # e.g. "Q4_K", "F16"
    n_elements: int
    n_bytes: int


@dataclass
class GGUFHeader:
    version: int
    fields: dict[str, Any]
    array_lengths: dict[str, int]  # every array field's length (large string arrays are not decoded)
    tensors: list[GGUFTensor]
    header_bytes: int  # offset of the tensor data (header size including padding)
    file_size: int
    notes: list[str] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        return str(self.fields.get("general.architecture", "unknown"))

    def arch_field(self, key: str, default: Any = None) -> Any:
        return self.fields.get(f"{self.architecture}.{key}", default)

    @property
    def file_type_tag(self) -> str | None:
        raw = self.fields.get("general.file_type")
        if not isinstance(raw, int) or isinstance(raw, bool):  # absent, or not a number: no tag
            return None
        return FILE_TYPES.get(raw)


class _Reader:
    """One pass over a GGUF header in `data` (a memory map of the file or of a fetched prefix), every
    read checked against the file size and the header limit."""

    def __init__(self, data: Any, *, total_size: int, available: int, limit: int) -> None:
        self.data = data
        self._total_size = total_size
        self._available = min(available, len(data))
        self._limit = limit
        self._decoded = 0  # strings decoded item by item so far (see _MAX_DECODED_ITEMS)
        self._walked = 0  # strings of long arrays walked so far (see MAX_HEADER_STRINGS)
        self.order = "<" if sys.byteorder == "little" else ">"  # GGUFReader starts in the host's order
        self.fields: dict[str, tuple[int, Any]] = {}  # name -> (value type, value)
        self.array_lengths: dict[str, int] = {}
        self._offsets: dict[str, int] = {}
        self.alignment = _DEFAULT_ALIGNMENT
        self._parse()

    def _check(self, end: int) -> None:
        if end > self._total_size:
            raise GGUFFormatError(
                f"header claims {end} bytes but the file has {self._total_size} (truncated or corrupt)"
            )
        if end > self._limit:
            raise GGUFFormatError(f"header is larger than {self._limit // 2**20} MiB (corrupt)")
        if end > self._available:
            raise _NeedMore(end)

    def _get(self, offset: int, code: str, count: int = 1, order: str | None = None) -> tuple[Any, ...]:
        self._check(offset + struct.calcsize(code) * count)
        return struct.unpack_from(f"{order or self.order}{count}{code}", self.data, offset)

    def _one(self, offset: int, code: str) -> Any:
        return self._get(offset, code)[0]

    def _bytes(self, offset: int, n: int) -> bytes:
        self._check(offset + n)
        return bytes(self.data[offset : offset + n])

    def _str(self, offset: int) -> tuple[bytes, int]:
        n = self._one(offset, "Q")
        return self._bytes(offset + 8, n), offset + 8 + n

    def _push(self, name: str, offset: int, vtype: int, value: Any) -> None:
        if name in self.fields:
            raise GGUFFormatError(f"Duplicate {name} already in list at offset {offset}")
        self.fields[name] = (vtype, value)

    def _parse(self) -> None:
        if self._one(0, "I") != _MAGIC:
            raise GGUFFormatError("GGUF magic invalid")
        version = self._one(4, "I")
        if version & 0xFFFF == 0:  # written for the other byte order (GGUFReader reads it swapped)
            self.order = ">" if self.order == "<" else "<"
            version = self._one(4, "I")
        if version not in _SUPPORTED_VERSIONS:
            raise GGUFFormatError(f"Sorry, file appears to be version {version} which we cannot handle")
        self.version = version
        tensor_count, kv_count = self._get(8, "Q", 2)
        for name, at, value in (("GGUF.version", 4, version), ("GGUF.tensor_count", 8, tensor_count)):
            self._push(name, at, _UINT32 if at == 4 else 10, value)
        self._push("GGUF.kv_count", 16, 10, kv_count)
        offs = self._build_fields(24, kv_count)
        offs, infos = self._build_tensor_info(offs, tensor_count)
        align = self.fields.get("general.alignment")
        if align is not None:
            if align[0] != _UINT32:
                raise GGUFFormatError("Bad type for general.alignment field")
            self.alignment = align[1]
            if self.alignment == 0 or (self.alignment & (self.alignment - 1)) != 0:
                raise GGUFFormatError("Invalid alignment: must be a non-zero power of two")
        offs += -offs % self.alignment
        self.data_offset = offs
        self.tensors = self._build_tensors(offs, infos)

    def _build_fields(self, offs: int, count: int) -> int:
        if count * _MIN_KV_BYTES > self._total_size - offs:
            raise GGUFFormatError(f"header claims {count} metadata entries, more than the file can hold")
        if count > MAX_METADATA_ENTRIES:
            raise GGUFFormatError(
                f"header claims {count} metadata entries, more than the {MAX_METADATA_ENTRIES} "
                "llmhost accepts"
            )
        for _ in range(count):
            orig = offs
            raw_key, offs = self._str(offs)
            vtype = self._one(offs, "I")
            offs, value, length = self._value(offs + 4, vtype)
            key = raw_key.decode("utf-8")  # strict and after the value, as GGUFReader (errors alike)
            self._push(key, orig, vtype, value)
            if length is not None:
                self.array_lengths[key] = length
        return offs

    def _value(self, offs: int, vtype: int) -> tuple[int, Any, int | None]:
        """(offset after the value, the value (None for a long array kept as its length only), the
        array's length or None)."""
        if vtype not in _VALUE_TYPES:
            raise GGUFFormatError(f"a metadata value has unknown type {vtype}")
        if vtype == _STRING:
            raw, end = self._str(offs)
            return end, _text(raw), None
        if vtype != _ARRAY:
            code = _SCALAR_CODES[vtype]
            return offs + struct.calcsize(code), self._one(offs, code), None
        item_type, length = self._one(offs, "I"), self._one(offs + 4, "Q")
        if item_type == _ARRAY:
            raise GGUFFormatError("an array of arrays (llama.cpp reads none)")
        min_item = 8 if item_type == _STRING else 1
        if length * min_item > self._total_size - offs:
            raise GGUFFormatError(f"an array claims {length} items, more than the file can hold")
        start = offs + 12
        if item_type == _STRING:
            if length <= _MAX_DECODED_STRINGS and self._decoded + length <= _MAX_DECODED_ITEMS:
                self._decoded += length
                items = []
                for _ in range(length):
                    raw, start = self._str(start)
                    items.append(_text(raw))
                return start, items, length
            # Tokenizer vocab/merges: only the length is needed, so walk the length prefixes.
            return self._skip_strings(start, length), None, length
        item_code = _SCALAR_CODES.get(item_type)
        if item_code is None:
            if length:  # the first item's type is checked as a value's
                raise GGUFFormatError(f"a metadata value has unknown type {item_type}")
            return start, [], length
        end = start + struct.calcsize(item_code) * length
        if length > _MAX_DECODED_STRINGS:
            # Long numeric arrays are vocabulary data (token scores, types): kept as their length.
            self._check(end)
            return end, None, length
        return end, list(self._get(start, item_code, length)), length

    def _skip_strings(self, offs: int, count: int) -> int:
        self._walked += count
        if self._walked > MAX_HEADER_STRINGS:
            raise GGUFFormatError(f"header holds more than the {MAX_HEADER_STRINGS} strings llmhost accepts")
        unpack = struct.Struct(f"{self.order}Q").unpack_from
        data, available = self.data, self._available
        bound = min(self._total_size, self._limit)
        for _ in range(count):
            if offs + 8 > available:
                self._check(offs + 8)  # raises the right error (truncated / need more / limit)
            (n,) = unpack(data, offs)
            offs += 8 + n
            if offs > bound:
                self._check(offs)  # past the file or the limit: raises
        if offs > available:
            raise _NeedMore(offs)
        return offs

    def _build_tensor_info(self, offs: int, count: int) -> tuple[int, list[tuple[Any, ...]]]:
        if count * _MIN_TENSOR_INFO_BYTES > self._total_size - offs:
            raise GGUFFormatError(f"header claims {count} tensors, more than the file can hold")
        if count > MAX_TENSORS:
            raise GGUFFormatError(
                f"header claims {count} tensors, more than the {MAX_TENSORS} llmhost accepts"
            )
        infos = []
        for _ in range(count):
            # The dimension count is checked before the dimensions are read: past 4 of them, the rest of
            # the table is misread.
            name_len = self._one(offs, "Q")
            n_dims = self._one(offs + 8 + name_len, "I")
            if n_dims > _GGML_MAX_DIMS:
                name = self._bytes(offs + 8, name_len).decode("utf-8", errors="replace")
                raise GGUFFormatError(
                    f"tensor {name!r} has {n_dims} dimensions (ggml has at most {_GGML_MAX_DIMS})"
                )
            raw_name, offs = self._str(offs)
            name = raw_name.decode("utf-8")  # strict, as GGUFReader
            dims = self._get(offs + 4, "Q", n_dims)
            offs += 4 + 8 * n_dims
            raw_type, raw_offset = self._one(offs, "I"), self._one(offs + 4, "Q")
            offs += 12
            infos.append((name, dims, raw_type, raw_offset))
        return offs, infos

    def _build_tensors(self, start_offs: int, infos: list[tuple[Any, ...]]) -> list[GGUFTensor]:
        # Tensor data is not needed (and not present in a header prefix): record the table only, each
        # entry checked as llama.cpp's gguf loader checks it, and its data inside the file.
        if infos and start_offs > self._total_size:
            raise GGUFFormatError(
                f"tensor data would start at byte {start_offs:,}, past the end of the file "
                f"({self._total_size:,} bytes)"
            )
        tensors: list[GGUFTensor] = []
        seen: set[str] = set()
        for name, dims, raw_type, raw_offset in infos:
            if name in seen:
                raise GGUFFormatError(f"duplicate tensor {name!r}")
            seen.add(name)
            tensors.append(self._tensor(name, dims, raw_type, start_offs, raw_offset))
        return tensors

    def _tensor(
        self, name: str, dims: tuple[int, ...], raw_type: int, start_offs: int, offset: int
    ) -> GGUFTensor:
        if raw_type not in GGML_TYPES:
            raise GGUFFormatError(f"tensor {name!r} has unknown ggml type {raw_type}")
        type_name, block_size, type_size = GGML_TYPES[raw_type]
        shape = tuple(dims)
        n_elements = math.prod(shape) if shape else 1
        if n_elements > _MAX_ELEMENTS:
            raise GGUFFormatError(
                f"tensor {name!r} has shape {list(shape)}: more elements than ggml can count"
            )
        if shape and shape[0] % block_size:
            raise GGUFFormatError(
                f"tensor {name!r} has rows of {shape[0]} elements, not a multiple of {type_name}'s "
                f"block of {block_size}"
            )
        n_bytes = n_elements * type_size // block_size
        if offset % self.alignment:
            raise GGUFFormatError(f"tensor {name!r} starts at {offset}, not a multiple of {self.alignment}")
        end = start_offs + offset + n_bytes
        if end > self._total_size:
            raise GGUFFormatError(
                f"tensor {name!r} ends at byte {end:,} but the file has {self._total_size:,} "
                "(truncated download?)"
            )
        return GGUFTensor(name, shape, type_name, n_elements, n_bytes)


def _text(raw: bytes) -> str:
    # Metadata text is not required to be UTF-8 (llama.cpp does not check; byte-level vocabularies such
    # as RWKV's hold raw bytes): undecodable bytes read as U+FFFD, and the fields llmhost relies on are
    # checked where they are used (models.gguf_fields).
    return raw.decode("utf-8", errors="replace")


def _parse(path: str, *, total_size: int, available: int, limit: int) -> GGUFHeader:
    try:
        with open(path, "rb") as f:
            mapped = os.fstat(f.fileno()).st_size
            # Only the header is ever read; an empty file cannot be mapped (and holds no header).
            data: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if mapped else b""
        try:
            reader = _Reader(data, total_size=total_size, available=available, limit=limit)
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
    except (_NeedMore, GGUFFormatError):
        raise
    except UnicodeDecodeError as exc:  # keys and tensor names are decoded strictly, as GGUFReader does
        raise GGUFFormatError("a metadata key or tensor name is not UTF-8 text") from exc
    except (ValueError, IndexError, OverflowError, struct.error) as exc:
        raise GGUFFormatError(str(exc) or type(exc).__name__) from exc
    fields = {
        name: value
        for name, (_t, value) in reader.fields.items()
        if not name.startswith("GGUF.") and value is not None
    }
    return GGUFHeader(
        version=reader.version,
        fields=fields,
        array_lengths=reader.array_lengths,
        tensors=reader.tensors,
        header_bytes=reader.data_offset,
        file_size=total_size,
    )


def read_local_header(path: str | os.PathLike[str], *, limit: int = MAX_HEADER_BYTES) -> GGUFHeader:
    """Parse the header of a local GGUF file (memory-mapped; tensor data is never read)."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise ModelError(f"Cannot read {p}: {exc.strerror}.", hint="Check the path.") from exc
    if size < 24:
        raise ModelError(f"{p} is not a GGUF file (only {size} bytes).", hint="Check the path.")
    try:
        return _parse(str(p), total_size=size, available=size, limit=limit)
    except _NeedMore as exc:  # cannot happen with the whole file available; keep it a clean error
        raise ModelError(f"{p}: GGUF header is truncated.") from exc
    except GGUFFormatError as exc:
        raise ModelError(
            f"{p} is not a valid GGUF file: {exc}.", hint="Re-download it or pick another file."
        ) from exc


RangeFetcher = Callable[[int, int], tuple[bytes, int | None]]
"""fetch(start, end_inclusive) -> (bytes, total file size if known); raises LlmhostError on failure."""


def read_remote_header(
    fetch: RangeFetcher,
    total_size: int | None,
    *,
    label: str,
    first_chunk: int = FIRST_REMOTE_CHUNK,
    limit: int = MAX_HEADER_BYTES,
    keep: Callable[[bytes], None] | None = None,
) -> tuple[GGUFHeader, int]:
    """Parse a GGUF header from range reads, growing the prefix (doubling) until it parses.

    Returns the header and the number of bytes fetched. Growth is bounded by `limit` and by the file
    size, so a corrupt header ends in a `ModelError`, never an endless download. `keep` receives the raw
    header (up to the tensor data): with it, llama.cpp itself can read the file's metadata later.
    """
    buf = bytearray()
    want = min(first_chunk, limit, total_size or first_chunk)
    prefix_path = ""
    with tempfile.TemporaryDirectory(prefix="llmhost-gguf-") as tmp:
        while True:
            if want > len(buf):
                chunk, reported = fetch(len(buf), want - 1)
                if total_size is None:
                    total_size = reported if reported is not None else len(chunk)
                if not chunk:
                    raise ModelError(f"{label}: the server returned no bytes for a range request.")
                buf += chunk
                prefix_path = os.path.join(tmp, f"prefix-{len(buf)}.gguf")
                with open(prefix_path, "wb") as fh:
                    fh.write(buf)
            assert total_size is not None
            if total_size < 24:
                raise ModelError(f"{label} is not a GGUF file (only {total_size} bytes).")
            try:
                header = _parse(prefix_path, total_size=total_size, available=len(buf), limit=limit)
                if keep is not None:
                    keep(bytes(buf[: header.header_bytes]))
                return header, len(buf)
            except _NeedMore as more:
                if len(buf) >= min(total_size, limit):
                    raise ModelError(
                        f"{label}: GGUF header does not parse within {len(buf)} bytes."
                    ) from more
                want = min(max(2 * len(buf), more.end), total_size, limit)
            except GGUFFormatError as exc:
                raise ModelError(
                    f"{label} is not a valid GGUF file: {exc}.", hint="Pick another file or quant tag."
                ) from exc


def header_to_json(h: GGUFHeader) -> dict[str, Any]:
    return {
        "version": h.version,
        "fields": _jsonable(h.fields),
        "array_lengths": h.array_lengths,
        "tensors": [[t.name, list(t.shape), t.ggml_type, t.n_elements, t.n_bytes] for t in h.tensors],
        "header_bytes": h.header_bytes,
        "file_size": h.file_size,
    }


def header_from_json(d: dict[str, Any]) -> GGUFHeader:
    return GGUFHeader(
        version=int(d["version"]),
        fields=dict(d["fields"]),
        array_lengths={k: int(v) for k, v in d["array_lengths"].items()},
        tensors=[GGUFTensor(n, tuple(s), t, int(e), int(b)) for n, s, t, e, b in d["tensors"]],
        header_bytes=int(d["header_bytes"]),
        file_size=int(d["file_size"]),
    )


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return v
