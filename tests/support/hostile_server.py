"""An OpenAI-compatible server that misbehaves on request: what `llmhost bench` must survive.

One listening socket, many behaviours: the first path segment names the behaviour, so
`http://127.0.0.1:PORT/<mode>/v1` is a server that does `<mode>` (see MODES). Without a mode it is a
well-behaved server of model "m". It runs aiohttp's web server on its own event loop in a daemon thread
(bench runs its own loop in the caller's thread), with handler cancellation on, so a handler that
hangs on purpose ends when the client gives up.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import zlib
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

from aiohttp import web

MODEL = "m"
# Text that must reach a user as text: Rich markup, an emoji code, a screen clear, CR, BEL, a C1 CSI.
HOSTILE_TEXT = "[/bold][red]x[/red] :smile: \x1b[2J\r\x07\x9b"
# What a user may type as --model: markup and emoji, but no control characters (refused as option values).
TYPED_TEXT = "[/bold][red]x[/red] :smile:"
FOREIGN_MODELS = 5000  # ids listed by `models-foreign`, none of them MODEL
MIB = 2**20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chunk(content: Any = "tok", finish: Any = None, **fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}], **fields}


GOOD_EVENTS = [
    sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
    sse(chunk()),
    sse(chunk()),
    sse(chunk(finish="length")),
    sse({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}}),
    b"data: [DONE]\n\n",
]


def _with_usage(usage: Any) -> list[bytes]:
    return [sse(chunk()), sse(chunk(finish="length")), sse({"choices": [], "usage": usage})]


# Streams of events, by mode: each is a 200 text/event-stream carrying these bytes.
STREAMS: dict[str, list[bytes]] = {
    "not-json": [b"data: hello world\n\n"],
    "event-array": [b"data: [1, 2, 3]\n\n"],
    "deep-json": [b"data: " + b"[" * 200_000 + b"\n\n"],
    "choices-dict": [sse({"choices": {"0": {"delta": {"content": "x"}}}})],
    "choices-strings": [sse({"choices": ["x"]})],
    "delta-list": [sse({"choices": [{"delta": [1]}]})],
    "content-number": [sse(chunk(content=5))],
    "finish-object": [sse(chunk(finish={"why": "x"}))],
    "choices-null": [sse({"choices": None}), sse({"choices": None}), b"data: [DONE]\n\n"],
    "no-finish": [sse(chunk()), sse(chunk())],
    "usage-negative": _with_usage({"completion_tokens": -5}),
    "usage-huge": _with_usage({"completion_tokens": 10**30}),
    "usage-float": _with_usage({"completion_tokens": 2.5}),
    "usage-string": _with_usage({"completion_tokens": "abc"}),
    "usage-list": _with_usage([1, 2]),
    "error-event": [sse({"error": {"message": HOSTILE_TEXT}})],
    "bad-timings": [
        *GOOD_EVENTS[:-1],
        sse({"choices": [], "timings": {"predicted_ms": 10**400, "x": "y", "n": float("nan")}}),
        b"data: [DONE]\n\n",
    ],
}


@cache
def gzip_zeros() -> tuple[bytes, bytes]:
    """A gzip stream of zero bytes that never ends: its start, then a piece to repeat (each piece is
    1 MiB of zeros in about 1 KiB; a full flush makes every piece the same bytes)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MIB)
    start = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    return start, packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)


