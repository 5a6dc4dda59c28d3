"""Runs a benchmark: preflight the target, warm up, drive the load, measure, check, assemble.

Load shapes:
- closed loop: `concurrency` workers, each sending its next request when the last one finished,
  until `num_requests` were sent or `duration_s` passed;
- open loop: arrivals at `rate` per second with Gamma(shape=burstiness) inter-arrival times
  (1 = Poisson), optionally capped at `concurrency` in flight (the wait shows in TTFT_sched);
- sweep: closed loop at concurrency 1, 2, 4, ... until output throughput stops improving
  (< 10% over the previous step) or the SLOs break; the knee is the last step that still helped.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from datetime import datetime, timezone
from typing import Any

from llmhost import __version__
from llmhost.bench import checks
from llmhost.bench.client import StreamClient, make_session
from llmhost.bench.config import BenchConfig as BenchConfig  # re-exported: callers build one
from llmhost.bench.config import NoProgress, ProgressSink
from llmhost.bench.limits import check_workload as check_workload
from llmhost.bench.load import Load
from llmhost.bench.metrics import summarize
from llmhost.bench.models import (
    BenchResult,
    ClientHealth,
    Flag,
    RequestRecord,
    SweepPoint,
    Telemetry,
)
from llmhost.bench.preflight import NOT_FOUND_HINT, preflight, probe_slots
from llmhost.bench.sweep import other_step_flags, run_sweep
from llmhost.bench.telemetry import MetricsScraper, Monitor
from llmhost.errors import BenchError
from llmhost.net import new_event_loop, root_url


def _workload_done_flags(cfg: BenchConfig, records: list[RequestRecord], summary: Any) -> list[Flag]:
    flags = checks.length_flags(records)
    flags += checks.token_count_flags(records, served_tokenizer=cfg.tokenizer_is_served)
    if cfg.workload.dataset is None and cfg.workload.tokenizer is None:
        flags += checks.prompt_length_flags(records)
    flags += checks.streaming_flags(records, summary)
    flags += checks.sample_size_flags(summary)
    flags += checks.reconcile_llama_timings(records)
    return flags


async def run_bench(cfg: BenchConfig, progress: ProgressSink | None = None) -> BenchResult:
    sink: ProgressSink = progress or NoProgress()
    wl = cfg.workload
    concurrency = wl.concurrency or 1
    pool = max(concurrency, cfg.sweep_max_concurrency if wl.sweep else concurrency) + 2
    if wl.rate is not None and wl.concurrency is None:
        pool = 0  # open loop without a cap: as many connections as arrivals need (aiohttp: 0 = no limit)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    async with make_session(pool, api_key=cfg.api_key, read_timeout_s=cfg.read_timeout_s) as http:
        flags = await preflight(http, cfg.target, cfg.read_timeout_s)
        await probe_slots(http, cfg.target, cfg.read_timeout_s)
        t0 = time.perf_counter_ns()
        url = cfg.target.base_url.rstrip("/") + ("/chat/completions" if wl.api == "chat" else "/completions")
        source = cfg.file_workload or cfg.synthetic
        tokenizer = source.tokenizer if source is not None else None
        client = StreamClient(
            http, url, api=wl.api, t0_ns=t0, tokenizer=tokenizer, read_timeout_s=cfg.read_timeout_s
        )
        abort_after = max(8, 2 * concurrency)

        warm = 0
        if wl.warmup:
            sink.phase("warm-up", wl.warmup)
            warm_load = Load(cfg, client, sink, abort_after)
            await warm_load.closed_loop(min(concurrency, wl.warmup), wl.warmup, None)
            warm = sum(r.ok for r in warm_load.records)
            if warm_load.aborted and not warm:
                bad = warm_load.records[-1]
                if bad.error_class == "http_404":
                    raise BenchError(
                        f"every warm-up request failed: POST {url} answered {bad.error}.",
                        hint=NOT_FOUND_HINT,
                    )
                raise BenchError(
                    f"every warm-up request failed: {bad.error}.",
                    hint="Check --model, --api and the server's log; `llmhost logs NAME` for a deployment.",
                )

        scraper = MetricsScraper(http, root_url(cfg.target.base_url) + "/metrics")
        monitor = Monitor(scraper, t0)
        await monitor.start()
        load = Load(cfg, client, sink, abort_after)
        sweep: list[SweepPoint] = []
        knee: int | None = None
        health: ClientHealth | None = None
        try:
            if wl.sweep:
                knee, sweep, health = await run_sweep(cfg, load, sink, monitor)
            elif wl.rate is not None:
                sink.phase(f"rate {wl.rate:g}/s", wl.num_requests)
                await load.open_loop(
                    wl.rate, wl.burstiness, wl.num_requests, wl.duration_s, wl.concurrency, wl.seed
                )
            else:
                sink.phase(f"concurrency {concurrency}", wl.num_requests)
                await load.closed_loop(concurrency, wl.num_requests, wl.duration_s)
        except asyncio.CancelledError:
            # Ctrl-C (see run_blocking): in-flight requests are dropped, finished ones kept.
            load.aborted = INTERRUPTED
        finally:
            if health is None:
                health = monitor.client_health()
            telemetry: Telemetry = await monitor.stop()

    records = load.records
    main = [r for r in records if r.concurrency == knee] if wl.sweep and knee is not None else records
    summary = summarize(main, cfg.slos)
    flags += _workload_done_flags(cfg, main, summary)
    flags += other_step_flags(records, knee) if wl.sweep else []
    flags += checks.client_flags(health)
    flags += checks.capacity_flags(cfg.target, knee if wl.sweep else wl.concurrency)
    flags += checks.reconcile_vllm_metrics(telemetry, summary) if not wl.sweep else []
    if load.aborted:
        flags.append(Flag(code="aborted", severity="error", message=load.aborted))
    roofline = None
    if cfg.roofline is not None and summary.completed:
        context = (summary.input_tokens + summary.output_tokens // 2) // summary.completed
        roofline = cfg.roofline(summary.decode_tokens_per_s_per_stream.p50, context)
    return BenchResult(
        llmhost_version=__version__,
        started_at=started_at,
        target=cfg.target,
        workload=wl,
        hardware=cfg.hardware,
        slos=cfg.slos,
        summary=summary,
        requests=records,
        warmup_completed=warm,
        client=health,
        telemetry=telemetry,
        roofline=roofline,
        sweep=sweep,
        knee_concurrency=knee,
        flags=flags,
        incomplete=bool(load.aborted) or summary.failed > 0,
        aborted=load.aborted,
    )


INTERRUPTED = "interrupted by the user (Ctrl-C)"


def run_blocking(cfg: BenchConfig, progress: ProgressSink | None = None) -> BenchResult:
    """Run a benchmark on a fresh event loop: uvloop's where installed (`net.new_event_loop`)."""
    loop = new_event_loop()
    main = loop.create_task(run_bench(cfg, progress))

    def interrupt() -> None:
        loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C stops at once
        main.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signals: Windows, threads
        loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        try:
            result = loop.run_until_complete(main)
        except asyncio.CancelledError:  # Ctrl-C before the load started: nothing measured
            raise KeyboardInterrupt from None
        if result.client is not None:
            result.client.event_loop = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        return result
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
