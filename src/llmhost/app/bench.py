"""`llmhost bench` as a use case: a `BenchCommand` -> `run_bench_command` -> the `BenchResult`.

The target (a deployment by name, or a URL and a model), the API key, the workload (synthetic or a
dataset, with the deployment's own tokenizer where it has one), the roofline and the run. Nothing here
prints: warnings go to `warn`, the run's progress to the sink `progress` opens; the CLI renders the result
and decides its exit code.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from llmhost.contract import Contract
from llmhost.errors import BenchError, UsageError

if TYPE_CHECKING:
    from llmhost.bench.config import BenchConfig, ProgressSink
    from llmhost.bench.models import BenchResult, Target, Workload
    from llmhost.bench.workload import TokenizerAdapter

ApiChoice = Literal["chat", "completions"]


class BenchCommand(Contract):
    """What `llmhost bench` was asked (the defaults are the CLI's)."""

    deployment: str | None = Field(default=None, description="A llmhost deployment's name.")
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = Field(default=None, exclude=True, repr=False)
    api: ApiChoice = "chat"
    concurrency: int | None = None
    num_requests: int | None = None
    duration: float | None = None
    rate: float | None = None
    burstiness: float = 1.0
    sweep: bool = False
    sweep_max: int = 256
    input_tokens: str = "128"
    output_tokens: str | None = None
    shared_prefix: int = 0
    dataset: Path | None = None
    tokenizer: str | None = None
    warmup: int = 2
    seed: int | None = None
    force_length: bool = True
    slo: list[str] = Field(default_factory=list)
    hardware: str | None = None
    model_ref: str | None = None
    timeout: float = 600.0


class BenchInterrupted(Exception):
    """Ctrl-C before the measured load started: nothing was measured (a later one returns a partial
    result marked aborted)."""


def run_bench_command(
    cmd: BenchCommand,
    *,
    progress: Callable[[], AbstractContextManager[ProgressSink]] | None = None,
    warn: Callable[[str], None],
) -> BenchResult:
    """Check the command, build the benchmark and run it. `progress` opens the sink the run reports to
    (only around the run itself: warnings come before it). Raises BenchInterrupted on Ctrl-C before the
    measured load."""
    from llmhost.bench import runner

    cfg = bench_config(cmd, warn=warn)
    try:
        with progress() if progress else contextlib.nullcontext(None) as sink:
            return runner.run_blocking(cfg, sink)
    except KeyboardInterrupt:  # a later Ctrl-C is handled by the runner: a partial result, aborted
        raise BenchInterrupted from None


def bench_config(cmd: BenchCommand, *, warn: Callable[[str], None]) -> BenchConfig:
    """The `BenchConfig` of a command: target, key, workload and roofline, every option checked first
    (in the order the CLI always reported them)."""
    from llmhost.bench.config import BenchConfig
    from llmhost.bench.metrics import parse_slos
    from llmhost.bench.workload import TokenizerAdapter, parse_range

    target, key_env, deployment_model = _target(cmd)
    key = cmd.api_key or (os.environ.get(key_env) if key_env else None)
    key = key or os.environ.get("LLMHOST_API_KEY") or os.environ.get("OPENAI_API_KEY")
    target.api_key_used = bool(key)
    _check_combinations(cmd)
    in_range = parse_range(cmd.input_tokens, what="--input-tokens")
    out_range = parse_range(cmd.output_tokens, what="--output-tokens") if cmd.output_tokens else None
    run_seed = cmd.seed if cmd.seed is not None else random.SystemRandom().randrange(2**31)
    tokenizer, served_tokenizer = cmd.tokenizer, False
    if tokenizer is None and deployment_model and _has_own_tokenizer(Path(deployment_model)):
        # The deployment's own checkpoint: prompts cut to exactly --input-tokens (random words are
        # several tokens each for a small vocabulary: 32 asked for became 121 on the tiny test model).
        tokenizer, served_tokenizer = deployment_model, True
    tok = TokenizerAdapter(tokenizer) if tokenizer else None
    workload = _workload(cmd, in_range, out_range, seed=run_seed, tokenizer=tokenizer)
    _check_limits(cmd)
    cfg = BenchConfig(
        target=target,
        workload=workload,
        api_key=key,
        slos=parse_slos(cmd.slo),
        sweep_max_concurrency=cmd.sweep_max,
        read_timeout_s=cmd.timeout,
        tokenizer_is_served=served_tokenizer,
    )
    _add_prompts(cfg, cmd, tok, warn=warn)
    if cmd.hardware or cmd.model_ref or deployment_model:
        from llmhost.bench.roofline import make_roofline

        cfg.roofline, cfg.hardware = make_roofline(
            cmd.model_ref or deployment_model,
            cmd.hardware,
            model_is_explicit=cmd.model_ref is not None,
            warn=warn,
        )
    return cfg


def _target(cmd: BenchCommand) -> tuple[Target, str | None, str | None]:
    """(target, the deployment's key variable, the deployment's model reference)."""
    from llmhost.bench.models import Target

    if cmd.deployment is not None:
        if cmd.base_url:
            raise UsageError("give a deployment NAME or --base-url, not both.")
        target, key_env, deployment_model = deployment_target(cmd.deployment, cmd.api)
        if cmd.model:
            target.model = cmd.model
        return target, key_env, deployment_model
    if not cmd.base_url or not cmd.model:
        raise UsageError(
            "say what to benchmark.",
            hint="llmhost bench NAME (a deployment; see `llmhost ps`) or --base-url URL --model NAME.",
        )
    check_url(cmd.base_url)
    return Target(base_url=cmd.base_url.rstrip("/"), model=cmd.model, api=cmd.api), None, None


def _check_combinations(cmd: BenchCommand) -> None:
    if cmd.sweep and (cmd.rate is not None or cmd.concurrency is not None):
        raise UsageError(
            "--sweep sets the concurrency itself (1, 2, 4, ...): it takes neither --rate nor --concurrency.",
            hint="Drop one; --sweep-max caps the sweep.",
        )
    if cmd.burstiness != 1.0 and cmd.rate is None:
        raise UsageError("--burstiness shapes the arrivals of --rate.", hint="Pass --rate R with it.")
    if cmd.dataset and cmd.shared_prefix:
        raise UsageError(
            "--shared-prefix applies to synthetic prompts, not to --dataset prompts.",
            hint="Drop --shared-prefix, or --dataset.",
        )


def _check_limits(cmd: BenchCommand) -> None:
    from llmhost.bench.limits import MAX_CONCURRENCY

    if not 0 < cmd.timeout < math.inf:  # nan compares false
        raise UsageError(
            f"--timeout {cmd.timeout:g} is out of range.",
            hint="Pass --timeout SECONDS, more than 0 and finite.",
        )
    if cmd.sweep and not 1 <= cmd.sweep_max <= MAX_CONCURRENCY:
        raise UsageError(
            f"--sweep-max {cmd.sweep_max} is out of range.",
            hint=f"Pass --sweep-max from 1 to {MAX_CONCURRENCY}.",
        )


def _workload(
    cmd: BenchCommand,
    in_range: tuple[int, int],
    out_range: tuple[int, int] | None,
    *,
    seed: int,
    tokenizer: str | None,
) -> Workload:
    """The run's `Workload` record, checked against the limits."""
    from llmhost.bench.limits import check_workload
    from llmhost.bench.models import Workload

    # Without --num-requests or --duration: 50 requests. --rate alone is an open loop with no cap.
    num_requests = 50 if cmd.num_requests is None and cmd.duration is None else cmd.num_requests
    workload = Workload(
        api=cmd.api,
        input_tokens=in_range,
        output_tokens=out_range or (128, 128),
        num_requests=num_requests,
        duration_s=cmd.duration,
        concurrency=cmd.concurrency if cmd.concurrency is not None else (None if cmd.rate is not None else 1),
        rate=cmd.rate,
        burstiness=cmd.burstiness,
        warmup=cmd.warmup,
        shared_prefix_tokens=cmd.shared_prefix,
        dataset=str(cmd.dataset) if cmd.dataset else None,
        seed=seed,
        force_length=cmd.force_length,
        tokenizer=tokenizer,
        sweep=cmd.sweep,
    )
    check_workload(workload)
    return workload


def _add_prompts(
    cfg: BenchConfig, cmd: BenchCommand, tok: TokenizerAdapter | None, *, warn: Callable[[str], None]
) -> None:
    """The prompts: the dataset's rows, or synthetic ones of the workload's lengths."""
    from llmhost.bench.workload import FileWorkload, SyntheticWorkload

    wl = cfg.workload
    out_range = wl.output_tokens if cmd.output_tokens else None
    if cmd.dataset:
        cfg.file_workload = FileWorkload(
            cmd.dataset, output_tokens=out_range, seed=wl.seed, tokenizer=tok, api=cmd.api
        )
        if cfg.file_workload.skipped:
            warn(
                f"skipped {cfg.file_workload.skipped} of {cfg.file_workload.rows} rows of {cmd.dataset} "
                'without a usable prompt ("prompt", "messages" or a ShareGPT human turn).'
            )
    else:
        cfg.synthetic = SyntheticWorkload(
            wl.input_tokens,
            wl.output_tokens,
            seed=wl.seed,
            shared_prefix_tokens=cmd.shared_prefix,
            tokenizer=tok,
            api=cmd.api,
        )


def deployment_target(name: str, api: ApiChoice) -> tuple[Target, str | None, str]:
    """URL, served model, slots and key variable of a llmhost deployment; its model reference."""
    from llmhost.bench.models import Target
    from llmhost.supervise.state import load_deployment

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


def check_url(base_url: str) -> None:
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
