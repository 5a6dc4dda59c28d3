"""Aggregates over request records. Definitions are in docs/bench.md; every one is recomputable
from `BenchResult.requests`.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from llmhost.bench.models import RequestRecord, Stat, Summary
from llmhost.errors import UsageError

SLO_KEYS = ("ttft", "tpot", "e2e", "itl")


def stat(values: Iterable[float | None]) -> Stat:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return Stat()
    p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99])
    return Stat(
        n=int(arr.size),
        mean=float(arr.mean()),
        p50=float(p50),
        p90=float(p90),
        p95=float(p95),
        p99=float(p99),
        min=float(arr.min()),
        max=float(arr.max()),
    )


def parse_slos(items: Sequence[str]) -> dict[str, float]:
    """`["ttft=500ms", "tpot=50"]` -> {"ttft": 500.0, "tpot": 50.0} (ms; `s` suffix allowed)."""
    slos: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        value = value.strip().lower()
        scale = 1.0
        if value.endswith("ms"):
            value = value[:-2]
        elif value.endswith("s"):
            value, scale = value[:-1], 1000.0
        try:
            number = float(value) * scale
        except ValueError:
            number = -1.0
        if not sep or key not in SLO_KEYS or not 0 < number < math.inf:  # nan compares false
            raise UsageError(
                f"bad SLO {item!r}.",
                hint="Write --slo ttft=500ms, --slo tpot=50ms, --slo e2e=10s or --slo itl=100ms.",
            )
        slos[key] = number
    return slos


def itl_gaps(record: RequestRecord) -> list[float]:
    c = record.chunk_ms
    return [b - a for a, b in itertools.pairwise(c)]


def meets_slos(record: RequestRecord, slos: dict[str, float]) -> bool:
    if not record.ok:
        return False
    checks = {"ttft": record.ttft_ms, "tpot": record.tpot_ms, "e2e": record.e2e_ms}
    for key, limit in slos.items():
        if key == "itl":
            gaps = itl_gaps(record)
            if gaps and max(gaps) > limit:
                return False
            continue
        value = checks[key]
        if value is not None and value > limit:
            return False
    return True


def summarize(records: Sequence[RequestRecord], slos: dict[str, float] | None = None) -> Summary:
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    starts = [r.sent_ms for r in records]
    ends = [
        r.decode_end_ms if r.ok and r.decode_end_ms is not None else (r.ended_ms or r.sent_ms)
        for r in records
    ]
    duration_s = (max(ends) - min(starts)) / 1000 if records else 0.0
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens if r.prompt_tokens is not None else r.prompt_tokens_requested for r in ok)
    chunks = sum(r.token_chunks or r.content_chunks for r in ok)
    decode_rates = [r.decode_tokens_per_s for r in ok]
    per_s = (lambda x: x / duration_s) if duration_s > 0 else (lambda x: 0.0)
    goodput = good_fraction = None
    if slos:
        good = sum(meets_slos(r, slos) for r in records)
        goodput = per_s(good)
        good_fraction = good / len(records) if records else None
    return Summary(
        completed=len(ok),
        failed=len(failed),
        errors=dict(Counter(r.error_class or "other" for r in failed)),
        duration_s=duration_s,
        ttft_ms=stat(r.ttft_ms for r in ok),
        ttft_sched_ms=stat(r.ttft_sched_ms for r in ok),
        tpot_ms=stat(r.tpot_ms for r in ok),
        itl_ms=stat(g for r in ok for g in itl_gaps(r)),
        e2e_ms=stat(r.e2e_ms for r in ok),
        tokens_per_chunk=out_tokens / chunks if chunks else None,
        input_tokens=in_tokens,
        output_tokens=out_tokens,
        output_tokens_per_s=per_s(out_tokens),
        total_tokens_per_s=per_s(out_tokens + in_tokens),
        requests_per_s=per_s(len(ok)),
        decode_tokens_per_s_per_stream=stat(decode_rates),
        goodput_requests_per_s=goodput,
        good_fraction=good_fraction,
    )
