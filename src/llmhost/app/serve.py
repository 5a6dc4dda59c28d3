"""From a `serve` request to a `Deployment` ready to supervise: plan, pick the port, decide auth, build
the engine command, fetch the model file. The CLI (`llmhost serve`) is a thin layer over `prepare()`.

Nothing here starts a process: `prepare` is what `--dry-run` prints, and `run_foreground` /
`control.launch_detached` run what it returns.
"""

from __future__ import annotations

import re
import secrets
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from llmhost.contract import Contract
from llmhost.engines.base import LaunchSpec, ServeOptions, StartupReport
from llmhost.errors import ModelError, NetworkError, NothingFitsError, UsageError
from llmhost.hardware.models import Hardware
from llmhost.inputs import check_text
from llmhost.net import is_loopback
from llmhost.plan.models import Candidate
from llmhost.supervise import paths
from llmhost.supervise.process import (
    check_host_bindable,
    check_port_available,
    check_port_in_range,
    next_free_port,
)
from llmhost.supervise.state import Deployment

if TYPE_CHECKING:
    from llmhost.models.spec import ModelSpec
    from llmhost.plan.models import Plan

API_KEY_ENV = "LLMHOST_API_KEY"


class ServeRequest(Contract):
    """Everything `llmhost serve` was asked (CLI flags merged over a profile)."""

    model: str
    engine: str | None = None
    quant: str | None = None
    kv_cache_dtype: str | None = None
    context: int | None = None
    concurrency: int | None = None
    goal: str | None = None
    port: int | None = None
    host: str = "127.0.0.1"
    api_key: str | None = Field(default=None, exclude=True, repr=False)
    insecure_no_auth: bool = False
    name: str | None = None
    engine_bin: str | None = None
    hardware: str | None = None
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    trust_remote_code: bool = False
    embeddings: bool = Field(
        default=False, description="Serve /v1/embeddings (the gateway's embeddings: true)."
    )
    served_model_name: str | None = Field(
        default=None,
        description="The name the engine serves the model under (default: the model's own; the gateway: "
        "the models file's name, so a request and its answer carry the same name, never rewritten).",
    )
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    data_parallel_size: int | None = Field(default=None, description="vLLM --data-parallel-size.")
    enable_expert_parallel: bool | None = Field(default=None, description="vLLM --enable-expert-parallel.")
    max_num_seqs: int | None = Field(default=None, description="vLLM --max-num-seqs (any value >= 1).")
    max_num_batched_tokens: int | None = Field(default=None, description="vLLM --max-num-batched-tokens.")
    vllm_version: str | None = Field(
        default=None, description="Plan as this vLLM release does its memory (a what-if: --dry-run)."
    )
    nodes: int | None = Field(default=None, description="`export`: plan over this many nodes (vLLM TP x PP).")


class Prepared(Contract):
    """What `serve` will run (`--dry-run --json` prints this; the key itself is never included)."""

    deployment: Deployment
    candidate: Candidate
    command: str = Field(description="The exact engine command line, shell-quoted.")
    env: dict[str, str] = Field(description="Environment set for the engine (secrets by reference).")
    api_key_generated: bool = False
    api_key: str | None = Field(default=None, exclude=True, repr=False)
    download: list[str] = Field(default_factory=list, description="Model files still to download.")
    has_chat_template: bool | None = Field(
        default=None, description="False: the model has no chat template (a base model's GGUF)."
    )
    # The machine it was planned for, kept for callers that render the same plan elsewhere (export), so
    # they do not detect the hardware a second time; not part of `--dry-run --json`.
    hardware: Hardware = Field(exclude=True, repr=False)


def decide_api_key(host: str, api_key: str | None, insecure_no_auth: bool) -> tuple[str | None, bool]:
    """(key, generated?). Loopback: the key is optional. Elsewhere: required unless explicitly waived."""
    if api_key:
        if len(api_key) < 8:
            raise UsageError(
                "The API key is too short.", hint="Use at least 8 characters (or omit it to generate one)."
            )
        return api_key, False
    if is_loopback(host) or insecure_no_auth:
        return None, False
    return secrets.token_urlsafe(32), True


