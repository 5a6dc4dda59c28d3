"""Hostile GGUF files: each kind of damage is a `ModelError` naming the file, the key and what is
wrong, found at once (no per-layer table for 10^8 layers, no decoding of every string of a huge
header); valid files that merely look odd (non-UTF-8 text, attention-free models) still read."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from gguf import GGUFWriter

from llmhost.errors import ModelError
from llmhost.models import resolve
from llmhost.models.gguf_header import (
    MAX_HEADER_STRINGS,
    MAX_METADATA_ENTRIES,
    MAX_TENSORS,
    read_local_header,
    read_remote_header,
)
from llmhost.models.spec import ModelSpec
from support.gguf_edit import (
    ARRAY,
    BOOL,
    FLOAT32,
    INT32,
    STRING,
    UINT32,
    UINT64,
    drop_key,
    duplicate_key,
    encode,
    layout,
    set_value,
)
from support.hubserver import FakeHub, HubFile
from support.model_makers import write_gguf


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    (path,) = write_gguf(tmp_path_factory.mktemp("gguf") / "base.gguf", layers=2)
    return path.read_bytes()


def _resolve(tmp_path: Path, data: bytes) -> ModelSpec:
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    return resolve(str(path))


def _refused(tmp_path: Path, data: bytes, message: str) -> ModelError:
    with pytest.raises(ModelError, match=message) as err:
        _resolve(tmp_path, data)
    assert str(tmp_path / "m.gguf") in err.value.message  # names the file
    assert err.value.hint and "download" in err.value.hint
    return err.value


NESTED = struct.pack("<IIQ", ARRAY, ARRAY, 1) + struct.pack("<IQI", UINT32, 1, 2)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("llama.block_count", encode(STRING, "abc"), r"llama\.block_count is 'abc', not a whole number"),
        ("llama.block_count", encode(UINT64, 10**8), r"block_count is 100000000, more than the 512 layers"),
        ("llama.block_count", encode(UINT64, 2**31), r"block_count is 2147483648, more than the 512"),
        ("llama.block_count", encode(UINT32, 0), r"llama\.block_count is 0, less than 1"),
        ("llama.block_count", encode(BOOL, 1), r"block_count is True, not a whole number"),
        ("llama.embedding_length", encode(UINT32, 0), r"llama\.embedding_length is 0, less than 1"),
        ("llama.context_length", encode(INT32, -1), r"llama\.context_length is -1, less than 0"),
        ("llama.context_length", encode(UINT64, 2**62), r"context_length is \d+, more than the \d+ tokens"),
        ("llama.feed_forward_length", encode(FLOAT32, float("nan")), r"feed_forward_length is nan, not a"),
        ("llama.attention.head_count", encode(UINT32, 0), r"llama\.attention\.head_count is 0"),
        ("llama.attention.head_count_kv", encode(ARRAY, [1, 2, 3], UINT32), r"has 3 entries for 2 layers"),
        ("llama.attention.head_count_kv", encode(ARRAY, [1.0, 2.0], FLOAT32), r"head_count_kv\[0\] is 1\.0"),
        ("llama.attention.head_count_kv", encode(ARRAY, ["1", "x"], STRING), r"head_count_kv\[0\] is '1'"),
        ("general.architecture", encode(UINT32, 7), r"general\.architecture is 7, not an architecture name"),
        ("general.architecture", encode(STRING, b"\xff\xfe"), r"general\.architecture is '\ufffd\ufffd'"),
        ("general.architecture", encode(STRING, "[/bold]"), r"general\.architecture is '\[/bold\]'"),
        ("llama.block_count", NESTED, "an array of arrays"),
        ("llama.block_count", struct.pack("<I", 13) + bytes(8), "a metadata value has unknown type 13"),
    ],
    ids=[
        "count-as-string",
        "1e8-layers",
        "2^31-layers",
        "zero-layers",
        "count-as-bool",
        "zero-width",
        "negative-context",
        "huge-context",
        "nan-width",
        "zero-heads",
        "per-layer-too-long",
        "per-layer-floats",
        "per-layer-strings",
        "arch-not-text",
        "arch-not-utf8",
        "arch-markup",
        "nested-array",
        "unknown-value-type",
    ],
)
def test_bad_metadata_value_names_the_key(
    tmp_path: Path, base: bytes, key: str, value: bytes, message: str
) -> None:
    _refused(tmp_path, set_value(base, key, value), message)


def test_missing_and_duplicated_keys(tmp_path: Path, base: bytes) -> None:
    _refused(tmp_path, drop_key(base, "llama.block_count"), r"lacks llama\.block_count")
    _refused(tmp_path, drop_key(base, "general.architecture"), r"has no general\.architecture")
    _refused(tmp_path, duplicate_key(base, "llama.block_count"), r"Duplicate llama\.block_count")


def test_text_that_is_not_utf8_reads_with_replacement_characters(tmp_path: Path, base: bytes) -> None:
    """llama.cpp does not require metadata text to be UTF-8 (byte-level vocabularies hold raw bytes):
    such a file is still read; a key or tensor name that is not UTF-8 is refused."""
    data = set_value(base, "general.name", encode(STRING, b"caf\xe9"))
    tokens = [b"ok", b"\xff\xfe", b"\xc3"] + [f"t{i}".encode() for i in range(253)]
    data = set_value(data, "tokenizer.ggml.tokens", encode(ARRAY, tokens, STRING))
    spec = _resolve(tmp_path, data)
    assert spec.vocab_size == 256
    header = read_local_header(tmp_path / "m.gguf")
    assert header.fields["general.name"] == "caf\ufffd"
    assert header.fields["tokenizer.ggml.tokens"][1] == "\ufffd\ufffd"
    lay = layout(base)
    offs, _ = lay.strings[lay.keys.index("general.name")]
    _refused(tmp_path, base[:offs] + b"\xff" + base[offs + 1 :], "a metadata key or tensor name is not UTF-8")


def test_file_type_that_is_not_a_number_is_no_tag(tmp_path: Path, base: bytes) -> None:
    spec = _resolve(tmp_path, set_value(base, "general.file_type", encode(ARRAY, [1, 2], UINT32)))
    assert spec.quantization.gguf_file_type is None


def _tensor_info(data: bytes, name: str) -> tuple[int, int, int]:
    """Offsets of a tensor's n_dims, first dimension and ggml type in the header."""
    lay = layout(data)
    at = dict(lay.tensor_infos)[name] + 8 + len(name)
    (n_dims,) = struct.unpack_from("<I", data, at)
    return at, at + 4, at + 4 + 8 * n_dims


