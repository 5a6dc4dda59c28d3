"""Census, GGUF files: each case one kind of damage to a small real GGUF, through `inspect`, `plan`,
`plan --json` or `serve --dry-run`; every one is a single clean `error:` line and exit 2."""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import pytest

from support import gguf_edit as v  # value types: STRING, UINT32, ...
from support.gguf_edit import drop_key, duplicate_key, encode, layout, set_value

from .census import BadInput, ids, run_case

BAD = 2
MODEL = "{tmp}/m.gguf"
# No llama.cpp dry run: these files never get that far, and a case must not depend on it being installed.
NO_PROBE = {"LLMHOST_LLAMACPP_DRY_RUN": "0"}


@lru_cache(maxsize=4)
def _base(arch: str = "llama") -> bytes:
    from support.model_makers import write_gguf

    extra: dict[str, object] = {"general.alignment": 32}
    if arch == "gemma3":
        extra["gemma3.attention.sliding_window"] = 512
    if arch == "qwen3moe":
        extra.update({"qwen3moe.expert_count": 4, "qwen3moe.expert_used_count": 2})
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = write_gguf(Path(tmp) / "base.gguf", arch=arch, layers=2, extra=extra)
        return path.read_bytes()


def _file(damage: Callable[[bytes], bytes], arch: str = "llama") -> Callable[[Path], None]:
    def make(directory: Path) -> None:
        (directory / "m.gguf").write_bytes(damage(_base(arch)))

    return make


def _value(key: str, value: bytes, arch: str = "llama") -> Callable[[Path], None]:
    return _file(lambda data: set_value(data, key, value), arch)


def _patch(at: Callable[[bytes], int], fmt: str, number: int) -> Callable[[Path], None]:
    def damage(data: bytes) -> bytes:
        out = bytearray(data)
        struct.pack_into(fmt, out, at(data), number)
        return bytes(out)

    return _file(damage)


def _tensor(name: str, part: str) -> Callable[[bytes], int]:
    """Offset of a tensor's n_dims, first dimension, ggml type or data offset in the header."""

    def at(data: bytes) -> int:
        n_dims_at = dict(layout(data).tensor_infos)[name] + 8 + len(name)
        (n_dims,) = struct.unpack_from("<I", data, n_dims_at)
        type_at = n_dims_at + 4 + 8 * n_dims
        return {"n_dims": n_dims_at, "dim": n_dims_at + 4, "type": type_at, "offset": type_at + 4}[part]

    return at


def _string_length(key: str) -> Callable[[bytes], int]:
    return lambda data: layout(data).values[layout(data).keys.index(key)][0] + 4


def _key_bytes(key: str) -> Callable[[bytes], int]:
    return lambda data: layout(data).strings[layout(data).keys.index(key)][0]


def _rename_tensor(old: str, new: str) -> Callable[[bytes], bytes]:
    assert len(old) == len(new)
    return lambda data: data.replace(old.encode(), new.encode(), 1)


def _no_tensors(data: bytes) -> bytes:
    """The metadata alone: a tensor count of 0 and nothing after the last entry."""
    out = bytearray(data[: layout(data).kvs[-1][1]])
    struct.pack_into("<Q", out, 8, 0)
    return bytes(out)


NESTED = struct.pack("<IIQ", v.ARRAY, v.ARRAY, 1) + struct.pack("<IQI", v.UINT32, 1, 2)


def _case(name: str, command: str, make: Callable[[Path], None]) -> BadInput:
    argv = {
        "inspect": ["inspect", MODEL],
        "inspect-json": ["inspect", MODEL, "--json"],
        "plan": ["plan", MODEL],
        "plan-json": ["plan", MODEL, "--json"],
        "serve": ["serve", MODEL, "--dry-run"],
    }[command]
    return BadInput(f"gguf-{name}", argv, BAD, make=make, env=NO_PROBE)


