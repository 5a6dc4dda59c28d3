"""Small helpers and constants shared by the planner's modules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmhost.bisection import last_true
from llmhost.estimate import overheads as oh
from llmhost.estimate.roofline import active_weight_fraction, seconds_per_token
from llmhost.estimate.weights import WeightsLayout
from llmhost.models.spec import ModelSpec
from llmhost.plan.models import MemoryBreakdown

GiB = oh.GiB
DEFAULT_CONTEXT_CAP = 32768
DEFAULT_CONTEXT_FLOOR = 8192
SPEED_CONTEXT = 4096
MAX_PLANNED_CONCURRENCY = 1024
QUALITY_FLOOR = 60


def fmt_gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


@dataclass(frozen=True)
class Target:
    context: int
    floor: int
    explicit: bool
    concurrency: int


def tokens_per_s(reads: list[tuple[int, float | None]], *, parallel: bool) -> float | None:
    sec = seconds_per_token(reads, parallel=parallel)
    return None if sec is None else round(1.0 / sec, 1)


def sum_breakdowns(parts: list[MemoryBreakdown]) -> MemoryBreakdown:
    return MemoryBreakdown(
        weights_bytes=sum(p.weights_bytes for p in parts),
        kv_cache_bytes=sum(p.kv_cache_bytes for p in parts),
        compute_bytes=sum(p.compute_bytes for p in parts),
        overhead_bytes=sum(p.overhead_bytes for p in parts),
        total_bytes=sum(p.total_bytes for p in parts),
    )


def source_of(spec: ModelSpec) -> str:
    return spec.repo_id or spec.ref


def weight_read_bytes(spec: ModelSpec, layout: WeightsLayout) -> int:
    frac = active_weight_fraction(spec)
    body = sum(layout.layer_bytes)
    output = layout.output_bytes if layout.output_bytes > 0 else layout.embedding_bytes
    return round(body * frac) + output + layout.other_bytes


def max_length(check: Callable[[int], bool], limit: int) -> int:
    """Largest n (multiple of 16, <= limit) with check(n), by bisection; 0 if none."""
    if not check(16):
        return 0
    if check(limit):
        return limit
    return last_true(check, 16, limit, step=16, aligned=True)


def max_concurrency_for(check: Callable[[int], bool]) -> int:
    """Largest number of sequences (<= MAX_PLANNED_CONCURRENCY) with check(n); 0 if not even one."""
    if not check(1):
        return 0
    lo, hi = 1, 2
    while hi <= MAX_PLANNED_CONCURRENCY and check(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, MAX_PLANNED_CONCURRENCY + 1)  # the cap + 1 counts as not fitting; never probed
    return last_true(check, lo, hi)
