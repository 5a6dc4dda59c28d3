"""A reference OpenAI-compatible streaming server with exactly known timing: the bench's yardstick.

The first content token is written T0 after the request is fully read, then one token every T1,
exactly N tokens (N = the request's `max_tokens`), each scheduled at an ABSOLUTE time
(`start + T0 + i*T1`) so late wake-ups never accumulate into drift. Written on raw asyncio
protocols (no framework) so that its own overhead is a few microseconds per token.

Knobs (constructor or command line) reproduce what real servers do to a benchmark client:
an empty role-only first chunk sent at once, usage chunks or none, llama-server style `timings`,
tokens bundled several per chunk, a buffering proxy (everything at the end), a plain JSON reply
instead of SSE, an API key, dying after K tokens, a /props slot count and a /metrics endpoint.

Run standalone (its own process, so it never shares the client's event loop):
    python tests/bench/refserver.py --port 8123 --ttft-ms 0 --itl-ms 2
It prints `READY <port>` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_CHUNK_HEADER = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"


@dataclass
class RefConfig:
    ttft_s: float = 0.05
    itl_s: float = 0.02
    model: str = "ref-model"
    role_chunk: bool = True  # an empty {"role":"assistant","content":""} chunk sent immediately
    usage: bool = True  # honour stream_options.include_usage
    timings: bool = False  # llama-server style `timings` in the last chunk
    tokens_per_chunk: int = 1
    buffered: bool = False  # a buffering proxy: hold every chunk until the end
    non_sse: bool = False  # answer a plain JSON completion instead of a stream
    api_key: str | None = None
    die_after_tokens: int | None = None  # crash after K tokens in all (connections dropped, port closed)
    slots: int | None = None  # advertised in /props as total_slots (llama-server)
    capacity: int | None = None  # streams generated at once; the rest wait (a saturated engine)
    honour_length: bool = True  # False: stop after half the requested tokens (ignore_eos unsupported)
    context: int | None = None  # answer 400 to prompts of more words than this (llama-server's context error)
    default_tokens: int = 16
    finish_reason: str = "length"  # of the last chunk ("stop": a stream that does not claim max_tokens)
    # What the server actually did, for measuring the server itself.
    sent_log: list[tuple[float, float]] = field(default_factory=list)  # (request read, first token)
    requests_served: int = 0
    tokens_predicted: int = 0


def _frame(payload: bytes) -> bytes:
    """One HTTP/1.1 chunked-transfer frame."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class _Conn(asyncio.Protocol):
    def __init__(self, server: RefServer) -> None:
        self.server = server
        self.cfg = server.cfg
        self.loop = asyncio.get_running_loop()
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.closed = False
        self.handle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
            self.server.release()
        self.server.conns.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._try_request()

    def _try_request(self) -> None:
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buf[:head_end].decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        if len(self.buf) < head_end + 4 + length:
            return
        body = self.buf[head_end + 4 : head_end + 4 + length]
        self.buf = self.buf[head_end + 4 + length :]
        self.busy = True
        self._handle(method, path.split("?")[0], headers, body)

    def _reply(self, status: str, obj: Any, content_type: str = "application/json") -> None:
        payload = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        assert self.transport is not None
        head = f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(payload)}\r\n\r\n"
        self.transport.write(head.encode() + payload)
        self._done()

    def _done(self) -> None:
        self.busy = False
        if self.buf:
            self._try_request()

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        cfg = self.cfg
        if cfg.api_key is not None and headers.get("authorization") != f"Bearer {cfg.api_key}":
            self._reply("401 Unauthorized", {"error": {"message": "Invalid API key", "type": "auth"}})
            return
        if method == "GET" and path in ("/v1/models", "/models"):
            self._reply("200 OK", {"object": "list", "data": [{"id": cfg.model, "object": "model"}]})
            return
        if method == "GET" and path == "/props" and cfg.slots is not None:
            self._reply("200 OK", {"total_slots": cfg.slots})
            return
        if method == "GET" and path == "/metrics":
            text = (
                f"llamacpp:tokens_predicted_total {cfg.tokens_predicted}\n"
                f"llamacpp:requests_processing {sum(c.busy for c in self.server.conns) - 1}\n"
                "llamacpp:requests_deferred 0\n"
            )
            self._reply("200 OK", text.encode(), "text/plain; version=0.0.4")
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            self._reply("404 Not Found", {"error": {"message": f"no route {path}"}})
            return
        req = json.loads(body or b"{}")
        if req.get("model") not in (None, cfg.model):
            self._reply(
                "404 Not Found", {"error": {"message": f"The model `{req.get('model')}` does not exist."}}
            )
            return
        self._start_stream(req, chat=path.endswith("chat/completions"))

    def _start_stream(self, req: dict[str, Any], *, chat: bool) -> None:
        cfg = self.cfg
        start = self.loop.time()
        n = int(req.get("max_tokens") or req.get("max_completion_tokens") or cfg.default_tokens)
        if not cfg.honour_length:
            n = max(1, n // 2)
        if chat:
            prompt = " ".join(str(m.get("content", "")) for m in req.get("messages", []))
        else:
            prompt = str(req.get("prompt", ""))
        prompt_tokens = len(prompt.split())
        if cfg.context is not None and prompt_tokens > cfg.context:
            message = f"the request exceeds the available context size ({cfg.context} tokens)"
            self._reply("400 Bad Request", {"error": {"code": 400, "message": message}})
            return
        include_usage = cfg.usage and bool((req.get("stream_options") or {}).get("include_usage"))
        obj = "chat.completion.chunk" if chat else "text_completion"
        base = {"id": "cmpl-ref", "object": obj, "created": 0, "model": cfg.model}
        word = " tok" * cfg.tokens_per_chunk

        def choice(text: str, finish: str | None) -> dict[str, Any]:
            if chat:
                return {"index": 0, "delta": {"content": text}, "finish_reason": finish}
            return {"index": 0, "text": text, "finish_reason": finish}

        token_frame = _frame(_sse({**base, "choices": [choice(word, None)]}))
        self.server.cfg.requests_served += 1
        if cfg.capacity is not None and self.server.active >= cfg.capacity:
            self.server.waiting.append(lambda: self._start_stream(req, chat=chat))
            return
        self.server.active += 1
        assert self.transport is not None
        transport = self.transport

        if cfg.non_sse:
            text = " tok" * n
            message = {"role": "assistant", "content": text} if chat else None
            ch: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            ch.update({"message": message} if chat else {"text": text})
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n,
                "total_tokens": prompt_tokens + n,
            }
            self._reply("200 OK", {**base, "object": "chat.completion", "choices": [ch], "usage": usage})
            return

        pending: list[bytes] = [_CHUNK_HEADER + b"transfer-encoding: chunked\r\n\r\n"]
        if chat and cfg.role_chunk:
            role = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
            pending.append(_frame(_sse(role)))
        if not cfg.buffered:
            transport.write(b"".join(pending))
            pending.clear()
        chunks = -(-n // cfg.tokens_per_chunk)
        state = {"i": 0}

        def finish() -> None:
            tail: list[bytes] = []
            last = {**base, "choices": [choice("", cfg.finish_reason)]}
            if cfg.timings:
                predicted_ms = (chunks - 1) * cfg.itl_s * 1000
                last["timings"] = {
                    "prompt_n": prompt_tokens,
                    "prompt_ms": cfg.ttft_s * 1000,
                    "predicted_n": n,
                    "predicted_ms": predicted_ms,
                    "predicted_per_second": (n - 1) / predicted_ms * 1000 if predicted_ms else None,
                }
            tail.append(_frame(_sse(last)))
            if include_usage:
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": n,
                    "total_tokens": prompt_tokens + n,
                }
                tail.append(_frame(_sse({**base, "choices": [], "usage": usage})))
            tail.append(_frame(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            transport.write(b"".join(pending) + b"".join(tail))
            pending.clear()
            self.handle = None
            self.server.release()
            self._done()

        def tick() -> None:
            if self.closed:
                return
            i = state["i"]
            if i == 0:
                cfg.sent_log.append((start, self.loop.time()))
            if cfg.buffered:
                pending.append(token_frame)
            else:
                transport.write(token_frame)
            cfg.tokens_predicted += cfg.tokens_per_chunk
            state["i"] = i + 1
            if cfg.die_after_tokens is not None and cfg.tokens_predicted >= cfg.die_after_tokens:
                self.server.die()
                return
            if state["i"] >= chunks:
                finish()
                return
            self.handle = self.loop.call_at(start + cfg.ttft_s + state["i"] * cfg.itl_s, tick)

        self.handle = self.loop.call_at(start + cfg.ttft_s, tick)


class RefServer:
    """Start with `await RefServer(cfg).start()`; `port` is then bound on 127.0.0.1."""

    def __init__(self, cfg: RefConfig | None = None) -> None:
        self.cfg = cfg or RefConfig()
        self.conns: set[_Conn] = set()
        self.active = 0
        self.waiting: list[Callable[[], None]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> RefServer:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Conn(self), "127.0.0.1", port, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def release(self) -> None:
        self.active -= 1
        if self.waiting:
            self.waiting.pop(0)()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def die(self) -> None:
        """Stop listening and drop every connection, as a crashed engine does."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()

    async def stop(self) -> None:
        self.die()
        if self.server is not None:
            await self.server.wait_closed()


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument("--model", default="ref-model")
    p.add_argument("--no-role-chunk", action="store_true")
    p.add_argument("--no-usage", action="store_true")
    p.add_argument("--tokens-per-chunk", type=int, default=1)
    return p.parse_args(argv)


async def _serve(ns: argparse.Namespace) -> None:
    cfg = RefConfig(
        ttft_s=ns.ttft_ms / 1000,
        itl_s=ns.itl_ms / 1000,
        model=ns.model,
        role_chunk=not ns.no_role_chunk,
        usage=not ns.no_usage,
        tokens_per_chunk=ns.tokens_per_chunk,
    )
    server = await RefServer(cfg).start(ns.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"READY {server.port}\n")
    sys.stdout.flush()
    await stop.wait()
    await server.stop()
    late = [(first - start - cfg.ttft_s) * 1000 for start, first in cfg.sent_log]
    if late and os.environ.get("REFSERVER_STATS"):
        late.sort()
        sys.stderr.write(f"first-token lateness ms: p50={late[len(late) // 2]:.3f} max={late[-1]:.3f}\n")


if __name__ == "__main__":
    asyncio.run(_serve(_parse(sys.argv[1:])))
