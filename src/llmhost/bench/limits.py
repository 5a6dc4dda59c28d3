"""Caps on what one benchmark may ask for, checked before anything is sent."""

from __future__ import annotations

import math

from llmhost.bench.models import (
    Workload,
)
from llmhost.bench.workload import MAX_TOKENS
from llmhost.errors import UsageError

# Caps on what one benchmark may ask for, far above any real run, so that a slip (three zeros too many,
# `nan`) is refused up front instead of exhausting memory or never ending.
MAX_REQUESTS = 1_000_000  # each request's record (chunk times too) stays in memory: about 1 GiB here
MAX_CONCURRENCY = 10_000  # streams in flight: 40x the default sweep's top, beyond any server's slots
MAX_DURATION_S = 7 * 24 * 3600  # a week


def _check_number(option: str, value: float | None, *, least: float, most: float, unit: str) -> None:
    """`value`, when given, is finite and in [least, most]; least=0 for a float means "more than 0"."""
    if value is None:
        return
    positive = least == 0 and isinstance(value, float)
    if math.isfinite(value) and (value > 0 if positive else value >= least) and value <= most:
        return
    floor = "more than 0" if positive else f"{least:g}"
    raise UsageError(
        f"{option} {value} is out of range.", hint=f"Pass {option} from {floor} to {most:g} {unit}."
    )


def check_workload(wl: Workload) -> None:
    if wl.num_requests is None and wl.duration_s is None and not wl.sweep:
        raise UsageError("say how long to run.", hint="Pass --num-requests N or --duration SECONDS.")
    _check_number("--num-requests", wl.num_requests, least=1, most=MAX_REQUESTS, unit="requests")
    _check_number("--warmup", wl.warmup, least=0, most=MAX_REQUESTS, unit="requests (0: no warm-up)")
    _check_number("--concurrency", wl.concurrency, least=1, most=MAX_CONCURRENCY, unit="requests in flight")
    _check_number("--duration", wl.duration_s, least=0, most=MAX_DURATION_S, unit="seconds")
    _check_number("--rate", wl.rate, least=0, most=1e6, unit="requests per second")
    _check_number("--burstiness", wl.burstiness, least=0, most=1e3, unit="(1 = Poisson, < 1 burstier)")
    _check_number("--shared-prefix", wl.shared_prefix_tokens, least=0, most=MAX_TOKENS, unit="tokens")
    if wl.dataset is None and 0 < wl.shared_prefix_tokens >= wl.input_tokens[0]:
        raise UsageError(
            f"--shared-prefix {wl.shared_prefix_tokens} leaves no unique part of a prompt of "
            f"{wl.input_tokens[0]} tokens.",
            hint="Make --shared-prefix smaller than --input-tokens (the low end of a range).",
        )
