"""`llmhost bench`: load an OpenAI-compatible endpoint and report trustworthy latency and throughput.

Thin: parse options, build a `BenchConfig`, run `llmhost.bench.runner.run_bench`, render.
`llmhost bench compare A.json B.json ...` compares saved results.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from llmhost.cli._options import JsonOpt, text
from llmhost.errors import BenchError, ExitCode, UsageError

if TYPE_CHECKING:
    from llmhost.bench.models import BenchResult, Target

ApiChoice = Literal["chat", "completions"]


def _compare(files: list[str], as_json: bool) -> None:
    from llmhost.bench.compare import compare_table, load_results
    from llmhost.cli._output import emit

    paths = [Path(f) for f in files]
    results = load_results(paths)
    emit(results, as_json=as_json, human=lambda console: console.print(compare_table(paths, results)))


def _deployment_target(name: str, api: ApiChoice) -> tuple[Target, str | None, str]:
    """URL, served model, slots and key variable of a llmhost deployment."""
    from llmhost.bench.models import Target

    try:
        from llmhost.supervise.state import load_deployment
    except ImportError as exc:  # the supervisor is not part of this build
        raise UsageError(
            f"cannot look up deployment {name!r}: this llmhost has no supervisor state.",
            hint="Pass --base-url and --model instead.",
        ) from exc
    dep = load_deployment(name)
    if dep.state in ("failed", "stopped", "dead"):
        raise BenchError(
            f"deployment {name!r} is {dep.state}.",
            hint=f"Start it with `llmhost serve` or see `llmhost logs {name}`.",
        )
    if dep.state in ("starting", "restarting", "stopping"):
        still = "still starting" if dep.state == "starting" else dep.state
        raise BenchError(
            f"deployment {name!r} is {still}, not ready to serve.",
            hint=f"Wait until `llmhost ps` shows it ready (follow with `llmhost logs {name} -f`).",
        )
    slots, source = None, None
    argv = dep.launch.argv
    for flag in ("--max-num-seqs", "--parallel", "-np"):
        if flag in argv and argv.index(flag) + 1 < len(argv):
            with contextlib.suppress(ValueError):
                slots, source = int(argv[argv.index(flag) + 1]), f"deployment {name} {flag}"
    target = Target(
        base_url=dep.base_url,
        model=dep.served_model_name,
        api=api,
        deployment=name,
        engine=dep.engine,
        server_slots=slots,
        server_slots_source=source,
    )
    return target, dep.launch.api_key_env, dep.model


def _has_own_tokenizer(model: Path) -> bool:
    """A local HF folder with a tokenizer.json, or a local GGUF when llama-cpp-python can read it."""
    if model.suffix.lower() == ".gguf" and model.is_file():
        from llmhost.bench.workload import gguf_tokenizer_available

        return gguf_tokenizer_available()
    return (model / "tokenizer.json").is_file()


def register(app: typer.Typer) -> None:
    """Register `bench` on the app."""

    @app.command(
        "bench",
        help="Benchmark an OpenAI-compatible endpoint (TTFT, TPOT, ITL, E2E, tokens/s, goodput, MBU).\n\n"
        "Target a deployment by NAME or any server with --base-url and --model. "
        "`llmhost bench compare A.json B.json ...` compares saved results.",
    )
    def bench(
        args: Annotated[
            list[str] | None,
            typer.Argument(
                help="Deployment NAME, or `compare FILE.json FILE.json ...`.",
                show_default=False,
                metavar="NAME",
            ),
        ] = None,
        base_url: Annotated[
            str | None,
            typer.Option(
                "--base-url", help="OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1.", callback=text
            ),
        ] = None,
        model: Annotated[
            str | None, typer.Option("--model", help="Served model name.", callback=text)
        ] = None,
        api_key: Annotated[
            str | None,
            typer.Option(
                "--api-key",
                help="API key (better: env LLMHOST_API_KEY or OPENAI_API_KEY; never printed).",
                callback=text,
            ),
        ] = None,
        api: Annotated[ApiChoice, typer.Option("--api", help="chat or completions.")] = "chat",
        concurrency: Annotated[
            int | None,
            typer.Option(
                "--concurrency",
                "-c",
                help="Requests in flight (default 1; with --rate: a cap, none by default).",
            ),
        ] = None,
        num_requests: Annotated[
            int | None, typer.Option("--num-requests", "-n", help="Requests to measure (default 50).")
        ] = None,
        duration: Annotated[
            float | None, typer.Option("--duration", help="Run for this many seconds instead.")
        ] = None,
        rate: Annotated[
            float | None, typer.Option("--rate", help="Open loop: Poisson arrivals per second.")
        ] = None,
        burstiness: Annotated[
            float, typer.Option("--burstiness", help="Gamma shape of arrivals (1 Poisson; <1 burstier).")
        ] = 1.0,
        sweep: Annotated[
            bool, typer.Option("--sweep", help="Concurrency 1,2,4,... until throughput stops improving.")
        ] = False,
        sweep_max: Annotated[int, typer.Option("--sweep-max", help="Highest concurrency of a sweep.")] = 256,
        input_tokens: Annotated[
            str, typer.Option("--input-tokens", help="Prompt tokens: 128 or a range 64:256.", callback=text)
        ] = "128",
        output_tokens: Annotated[
            str | None,
            typer.Option("--output-tokens", help="Output tokens: 128 or a range 64:256.", callback=text),
        ] = None,
        shared_prefix: Annotated[
            int, typer.Option("--shared-prefix", help="Tokens every prompt shares (prefix cache on purpose).")
        ] = 0,
        dataset: Annotated[
            str | None,  # paths as str: Typer turns '' into Path('.'), the current directory
            typer.Option(
                "--dataset",
                help="JSONL prompts: {prompt}, {messages} or ShareGPT.",
                metavar="<path>",
                callback=text,
            ),
        ] = None,
        tokenizer: Annotated[
            str | None,
            typer.Option(
                "--tokenizer",
                help="Tokenizer (file/dir/cached repo) for exact counts.",
                callback=text,
            ),
        ] = None,
        warmup: Annotated[int, typer.Option("--warmup", help="Warm-up requests, not measured.")] = 2,
        seed: Annotated[int | None, typer.Option("--seed", help="Prompt seed (default: random).")] = None,
        no_force_length: Annotated[
            bool, typer.Option("--no-force-length", help="Do not send ignore_eos/min_tokens.")
        ] = False,
        slo: Annotated[
            list[str] | None,
            typer.Option("--slo", help="SLO for goodput: ttft=500ms, tpot=50ms, e2e=10s.", callback=text),
        ] = None,
        hardware: Annotated[
            str | None,
            typer.Option(
                "--hardware",
                help="Catalog hardware for the roofline, e.g. h100-80gb.",
                callback=text,
            ),
        ] = None,
        model_ref: Annotated[
            str | None,
            typer.Option(
                "--model-ref",
                help="Model reference for the roofline (repo or GGUF).",
                callback=text,
            ),
        ] = None,
        timeout: Annotated[
            float, typer.Option("--timeout", help="Seconds to wait on a silent stream.")
        ] = 600.0,
        output: Annotated[
            str | None,
            typer.Option(
                "--output", "-o", help="Write the JSON result here.", metavar="<path>", callback=text
            ),
        ] = None,
        csv_path: Annotated[
            str | None,
            typer.Option("--csv", help="Write per-request records as CSV.", metavar="<path>", callback=text),
        ] = None,
        plot: Annotated[
            str | None,
            typer.Option("--plot", help="Write latency/sweep plots (PNG).", metavar="<path>", callback=text),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        positional = list(args or [])
        if positional and positional[0] == "compare":
            _compare(positional[1:], as_json)
            return
        files = _output_files(output=output, csv=csv_path, plot=plot)
        _run(
            positional, base_url, model, api_key, api, concurrency, num_requests, duration, rate, burstiness,
            sweep, sweep_max, input_tokens, output_tokens, shared_prefix, Path(dataset) if dataset else None,
            tokenizer, warmup, seed, no_force_length, slo or [], hardware, model_ref, timeout, files, as_json,
        )  # fmt: skip


def _run(
    positional: list[str],
    base_url: str | None,
    model: str | None,
    api_key: str | None,
    api: ApiChoice,
    concurrency: int | None,
    num_requests: int | None,
    duration: float | None,
    rate: float | None,
    burstiness: float,
    sweep: bool,
    sweep_max: int,
    input_tokens: str,
    output_tokens: str | None,
    shared_prefix: int,
    dataset: Path | None,
    tokenizer: str | None,
    warmup: int,
    seed: int | None,
    no_force_length: bool,
    slo: list[str],
    hardware: str | None,
    model_ref: str | None,
    timeout: float,
    files: dict[str, Path],
    as_json: bool,
) -> None:
    from llmhost.bench.config import BenchConfig
    from llmhost.bench.limits import MAX_CONCURRENCY, check_workload
    from llmhost.bench.metrics import parse_slos
    from llmhost.bench.models import Target, Workload
    from llmhost.bench.preflight import NOT_FOUND_HINT
    from llmhost.bench.report import LiveView, render
    from llmhost.bench.runner import INTERRUPTED, run_blocking
    from llmhost.bench.workload import FileWorkload, SyntheticWorkload, TokenizerAdapter, parse_range
    from llmhost.cli._output import emit, report_interrupt, stderr, warn

    if len(positional) > 1:
        raise UsageError(
            f"unexpected arguments: {' '.join(positional[1:])}.", hint="llmhost bench NAME [OPTIONS]"
        )
    key_env: str | None = None
    deployment_model: str | None = None
    if positional:
        if base_url:
            raise UsageError("give a deployment NAME or --base-url, not both.")
        target, key_env, deployment_model = _deployment_target(positional[0], api)
        if model:
            target.model = model
    else:
        if not base_url or not model:
            raise UsageError(
                "say what to benchmark.",
                hint="llmhost bench NAME (a deployment; see `llmhost ps`) or --base-url URL --model NAME.",
            )
        _check_url(base_url)
        target = Target(base_url=base_url.rstrip("/"), model=model, api=api)
    key = api_key or (os.environ.get(key_env) if key_env else None)
    key = key or os.environ.get("LLMHOST_API_KEY") or os.environ.get("OPENAI_API_KEY")
    target.api_key_used = bool(key)

    if sweep and (rate is not None or concurrency is not None):
        raise UsageError(
            "--sweep sets the concurrency itself (1, 2, 4, ...): it takes neither --rate nor --concurrency.",
            hint="Drop one; --sweep-max caps the sweep.",
        )
    if burstiness != 1.0 and rate is None:
        raise UsageError("--burstiness shapes the arrivals of --rate.", hint="Pass --rate R with it.")
    if dataset and shared_prefix:
        raise UsageError(
            "--shared-prefix applies to synthetic prompts, not to --dataset prompts.",
            hint="Drop --shared-prefix, or --dataset.",
        )
    in_range = parse_range(input_tokens, what="--input-tokens")
    out_range = parse_range(output_tokens, what="--output-tokens") if output_tokens else None
    if num_requests is None and duration is None:
        num_requests = 50
    run_seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    served_tokenizer = False
    if tokenizer is None and deployment_model and _has_own_tokenizer(Path(deployment_model)):
        # The deployment's own checkpoint: prompts cut to exactly --input-tokens (random words are
        # several tokens each for a small vocabulary: 32 asked for became 121 on the tiny test model).
        tokenizer, served_tokenizer = deployment_model, True
    tok = TokenizerAdapter(tokenizer) if tokenizer else None
    workload = Workload(
        api=api,
        input_tokens=in_range,
        output_tokens=out_range or (128, 128),
        num_requests=num_requests,
        duration_s=duration,
        concurrency=concurrency if concurrency is not None else (None if rate is not None else 1),
        rate=rate,
        burstiness=burstiness,
        warmup=warmup,
        shared_prefix_tokens=shared_prefix,
        dataset=str(dataset) if dataset else None,
        seed=run_seed,
        force_length=not no_force_length,
        tokenizer=tokenizer,
        sweep=sweep,
    )
    check_workload(workload)
    if not 0 < timeout < math.inf:  # nan compares false
        raise UsageError(
            f"--timeout {timeout:g} is out of range.", hint="Pass --timeout SECONDS, more than 0 and finite."
        )
    if sweep and not 1 <= sweep_max <= MAX_CONCURRENCY:
        raise UsageError(
            f"--sweep-max {sweep_max} is out of range.", hint=f"Pass --sweep-max from 1 to {MAX_CONCURRENCY}."
        )
    cfg = BenchConfig(
        target=target,
        workload=workload,
        api_key=key,
        slos=parse_slos(slo),
        sweep_max_concurrency=sweep_max,
        read_timeout_s=timeout,
        tokenizer_is_served=served_tokenizer,
    )
    if dataset:
        cfg.file_workload = FileWorkload(
            dataset, output_tokens=out_range, seed=run_seed, tokenizer=tok, api=api
        )
        if cfg.file_workload.skipped:
            warn(
                f"skipped {cfg.file_workload.skipped} of {cfg.file_workload.rows} rows of {dataset} without "
                'a usable prompt ("prompt", "messages" or a ShareGPT human turn).'
            )
    else:
        cfg.synthetic = SyntheticWorkload(
            in_range,
            out_range or (128, 128),
            seed=run_seed,
            shared_prefix_tokens=shared_prefix,
            tokenizer=tok,
            api=api,
        )
    if hardware or model_ref or deployment_model:
        from llmhost.bench.roofline import make_roofline

        cfg.roofline, cfg.hardware = make_roofline(
            model_ref or deployment_model, hardware, model_is_explicit=model_ref is not None, warn=warn
        )

    try:
        with LiveView(stderr) as live:
            result = run_blocking(cfg, live)
    except KeyboardInterrupt:  # Ctrl-C before the measured load (Typer would exit 130 silently)
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


def _check_url(base_url: str) -> None:
    """An http(s) URL with a host and a valid port (aiohttp reported others as unreachable, exit 7)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(base_url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        port = parts.port  # ValueError when out of range or not a number
    except ValueError:
        valid, port = False, None
    if not valid:
        raise UsageError(
            f"--base-url {base_url!r} is not an http(s) URL with a host.",
            hint="Pass e.g. http://127.0.0.1:8000/v1",
        )
    if port == 0:
        raise UsageError(f"--base-url {base_url!r} has port 0.", hint="Pass a port between 1 and 65535.")


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
