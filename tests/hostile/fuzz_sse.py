"""Fuzz target `sse`: what a benchmarked server streams, through bench's client and its checks.

The bytes are the body of a 200 text/event-stream answer to one chat request, handed to
`StreamClient.send` the way aiohttp hands them over (in reads of a few bytes each), and the request's
record is then summarised and checked as a run's would be. A hostile server may only fail the request:
`send` must return a valid record and nothing downstream may raise.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from llmhost.bench import checks
from llmhost.bench.client import Prepared, StreamClient
from llmhost.bench.metrics import summarize
from support.hostile_server import GOOD_EVENTS, STREAMS, chunk, sse

CASES = 20_000
MAX_INPUT = 64 * 1024
# Fragments a server's JSON might hold where numbers, strings, lists or objects belong.
TOKENS = [
    b"null", b"[]", b"{}", b"-1", b"0", b"1e999", b"-1e999", b"NaN", b"true", b'"x"', b"\n", b"\r\n",
    b"data: ", b"data:[DONE]", b"\x1b[2J", b"[/bold]", b'"choices":', b'"usage":', b'"delta":', b"\xff",
    b"99999999999999999999999", b"2.5", b'"finish_reason":"stop"', b": ping\n",
]  # fmt: skip


def seeds(workdir: Path) -> list[bytes]:
    timings = {"predicted_ms": 80.0, "predicted_n": 3, "predicted_per_second": 37.5, "prompt_ms": 1.0}
    llama = [*GOOD_EVENTS[:-1], sse({"choices": [], "timings": timings}), GOOD_EVENTS[-1]]
    reasoning = [sse({"choices": [{"delta": {"reasoning_content": "hm"}}]}), *GOOD_EVENTS]
    tools = [sse({"choices": [{"delta": {"tool_calls": [{"id": "t", "function": {"name": "f"}}]}}]})]
    return [
        b"".join(GOOD_EVENTS),
        b"".join(llama),
        b"".join(reasoning),
        b"".join([*tools, sse(chunk(finish="tool_calls")), b"data: [DONE]\n\n"]),
        *(b"".join(events) for events in STREAMS.values()),
    ]


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:  # flip a bit
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # a fragment where anything may be
            out[at:at] = rng.choice(TOKENS)
        elif op == 2:  # cut
            del out[at : at + rng.randint(1, 64)]
        elif op == 3 and out:  # repeat a slice
            end = min(len(out), at + rng.randint(1, 256))
            out[at:at] = out[at:end] * rng.randint(1, 8)
        else:  # truncate
            del out[at:]
    return bytes(out[:MAX_INPUT])


class _Content:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.read_size = 1 + len(body) % 37  # deterministic per input; splits lines across reads

    def iter_any(self) -> AsyncIterator[bytes]:
        return self  # an iterator object, as aiohttp's is: nothing left pending when a read fails

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self.body:
            raise StopAsyncIteration
        data, self.body = self.body[: self.read_size], self.body[self.read_size :]
        return data

    async def read(self, n: int) -> bytes:
        data, self.body = self.body[:n], self.body[n:]
        return data


class _Response:
    status = 200

    def __init__(self, body: bytes) -> None:
        self.headers = {"content-type": "text/event-stream"}
        self.content = _Content(body)

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Session:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def post(self, url: str, **kwargs: Any) -> _Response:
        return _Response(self.body)


async def _send(data: bytes) -> Any:
    client = StreamClient(_Session(data), "http://server/v1/chat/completions", api="chat", t0_ns=0)  # type: ignore[arg-type]
    body = json.dumps({"model": "m", "stream": True}).encode()
    return await client.send(Prepared(0, body, 8, 3), scheduled_ns=0)


_LOOP = asyncio.new_event_loop()  # one per process: a fresh loop per case costs more than the case


def check(data: bytes, workdir: Path) -> None:
    record = _LOOP.run_until_complete(_send(data))
    records = [record]
    summary = summarize(records, {"ttft": 500.0})
    checks.length_flags(records)
    checks.token_count_flags(records)
    checks.prompt_length_flags(records)
    checks.streaming_flags(records, summary)
    checks.reconcile_llama_timings(records)
    record.model_dump_json()
    summary.model_dump_json()
