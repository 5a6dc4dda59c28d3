"""Shared by the JSON fuzz targets (fuzz_config, fuzz_stindex): structure-aware mutations of JSON
documents, raw byte mutations, and the library path a model directory takes through `inspect` and
`plan --json` (resolve -> make_plan -> JSON serialisation)."""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path
from typing import Any

# Values no real field holds: zero, negative, past every integer type, non-finite, the wrong type.
EXTREMES: list[Any] = [
    0,
    -1,
    1,
    2,
    -(2**31),
    2**31,
    2**63,
    2**64 + 1,
    10**9,
    10**30,
    int("9" * 400),
    0.5,
    1e-300,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    "abc",
    "32",
    "",
    "\ud800",  # a lone surrogate: json.dumps writes it as an escape
    "[/bold]\x1b[31m",
    "x" * 5000,
    [],
    [1, 2, 3],
    [[0]],
    ["sliding_attention", "full_attention"],
    {},
    {"a": 1},
    {"quant_method": "gptq", "bits": 0},
    None,
    True,
    False,
]


MAX_CASE_BYTES = 1 << 20


def _containers(doc: Any) -> list[Any]:
    """Every dict and list in the document (the places a mutation can land)."""
    out: list[Any] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            out.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            out.append(node)
            stack.extend(node)
    return out


def _value(rng: random.Random) -> Any:
    if rng.random() < 0.1:
        return rng.randrange(-4, 5000)
    return copy.deepcopy(rng.choice(EXTREMES))  # a fresh copy: later edits must not grow the pool


def _nest(rng: random.Random) -> str:
    """A marker that `dumps` expands into a value nested this deep (built as text: Python's own json
    module cannot write what it is meant to test)."""
    return f"__DEEP_{rng.choice([2, 50, 200, 1000, 3000, 100_000])}__"


def mutate_tree(doc: Any, rng: random.Random, keys: list[str]) -> Any:
    """One to four structural edits: set a known or existing key to an extreme value, delete a key,
    swap a value's type, nest a value deeply, grow a list."""
    for _ in range(rng.randint(1, 4)):
        places = _containers(doc)
        if not places:
            return _value(rng)
        node = rng.choice(places)
        op = rng.random()
        if isinstance(node, list):
            if node and op < 0.5:
                node[rng.randrange(len(node))] = _value(rng)
            elif op < 0.7:
                node.extend([_value(rng)] * rng.choice([1, 10, 1000]))
            elif node:
                del node[rng.randrange(len(node))]
            continue
        if op < 0.45:
            node[rng.choice(keys)] = _value(rng)
        elif op < 0.6 and node:
            del node[rng.choice(list(node))]
        elif op < 0.8 and node:
            node[rng.choice(list(node))] = _value(rng)
        elif op < 0.9:
            node[rng.choice(keys)] = _nest(rng)
        elif node:
            node[rng.choice(list(node))] = rng.choice([list(node.values()), dict(enumerate(node))])
    return doc


_DEEP = re.compile(r'"__DEEP_(\d+)__"')


def dumps(doc: Any, rng: random.Random, keys: list[str]) -> bytes:
    """The document as a file would hold it (NaN/Infinity literals included), sometimes with a key
    written twice, before or after its first copy (JSON parsers keep the last one)."""
    text = json.dumps(doc, allow_nan=True)
    text = _DEEP.sub(lambda m: "[" * int(m.group(1)) + "1" + "]" * int(m.group(1)), text)
    if rng.random() < 0.15 and text.startswith("{") and text.endswith("}") and len(text) > 2:
        pair = f"{json.dumps(rng.choice(keys))}: {json.dumps(_value(rng), allow_nan=True)}"
        text = "{" + pair + ", " + text[1:] if rng.random() < 0.5 else text[:-1] + ", " + pair + "}"
    return text.encode("utf-8", "surrogatepass")


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Raw damage: bit flips, truncation, inserted tokens that break or stress a JSON parser."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        if not buf:
            buf += b"{"
        pos = rng.randrange(len(buf))
        if op < 0.4:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op < 0.55:
            del buf[pos:]
        elif op < 0.8:
            buf[pos:pos] = rng.choice(
                [b"1e999", b"NaN", b"-Infinity", b'"\\udc00"', b"\xff\xfe", b"[" * 5000, b"9" * 5000, b"\x00"]
            )
        else:
            del buf[pos : pos + rng.randrange(1, 64)]
    return bytes(buf)


def mutate_json(data: bytes, rng: random.Random, keys: list[str]) -> bytes:
    """Mostly structure-aware (parse, edit, re-serialise), sometimes raw bytes, sometimes both."""
    roll = rng.random()
    if roll < 0.75:
        try:
            doc = json.loads(data)
        except ValueError:
            return mutate_bytes(data, rng)
        out = dumps(mutate_tree(doc, rng, keys), rng, keys)
        if len(out) > MAX_CASE_BYTES:  # a case is a small file; size limits have their own tests
            return mutate_bytes(data, rng)
        return mutate_bytes(out, rng) if roll < 0.1 else out
    return mutate_bytes(data, rng)


_HARDWARE: dict[str, Any] = {}


def plan_and_serialise(model: Path) -> None:
    """What `llmhost inspect MODEL --json` and `llmhost plan MODEL --json` do, as library calls."""
    from llmhost.hardware.catalog import hardware_from_spec
    from llmhost.models import resolve
    from llmhost.plan import make_plan
    from llmhost.plan.models import PlanRequest

    if not _HARDWARE:
        _HARDWARE["gpu"] = hardware_from_spec("h100-80gb")
    spec = resolve(str(model))
    spec.model_dump_json()
    plan = make_plan(spec, _HARDWARE["gpu"], PlanRequest())
    plan.model_dump_json()
