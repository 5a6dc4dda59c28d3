"""Measuring the instrument: bench against a server whose timing is known exactly.

The reference server writes the first token T0 after reading the request and one token every T1,
exactly N tokens. Targets (issue 6): TTFT within 5 ms of T0 plus the measured HTTP overhead, TPOT and
ITL within 2% of T1, output throughput within 3% of the exact value. On a shared 2-core machine single
runs are noisy, so each figure is the median of three runs.
"""

from __future__ import annotations

import itertools
import socket
import statistics
import time
from typing import Any

from llmhost.bench.models import BenchResult, Target, Workload
from llmhost.bench.runner import BenchConfig, run_blocking
from llmhost.bench.workload import SyntheticWorkload

T0_MS = 100.0
T1_MS = 20.0
TOKENS = 30


def bench(base_url: str, *, concurrency: int = 2, n: int = 6, tokens: int = TOKENS, **kw: Any) -> BenchResult:
    api = kw.pop("api", "chat")
    slos = kw.pop("slos", {})
    workload = Workload(
        api=api,
        input_tokens=(16, 16),
        output_tokens=(tokens, tokens),
        num_requests=n,
        concurrency=concurrency,
        warmup=kw.pop("warmup", 1),
        **kw,
    )
    cfg = BenchConfig(
        target=Target(base_url=base_url, model="ref-model", api=api),
        workload=workload,
        slos=slos,
        synthetic=SyntheticWorkload((16, 16), (tokens, tokens), seed=7, api=api),
    )
    return run_blocking(cfg)  # as `llmhost bench` runs it (uvloop where installed)


def overhead_ms(result: BenchResult) -> float:
    """HTTP overhead: the role chunk is written the moment the request is read."""
    return statistics.median(
        r.first_chunk_ms - r.sent_ms for r in result.requests if r.first_chunk_ms is not None
    )


def test_reference_server_itself_is_accurate(ref_server) -> None:
    """Read the server with a bare blocking socket: it must keep its own schedule before we trust it."""
    with ref_server(ttft_s=T0_MS / 1000, itl_s=T1_MS / 1000) as srv:
        body = (
            b'{"model":"ref-model","messages":[{"role":"user","content":"hi"}],"max_tokens":30,"stream":true}'
        )
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        firsts, gaps = [], []
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", srv.port)) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sent = time.perf_counter()
                sock.sendall(request)
                arrivals: list[float] = []
                data = b""
                while b"[DONE]" not in data:
                    chunk = sock.recv(65536)
                    assert chunk
                    arrivals += [time.perf_counter()] * chunk.count(b'"content":" tok"')
                    data += chunk
            assert len(arrivals) == 30
            firsts.append((arrivals[0] - sent) * 1000)
            gaps += [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]
        first, gap = statistics.median(firsts), statistics.median(gaps)
        print(
            f"reference server: first token {first:.2f} ms (T0 {T0_MS}), median gap {gap:.3f} ms (T1 {T1_MS})"
        )
        assert T0_MS <= first < T0_MS + 5
        assert abs(gap / T1_MS - 1) < 0.02


def test_ttft_tpot_itl_throughput_match_the_known_schedule(ref_server) -> None:
    with ref_server(ttft_s=T0_MS / 1000, itl_s=T1_MS / 1000) as srv:
        runs = [bench(srv.base_url) for _ in range(3)]
    for r in runs:
        assert r.summary.completed == 6 and r.summary.failed == 0
        assert all(rec.output_tokens == TOKENS and rec.length_honoured for rec in r.requests)
    overhead = statistics.median(overhead_ms(r) for r in runs)
    ttft = statistics.median(r.summary.ttft_ms.p50 for r in runs)
    tpot = statistics.median(r.summary.tpot_ms.p50 for r in runs)
    itl = statistics.median(r.summary.itl_ms.p50 for r in runs)
    # Closed loop, 2 workers x 3 requests each, back to back: the exact rate over the run.
    per_request_s = (T0_MS + overhead + (TOKENS - 1) * T1_MS) / 1000
    exact = 6 * TOKENS / (3 * per_request_s)
    rate = statistics.median(r.summary.output_tokens_per_s for r in runs)
    print(f"overhead {overhead:.2f} ms, TTFT {ttft:.2f}, TPOT {tpot:.3f}, ITL {itl:.3f}")
    print(f"output {rate:.1f} tok/s, exact {exact:.1f}")
    assert abs(ttft - (T0_MS + overhead)) < 5.0
    assert abs(tpot / T1_MS - 1) < 0.02
    assert abs(itl / T1_MS - 1) < 0.02
    assert abs(rate / exact - 1) < 0.03


def test_role_only_first_chunk_does_not_stop_the_clock(ref_server) -> None:
    with ref_server(ttft_s=0.08, itl_s=0.01, role_chunk=True) as srv:
        result = bench(srv.base_url, tokens=10, n=4)
    assert all(r.role_chunk_first for r in result.requests)
    # The role chunk came at once; TTFT waits for content, 80 ms later.
    assert result.summary.ttft_ms.p50 > 75
    assert statistics.median(r.first_chunk_ms - r.sent_ms for r in result.requests) < 40
    assert "early_role_chunk" in {f.code for f in result.flags}


def test_without_usage_tokens_are_counted_from_chunks_and_flagged(ref_server) -> None:
    # A "stop" finish: the stream does not say it reached max_tokens, so its chunks are the count.
    with ref_server(ttft_s=0.01, itl_s=0.005, usage=False, role_chunk=False, finish_reason="stop") as srv:
        result = bench(srv.base_url, tokens=12, n=4, api="completions")
    assert {r.output_tokens_source for r in result.requests} == {"chunks"}
    assert all(r.output_tokens == 12 and r.finish_reason == "stop" for r in result.requests)
    assert not any(r.role_chunk_first for r in result.requests)
    assert "tokens_from_chunks" in {f.code for f in result.flags}
    assert result.summary.tpot_ms.p50 is not None and abs(result.summary.tpot_ms.p50 / 5 - 1) < 0.1


def test_bundled_chunks_are_reported_and_tpot_stays_per_token(ref_server) -> None:
    with ref_server(ttft_s=0.01, itl_s=0.02, tokens_per_chunk=4) as srv:
        result = bench(srv.base_url, tokens=40, n=4)
    s = result.summary
    assert s.tokens_per_chunk == 4.0
    assert "bundled_chunks" in {f.code for f in result.flags}
    # 10 chunks 20 ms apart carry 40 tokens: TPOT = 9*20/39 ms, ITL (inter-chunk) = 20 ms.
    assert abs(s.tpot_ms.p50 / (9 * 20 / 39) - 1) < 0.05
    assert abs(s.itl_ms.p50 / 20 - 1) < 0.05


def test_goodput_counts_requests_meeting_slos(ref_server) -> None:
    with ref_server(ttft_s=0.05, itl_s=0.005) as srv:
        loose = bench(srv.base_url, tokens=10, n=4, slos={"ttft": 500.0, "tpot": 50.0})
        tight = bench(srv.base_url, tokens=10, n=4, slos={"ttft": 10.0})
    assert loose.summary.good_fraction == 1.0
    assert loose.summary.goodput_requests_per_s == loose.summary.requests_per_s
    assert tight.summary.good_fraction == 0.0
