"""Fuzz target `profile`: `serve --profile FILE` parsing of a YAML profile someone handed the user.

Seeds are the shipped profiles plus YAML that exercises the bounded loader (anchors and aliases, nested
maps, flow collections); mutations flip bytes, splice in YAML syntax that multiplies work (aliases,
nesting, tags, tabs, duplicate keys), truncate and repeat. `check` loads the bytes as a profile file.
"""

from __future__ import annotations

import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = 20_000

_EXTRA_SEEDS = [
    b"description: &d tiny\nmodel: *d\nextra_args: &a [--temp, '0.5']\nenv: {A: '1', B: on}\n",
    b"a0: &a0 [x, x, x]\na1: &a1 [*a0, *a0, *a0]\na2: [*a1, *a1, *a1]\n",
    b"context: 4096\nconcurrency: 4\nport: 8080\nhost: 127.0.0.1\ngpu_memory_utilization: 0.5\n",
    b"env:\n  LLAMA_ARG_X: [1, {y: [2, 3]}]\nextra_args:\n  - --flag\n  - {k: v}\n",
]
# Fragments that make YAML expensive or odd: aliases, deep flow nesting, tags, tabs, BOMs, NUL.
_SPLICES = [
    b"*a0", b"&a0 ", b"[[[[[[[[", b"{{{{", b": *a1, *a1, *a1", b"!!python/object:os.system ",
    b"!!binary ", b"\t", b"\xef\xbb\xbf", b"\x00", b"\xff", b"---\n", b"? ", b"<<: *a0\n", b"context: 1\n",
    b"%YAML 1.1\n", b"'", b'"\\x', b"\r", b"0x", b".inf", b"1e999", b"- ", b"|\n  ", b">-\n",
]  # fmt: skip


def seeds(workdir: Path) -> list[bytes]:
    shipped = [p.read_bytes() for p in sorted((ROOT / "profiles").glob("*.yaml"))]
    return shipped + _EXTRA_SEEDS


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        choice = rng.random()
        pos = rng.randint(0, len(out))
        if choice < 0.35:
            piece = rng.choice(_SPLICES)
            out[pos:pos] = piece * rng.choice((1, 1, 2, 9, 200))
        elif choice < 0.55 and out:
            out[min(pos, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif choice < 0.7:
            del out[pos : pos + rng.randint(1, 16)]
        elif choice < 0.8:
            out = out[:pos]
        else:
            start = rng.randint(0, len(out))
            chunk = out[start : start + rng.randint(1, 40)]
            out[pos:pos] = chunk * rng.randint(1, 50)
    return bytes(out[: 1 << 16])


def check(data: bytes, workdir: Path) -> None:
    from llmhost.profiles import load_profile

    path = workdir / "profile.yaml"
    path.write_bytes(data)
    load_profile(path)