def _patched(data: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def test_tensor_table_is_checked_as_llama_cpp_checks_it(tmp_path: Path, base: bytes) -> None:
    n_dims_at, dim_at, type_at = _tensor_info(base, "blk.0.attn_norm.weight")
    _refused(tmp_path, _patched(base, type_at, "<I", 1000), "has unknown ggml type 1000")
    # Q4_K packs 256 weights per block; this norm row has 64.
    _refused(
        tmp_path, _patched(base, type_at, "<I", 12), r"rows of 64 elements, not a multiple of Q4_K's block"
    )
    _refused(tmp_path, _patched(base, type_at + 4, "<Q", 1), r"starts at \d+, not a multiple of 32")
    _refused(tmp_path, _patched(base, dim_at, "<Q", 2**63), "more elements than ggml can count")
    _refused(tmp_path, _patched(base, n_dims_at, "<I", 5), "has 5 dimensions")


def test_tensor_data_past_the_end_is_a_truncated_file(tmp_path: Path, base: bytes) -> None:
    """A download cut inside the tensor data still has a header that parses: it was reported fine."""
    _refused(tmp_path, base[:-100], r"tensor 'output\.weight' ends at byte [\d,]+ but the file has [\d,]+")
    _dim_n_dims, dim_at, _type = _tensor_info(base, "token_embd.weight")
    _refused(tmp_path, _patched(base, dim_at, "<Q", 2**20), r"tensor 'token_embd\.weight' ends at byte")


def test_remote_tensor_data_is_checked_against_the_size_the_server_reported(base: bytes) -> None:
    def fetch(start: int, end: int) -> tuple[bytes, int | None]:
        return base[start : end + 1], len(base) - 100

    with pytest.raises(ModelError, match=r"x\.gguf is not a valid GGUF file: tensor 'output\.weight' ends"):
        read_remote_header(fetch, None, label="x.gguf", first_chunk=1024)


def test_a_file_without_tensors_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match="has no tensors"):
        resolve(str(path))


