"""`llmhost bench compare A.json B.json ...`: the same figures side by side, relative to the first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from llmhost.bench.models import BenchResult, Summary, Workload
from llmhost.errors import UsageError
from llmhost.inputs import read_regular_file
from llmhost.text import literal

# A saved result holds one record per request: a million requests (bench's cap) is well under 1 GiB.
MAX_RESULT_BYTES = 2**30

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
    hint = "Write one with `llmhost bench ... --output FILE.json`."
    for path in paths:
        data = read_regular_file(path, what="result file", limit=MAX_RESULT_BYTES)
        try:
            results.append(BenchResult.model_validate_json(data))
        except ValidationError as exc:
            raise UsageError(
                f"{path} is not a llmhost bench result ({exc.error_count()} problems).", hint=hint
            ) from exc
    return results


def relative(base: float | None, value: float | None) -> float | None:
    if base is None or value is None or base == 0:
        return None
    return value / base - 1


def describe(result: BenchResult) -> str:
    """What was benched, in a few words: deployment or model, engine, load."""
    t, w = result.target, result.workload
    who = t.deployment or t.model
    load = f"c={w.concurrency}" if w.concurrency else (f"rate={w.rate:g}/s" if w.rate else "")
    if w.sweep:
        load = "sweep"
    return " · ".join(x for x in (who, t.engine or "", load) if x)


def _lengths(w: Workload) -> str:
    def span(r: tuple[int, int]) -> str:
        return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"

    return f"in {span(w.input_tokens)} / out {span(w.output_tokens)}"


def workload_differences(results: list[BenchResult]) -> list[str]:
    """What differs between the runs' workloads besides the load: figures of different workloads (other
    lengths, another API, prefix sharing, forced lengths) are not comparable as a speed-up."""
    checks: list[tuple[str, Callable[[Workload], object]]] = [
        ("API", lambda w: w.api),
        ("token lengths", _lengths),
        ("shared prefix", lambda w: w.shared_prefix_tokens),
        ("dataset", lambda w: w.dataset),
        ("forced output length", lambda w: w.force_length),
    ]
    notes = []
    for name, get in checks:
        values = [str(get(r.workload)) for r in results]
        if len(set(values)) > 1:
            notes.append(f"{name} differ: {', '.join(values)}")
    return notes


def run_warnings(paths: list[Path], results: list[BenchResult]) -> list[str]:
    """What each run was warned about when it was measured (incomplete, warning and error flags)."""
    notes = []
    for path, result in zip(paths, results, strict=True):
        marks = ["incomplete"] if result.incomplete else []
        marks += [f.code for f in result.flags if f.severity != "info" and f.code not in marks]
        if marks:
            notes.append(f"{path.name}: {', '.join(dict.fromkeys(marks))}")
    return notes


def compare_table(paths: list[Path], results: list[BenchResult]) -> Table:
    differences = workload_differences(results)
    caption = "not like for like: " + "; ".join(differences) if differences else "same workload in every run"
    if warned := run_warnings(paths, results):
        caption += "\nflagged when measured (see each file's flags): " + "; ".join(warned)
    # File names and what the files say (models, datasets, flags) are literal text, never markup.
    table = Table(
        title=literal(f"relative to {paths[0].name}"),
        title_justify="left",
        caption=literal(caption),
        caption_justify="left",
    )
    table.add_column("metric")
    for path, result in zip(paths, results, strict=True):
        table.add_column(literal(f"{path.name}\n{describe(result)}"), justify="right")
    for label, get, higher_better in ROWS:
        base = get(results[0].summary)
        cells: list[str | Text] = ["-" if base is None else f"{base:,.2f}"]
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
            cells.append(Text.assemble(f"{value:,.2f} ", (f"({rel:+.1%})", color)))
        table.add_row(label, *cells)
    return table