CASES: list[BadInput] = [
    # metadata values of the wrong type or out of range
    _case("count-as-string", "inspect", _value("llama.block_count", encode(v.STRING, "abc"))),
    _case("count-as-bool", "inspect", _value("llama.block_count", encode(v.BOOL, 1))),
    _case("count-as-nan", "plan-json", _value("llama.feed_forward_length", encode(v.FLOAT32, float("nan")))),
    _case("layers-1e8", "plan-json", _value("llama.block_count", encode(v.UINT64, 10**8))),
    _case("layers-2^31", "plan", _value("llama.block_count", encode(v.UINT64, 2**31))),
    _case("zero-layers", "inspect-json", _value("llama.block_count", encode(v.UINT32, 0))),
    _case("zero-width", "serve", _value("llama.embedding_length", encode(v.UINT32, 0))),
    _case("zero-heads", "plan", _value("llama.attention.head_count", encode(v.UINT32, 0))),
    _case("negative-context", "inspect", _value("llama.context_length", encode(v.INT32, -1))),
    _case("context-2^62", "plan", _value("llama.context_length", encode(v.UINT64, 2**62))),
    _case(
        "window-as-string",
        "plan-json",
        _value("gemma3.attention.sliding_window", encode(v.STRING, "4k"), "gemma3"),
    ),
    _case("experts-negative", "inspect", _value("qwen3moe.expert_count", encode(v.INT32, -4), "qwen3moe")),
    _case(
        "experts-used-over-count",
        "plan",
        _value("qwen3moe.expert_used_count", encode(v.UINT32, 9), "qwen3moe"),
    ),
    _case(
        "per-layer-wrong-length",
        "plan",
        _value("llama.attention.head_count_kv", encode(v.ARRAY, [2, 2, 2], v.UINT32)),
    ),
    _case(
        "per-layer-floats",
        "inspect-json",
        _value("llama.attention.head_count_kv", encode(v.ARRAY, [2.0, 2.0], v.FLOAT32)),
    ),
    _case("nested-array", "plan", _value("llama.block_count", NESTED)),
    _case("unknown-value-type", "inspect", _value("llama.block_count", struct.pack("<I", 13) + bytes(8))),
    # the architecture name
    _case("arch-not-utf8", "inspect", _value("general.architecture", encode(v.STRING, b"ll\xffma"))),
    _case("arch-markup", "inspect", _value("general.architecture", encode(v.STRING, "[/bold]"))),
    _case("arch-control-chars", "plan", _value("general.architecture", encode(v.STRING, "\x1b[31mllama"))),
    _case("arch-number", "plan-json", _value("general.architecture", encode(v.UINT32, 7))),
    _case("arch-missing", "inspect", _file(lambda d: drop_key(d, "general.architecture"))),
    _case("block-count-missing", "serve", _file(lambda d: drop_key(d, "llama.block_count"))),
    _case("duplicate-key", "inspect", _file(lambda d: duplicate_key(d, "llama.block_count"))),
    _case("key-not-utf8", "plan", _patch(_key_bytes("general.name"), "<B", 0xFF)),
    _case("alignment-not-power-of-two", "inspect", _value("general.alignment", encode(v.UINT32, 3))),
    # the file as a whole
    _case("empty-file", "inspect", _file(lambda d: b"")),
    _case("bad-magic", "plan", _file(lambda d: b"GGUX" + d[4:])),
    _case("version-99", "inspect", _patch(lambda d: 4, "<I", 99)),
    _case("cut-in-header", "inspect-json", _file(lambda d: d[: layout(d).header_end // 2])),
    _case("cut-in-tensor-data", "serve", _file(lambda d: d[:-100])),
    _case("tensor-count-2^40", "plan-json", _patch(lambda d: 8, "<Q", 2**40)),
    _case("kv-count-2^40", "inspect", _patch(lambda d: 16, "<Q", 2**40)),
    _case("string-length-2^62", "plan", _patch(_string_length("general.name"), "<Q", 2**62)),
    _case("no-tensors", "plan", _file(_no_tensors)),
    # the tensor table
    _case("tensor-unknown-type", "inspect", _patch(_tensor("blk.0.attn_norm.weight", "type"), "<I", 1000)),
    _case("tensor-5-dims", "plan", _patch(_tensor("blk.0.attn_norm.weight", "n_dims"), "<I", 5)),
    _case("tensor-misaligned", "inspect-json", _patch(_tensor("blk.0.attn_norm.weight", "offset"), "<Q", 1)),
    _case("tensor-rows-not-blocks", "serve", _patch(_tensor("blk.0.attn_norm.weight", "type"), "<I", 12)),
    _case("tensor-elements-overflow", "plan", _patch(_tensor("token_embd.weight", "dim"), "<Q", 2**63)),
    _case("tensor-past-the-end", "plan-json", _patch(_tensor("token_embd.weight", "dim"), "<Q", 2**20)),
    _case(
        "tensor-duplicate-name",
        "inspect",
        _file(_rename_tensor("blk.0.attn_k.weight", "blk.0.attn_q.weight")),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_input(
    case: BadInput, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_case(case, tmp_path, capsys, monkeypatch)
