"""The sweep policy: concurrency 1, 2, 4, ... until throughput stops improving by SWEEP_MIN_GAIN or the SLOs
break; the knee is the last step that still helped."""

from __future__ import annotations

from llmhost.bench import checks
from llmhost.bench.config import BenchConfig, ProgressSink
from llmhost.bench.load import Load
from llmhost.bench.metrics import meets_slos, summarize
from llmhost.bench.models import (
    ClientHealth,
    Flag,
    RequestRecord,
    SweepPoint,
)
from llmhost.bench.telemetry import Monitor

SWEEP_MIN_GAIN = 0.10
SWEEP_GOOD_FRACTION = 0.9


async def run_sweep(
    cfg: BenchConfig, load: Load, sink: ProgressSink, monitor: Monitor
) -> tuple[int | None, list[SweepPoint], ClientHealth]:
    wl = cfg.workload
    points: list[SweepPoint] = []
    knee: int | None = None
    best = 0.0
    worst_health: ClientHealth | None = None
    c = 1
    while c <= cfg.sweep_max_concurrency and not load.stop.is_set():
        n = max(wl.num_requests or 0, 2 * c)
        sink.phase(f"sweep: concurrency {c}", n)
        before = len(load.records)
        monitor.begin_client_window()
        await load.closed_loop(c, n, wl.duration_s)
        health = monitor.client_health()
        if worst_health is None or health.cpu_percent > worst_health.cpu_percent:
            worst_health = health
        step = load.records[before:]
        summary = summarize(step, cfg.slos)
        slo_ok = None
        if cfg.slos:
            good = sum(meets_slos(r, cfg.slos) for r in step)
            slo_ok = bool(step) and good / len(step) >= SWEEP_GOOD_FRACTION
        points.append(SweepPoint(concurrency=c, summary=summary, slo_ok=slo_ok))
        gain = summary.output_tokens_per_s / best - 1 if best > 0 else float("inf")
        if slo_ok is False or summary.failed:
            break
        if gain < SWEEP_MIN_GAIN:
            break
        knee = c
        best = summary.output_tokens_per_s
        c *= 2
    if worst_health is None:
        worst_health = monitor.client_health()
    return knee, points, worst_health


def other_step_flags(records: list[RequestRecord], knee: int | None) -> list[Flag]:
    """Trust checks for the sweep steps other than the knee: the summary shows only the knee, but the
    sweep table and plot show every step, and a buffered or short-changed step there misleads as much."""
    flags: list[Flag] = []
    if knee is None:  # the summary already covers every record
        return flags
    for level in sorted({r.concurrency for r in records if r.concurrency is not None} - {knee}):
        step = [r for r in records if r.concurrency == level]
        found = checks.length_flags(step) + checks.streaming_flags(step, summarize(step, {}))
        flags += [
            Flag(code=f.code, severity=f.severity, message=f"sweep step at concurrency {level}: {f.message}")
            for f in found
            if f.code != "bundled_chunks"
        ]
    return flags
