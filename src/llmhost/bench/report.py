"""Rendering a `BenchResult`: summary table, live view, CSV of per-request records, plots."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from llmhost.bench.models import BenchResult, RequestRecord, Stat
from llmhost.errors import UsageError
from llmhost.text import literal, printable


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def summary_table(result: BenchResult) -> Table:
    s = result.summary
    t = result.target
    # The model name and URL are the user's or the server's words: literal text.
    table = Table(title=literal(f"llmhost bench: {t.model} @ {t.base_url} ({t.api})"), title_justify="left")
    table.add_column("metric")
    for col in ("mean", "p50", "p90", "p95", "p99"):
        table.add_column(col, justify="right")
    rows: list[tuple[str, Stat, int]] = [
        ("TTFT ms", s.ttft_ms, 1),
        ("TTFT from schedule ms", s.ttft_sched_ms, 1),
        ("TPOT ms", s.tpot_ms, 2),
        ("ITL ms", s.itl_ms, 2),
        ("E2E ms", s.e2e_ms, 1),
        ("decode tok/s per stream", s.decode_tokens_per_s_per_stream, 1),
    ]
    for name, st, d in rows:
        table.add_row(name, *(_f(getattr(st, k), d) for k in ("mean", "p50", "p90", "p95", "p99")))
    return table


def totals_table(result: BenchResult) -> Table:
    s = result.summary
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    errors = ", ".join(f"{k}: {v}" for k, v in s.errors.items())
    rows = [
        ("requests completed / failed", f"{s.completed} / {s.failed}" + (f" ({errors})" if errors else "")),
        ("duration s", _f(s.duration_s, 2)),
        ("output tokens/s", _f(s.output_tokens_per_s)),
        ("total tokens/s", _f(s.total_tokens_per_s)),
        ("requests/s", _f(s.requests_per_s, 2)),
        ("tokens per chunk", _f(s.tokens_per_chunk, 2)),
    ]
    if s.goodput_requests_per_s is not None:
        slos = ", ".join(f"{k}<={v:g}ms" for k, v in result.slos.items())
        rows.append(
            (f"goodput req/s ({slos})", f"{s.goodput_requests_per_s:.2f} ({(s.good_fraction or 0):.0%} good)")
        )
    if result.client is not None:
        c = result.client
        bound = " (client-bound)" if c.client_bound else ""
        lag = f"{_f(c.loop_lag_ms.p90, 1)} / {_f(c.loop_lag_ms.p99, 1)} ms"
        rows.append(("client CPU / loop lag p90, p99", f"{c.cpu_percent:.0f}% / {lag}{bound}"))
    if result.roofline is not None:
        r = result.roofline
        mbu = f"{r.mbu:.0%}" if r.mbu is not None else "-"
        rows.append(
            (
                "decode roofline (batch 1)",
                f"{r.decode_limit_tokens_per_s:,.1f} tok/s on {r.hardware}; measured "
                f"{_f(r.measured_tokens_per_s_per_stream)} -> MBU {mbu}",
            )
        )
    if result.knee_concurrency is not None:
        rows.append(("sweep knee (concurrency)", str(result.knee_concurrency)))
    for name, value in rows:
        table.add_row(literal(name), literal(value))  # hardware names come from drivers and catalogs
    return table


def sweep_table(result: BenchResult) -> Table:
    table = Table(title="sweep", title_justify="left")
    for col in ("concurrency", "out tok/s", "req/s", "TTFT p50", "TPOT p50", "E2E p90", "SLO ok"):
        table.add_column(col, justify="right")
    for p in result.sweep:
        s = p.summary
        mark = "*" if p.concurrency == result.knee_concurrency else ""
        table.add_row(
            f"{p.concurrency}{mark}",
            _f(s.output_tokens_per_s),
            _f(s.requests_per_s, 2),
            _f(s.ttft_ms.p50),
            _f(s.tpot_ms.p50, 2),
            _f(s.e2e_ms.p90),
            "-" if p.slo_ok is None else ("yes" if p.slo_ok else "no"),
        )
    return table


def render(result: BenchResult, console: Console) -> None:
    console.print(summary_table(result))
    console.print(totals_table(result))
    if result.sweep:
        console.print(sweep_table(result))
    for flag in result.flags:
        color = {"info": "cyan", "warning": "yellow", "error": "red"}[flag.severity]
        # Messages quote the server (its errors, finish reasons): literal, control characters escaped.
        console.print(Text.assemble((f"{flag.severity} [{flag.code}] ", color), literal(flag.message)))


class LiveView:
    """Progress, current throughput and errors on stderr while the run goes (a `ProgressSink`)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("starting", total=None)
        self.status = Text("")
        self.live = Live(
            Group(self.progress, self.status), console=console, refresh_per_second=2, transient=True
        )
        self.tokens: list[tuple[float, int]] = []
        self.phase_start = time.monotonic()
        self.completed = self.failed = 0
        self.last_error: str | None = None

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def phase(self, name: str, total: int | None) -> None:
        self.progress.reset(self.task, description=name, total=total, completed=0)
        self.completed = self.failed = 0
        self.tokens.clear()
        self.phase_start = time.monotonic()

    def record(self, record: RequestRecord) -> None:
        self.progress.advance(self.task)
        now = time.monotonic()
        if record.ok:
            self.completed += 1
            self.tokens.append((now, record.output_tokens))
        else:
            self.failed += 1
            self.last_error = printable(record.error) if record.error else None
        self.tokens = [(t, n) for t, n in self.tokens if now - t <= 5.0]
        window = min(5.0, now - self.phase_start)  # a phase younger than 5 s: over the time it ran
        rate = sum(n for _, n in self.tokens) / window if window > 0 else 0.0
        line = f"completed {self.completed}  failed {self.failed}  output ~{rate:,.0f} tok/s"
        line += f" (last {round(window, 1):g} s)"
        if self.last_error:
            line += f"\nlast error: {self.last_error}"
        self.status.plain = line