async def _stream(request: web.Request, events: list[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for event in events:
        await response.write(event)
    await response.write_eof()
    return response


async def _forever(
    request: web.Request,
    piece: bytes,
    pause_s: float = 0.0,
    *,
    start: bytes = b"",
    status: int = 200,
    **headers: str,
) -> web.StreamResponse:
    """Write `start`, then `piece` again and again until the client goes away."""
    response = web.StreamResponse(status=status, headers={"content-type": "text/event-stream", **headers})
    await response.prepare(request)
    await response.write(start)
    while True:
        await response.write(piece)
        await asyncio.sleep(pause_s)


async def _hang(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def _raw(request: web.Request, data: bytes, *, prepare: bool) -> web.StreamResponse:
    """Bytes that break the protocol, then the connection closed."""
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    if prepare:
        await response.prepare(request)
        await response.write(sse(chunk()))
        await asyncio.sleep(0.05)  # the client has read a good chunk before it breaks
    assert request.transport is not None
    request.transport.write(data)
    request.transport.close()
    return await _hang(request)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(obj), content_type="application/json")


async def _html(request: web.Request) -> web.Response:
    return web.Response(text="<html><body>[/bold] not an API</body></html>", content_type="text/html")


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(location=str(request.rel_url))


# Modes that misbehave on every path (the model list included).
EVERYWHERE: dict[str, Handler] = {
    "never-answer": _hang,
    "redirect-loop": _redirect,
    "not-http": lambda r: _raw(r, b"SSH-2.0-OpenSSH_9.6\r\n", prepare=False),
    "html": _html,
}


async def _models(request: web.Request) -> web.StreamResponse:
    mode = request.match_info["mode"]
    if mode == "models-401":
        return _json({"error": {"message": "no key"}}, status=401)
    if mode == "models-foreign":
        return _json({"data": [{"id": f"other-{i}"} for i in range(FOREIGN_MODELS)]})
    if mode == "models-hostile":
        return _json({"data": [{"id": HOSTILE_TEXT}, {"id": 5}, "junk"]})
    if mode == "models-shape":
        return _json({"data": 5})
    if mode == "models-huge":
        return await _forever(request, b'{"id": "x"}, ' * 10_000, start=b'{"data": [')
    return _json({"object": "list", "data": [{"id": MODEL}, {"id": HOSTILE_TEXT}, {"id": TYPED_TEXT}]})


async def _chat(request: web.Request) -> web.StreamResponse:
    mode = request.match_info["mode"]
    await request.read()
    if mode in STREAMS:
        return await _stream(request, STREAMS[mode])
    if mode == "hang-post":
        return await _hang(request)
    if mode == "html-post":
        return await _html(request)
    if mode == "http-404":
        return _json({"error": {"message": "Not Found"}}, status=404)
    if mode == "error-hostile":
        return _json({"error": {"message": HOSTILE_TEXT}}, status=500)
    if mode == "error-huge":  # a 500 whose body never ends
        return await _forever(request, b"x" * MIB, status=500, **{"content-type": "text/plain"})
    if mode == "error-gzip-bomb":  # a 500 whose body inflates without end
        start, piece = gzip_zeros()
        return await _forever(request, piece, start=start, status=500, **{"content-encoding": "gzip"})
    if mode == "stream-gzip-bomb":  # an event stream that inflates to one endless line
        start, piece = gzip_zeros()
        return await _forever(request, piece, start=start, **{"content-encoding": "gzip"})
    if mode == "long-line":  # one SSE line that never ends
        return await _forever(request, b"x" * MIB, start=b"data: ")
    if mode == "endless":  # valid content events forever, never a finish
        return await _forever(request, sse(chunk(content="y" * 64 * 1024)) * 16)
    if mode == "keepalive":  # comments only: bytes, but never an event
        return await _forever(request, b": ping\n\n", 0.2)
    if mode == "trickle":  # an event that never completes, a byte at a time
        return await _forever(request, b"d", 0.2)
    if mode == "close-mid-stream":
        return await _raw(request, b"", prepare=True)
    if mode == "bad-chunked":
        return await _raw(request, b"zz\r\nnot a chunk\r\n", prepare=True)
    return await _stream(request, GOOD_EVENTS)


async def _props(request: web.Request) -> web.Response:
    return _json({"total_slots": True})  # a bool where a count belongs


async def _metrics(request: web.Request) -> web.StreamResponse:
    if request.match_info["mode"] == "metrics-garbage":
        lines = ['vllm:x{a="1"} NaN', "vllm:y +Inf", "vllm:z 1e308", "vllm:z 1e308", "vllm:", "llamacpp:w {"]
        names = [f"vllm:n{i} 1" for i in range(5000)]
        return web.Response(text="\n".join(lines + names) + "\n\x00\xff", content_type="text/plain")
    return web.Response(text="vllm:num_requests_running 0\n", content_type="text/plain")


def _route(handler: Handler) -> Handler:
    async def dispatch(request: web.Request) -> web.StreamResponse:
        special = EVERYWHERE.get(request.match_info["mode"])
        return await (special or handler)(request)

    return dispatch


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/{mode}/v1/models", _route(_models))
    app.router.add_post("/{mode}/v1/chat/completions", _route(_chat))
    app.router.add_get("/{mode}/metrics", _route(_metrics))
    app.router.add_get("/{mode}/props", _route(_props))
    return app


class HostileServer:
    """`with HostileServer(port) as server:` serves on 127.0.0.1:port in a daemon thread."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(make_app(), handler_cancellation=True, shutdown_timeout=0.5)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/v1"

    def __enter__(self) -> HostileServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
