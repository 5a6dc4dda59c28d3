"""Read the header of a GGUF file (metadata + tensor table) without touching tensor data.

Parsing is done by the `gguf` package's `GGUFReader` (llama.cpp's own Python reader). We subclass it
only to (a) bound every read by the real file size and a header-size limit, so a malformed or hostile
header ("2^40 tensors", "a 1 TB string") fails at once instead of looping or allocating, (b) signal
"need more bytes" when parsing a prefix fetched over HTTP, and (c) skip mapping tensor data, which a
header prefix does not contain.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, LlamaFileType

from llmhost.errors import ModelError

# llama.cpp headers with 256k-token vocabularies are ~15 MiB; nothing legitimate comes near this.
MAX_HEADER_BYTES = 128 * 1024 * 1024
FIRST_REMOTE_CHUNK = 1024 * 1024
# Arrays of strings longer than this (tokenizer vocab/merges) are kept as their length only.
_MAX_DECODED_STRINGS = 4096
# Strings decoded item by item over the whole header, all arrays together: a real header decodes a few
# thousand (small vocabularies, merges); past this a hostile one (thousands of 4096-string arrays, two
# numpy objects per item) would hold gigabytes. Further string arrays are kept as their length only.
_MAX_DECODED_ITEMS = 1 << 16
# Metadata entries and tensors per file. Real files have ~50 entries and at most a few thousand tensors
# (DeepSeek-V3: ~1,100); each costs a handful of numpy objects, so 2^40 of them "fitting" in the bytes
# of a large file must not be attempted.
MAX_METADATA_ENTRIES = 1 << 16
# Strings in long arrays, walked one length prefix at a time (~0.6 s per million): the largest real
# vocabularies and merge lists hold well under a million together; 2^24 zero-length strings would fit
# in the header limit and take ~10 s.
MAX_HEADER_STRINGS = 1 << 22
MAX_TENSORS = 1 << 16
# ggml tensors have at most 4 dimensions (GGML_MAX_DIMS) and fewer than 2^63 elements (int64_t counts).
_GGML_MAX_DIMS = 4
_MAX_ELEMENTS = 2**63 - 1
_VALUE_TYPES = {int(t) for t in GGUFValueType}
_SCALARS = _VALUE_TYPES - {int(GGUFValueType.STRING), int(GGUFValueType.ARRAY)}
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
        try:
            name = LlamaFileType(int(raw)).name
        except ValueError:
            return None
        if name == "GUESSED":
            return None
        return name.removeprefix("MOSTLY_").removeprefix("ALL_")


class _BoundedReader(GGUFReader):
    """`GGUFReader` whose every read is checked against the file size and the header limit."""

    def __init__(self, path: str, *, total_size: int, available: int, limit: int) -> None:
        self._total_size = total_size
        self._available = available
        self._limit = limit
        self._decoded = 0  # strings decoded item by item so far (see _MAX_DECODED_ITEMS)
        self._walked = 0  # strings of long arrays walked so far (see MAX_HEADER_STRINGS)
        super().__init__(path, "r")

    def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> Any:
        if type(self.data) is not np.ndarray:
            # A plain view of the map: np.memmap's per-slice bookkeeping doubled the parse time of a
            # header (hundreds of thousands of small reads for a large vocabulary).
            self.data = self.data.view(np.ndarray)  # type: ignore[assignment]  # same bytes, plain type
        count = int(count)
        end = int(offset) + np.dtype(dtype).itemsize * count
        if end > self._total_size:
            raise GGUFFormatError(
                f"header claims {end} bytes but the file has {self._total_size} (truncated or corrupt)"
            )
        if end > self._limit:
            raise GGUFFormatError(f"header is larger than {self._limit // 2**20} MiB (corrupt)")
        if end > self._available:
            raise _NeedMore(end)
        return super()._get(offset, dtype, count, override_order)

    def _build_fields(self, offs: int, count: int) -> int:
        if int(count) * _MIN_KV_BYTES > self._total_size - offs:
            raise GGUFFormatError(f"header claims {int(count)} metadata entries, more than the file can hold")
        if int(count) > MAX_METADATA_ENTRIES:
            raise GGUFFormatError(
                f"header claims {int(count)} metadata entries, more than the {MAX_METADATA_ENTRIES} "
                "llmhost accepts"
            )
        return super()._build_fields(offs, count)

    def _build_tensor_info(self, offs: int, count: int) -> tuple[int, list[Any]]:
        if int(count) * _MIN_TENSOR_INFO_BYTES > self._total_size - offs:
            raise GGUFFormatError(f"header claims {int(count)} tensors, more than the file can hold")
        if int(count) > MAX_TENSORS:
            raise GGUFFormatError(
                f"header claims {int(count)} tensors, more than the {MAX_TENSORS} llmhost accepts"
            )
        return super()._build_tensor_info(offs, count)

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> Any:
        if int(raw_type) not in _VALUE_TYPES:
            raise GGUFFormatError(f"a metadata value has unknown type {int(raw_type)}")
        if raw_type == GGUFValueType.ARRAY:
            item_type_arr = self._get(orig_offs, np.uint32)
            length_arr = self._get(orig_offs + 4, np.uint64)
            item_type, length = int(item_type_arr[0]), int(length_arr[0])
            if item_type == GGUFValueType.ARRAY:
                raise GGUFFormatError("an array of arrays (llama.cpp reads none)")
            min_item = 8 if item_type == GGUFValueType.STRING else 1
            if length * min_item > self._total_size - orig_offs:
                raise GGUFFormatError(f"an array claims {length} items, more than the file can hold")
            if item_type == GGUFValueType.STRING:
                if length <= _MAX_DECODED_STRINGS and self._decoded + length <= _MAX_DECODED_ITEMS:
                    self._decoded += length
                    return super()._get_field_parts(orig_offs, raw_type)
                # Tokenizer vocab/merges: the stock reader builds numpy arrays per string (seconds for
                # 150k tokens). Only the length is needed, so walk the length prefixes instead.
                end = self._skip_strings(orig_offs + 12, length)
                parts = [item_type_arr, length_arr]
                return end - orig_offs, parts, [], [GGUFValueType.ARRAY, GGUFValueType.STRING]
            scalar = self.gguf_scalar_to_np.get(GGUFValueType(item_type)) if item_type in _SCALARS else None
            if scalar is not None:
                # The stock reader makes one numpy view per item (~2 s for 150k token scores). Short
                # arrays (per-layer values) are read as one view; long ones are vocabulary data, kept
                # as their length only.
                end = orig_offs + 12 + np.dtype(scalar).itemsize * length
                parts = [item_type_arr, length_arr]
                if length > _MAX_DECODED_STRINGS:
                    self._get(end - 1, np.uint8)  # bounds: truncated / limit / need more
                    return end - orig_offs, parts, [], [GGUFValueType.ARRAY, GGUFValueType(item_type)]
                parts.append(self._get(orig_offs + 12, scalar, length))
                return end - orig_offs, parts, [2], [GGUFValueType.ARRAY, GGUFValueType(item_type)]
        return super()._get_field_parts(orig_offs, raw_type)

    def _skip_strings(self, offs: int, count: int) -> int:
        self._walked += count
        if self._walked > MAX_HEADER_STRINGS:
            raise GGUFFormatError(f"header holds more than the {MAX_HEADER_STRINGS} strings llmhost accepts")
        fmt = "<Q" if (sys.byteorder == "little") == (self.byte_order == "I") else ">Q"
        view = memoryview(self.data)  # type: ignore[arg-type]
        bound = min(self._total_size, self._limit)
        for _ in range(count):
            if offs + 8 > self._available:
                self._get(offs, np.uint64)  # raises the right error (truncated / need more / limit)
            (n,) = struct.unpack_from(fmt, view, offs)
            offs += 8 + n
            if offs > bound:
                self._get(offs - 1, np.uint8)  # past the file or the limit: raises
        if offs > self._available:
            raise _NeedMore(offs)
        return offs

    def _get_tensor_info_field(self, orig_offs: int) -> Any:
        # Checked before the dimensions are read: past 4 of them, the rest of the table is misread.
        name_len = int(self._get(orig_offs, np.uint64)[0])
        n_dims = int(self._get(orig_offs + 8 + name_len, np.uint32)[0])
        if n_dims > _GGML_MAX_DIMS:
            name = bytes(self._get(orig_offs + 8, np.uint8, name_len)).decode("utf-8", errors="replace")
            raise GGUFFormatError(
                f"tensor {name!r} has {n_dims} dimensions (ggml has at most {_GGML_MAX_DIMS})"
            )
        return super()._get_tensor_info_field(orig_offs)

    def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
        # Tensor data is not needed (and not present in a header prefix): record the table only, each
        # entry checked as llama.cpp's gguf loader checks it, and its data inside the file.
        if fields and start_offs > self._total_size:
            raise GGUFFormatError(
                f"tensor data would start at byte {start_offs:,}, past the end of the file "
                f"({self._total_size:,} bytes)"
            )
        self.header_tensors: list[GGUFTensor] = []
        seen: set[str] = set()
        for info in fields:
            _name_len, name_data, _n_dims, dims, raw_dtype, raw_offset = info.parts
            name = bytes(name_data).decode("utf-8", errors="replace")
            if name in seen:
                raise GGUFFormatError(f"duplicate tensor {name!r}")
            seen.add(name)
            self.header_tensors.append(
                self._tensor(name, dims.tolist(), int(raw_dtype[0]), start_offs, raw_offset)
            )

    def _tensor(
        self, name: str, dims: list[int], raw_type: int, start_offs: int, raw_offset: Any
    ) -> GGUFTensor:
        try:
            qtype = GGMLQuantizationType(raw_type)
            block_size, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError) as exc:
            raise GGUFFormatError(f"tensor {name!r} has unknown ggml type {raw_type}") from exc
        shape = tuple(int(d) for d in dims)
        n_elements = int(np.prod(shape, dtype=object)) if shape else 1
        if n_elements > _MAX_ELEMENTS:
            raise GGUFFormatError(
                f"tensor {name!r} has shape {list(shape)}: more elements than ggml can count"
            )
        if shape and shape[0] % block_size:
            raise GGUFFormatError(
                f"tensor {name!r} has rows of {shape[0]} elements, not a multiple of {qtype.name}'s "
                f"block of {block_size}"
            )
        n_bytes = n_elements * type_size // block_size
        offset = int(raw_offset[0])
        if offset % self.alignment:
            raise GGUFFormatError(f"tensor {name!r} starts at {offset}, not a multiple of {self.alignment}")
        end = start_offs + offset + n_bytes
        if end > self._total_size:
            raise GGUFFormatError(
                f"tensor {name!r} ends at byte {end:,} but the file has {self._total_size:,} "
                "(truncated download?)"
            )
        return GGUFTensor(name, shape, qtype.name, n_elements, n_bytes)


def _text(raw: Any) -> str:
    # Metadata text is not required to be UTF-8 (llama.cpp does not check; byte-level vocabularies such
    # as RWKV's hold raw bytes): undecodable bytes read as U+FFFD, and the fields llmhost relies on are
    # checked where they are used (models.gguf_fields).
    return bytes(raw).decode("utf-8", errors="replace")


def _field_value(reader_field: Any) -> tuple[Any, int | None]:
    """The field's value (None for a long array kept as its length only) and, for arrays, the length."""
    types, parts = reader_field.types, reader_field.parts
    if not types:
        return None, None
    if types[0] == GGUFValueType.ARRAY:
        length = int(parts[4][0])  # parts: key length, key, value type, item type, length, items...
        if not reader_field.data:
            return ([] if length == 0 else None), length
        if types[-1] == GGUFValueType.STRING:
            return [_text(parts[i]) for i in reader_field.data], length
        return [v for i in reader_field.data for v in parts[i].tolist()], length
    if types[0] == GGUFValueType.STRING:
        return _text(parts[-1]), None
    return parts[-1].tolist()[0], None


def _parse(path: str, *, total_size: int, available: int, limit: int) -> GGUFHeader:
    try:
        reader = _BoundedReader(path, total_size=total_size, available=available, limit=limit)
    except (_NeedMore, GGUFFormatError):
        raise
    except UnicodeDecodeError as exc:  # the stock reader decodes keys and tensor names strictly
        raise GGUFFormatError("a metadata key or tensor name is not UTF-8 text") from exc
    except KeyError as exc:  # the stock reader's duplicate-key error
        raise GGUFFormatError(str(exc.args[0]) if exc.args else "duplicate metadata key") from exc
    except (ValueError, IndexError, OverflowError) as exc:
        raise GGUFFormatError(str(exc) or type(exc).__name__) from exc
    fields: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for name, reader_field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        value, length = _field_value(reader_field)
        if length is not None:
            lengths[name] = length
        if value is not None:
            fields[name] = value
    version = int(reader.fields["GGUF.version"].parts[0][0])
    return GGUFHeader(
        version=version,
        fields=fields,
        array_lengths=lengths,
        tensors=list(reader.header_tensors),
        header_bytes=int(reader.data_offset),
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
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return v
