"""llmhost's plain-Python GGUF header reader against the `gguf` package's own `GGUFReader` (which it
replaced at `plan` start-up, issue 14): the same metadata values, tensor table and data offset, on the
fuzz seeds (five architectures, a byte-level BPE vocabulary). Gemma 3 270M's header, the 19 recorded
accuracy headers and 18,000 mutated files gave identical results (or errors) when the reader was
swapped; the stock reader takes a minute on Gemma's 262k vocabulary, so that check is not repeated here.
Damaged files are covered by test_gguf_hostile.py and the fuzz target (tests/hostile/fuzz_gguf.py)."""

from __future__ import annotations

import math
from pathlib import Path

from gguf import GGUFReader
from gguf.constants import GGUFValueType

from hostile.fuzz_gguf import seeds
from llmhost.models.gguf_header import _MAX_DECODED_STRINGS, read_local_header


def _stock(path: Path) -> tuple[dict, dict, list, int]:
    reader = GGUFReader(path)
    fields, lengths = {}, {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        if f.types[0] == GGUFValueType.ARRAY:
            lengths[name] = int(f.parts[4][0])
            if lengths[name] > _MAX_DECODED_STRINGS:
                continue  # vocabulary data: llmhost keeps its length only
        fields[name] = f.contents()
    tensors = [
        (t.name, tuple(int(d) for d in t.shape), t.tensor_type.name, int(t.n_bytes)) for t in reader.tensors
    ]
    return fields, lengths, tensors, int(reader.data_offset)


def _files(tmp_path: Path) -> list[Path]:
    files = []
    for i, data in enumerate(seeds(tmp_path / "seeds")):
        files.append(tmp_path / f"seed{i}.gguf")
        files[-1].write_bytes(data)
    return files


def test_same_header_as_gguf_s_reader(tmp_path: Path) -> None:
    for path in _files(tmp_path):
        fields, lengths, tensors, data_offset = _stock(path)
        ours = read_local_header(path)
        assert ours.array_lengths == lengths, path
        assert ours.header_bytes == data_offset, path
        assert [(t.name, t.shape, t.ggml_type, t.n_bytes) for t in ours.tensors] == tensors, path
        assert ours.fields.keys() == fields.keys(), path
        for key, value in fields.items():
            got = ours.fields[key]
            if isinstance(value, float):
                assert got == value or (math.isnan(got) and math.isnan(value)), key
            else:
                assert got == value, (path, key)
