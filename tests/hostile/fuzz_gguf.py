"""Fuzz target `gguf`: mutated GGUF files through what `inspect` and `plan --json` do, local and remote.

Seeds are small real-shaped files written with the `gguf` package: the demo model's llama (a real
byte-level BPE vocabulary), a Gemma-3-style sliding-window model, a MoE, a DeepSeek-style MLA + MoE
model and a Qwen3-Next-style hybrid with per-layer KV heads. Mutations are blind (bit flips, byte
overwrites with interesting numbers, truncation, splicing) and structure-aware: the seed is walked once
(`gguf_edit.layout`) so its length prefixes, counts, value types, scalar values and tensor dimensions can be
rewritten, and whole metadata values replaced by values of another type ("abc" where a count belongs,
a float where an int belongs, non-UTF-8 text, a per-layer array of the wrong length or type).

`check` feeds the bytes to llmhost as a user's file reaches it: `resolve` on a local `.gguf`, then
`make_plan` and the JSON serialisations `inspect --json` and `plan --json` print; and the same bytes
through the range-read parser (`read_remote_header` with an in-memory fetcher, a first chunk smaller
than the seeds so the prefix grows) into a `gguf_url` spec and its plan. Both paths must agree on
whether the file is refused. The llama.cpp dry run is never started: the planner gets no compute probes.
"""

from __future__ import annotations

import random
import struct
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from support.gguf_edit import KV_COUNT_AT, Layout, layout, reassemble

if TYPE_CHECKING:
    from llmhost.models.spec import ModelSpec

CASES = 100_000

# Numbers that sit on the edges parsers get wrong: zero, one, sign bits, all-ones, 2^31, 2^63.
INTERESTING = (0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 10**8)
INTERESTING += (2**40, 2**63 - 1, 2**63, 2**64 - 1)

_SHARED_KEYS = ("general.", "tokenizer.")  # every other key belongs to the architecture
_SEEDS: list[bytes] = []  # filled by seeds(); splicing takes its donors from here


def seeds(workdir: Path) -> list[bytes]:
    from gguf import GGMLQuantizationType

    from llmhost.demo_model import write_llama_gguf
    from support.model_makers import write_gguf

    workdir.mkdir(parents=True, exist_ok=True)
    # general.name is fixed so a seed's bytes do not depend on where it was written.
    demo = dict(n_layer=2, n_embd=16, n_head=2, n_head_kv=1, n_ff=32, n_vocab=264, name="fuzz-demo")
    out = [write_llama_gguf(workdir / "demo.gguf", **demo).read_bytes()]  # type: ignore[arg-type]
    small = {"hidden": 16, "heads": 2, "kv_heads": 1, "ff": 16, "vocab": 16}
    # name: (architecture, layers, the architecture's own keys, other shape arguments)
    shapes: dict[str, tuple[str, int, dict[str, object], dict[str, object]]] = {
        "gemma3": ("gemma3", 6, {"attention.sliding_window": 512}, small),
        "moe": (
            "qwen3moe",
            2,
            {"expert_count": 8, "expert_used_count": 2, "expert_feed_forward_length": 16},
            {**small, "hidden": 32, "ff": 32, "qtype": GGMLQuantizationType.Q8_0},
        ),
        "mla": (
            "deepseek2",
            2,
            {
                "attention.kv_lora_rank": 32,
                "rope.dimension_count": 8,
                "attention.key_length": 24,
                "attention.value_length": 16,
                "expert_count": 4,
                "expert_used_count": 2,
                "expert_shared_count": 1,
            },
            small,
        ),
        "hybrid": (
            "qwen3next",
            4,
            {
                "full_attention_interval": 4,
                "ssm.conv_kernel": 4,
                "ssm.inner_size": 32,
                "ssm.state_size": 8,
                "ssm.group_count": 2,
                "attention.sliding_window_pattern": [1, 0, 1, 0],
            },
            {**small, "kv_heads": [1, 0, 0, 1]},
        ),
    }
    for name, (arch, layers, keys, shape) in shapes.items():
        extra = {f"{arch}.{k}": v for k, v in keys.items()}
        path = workdir / f"{name}.gguf"
        write_gguf(path, arch=arch, layers=layers, extra=extra, **shape)  # type: ignore[arg-type]
        out.append(path.read_bytes())
    _SEEDS[:] = out
    return out