def test_more_experts_used_than_there_are(tmp_path: Path) -> None:
    extra = {"llama.expert_count": 4, "llama.expert_used_count": 8}
    (path,) = write_gguf(tmp_path / "m.gguf", extra=extra)
    with pytest.raises(ModelError, match=r"llama\.expert_used_count is 8, more than the 4 experts"):
        resolve(str(path))


def test_attention_free_models_may_have_no_heads(tmp_path: Path) -> None:
    (path,) = write_gguf(tmp_path / "m.gguf", arch="mamba", heads=4, kv_heads=4)
    data = set_value(path.read_bytes(), "mamba.attention.head_count", encode(UINT32, 0))
    spec = _resolve(tmp_path, data)
    assert spec.attention.layer_kinds == ["mamba", "mamba"]


@pytest.mark.parametrize(
    ("count_at", "cap", "what"), [(16, MAX_METADATA_ENTRIES, "metadata entries"), (8, MAX_TENSORS, "tensors")]
)
def test_entry_and_tensor_counts_are_capped_even_when_the_file_could_hold_them(
    tmp_path: Path, count_at: int, cap: int, what: str
) -> None:
    """Each entry costs numpy objects: a large file of tiny entries must not be walked to the end."""
    path = tmp_path / "m.gguf"
    head = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    struct.pack_into("<Q", head, count_at, cap + 1)
    with path.open("wb") as fh:
        fh.write(head)
        fh.truncate(64 * (cap + 1))  # sparse: big enough to hold them all
    with pytest.raises(ModelError, match=f"claims {cap + 1} {what}, more than the {cap} llmhost accepts"):
        read_local_header(path)


def test_strings_decoded_one_by_one_are_capped_over_the_whole_header(tmp_path: Path) -> None:
    """Thousands of 4096-string arrays (two numpy objects per string) would hold gigabytes: past the
    budget, string arrays are kept as their length only, like a large vocabulary."""
    n_arrays = 20
    body = b""
    for i in range(n_arrays):
        key = f"junk.{i}".encode()
        body += struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", ARRAY, STRING, 4096)
        body += struct.pack("<Q", 0) * 4096
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, n_arrays) + body)
    header = read_local_header(path)
    assert header.fields["junk.0"] == [""] * 4096
    assert "junk.19" not in header.fields and header.array_lengths["junk.19"] == 4096


def test_short_numeric_arrays_keep_their_values(tmp_path: Path) -> None:
    (path,) = write_gguf(tmp_path / "m.gguf", layers=4, kv_heads=[2, 0, 2, 0])
    header = read_local_header(path)
    assert header.fields["llama.attention.head_count_kv"] == [2, 0, 2, 0]
    assert header.array_lengths["llama.attention.head_count_kv"] == 4
    assert all(type(v) is int for v in header.fields["llama.attention.head_count_kv"])  # not numpy


def test_strings_walked_in_long_arrays_are_capped(tmp_path: Path) -> None:
    """Millions of empty strings fit in a header's bytes; walking them one length prefix at a time
    would take seconds each million, so the header may hold MAX_HEADER_STRINGS in all."""
    half = MAX_HEADER_STRINGS // 2 + 1
    body = b""
    for key in (b"a", b"b"):
        body += struct.pack("<Q", 1) + key + struct.pack("<IIQ", ARRAY, STRING, half) + bytes(8 * half)
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + body)
    with pytest.raises(ModelError, match=f"more than the {MAX_HEADER_STRINGS} strings llmhost accepts"):
        read_local_header(path)


def test_a_cached_header_of_the_wrong_shape_is_read_again(fake_hub: FakeHub, base: bytes) -> None:
    import json

    from huggingface_hub import constants

    repo = fake_hub.add_repo("someone/U-GGUF", {"u-F16.gguf": HubFile(base, lfs=True)})
    url = f"{fake_hub.url}/someone/U-GGUF/resolve/{repo.sha}/u-F16.gguf"
    spec = resolve(url)
    (cached,) = Path(constants.HF_HUB_CACHE).glob("llmhost/**/headers/**/*.json")
    entry = json.loads(cached.read_text())
    entry["data"]["tensors"] = {"not": "a list"}
    cached.write_text(json.dumps(entry))
    assert resolve(url).parameters == spec.parameters
