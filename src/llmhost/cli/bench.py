"""`llmhost bench`: load an OpenAI-compatible endpoint and report trustworthy latency and throughput.

Thin: parse options into a `BenchCommand`, run it with `llmhost.app.bench.run_bench_command`, render.
`llmhost bench compare A.json B.json ...` compares saved results.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmhost.app.bench import ApiChoice, BenchCommand
from llmhost.cli._options import JsonOpt, text
from llmhost.errors import BenchError, ExitCode, UsageError

if TYPE_CHECKING:
    from llmhost.bench.models import BenchResult


def _compare(files: list[str], as_json: bool) -> None:
    from llmhost.bench.compare import compare_table, load_results
    from llmhost.cli._output import emit

    paths = [Path(f) for f in files]
    results = load_results(paths)
    emit(results, as_json=as_json, human=lambda console: console.print(compare_table(paths, results)))


# Options as declared once: the command's signature below is their order in --help.
ArgsArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Deployment NAME, or `compare FILE.json FILE.json ...`.",
        show_default=False,
        metavar="NAME",
    ),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", help="OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1.", callback=text),
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Served model name.", callback=text)]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="API key (better: env LLMHOST_API_KEY or OPENAI_API_KEY; never printed).",
        callback=text,
    ),
]
ApiOpt = Annotated[ApiChoice, typer.Option("--api", help="chat or completions.")]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        "-c",
        help="Requests in flight (default 1; with --rate: a cap, none by default).",
    ),
]
NumRequestsOpt = Annotated[
    int | None, typer.Option("--num-requests", "-n", help="Requests to measure (default 50).")
]
DurationOpt = Annotated[float | None, typer.Option("--duration", help="Run for this many seconds instead.")]
RateOpt = Annotated[float | None, typer.Option("--rate", help="Open loop: Poisson arrivals per second.")]
BurstinessOpt = Annotated[
    float, typer.Option("--burstiness", help="Gamma shape of arrivals (1 Poisson; <1 burstier).")
]
SweepOpt = Annotated[
    bool, typer.Option("--sweep", help="Concurrency 1,2,4,... until throughput stops improving.")
]
SweepMaxOpt = Annotated[int, typer.Option("--sweep-max", help="Highest concurrency of a sweep.")]
InputTokensOpt = Annotated[
    str, typer.Option("--input-tokens", help="Prompt tokens: 128 or a range 64:256.", callback=text)
]
OutputTokensOpt = Annotated[
    str | None,
    typer.Option("--output-tokens", help="Output tokens: 128 or a range 64:256.", callback=text),
]
SharedPrefixOpt = Annotated[
    int, typer.Option("--shared-prefix", help="Tokens every prompt shares (prefix cache on purpose).")
]
DatasetOpt = Annotated[
    str | None,  # paths as str: Typer turns '' into Path('.'), the current directory
    typer.Option(
        "--dataset",
        help="JSONL prompts: {prompt}, {messages} or ShareGPT.",
        metavar="<path>",
        callback=text,
    ),
]
TokenizerOpt = Annotated[
    str | None,
    typer.Option(
        "--tokenizer",
        help="Tokenizer (file/dir/cached repo) for exact counts.",
        callback=text,
    ),
]
WarmupOpt = Annotated[int, typer.Option("--warmup", help="Warm-up requests, not measured.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Prompt seed (default: random).")]
NoForceLengthOpt = Annotated[
    bool, typer.Option("--no-force-length", help="Do not send ignore_eos/min_tokens.")
]
SloOpt = Annotated[
    list[str] | None,
    typer.Option("--slo", help="SLO for goodput: ttft=500ms, tpot=50ms, e2e=10s.", callback=text),
]
RooflineHardwareOpt = Annotated[
    str | None,
    typer.Option(
        "--hardware",
        help="Catalog hardware for the roofline, e.g. h100-80gb.",
        callback=text,
    ),
]
ModelRefOpt = Annotated[
    str | None,
    typer.Option(
        "--model-ref",
        help="Model reference for the roofline (repo or GGUF).",
        callback=text,
    ),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait on a silent stream.")]
OutputOpt = Annotated[
    str | None,
    typer.Option("--output", "-o", help="Write the JSON result here.", metavar="<path>", callback=text),
]
CsvPathOpt = Annotated[
    str | None,
    typer.Option("--csv", help="Write per-request records as CSV.", metavar="<path>", callback=text),
]
PlotOpt = Annotated[
    str | None,
    typer.Option("--plot", help="Write latency/sweep plots (PNG).", metavar="<path>", callback=text),
]


def register(app: typer.Typer) -> None:
    """Register `bench` on the app."""
    app.command(
        "bench",
        help="Benchmark an OpenAI-compatible endpoint (TTFT, TPOT, ITL, E2E, tokens/s, goodput, MBU).\n\n"
        "Target a deployment by NAME or any server with --base-url and --model. "
        "`llmhost bench compare A.json B.json ...` compares saved results.",
    )(bench)


def bench(
    args: ArgsArg = None,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    api_key: ApiKeyOpt = None,
    api: ApiOpt = "chat",
    concurrency: ConcurrencyOpt = None,
    num_requests: NumRequestsOpt = None,
    duration: DurationOpt = None,
    rate: RateOpt = None,
    burstiness: BurstinessOpt = 1.0,
    sweep: SweepOpt = False,
    sweep_max: SweepMaxOpt = 256,
    input_tokens: InputTokensOpt = "128",
    output_tokens: OutputTokensOpt = None,
    shared_prefix: SharedPrefixOpt = 0,
    dataset: DatasetOpt = None,
    tokenizer: TokenizerOpt = None,
    warmup: WarmupOpt = 2,
    seed: SeedOpt = None,
    no_force_length: NoForceLengthOpt = False,
    slo: SloOpt = None,
    hardware: RooflineHardwareOpt = None,
    model_ref: ModelRefOpt = None,
    timeout: TimeoutOpt = 600.0,
    output: OutputOpt = None,
    csv_path: CsvPathOpt = None,
    plot: PlotOpt = None,
    as_json: JsonOpt = False,
) -> None:
    positional = list(args or [])
    if positional and positional[0] == "compare":
        _compare(positional[1:], as_json)
        return
    files = _output_files(output=output, csv=csv_path, plot=plot)
    if len(positional) > 1:
        raise UsageError(
            f"unexpected arguments: {' '.join(positional[1:])}.", hint="llmhost bench NAME [OPTIONS]"
        )
    cmd = BenchCommand(
        deployment=positional[0] if positional else None, base_url=base_url, model=model,
        api_key=api_key, api=api, concurrency=concurrency, num_requests=num_requests, duration=duration,
        rate=rate, burstiness=burstiness, sweep=sweep, sweep_max=sweep_max, input_tokens=input_tokens,
        output_tokens=output_tokens, shared_prefix=shared_prefix,
        dataset=Path(dataset) if dataset else None, tokenizer=tokenizer, warmup=warmup, seed=seed,
        force_length=not no_force_length, slo=slo or [], hardware=hardware, model_ref=model_ref,
        timeout=timeout,
    )  # fmt: skip
    _run(cmd, files, as_json)


def _run(cmd: BenchCommand, files: dict[str, Path], as_json: bool) -> None:
    """Run the benchmark with a live view on stderr, show and save the result, and exit by how it went."""
    from llmhost.app.bench import BenchInterrupted, run_bench_command
    from llmhost.bench.preflight import NOT_FOUND_HINT
    from llmhost.bench.report import LiveView, render
    from llmhost.bench.runner import INTERRUPTED
    from llmhost.cli._output import emit, report_interrupt, stderr, warn

    try:
        result = run_bench_command(cmd, progress=lambda: LiveView(stderr), warn=warn)
    except BenchInterrupted:  # Ctrl-C before the measured load (Typer would exit 130 silently)
        report_interrupt(f"{INTERRUPTED} before the measured load started: nothing was measured.")
        raise typer.Exit(ExitCode.INTERRUPTED) from None

    emit(result, as_json=as_json, human=lambda console: render(result, console))
    _save(result, files)
    if result.aborted == INTERRUPTED:
        report_interrupt(f"{INTERRUPTED}: the partial results above are marked incomplete.")
        raise typer.Exit(ExitCode.INTERRUPTED)
    if result.incomplete:
        s = result.summary
        failed = [r for r in result.requests if not r.ok and r.error]
        first = failed[0].error if failed else None
        why = f"; {result.aborted}" if result.aborted else (f" (first: {first})" if first else "")
        raise BenchError(
            f"the benchmark is incomplete: {s.failed} of {s.completed + s.failed} requests failed"
            + why
            + ". The partial results above are marked incomplete.",
            hint=NOT_FOUND_HINT
            if failed and failed[0].error_class == "http_404"
            else "See the server's log (`llmhost logs NAME` for a deployment).",
        )


def _output_files(**given: str | None) -> dict[str, Path]:
    """The files to write after the run, by option. Two options naming one file, a missing or read-only
    directory and a directory in the file's place are refused now, before the run; a write that still
    fails afterwards (full disk) is reported then, with the results already on screen."""
    from llmhost.outputs import check_file_target

    files = {f"--{option}": Path(value).expanduser() for option, value in given.items() if value is not None}
    seen: dict[Path, str] = {}
    for option, path in files.items():
        check_file_target(option, path)
        key = path.resolve()
        if key in seen:
            raise UsageError(
                f"{seen[key]} and {option} both name {path}.", hint="Pass a different file to each."
            )
        seen[key] = option
    return files


def _save(result: BenchResult, files: dict[str, Path]) -> None:
    from llmhost.bench.report import write_csv, write_plot
    from llmhost.cli._output import info
    from llmhost.outputs import write_atomically

    writers = {
        "--output": lambda tmp: tmp.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8"),
        "--csv": lambda tmp: write_csv(result, tmp),
        "--plot": lambda tmp: write_plot(result, tmp),
    }
    for option, path in files.items():
        write_atomically(option, path, writers[option])
        info(f"wrote {path}")
