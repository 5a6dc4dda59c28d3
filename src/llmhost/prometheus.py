"""Prometheus text from an engine's `/metrics`, read as untrusted input: the one parser llmhost has.

Used by the supervisor (requests served, tokens generated, the completion probe's progress check) and
by `bench` (server-side telemetry before, during and after a run). The page may come from a server the
user does not control, so garbage is skipped, never raised, and what one page can make llmhost hold is
bounded by MAX_METRIC_NAMES.
"""

from __future__ import annotations

import math

ENGINE_PREFIXES = ("vllm:", "llamacpp:")
# vLLM's page has some hundred `vllm:` names; 2,000 is far above it.
MAX_METRIC_NAMES = 2000


def parse_prometheus(text: str, *, prefixes: tuple[str, ...] = ENGINE_PREFIXES) -> dict[str, float]:
    """Sum every sample of the families named by `prefixes` over their label sets (histogram buckets
    and `_created` timestamps left out). Garbage is skipped: lines that do not parse, values that are not
    finite (NaN, +Inf, or a sum that overflows), names past the first MAX_METRIC_NAMES."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#" or not line.startswith(prefixes):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name, rest = line[:brace], line[line.rfind("}") + 1 :]
        else:
            name, rest = line[:space], line[space:]
        if "_bucket" in name or name.endswith("_created"):  # `_created`: a creation time, not a measure
            continue
        try:
            value = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
        if name not in values and len(values) >= MAX_METRIC_NAMES:
            continue
        values[name] = values.get(name, 0.0) + value
    return {name: value for name, value in values.items() if math.isfinite(value)}