def default_name(spec_name: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", spec_name.lower()).strip("-._") or "model"
    return slug[:63]


def engine_choice(engine: str | None) -> tuple[str | None, str | None]:
    """(engine, forced runtime) for an `--engine` spelling: an engine or one of its runtimes."""
    if engine is None:
        return None, None
    from llmhost.engines.registry import engine_aliases

    aliases = engine_aliases()
    try:
        return aliases[engine]
    except KeyError:
        raise UsageError(
            f"Unknown engine {engine!r}.", hint=f"Choose one of: {', '.join(aliases)}."
        ) from None


def planned_report(candidate: Candidate) -> StartupReport:
    from llmhost.engines.registry import get_engine

    mem = candidate.memory
    return StartupReport(
        weights_bytes=mem.weights_bytes,
        kv_cache_bytes=mem.kv_cache_bytes,
        # Counted as the engine's start-up log counts them (vLLM: its whole pool; llama.cpp: n_ctx).
        kv_cache_tokens=get_engine(candidate.engine).planned_kv_tokens(candidate),
        max_concurrency=float(candidate.max_concurrency),
        compute_bytes=mem.compute_bytes,
    )


def resolve_and_plan(
    request: ServeRequest, *, machine: Hardware | None = None
) -> tuple[ModelSpec, Hardware, Plan]:
    """Resolve and plan `request` (on `machine` when given, else this or its --hardware machine)."""
    from llmhost.app.plan import plan_model
    from llmhost.engines.registry import ENGINE_MODULES, get_engine
    from llmhost.plan import PlanRequest

    engine, runtime = engine_choice(request.engine)
    # Each engine's fields for the runtime serve will launch (llama.cpp: which of its two).
    runtime_fields = {
        key: value
        for name in ENGINE_MODULES
        for key, value in get_engine(name).plan_fields(runtime, request.engine_bin).items()
    }
    plan_request = PlanRequest.model_validate(
        {
            k: v
            for k, v in {
                "context": request.context,
                "concurrency": request.concurrency,
                "goal": request.goal,
                "engine": engine,
                "quantization": request.quant,
                "kv_cache_dtype": request.kv_cache_dtype,
                "gpu_memory_utilization": request.gpu_memory_utilization,
                "tensor_parallel_size": request.tensor_parallel_size,
                "data_parallel_size": request.data_parallel_size,
                "enable_expert_parallel": request.enable_expert_parallel,
                "max_num_seqs": request.max_num_seqs,
                "max_num_batched_tokens": request.max_num_batched_tokens,
                "vllm_version": request.vllm_version,
                "nodes": request.nodes,
                **runtime_fields,
            }.items()
            if v is not None
        }
    )
    planned = plan_model(request.model, plan_request, hardware=request.hardware, machine=machine)
    return planned.spec, planned.hardware, planned.plan


def runnable_candidate(
    plan: Plan, chosen: Candidate, hardware: Hardware, *, forced: bool, dry_run: bool
) -> Candidate:
    """The chosen candidate if its engine can run here; else the best one whose engine can.

    The planner is pure: it knows the hardware, not what is installed. A plan may pick vLLM on a machine
    where it is not installed (or cannot run); unless `--engine` forced it, serve falls back to the
    next candidate that fits and whose engine is usable here, and says why.
    """
    from llmhost.engines.registry import get_engine
    from llmhost.errors import EngineError
    from llmhost.plan.ranking import launchable
    from llmhost.plan.reasons import Reason, ReasonCode

    def why_not(engine_name: str) -> str | None:
        statuses = get_engine(engine_name).status(hardware)
        if any(s.usable for s in statuses):
            return None
        return "; ".join(s.reason for s in statuses if s.reason) or f"{engine_name} is not usable here"

    reason = why_not(chosen.engine)
    if reason is None:
        return chosen
    if forced:
        if dry_run:
            return chosen
        raise EngineError(f"{chosen.engine} cannot run here: {reason}", hint="See `llmhost engines`.")
    for alternative in plan.candidates:
        if alternative.engine == chosen.engine or not (alternative.fits and launchable(alternative)):
            continue
        if why_not(alternative.engine) is None:
            note = Reason.of(
                ReasonCode.ENGINE_FALLBACK, engine=chosen.engine, why=reason, fallback=alternative.engine
            )
            return alternative.model_copy(update={"reasons_detail": [note, *alternative.reasons_detail]})
    if dry_run:
        return chosen
    raise EngineError(
        f"{chosen.engine} cannot run here: {reason}",
        hint="Install it (`llmhost engines install vllm`), or serve a GGUF with --engine llamacpp.",
    )


def prepare(request: ServeRequest, *, dry_run: bool = False) -> Prepared:
    """Plan the deployment and build its launch spec. Does not start anything."""
    from llmhost.engines.registry import get_engine

    spec, hardware, plan = resolve_and_plan(request)
    candidate = _candidate(request, plan, hardware, dry_run=dry_run)
    runtime = _check_engine_bin(request)
    # An empty --name is a mistake to report, not a request for the default.
    name = paths.validate_name(request.name if request.name is not None else default_name(spec.name))
    # Checked here, not only at --host: a profile's `host: ""` reaches serve too ('' binds every interface).
    check_text("--host (or a profile's host:)", request.host, help_command="llmhost serve")
    check_host_bindable(request.host)
    api_key, generated = decide_api_key(request.host, request.api_key, request.insecure_no_auth)
    port = _port(request, name, dry_run=dry_run)
    to_download = missing_model_files(spec, candidate)
    if to_download and not dry_run:
        local = download_model_files(spec, candidate)
        candidate = candidate.model_copy(update={"gguf_file": str(local)})
        to_download = []
    options = ServeOptions(
        name=name,
        served_model_name=request.served_model_name or spec.name,
        host=request.host,
        port=port,
        api_key_env=API_KEY_ENV if api_key else None,
        trust_remote_code=request.trust_remote_code,
        extra_args=list(request.extra_args),
        env=dict(request.env),
        engine_bin=request.engine_bin,
        runtime=runtime,
        embeddings=request.embeddings,
        side_port=_side_port(candidate, request.host, port, dry_run=dry_run),
    )
    launch = get_engine(candidate.engine).build_launch(candidate, options)
    return Prepared(
        deployment=_deployment(request, options, launch, candidate, auth=api_key is not None),
        candidate=candidate,
        command=shlex.join(launch.argv),
        env={**launch.env, **{k: f"${v}" for k, v in launch.secret_env.items()}},
        api_key_generated=generated,
        api_key=api_key,
        download=to_download,
        has_chat_template=plan.model.has_chat_template,
        hardware=hardware,
    )


def _candidate(request: ServeRequest, plan: Plan, hardware: Hardware, *, dry_run: bool) -> Candidate:
    """The plan's choice, or the best candidate whose engine can run here; NothingFitsError if none."""
    candidate = plan.chosen_candidate
    if candidate is None:
        advice = " ".join(plan.advice) if plan.advice else ""
        raise NothingFitsError(
            f"No way to run {request.model} fits this machine. {advice}".strip(),
            hint=f"See `llmhost plan {request.model}` for every candidate and what each would need.",
        )
    if request.hardware:  # a what-if plan (--hardware) describes another machine: nothing to check
        return candidate
    return runnable_candidate(plan, candidate, hardware, forced=request.engine is not None, dry_run=dry_run)


def _check_engine_bin(request: ServeRequest) -> str | None:
    """The runtime `--engine` forces, if any; refuses --engine-bin where no llama-server runs."""
    from llmhost.engines.registry import get_engine

    forced_engine, runtime = engine_choice(request.engine)
    if request.engine_bin and forced_engine and get_engine(forced_engine).refuses_engine_bin(runtime):
        raise UsageError(
            f"--engine-bin names a llama-server binary; --engine {request.engine} does not use one.",
            hint="Drop --engine-bin, or pass --engine llama-server.",
        )
    return runtime


def _port(request: ServeRequest, name: str, *, dry_run: bool) -> int:
    """The port asked for, checked free (not on a dry run); else the next free one from 8000."""
    from llmhost.supervise.control import port_holder, reserved_ports

    if request.port is None:
        return next_free_port(request.host, exclude=reserved_ports())
    check_port_in_range(request.port)
    if not dry_run:
        # An engine that is still loading has not bound its port yet: the state files know it.
        holder = port_holder(request.port)
        if holder is not None and holder != name:
            raise UsageError(
                f"Port {request.port} belongs to deployment {holder!r}, which is still running.",
                hint="Pass another --port, or leave --port out to use the next free one (`llmhost ps`).",
            )
        check_port_available(request.host, request.port)
    return request.port


def _side_port(candidate: Candidate, host: str, port: int, *, dry_run: bool) -> int | None:
    """The second port the engine binds, where it needs one (vLLM's --data-parallel-rpc-port): the first
    port of the engine's window for this deployment that is free now and not another live deployment's
    (API or side port); None for an engine that binds one port. A dry run takes the window's first port
    unchecked."""
    from llmhost.engines.registry import get_engine

    window = get_engine(candidate.engine).side_port_window(candidate, port)
    if window is None:
        return None
    if dry_run:
        return window.start
    from llmhost.supervise.control import reserved_ports, reserved_side_ports

    taken = reserved_ports() | reserved_side_ports() | {port}
    return next_free_port(host, start=window.start, exclude=taken, span=len(window))


def _deployment(
    request: ServeRequest, options: ServeOptions, launch: LaunchSpec, candidate: Candidate, *, auth: bool
) -> Deployment:
    """The deployment's record before it starts."""
    return Deployment(
        name=options.name,
        model=request.model,
        # An engine may serve the model under another id than its name (mlx_lm: the model's path).
        served_model_name=launch.served_model_name or options.served_model_name,
        engine=launch.engine,
        runtime=launch.runtime,
        base_url=launch.base_url,
        host=request.host,
        port=options.port,
        auth=auth,
        launch=launch,
        planned=planned_report(candidate),
        reasons=list(candidate.reasons),
        log_dir=str(paths.deployment_dir(options.name)),
    )


# -- model files ---------------------------------------------------------------------------------------
def _hub_files(spec: ModelSpec, candidate: Candidate) -> list[tuple[str, int | None]]:
    """Repo paths (and sizes) of the file(s) the candidate's engine loads from the Hub through serve
    (llama.cpp: the GGUF); [] when it is local, or the engine downloads its own."""
    from llmhost.engines.registry import get_engine

    return get_engine(candidate.engine).hub_files(spec, candidate)


def missing_model_files(spec: ModelSpec, candidate: Candidate) -> list[str]:
    return [path for path, _ in _hub_files(spec, candidate)]


def download_model_files(spec: ModelSpec, candidate: Candidate) -> Path:
    """Download the candidate's GGUF file(s) into the HF cache (resumable, with a progress bar) and
    return the local path of the first one. Refuses when the disk would not hold them."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    files = _hub_files(spec, candidate)
    assert spec.repo_id is not None
    cache = Path(constants.HF_HUB_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    need = sum(size or 0 for _, size in files)
    free = shutil.disk_usage(cache).free
    if need and need > free:
        raise UsageError(
            f"Not enough disk space for {spec.repo_id}: need {need / 1e9:.1f} GB, "
            f"{free / 1e9:.1f} GB free in {cache}.",
            hint="Free space, or point HF_HOME at a larger disk, then rerun the same command.",
        )
    local: list[Path] = []
    for repo_path, _ in files:
        try:
            local.append(Path(hf_hub_download(spec.repo_id, repo_path, revision=spec.revision)))
        except LocalEntryNotFoundError as exc:
            raise NetworkError(
                f"Could not download {repo_path} from {spec.repo_id}: the Hub is unreachable.",
                hint="Check the network (or HF_ENDPOINT), then rerun; the download resumes where it stopped.",
            ) from exc
        except HfHubHTTPError as exc:
            raise ModelError(
                f"Could not download {repo_path} from {spec.repo_id}: {exc}.",
                hint="Check the repo id and quant tag (`llmhost plan MODEL` lists the files).",
            ) from exc
        except OSError as exc:
            raise NetworkError(
                f"Download of {repo_path} failed: {exc}.", hint="Rerun the same command to resume it."
            ) from exc
    return local[0]
