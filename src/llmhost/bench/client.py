"""The measuring client: one `aiohttp.ClientSession`, a pool sized to the concurrency, a raw SSE reader.

Why aiohttp and not httpx: measured in `benchmarks/bench_client_capacity.py` (128 streams, one token
every 2 ms), httpx costs about twice the CPU per token, because h11 turns every chunked-transfer frame
(one per token on vLLM and llama-server) into a Python event that climbs through httpcore and httpx;
aiohttp's C parser hands over everything received so far in one `iter_any()` read. The reader splits
lines itself from those bytes (cheaper than `aiter_lines()`-style text decoding). Every event that
arrives in one read gets that read's monotonic timestamp; the send time is taken just before the
request is handed to the connection pool. The read buffer is raised from aiohttp's 64 KiB default,
which throttled vLLM's own benchmark on long lines (vllm-project/vllm#39963).

TTFT stops at the first chunk carrying non-empty content, reasoning or tool calls; an empty or
role-only chunk (sent at once by some servers) is recorded separately and does not stop the clock.

The server is untrusted (`llmhost.bench.untrusted`): bodies are read up to a cap, an SSE line or a
response past its cap, an event of the wrong shape or a usage that is no token count fails that request
as `bad_stream`, and a stream that sends only keep-alive bytes times out like a silent one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmhost.bench import untrusted
from llmhost.bench.models import Api, ErrorClass, RequestRecord, TokenSource
from llmhost.bench.untrusted import BadEvent
from llmhost.bench.workload import TokenizerAdapter

_NS_PER_MS = 1_000_000
STALE_RETRIES = 3
# How far below max_tokens the token chunks of a `length` finish may fall and still confirm it (the
# end-of-stream flush merges pieces: 15 chunks for 16 tokens seen on llama-cpp-python).
LENGTH_CHUNK_SLACK = 0.25


@dataclass
class Prepared:
    index: int
    body: bytes
    prompt_tokens: int
    output_tokens: int | None


def make_session(concurrency: int, *, api_key: str | None, read_timeout_s: float) -> aiohttp.ClientSession:
    headers = {"accept": "text/event-stream"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, force_close=False),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=read_timeout_s),
        headers=headers,
        trust_env=False,
        read_bufsize=2**20,
    )


def _http_error_class(status: int) -> ErrorClass:
    if status in (401, 403):
        return "http_401"
    if status == 404:
        return "http_404"
    return "http_5xx" if status >= 500 else "http_4xx"


def _error_message(status: int, body: bytes) -> str:
    try:
        obj = untrusted.parse_json(body)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        msg = err.get("message") if isinstance(err, dict) else err
        text = str(msg or obj)
    except (ValueError, AttributeError):
        text = body[:200].decode("utf-8", "replace")
    return f"HTTP {status}: {untrusted.quoted(text.strip())}"


class _Silence:
    """Fails the request (asyncio.TimeoutError) when no stream event came for `seconds`.

    aiohttp's `sock_read` alone is not enough: bytes that are no event (keep-alive comments, a line
    that never ends, trickled a byte at a time) reset it, and after a malformed chunk and a close it
    waited forever (aiohttp 3.14). Cheap on the hot path: a read only stores the time; the one timer
    re-arms itself for the remainder when it fires early.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.heard = 0.0
        self.fired = False
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> _Silence:
        if self.seconds is not None:
            self._task = asyncio.current_task()
            self._loop = asyncio.get_running_loop()
            self.heard = self._loop.time()
            self._handle = self._loop.call_later(self.seconds, self._check)
        return self

    def hear(self) -> None:
        """An event came: the quiet time starts again."""
        if self.seconds is not None:
            self.heard = self._loop.time()

    def _check(self) -> None:
        assert self.seconds is not None and self._task is not None
        quiet = self._loop.time() - self.heard
        if quiet < self.seconds:
            self._handle = self._loop.call_later(self.seconds - quiet, self._check)
            return
        self.fired = True
        self._task.cancel()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self.fired and kind is asyncio.CancelledError:
            uncancel = getattr(self._task, "uncancel", None)  # Python 3.11+: the cancel was ours
            if uncancel is not None:
                uncancel()
            raise asyncio.TimeoutError(f"no stream event for {self.seconds:g} s")


async def _data_payloads(
    response: aiohttp.ClientResponse, silence: _Silence
) -> AsyncGenerator[tuple[int, list[bytes]], None]:
    """Per read of an SSE body: its monotonic time and the payloads of the `data:` lines it completed.

    Bounded: a line longer than MAX_EVENT_LINE_BYTES or a body longer than MAX_STREAM_BYTES is a bad
    stream; a read that completes an event tells `silence`.
    """
    # The unfinished line: only what a read completes is split, so a long line that arrives in many
    # small reads costs its length once (re-splitting it at every read was quadratic).
    buf = bytearray()
    received = 0
    async for data in response.content.iter_any():
        now = time.perf_counter_ns()
        received += len(data)
        if received > untrusted.MAX_STREAM_BYTES:
            raise BadEvent(f"the response is longer than {untrusted.MAX_STREAM_BYTES >> 20} MiB")
        end = data.rfind(b"\n")
        if end < 0:
            buf += data
            lines = []
        else:
            lines = (bytes(buf) + data[:end]).split(b"\n")
            buf = bytearray(data[end + 1 :])
        if len(buf) > untrusted.MAX_EVENT_LINE_BYTES:
            raise BadEvent(f"a stream line is longer than {untrusted.MAX_EVENT_LINE_BYTES >> 20} MiB")
        payloads = [line[5:].strip() for line in lines if line.startswith(b"data:")]
        if payloads:
            silence.hear()
            yield now, payloads