# --- mutations --------------------------------------------------------------------------------------


def _put(data: bytearray, offs: int, size: int, number: int) -> None:
    if 0 <= offs and offs + size <= len(data):
        data[offs : offs + size] = (number % (1 << (8 * size))).to_bytes(size, "little")


def _number(rng: random.Random) -> int:
    base = rng.choice(INTERESTING)
    return rng.choice((base, base - 1, base + 1, -base, rng.getrandbits(64)))


def _encoded(rng: random.Random) -> bytes:
    """A metadata value (type + payload) of some type: what a careless or hostile writer might store."""
    text = rng.choice((b"abc", b"12", b"", b"\xff\xfe\x80", b"[/bold]", b"\x1b[31mred", b"-1", b"1e309"))
    n = rng.choice((0, 1, 2, 3, 4, 6, 7, 4097, 2**31))
    choices = (
        lambda: struct.pack("<I", 8) + struct.pack("<Q", len(text)) + text,  # a string
        lambda: struct.pack("<II", 4, rng.choice(INTERESTING) & 0xFFFFFFFF),  # uint32
        lambda: struct.pack("<Ii", 5, rng.choice((-1, -(2**31), 0, 7))),  # int32
        lambda: struct.pack("<Iq", 11, rng.choice((-1, -(2**63), 2**62))),  # int64
        lambda: struct.pack("<IQ", 10, rng.choice(INTERESTING) & (2**64 - 1)),  # uint64
        lambda: struct.pack("<If", 6, rng.choice((float("nan"), float("inf"), -1.5, 3.0, 1e38))),
        lambda: struct.pack("<Id", 12, rng.choice((float("nan"), float("-inf"), 2.5, 1e300))),
        lambda: struct.pack("<IB", 7, rng.choice((0, 1, 2, 255))),  # bool
        lambda: struct.pack("<IIQ", 9, 4, n) + b"".join(struct.pack("<I", i % 7) for i in range(min(n, 8))),
        lambda: struct.pack("<IIQ", 9, 8, 2) + struct.pack("<Q", 3) + b"abc" + struct.pack("<Q", 1) + b"\xff",
        lambda: struct.pack("<IIQ", 9, 6, 2) + struct.pack("<ff", float("nan"), 2.0),  # floats per layer
        lambda: struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 4, 1) + struct.pack("<I", 1),  # nested
        lambda: struct.pack("<I", rng.choice((13, 255, 2**31))) + bytes(8),  # no such type
    )
    return rng.choice(choices)()


def _structural(data: bytes, lay: Layout, rng: random.Random) -> bytes:
    out = bytearray(data)
    kind = rng.choice((0, 1, 2, 3, 4, 5, 5, 5, 6))
    if kind == 0 and lay.lengths:  # inflate or zero a length prefix
        _put(out, rng.choice(lay.lengths), 8, _number(rng))
    elif kind == 1:  # a count
        _put(out, rng.choice(lay.counts), 8, _number(rng))
    elif kind == 2 and lay.types:  # a value, item or tensor type
        _put(out, rng.choice(lay.types), 4, rng.choice((0, 4, 5, 6, 8, 9, 10, 12, 13, 39, 40, 2**31)))
    elif kind == 3 and lay.scalars:  # a number: counts, sizes, dims, tensor offsets
        offs, size = rng.choice(lay.scalars)
        _put(out, offs, size, _number(rng))
    elif kind == 4 and lay.strings:  # text that is not UTF-8, or markup / control characters
        offs, size = rng.choice(lay.strings)
        junk = rng.choice((b"\xff", b"\xc3", b"[/x]", b"\x1b", b"\x00"))
        for i in range(min(size, rng.randrange(1, 4))):
            at = offs + rng.randrange(size)
            if at < len(out):  # an earlier mutation may have cut the file short
                out[at] = junk[i % len(junk)]
    elif kind == 5 and lay.values:  # replace a whole value by one of another type
        # Mostly the model's own keys (block_count, head_count, ...): those are what a spec is built of.
        model_values = [
            v for k, v in zip(lay.keys, lay.values, strict=True) if not k.startswith(_SHARED_KEYS)
        ]
        start, end = rng.choice(model_values if rng.random() < 0.8 and model_values else lay.values)
        head = out[: lay.header_end]
        head[start:end] = _encoded(rng)
        return reassemble(bytes(head), data, lay)
    elif lay.kvs:  # drop or duplicate a metadata entry (a missing or a duplicated key)
        start, end = rng.choice(lay.kvs)
        head = out[: lay.header_end]
        (n_kv,) = struct.unpack_from("<Q", head, KV_COUNT_AT)
        if rng.random() < 0.5:
            del head[start:end]
            _put(head, KV_COUNT_AT, 8, n_kv - 1)
        else:
            head[end:end] = head[start:end]
            _put(head, KV_COUNT_AT, 8, n_kv + 1)
        return reassemble(bytes(head), data, lay)
    return bytes(out)


