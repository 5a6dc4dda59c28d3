"""The one boundary search the planner and the estimators use (largest context, concurrency, offload).

Every "largest n that still fits" in llmhost is a monotone predicate, true up to some n and false after
it; this narrows [lo, hi) around that boundary. `aligned` keeps every probe on a multiple of `step`
(vLLM's own max-model-len search works in multiples of 16, so the answer is one too).
"""

from __future__ import annotations

from collections.abc import Callable


def last_true(check: Callable[[int], bool], lo: int, hi: int, *, step: int = 1, aligned: bool = False) -> int:
    """Given `check(lo)` true and `check(hi)` false, the largest probed value found true once `hi - lo`
    is at most `step` (with `step=1`, the exact boundary)."""
    while hi - lo > step:
        mid = (lo + hi) // 2
        if aligned:
            mid = mid // step * step
            if mid <= lo:
                break
        lo, hi = (mid, hi) if check(mid) else (lo, mid)
    return lo