def count_output_tokens(
    usage_tokens: int | None, token_chunks: int, finish: str | None, requested: int | None
) -> tuple[int, TokenSource]:
    """The output token count of one stream and where it came from.

    `usage` is the server's own count. Without it, a stream that ended with `finish_reason: length`
    stopped at the max_tokens it was sent, so it produced that many: llama-cpp-python streams one token
    per chunk, but its end-of-stream flush of held-back text repeats or merges pieces (for max_tokens
    16, 40 streams carried 15 to 20 token chunks), so its chunks are no exact count. The chunks only
    confirm it: a `length` finish after far fewer chunks than requested (a context that filled up)
    is counted as chunks, so it is not taken as honoured. Re-tokenizing the streamed text is no count
    either: decoded text need not encode back to the same tokens (16 tokens of the tiny model's text
    re-encode to 11-18), so the tokenizer only cross-checks (`checks.token_count_flags`).
    """
    if usage_tokens is not None:
        return usage_tokens, "usage"
    if finish == "length" and requested is not None and token_chunks >= requested * (1 - LENGTH_CHUNK_SLACK):
        return requested, "length"
    return token_chunks, "chunks"


class StreamClient:
    """Sends prepared requests and times their streams. `t0_ns` is the run's zero on perf_counter_ns."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        *,
        api: Api,
        t0_ns: int,
        tokenizer: TokenizerAdapter | None = None,
        read_timeout_s: float | None = None,
    ) -> None:
        self.http = http
        self.url = url
        self.api = api
        self.t0_ns = t0_ns
        self.tokenizer = tokenizer
        self.silence_s = read_timeout_s
        self.content_type = {"content-type": "application/json"}

    def _ms(self, ns: int) -> float:
        return (ns - self.t0_ns) / _NS_PER_MS

    async def send(self, req: Prepared, scheduled_ns: int) -> RequestRecord:
        chat = self.api == "chat"
        chunk_ns: list[int] = []
        pieces: list[str] = []
        first_chunk_ns: int | None = None
        last_chunk_ns: int | None = None
        role_first = False
        token_chunks = 0
        tok_first_ns: int | None = None
        tok_last_ns: int | None = None
        finish: str | None = None
        usage: dict[str, Any] | None = None
        timings: dict[str, Any] | None = None
        done = False
        error_class: ErrorClass | None = None
        error: str | None = None
        retried = False
        # A keep-alive connection the server closed while idle fails before any byte of a response:
        # the request never reached the server, so it is sent again (the pool drops the dead one).
        for attempt in range(STALE_RETRIES + 1):
            sent_ns = time.perf_counter_ns()
            try:
                responded = False
                async with (
                    _Silence(self.silence_s) as silence,
                    self.http.post(self.url, data=req.body, headers=self.content_type) as response,
                ):
                    responded = True
                    if response.status != 200:
                        body = await untrusted.read_capped(response, untrusted.MAX_JSON_BODY_BYTES)
                        error_class = _http_error_class(response.status)
                        error = _error_message(response.status, body)
                    elif not response.headers.get("content-type", "").startswith("text/event-stream"):
                        error_class = "non_sse"
                        kind = untrusted.quoted(response.headers.get("content-type") or "no content type", 80)
                        error = f"the server answered {kind}, not a text/event-stream: it ignored stream=true"
                    else:
                        async with contextlib.aclosing(_data_payloads(response, silence)) as reads:
                            async for now, payloads in reads:
                                for payload in payloads:
                                    last_chunk_ns = now
                                    if first_chunk_ns is None:
                                        first_chunk_ns = now
                                    if payload == b"[DONE]":
                                        done = True
                                        continue
                                    obj = untrusted.decode_event(payload)
                                    if "error" in obj and not obj.get("choices"):
                                        error_class = "bad_stream"
                                        error = untrusted.error_text(obj["error"])
                                        continue
                                    choice = untrusted.first_choice(obj)
                                    if choice is not None:
                                        finish_now = untrusted.text_field(choice, "finish_reason", limit=100)
                                        if chat:
                                            delta = untrusted.object_field(choice, "delta")
                                            text = untrusted.text_field(delta, "content") or ""
                                            has = bool(
                                                text
                                                or delta.get("reasoning_content")
                                                or delta.get("reasoning")
                                                or delta.get("tool_calls")
                                            )
                                            # A token chunk may decode to "" (a partial UTF-8 sequence, a
                                            # control token); role and finish-only chunks are not tokens.
                                            is_token = has or (
                                                "content" in delta and "role" not in delta and not finish_now
                                            )
                                        else:
                                            text = untrusted.text_field(choice, "text") or ""
                                            has = bool(text)
                                            is_token = has or ("text" in choice and not finish_now)
                                        if is_token:
                                            token_chunks += 1
                                            if tok_first_ns is None:
                                                tok_first_ns = now
                                            tok_last_ns = now
                                        if has:
                                            chunk_ns.append(now)
                                            pieces.append(text)
                                        elif not chunk_ns:
                                            role_first = True
                                        if finish_now:
                                            finish = finish_now
                                    if obj.get("usage"):
                                        usage = untrusted.usage_counts(obj["usage"])
                                    if obj.get("timings"):
                                        timings = untrusted.timing_fields(obj["timings"])
            except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
                error_class, error = "timeout", f"timed out: {exc or type(exc).__name__}"
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                stale = not responded and not isinstance(
                    exc, aiohttp.ClientConnectorError | aiohttp.ClientPayloadError
                )
                if stale and attempt < STALE_RETRIES:
                    retried = True
                    continue
                mid = " mid-stream" if chunk_ns else ""
                error_class, error = (
                    "connection",
                    f"connection failed{mid}: {untrusted.quoted(str(exc) or type(exc).__name__)}",
                )
            except aiohttp.ClientError as exc:
                error_class, error = "other", untrusted.quoted(f"{type(exc).__name__}: {exc}")
            except BadEvent as exc:  # not what an OpenAI-compatible server streams
                error_class, error = "bad_stream", str(exc)
            break
        end_ns = time.perf_counter_ns()
        if error_class is None and not done and finish is None:
            error_class, error = "bad_stream", "the stream ended without a finish reason or [DONE]"
        if error_class is None and not chunk_ns:
            error_class, error = "empty", "the stream carried no content"
        record = self._record(
            req, scheduled_ns, sent_ns, end_ns, chunk_ns, pieces, first_chunk_ns, last_chunk_ns,
            role_first, finish, usage, timings, error_class, error, token_chunks, tok_first_ns, tok_last_ns,
        )  # fmt: skip
        record.retried = retried
        return record

    def _record(
        self,
        req: Prepared,
        scheduled_ns: int,
        sent_ns: int,
        end_ns: int,
        chunk_ns: list[int],
        pieces: list[str],
        first_chunk_ns: int | None,
        last_chunk_ns: int | None,
        role_first: bool,
        finish: str | None,
        usage: dict[str, Any] | None,
        timings: dict[str, Any] | None,
        error_class: ErrorClass | None,
        error: str | None,
        token_chunks: int,
        tok_first_ns: int | None,
        tok_last_ns: int | None,
    ) -> RequestRecord:
        usage_tokens = usage.get("completion_tokens") if usage else None
        tokenizer_tokens = self.tokenizer.count("".join(pieces)) if self.tokenizer and pieces else None
        out, source = count_output_tokens(
            usage_tokens if isinstance(usage_tokens, int) else None,
            token_chunks,
            finish,
            req.output_tokens,
        )
        ms = self._ms
        honoured = None
        if req.output_tokens is not None and error_class is None:
            honoured = out == req.output_tokens
        server_timings = None
        if timings:
            server_timings = {k: v for k, v in timings.items() if isinstance(v, int | float) or v is None}
        return RequestRecord(
            index=req.index,
            ok=error_class is None,
            error_class=error_class,
            error=error,
            scheduled_ms=ms(scheduled_ns),
            sent_ms=ms(sent_ns),
            first_chunk_ms=ms(first_chunk_ns) if first_chunk_ns is not None else None,
            first_token_ms=ms(chunk_ns[0]) if chunk_ns else None,
            last_token_ms=ms(chunk_ns[-1]) if chunk_ns else None,
            first_token_chunk_ms=ms(tok_first_ns) if tok_first_ns is not None else None,
            last_token_chunk_ms=ms(tok_last_ns) if tok_last_ns is not None else None,
            last_chunk_ms=ms(last_chunk_ns) if last_chunk_ns is not None else None,
            ended_ms=ms(end_ns),
            chunk_ms=[ms(t) for t in chunk_ns],
            prompt_tokens_requested=req.prompt_tokens,
            prompt_tokens=usage.get("prompt_tokens") if usage else None,
            output_tokens_requested=req.output_tokens,
            output_tokens=out,
            output_tokens_source=source,
            usage_tokens=usage_tokens if isinstance(usage_tokens, int) else None,
            tokenizer_tokens=tokenizer_tokens,
            content_chunks=len(chunk_ns),
            token_chunks=token_chunks,
            finish_reason=finish,
            length_honoured=honoured,
            role_chunk_first=role_first,
            server_timings=server_timings,
        )
