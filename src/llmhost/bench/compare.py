"""`llmhost bench compare A.json B.json ...`: the same figures side by side, relative to the first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError
from rich.table import Table

from llmhost.bench.models import BenchResult, Summary
from llmhost.errors import UsageError

# (label, getter, higher_is_better)
ROWS: list[tuple[str, Callable[[Summary], float | None], bool]] = [
    ("output tok/s", lambda s: s.output_tokens_per_s, True),
    ("total tok/s", lambda s: s.total_tokens_per_s, True),
    ("requests/s", lambda s: s.requests_per_s, True),
    ("TTFT p50 ms", lambda s: s.ttft_ms.p50, False),
    ("TTFT p99 ms", lambda s: s.ttft_ms.p99, False),
    ("TPOT p50 ms", lambda s: s.tpot_ms.p50, False),
    ("TPOT p99 ms", lambda s: s.tpot_ms.p99, False),
    ("ITL p50 ms", lambda s: s.itl_ms.p50, False),
    ("E2E p50 ms", lambda s: s.e2e_ms.p50, False),
    ("E2E p99 ms", lambda s: s.e2e_ms.p99, False),
    ("completed", lambda s: float(s.completed), True),
    ("failed", lambda s: float(s.failed), False),
]


def load_results(paths: list[Path]) -> list[BenchResult]:
    if len(paths) < 2:
        raise UsageError(
            "compare needs at least two result files.", hint="llmhost bench compare A.json B.json"
        )
    results = []
    for path in paths:
        try:
            results.append(BenchResult.model_validate_json(path.read_bytes()))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}.", hint="Check the path.") from exc
        except ValidationError as exc:
            raise UsageError(
                f"{path} is not a llmhost bench result ({exc.error_count()} problems).",
                hint="Write one with `llmhost bench ... --output FILE.json`.",
            ) from exc
    return results


def relative(base: float | None, value: float | None) -> float | None:
    if base is None or value is None or base == 0:
        return None
    return value / base - 1


def compare_table(paths: list[Path], results: list[BenchResult]) -> Table:
    table = Table(title=f"relative to {paths[0].name}", title_justify="left")
    table.add_column("metric")
    for path in paths:
        table.add_column(path.name, justify="right")
    for label, get, higher_better in ROWS:
        base = get(results[0].summary)
        cells = ["-" if base is None else f"{base:,.2f}"]
        for result in results[1:]:
            value = get(result.summary)
            rel = relative(base, value)
            if value is None:
                cells.append("-")
                continue
            if rel is None:
                cells.append(f"{value:,.2f}")
                continue
            better = (rel > 0) == higher_better
            color = "green" if better and abs(rel) >= 0.02 else ("red" if abs(rel) >= 0.02 else "white")
            cells.append(f"{value:,.2f} [{color}]({rel:+.1%})[/{color}]")
        table.add_row(label, *cells)
    return table
