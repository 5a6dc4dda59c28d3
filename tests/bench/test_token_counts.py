"""Output token counts without `usage`, on SSE streams recorded from llama-cpp-python's server.

The recordings (tests/bench/data/llama_cpp_python_*.sse) are llama-cpp-python 0.3 serving the tiny
demo GGUF with max_tokens 16: it sends no usage, ends with `finish_reason: length`, and its flush of
held-back text at the end sent 19 and 20 token chunks for 16 tokens. They are replayed byte for byte by
a real aiohttp server to the real client, so the whole reader (SSE split, event checks, counting) runs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from llmhost.bench import checks
from llmhost.bench.client import Prepared, StreamClient, count_output_tokens, make_session
from llmhost.bench.models import RequestRecord

DATA = Path(__file__).with_name("data")


def replay(sse: bytes, *, api: str, requested: int | None = 16) -> RequestRecord:
    async def go() -> RequestRecord:
        async def handler(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            for event in sse.split(b"\n\n"):  # one write per event, as the server sends them
                if event.strip():
                    await response.write(event + b"\n\n")
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_post("/v1/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        path = "chat/completions" if api == "chat" else "completions"
        try:
            async with make_session(1, api_key=None, read_timeout_s=10) as http:
                client = StreamClient(
                    http, f"http://127.0.0.1:{port}/v1/{path}", api=api, t0_ns=time.perf_counter_ns()
                )  # type: ignore[arg-type]
                return await client.send(Prepared(0, b"{}", 24, requested), time.perf_counter_ns())
        finally:
            await runner.cleanup()

    return asyncio.run(go())


def recorded(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_llama_cpp_python_length_finish_counts_max_tokens_not_chunks() -> None:
    for name, api, chunks in [
        ("llama_cpp_python_completions_19_chunks.sse", "completions", 19),
        ("llama_cpp_python_chat_20_chunks.sse", "chat", 20),
        ("llama_cpp_python_chat_16_chunks.sse", "chat", 16),
    ]:
        record = replay(recorded(name), api=api)
        assert record.ok, record.error
        assert record.finish_reason == "length" and record.usage_tokens is None
        assert record.token_chunks == chunks
        assert (record.output_tokens, record.output_tokens_source) == (16, "length")
        assert record.length_honoured is True
        assert checks.length_flags([record]) == []


def test_a_stream_that_stops_early_is_counted_by_chunks_and_flagged() -> None:
    # The same recording with its finish turned into "stop": no claim that max_tokens was reached, so
    # the count is the token chunks, which differ from the requested length.
    sse = recorded("llama_cpp_python_chat_20_chunks.sse").replace(
        b'"finish_reason": "length"', b'"finish_reason": "stop"'
    )
    record = replay(sse, api="chat")
    assert record.ok and record.finish_reason == "stop"
    assert (record.output_tokens, record.output_tokens_source) == (20, "chunks")
    assert record.length_honoured is False
    [flag] = checks.length_flags([record])
    assert flag.code == "length_not_honoured" and "finish reasons: stop" in flag.message


def test_a_length_finish_far_short_of_max_tokens_is_not_honoured() -> None:
    # A `length` finish after 16 chunks where 64 were asked: the context filled up, not max_tokens.
    record = replay(recorded("llama_cpp_python_chat_16_chunks.sse"), api="chat", requested=64)
    assert (record.output_tokens, record.output_tokens_source) == (16, "chunks")
    assert record.length_honoured is False


def test_count_output_tokens_rules() -> None:
    assert count_output_tokens(12, 30, "length", 16) == (12, "usage")  # the server's own count wins
    assert count_output_tokens(None, 17, "length", 16) == (16, "length")
    assert count_output_tokens(None, 12, "length", 16) == (16, "length")  # merged pieces, within 25%
    assert count_output_tokens(None, 11, "length", 16) == (11, "chunks")
    assert count_output_tokens(None, 17, "stop", 16) == (17, "chunks")
    assert count_output_tokens(None, 9, "length", None) == (9, "chunks")  # nothing was requested


def test_the_tokenizer_only_cross_checks_a_count_without_usage() -> None:
    def record(tokenizer_tokens: int) -> RequestRecord:
        return RequestRecord(
            index=0, ok=True, scheduled_ms=0.0, sent_ms=0.0, prompt_tokens_requested=8,
            output_tokens_requested=16, output_tokens=16, output_tokens_source="length",
            finish_reason="length", tokenizer_tokens=tokenizer_tokens,
        )  # fmt: skip

    same, drift = record(16), record(14)
    assert checks.token_count_flags([same]) == []
    [flag] = checks.token_count_flags([same, drift])
    assert flag.code == "tokenizer_cross_check" and flag.severity == "info"
    assert "1 of 2" in flag.message and "14 vs 16" in flag.message