_CSV_FIELDS = [
    "index", "concurrency", "ok", "error_class", "error", "scheduled_ms", "sent_ms", "first_chunk_ms",
    "first_token_ms", "last_token_ms", "ended_ms", "ttft_ms", "ttft_sched_ms", "tpot_ms", "e2e_ms",
    "prompt_tokens_requested", "prompt_tokens", "output_tokens_requested", "output_tokens",
    "output_tokens_source", "usage_tokens", "tokenizer_tokens", "content_chunks", "finish_reason",
    "length_honoured", "role_chunk_first",
]  # fmt: skip


def write_csv(result: BenchResult, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        for r in result.requests:
            row = r.model_dump(exclude={"chunk_ms", "server_timings", "last_chunk_ms"})
            row.update(ttft_ms=r.ttft_ms, ttft_sched_ms=r.ttft_sched_ms, tpot_ms=r.tpot_ms, e2e_ms=r.e2e_ms)
            writer.writerow({k: row.get(k) for k in _CSV_FIELDS})


def sweep_curve(result: BenchResult) -> list[tuple[int, float, float]]:
    """(concurrency, output tokens/s, TPOT p50 ms) per sweep step. A step without a TPOT (every stream
    arrived in one read: nothing to time) is left out rather than drawn at 0 ms, the best latency."""
    return [
        (p.concurrency, p.summary.output_tokens_per_s, p.summary.tpot_ms.p50)
        for p in result.sweep
        if p.summary.tpot_ms.p50 is not None
    ]


def plot_requests(result: BenchResult) -> list[RequestRecord]:
    """The completed requests the histograms show: those the summary covers (a sweep's knee step)."""
    ok = [r for r in result.requests if r.ok]
    if result.sweep and result.knee_concurrency is not None:
        return [r for r in ok if r.concurrency == result.knee_concurrency]
    return ok


def write_plot(result: BenchResult, path: Path) -> None:
    """Latency distributions; with a sweep, throughput against latency per concurrency step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise UsageError(
            "--plot needs matplotlib, which is not installed.",
            hint="Install it: pip install matplotlib (the plot extra of llmhost).",
        ) from exc
    ok = plot_requests(result)
    panels = 4 if result.sweep else 3
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    for ax, (name, values) in zip(
        axes,
        [
            ("TTFT (ms)", [r.ttft_ms for r in ok]),
            ("TPOT (ms)", [r.tpot_ms for r in ok]),
            ("E2E latency (ms)", [r.e2e_ms for r in ok]),
        ],
        strict=False,
    ):
        data = [v for v in values if v is not None]
        ax.hist(data, bins=min(50, max(5, len(data) // 2)) if data else 5, color="#4477aa")
        ax.set_xlabel(name)
        ax.set_ylabel("requests")
        if result.sweep and result.knee_concurrency is not None:
            ax.set_title(f"at the knee, concurrency {result.knee_concurrency}")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no "1.25 requests" ticks
    if result.sweep:
        ax = axes[3]
        curve = sweep_curve(result)
        ax.plot([x for _, x, _ in curve], [y for _, _, y in curve], marker="o")
        for level, x, y in curve:
            ax.annotate(f"c={level}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel("TPOT p50 (ms)")
        ax.set_title("throughput vs latency")
    fig.suptitle(f"{result.target.model} @ {result.target.base_url}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