def _blind(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    if not out:
        return data
    kind = rng.randrange(5)
    if kind == 0:  # bit flips
        for _ in range(rng.randrange(1, 9)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # an interesting number anywhere
        size = rng.choice((1, 2, 4, 8))
        _put(out, rng.randrange(len(out)), size, _number(rng))
    elif kind == 2:  # truncation
        return bytes(out[: rng.randrange(len(out))])
    elif kind == 3:  # splice a slice of another seed (or this one) in
        donor = rng.choice(_SEEDS) if _SEEDS else data
        a = rng.randrange(len(donor))
        piece = donor[a : a + rng.randrange(1, 256)]
        at = rng.randrange(len(out))
        if rng.random() < 0.5:
            out[at : at + len(piece)] = piece
        else:
            out[at:at] = piece
    else:  # a random chunk overwritten or removed
        a = rng.randrange(len(out))
        b = min(len(out), a + rng.randrange(1, 64))
        if rng.random() < 0.5:
            del out[a:b]
        else:
            out[a:b] = bytes(rng.getrandbits(8) for _ in range(b - a))
    return bytes(out)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three mutations; structure-aware ones use the layout of `data` (a seed), so after a
    length-changing one they may land off their target, which is one more kind of damage."""
    try:
        lay = layout(data)
    except (struct.error, KeyError):  # not a well-formed GGUF: blind mutations only
        lay = Layout()
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        data = _structural(data, lay, rng) if rng.random() < 0.6 else _blind(data, rng)
    return data


# --- the check --------------------------------------------------------------------------------------

# What differs between the local and the remote spec of the same bytes by construction.
_WHERE_FIELDS = {"ref", "kind", "name", "files"}


@lru_cache(maxsize=1)
def _hardware():  # type: ignore[no-untyped-def]
    from llmhost.hardware.catalog import hardware_from_spec

    return hardware_from_spec("h100")


def _plan_json(spec: ModelSpec) -> None:
    from llmhost.plan import make_plan
    from llmhost.plan.models import PlanRequest

    spec.model_dump_json()  # inspect --json
    make_plan(spec, _hardware(), PlanRequest(), compute_probes=None).model_dump_json()  # plan --json


def _remote_spec(data: bytes) -> ModelSpec:
    from llmhost.models.build import spec_from_gguf
    from llmhost.models.gguf_header import read_remote_header
    from llmhost.models.spec import ModelFile

    def fetch(start: int, end: int) -> tuple[bytes, int | None]:
        return data[start : end + 1], len(data)

    url = "https://example.invalid/m.gguf"
    header, _ = read_remote_header(fetch, len(data), label=url, first_chunk=4096)
    files = [ModelFile(path=url, size_bytes=header.file_size, url=url)]
    return spec_from_gguf(ref=url, kind="gguf_url", name="m", headers=[header], files=files)


def check(data: bytes, workdir: Path) -> None:
    from llmhost.errors import LlmhostError
    from llmhost.models import resolve

    path = workdir / "m.gguf"
    path.write_bytes(data)
    specs: list[ModelSpec | LlmhostError] = []
    for read in (lambda: resolve(str(path)), lambda: _remote_spec(data)):
        try:
            specs.append(read())
        except LlmhostError as exc:  # a refusal; anything else is a crash and propagates
            specs.append(exc)
    local, remote = specs
    if isinstance(local, LlmhostError) or isinstance(remote, LlmhostError):
        if not (isinstance(local, LlmhostError) and isinstance(remote, LlmhostError)):
            raise AssertionError(f"one path refused the file, the other did not: {local!r} / {remote!r}")
        raise local
    _plan_json(local)
    if local.model_dump(exclude=_WHERE_FIELDS) != remote.model_dump(exclude=_WHERE_FIELDS):
        _plan_json(remote)
