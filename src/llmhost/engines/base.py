"""The engine interface. An engine is one module implementing `Engine`; nothing else branches on names.

An engine turns a plan `Candidate` plus user options into a `LaunchSpec` (argv + env + readiness
rules), says whether it can run on this machine, and reads its own logs (start-up figures, failure
causes). The supervisor runs any `LaunchSpec` the same way.

What used to be a test of an engine's name elsewhere is a question to the engine (issue 9):
- `aliases`: the `--engine` spellings that choose it, and the runtime each forces;
- `installable` / `install()`: what `llmhost engines install NAME` builds or installs;
- `plan_fields()`: the `PlanRequest` fields that size the plan for the runtime `serve` will launch;
- `refuses_engine_bin()`: whether `--engine-bin` (a llama-server binary) contradicts the forced runtime;
- `planned_kv_tokens()`: the KV tokens its start-up log will report, as planned;
- `hub_files()`: the model files `serve` downloads before launching it;
- `chat_template_args()`: the flags that apply a profile's `chat_template:`;
- `export_traits()`: what `llmhost export`'s targets may do with a runtime (`ExportTraits`);
- `side_port_window()`: where serve picks a second port the engine binds (vLLM's DP RPC port).
Engine names are spelled only in `llmhost.engine_ids` and `engines/`; the ids are compared only in
`engines/` and the stages that model each engine (`estimate/`, `plan/`: which engine a candidate is
for). `tests/test_engine_names.py` checks both. `EngineDefaults` holds the answers most engines share.

Owned by the serve work; every engine implements the same interface. Additive changes only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import Field

from llmhost.contract import Contract
from llmhost.hardware.models import Hardware
from llmhost.plan.models import Candidate

if TYPE_CHECKING:
    from llmhost.models.spec import ModelSpec

FailureCause = Literal[
    "out_of_memory",
    "model_invalid",
    "port_in_use",
    "missing_library",
    "kv_cache_too_small",
    "bad_argument",
    "unknown",
]


class ServeOptions(Contract):
    """What the user asked for on top of the plan (CLI flags and profile)."""

    name: str
    served_model_name: str
    host: str = "127.0.0.1"
    port: int
    api_key_env: str | None = Field(
        default=None,
        description="Name of the env var holding the API key; the key itself never goes in argv.",
    )
    trust_remote_code: bool = False
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    engine_bin: str | None = None
    runtime: str | None = Field(
        default=None,
        description='Force one runtime of the engine, e.g. "llama-server" or "llama-cpp-python".',
    )
    embeddings: bool = Field(
        default=False,
        description="Serve /v1/embeddings (llama-server --embeddings, llama-cpp-python --embedding).",
    )
    completion_probe_interval_s: float | None = Field(
        default=None,
        description="Seconds between 1-token completion probes once ready (0 = off, None = engine default).",
    )
    side_port: int | None = Field(
        default=None,
        description="The one port besides `port` the engine binds, where it needs one (vLLM's "
        "--data-parallel-rpc-port of a data-parallel plan): serve picks a free one in the engine's "
        "`side_port_window`; None: the window's first port.",
    )


class LaunchSpec(Contract):
    engine: str
    runtime: str = Field(description='e.g. "llama-server", "llama-cpp-python", "vllm"')
    argv: list[str]
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment; secrets by reference only."
    )
    health_path: str = "/health"
    models_path: str = "/v1/models"
    ready_deadline_s: float = 120.0
    base_url: str
    # Additive fields (the supervisor reads them; every engine may set them).
    host: str = "127.0.0.1"
    port: int | None = Field(
        default=None, description="Port the engine listens on (checked free before launch)."
    )
    served_model_name: str | None = Field(
        default=None, description="Readiness requires `models_path` to list this id (None: any model)."
    )
    secret_env: dict[str, str] = Field(
        default_factory=dict,
        description="Engine env var -> name of the supervisor's env var holding the secret (e.g. "
        '{"VLLM_API_KEY": "LLMHOST_API_KEY"}). Resolved at spawn; values are never stored or logged.',
    )
    api_key_env: str | None = Field(
        default=None,
        description="Name of the supervisor's env var holding the API key, used for readiness probes and "
        "redacted from logs. None: the engine accepts unauthenticated requests.",
    )
    env_remove: list[str] = Field(
        default_factory=list,
        description="Inherited env vars to drop before launch (a trailing * drops a prefix), so a stray "
        "variable in the user's shell cannot silently change the engine's settings.",
    )
    side_ports: list[int] = Field(
        default_factory=list,
        description="Other ports the engine binds that serve chose (ServeOptions.side_port): reserved for "
        "this deployment like `port`, and a start that fails on a taken port is planned again.",
    )
    metrics_path: str | None = Field(default=None, description="Prometheus metrics endpoint, if enabled.")
    stop_grace_s: float = Field(default=10.0, description="SIGTERM -> SIGKILL grace period on stop.")
    model_path: str | None = Field(default=None, description="Local model file/dir the engine loads.")
    # Liveness beyond /health (additive; see llmhost.supervise.probe). None: no completion probe.
    completion_probe_interval_s: float | None = Field(
        default=None,
        description="Once ready, send a 1-token completion this often; /health can be 200 while wedged.",
    )
    completion_probe_timeout_s: float = Field(default=30.0, description="A probe slower than this fails.")
    completion_probe_failures: int = Field(
        default=3, description="Consecutive failed probes after which the engine is restarted."
    )


class EngineStatus(Contract):
    name: str
    runtime: str
    installed: bool
    usable: bool
    version: str | None = None
    location: str | None = None
    reason: str | None = Field(default=None, description="Why it cannot run here, and what to do.")


class StartupReport(Contract):
    """Figures an engine prints at start-up (planned vs actual)."""

    weights_bytes: int | None = None
    kv_cache_bytes: int | None = None
    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    compute_bytes: int | None = None
    raw: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class ContainerImage:
    """A runtime's official OpenAI-compatible server image, and how its argv maps onto the image's."""

    cpu: str | None
    gpu: str
    model_flag: str  # the flag that names the model in the engine argv llmhost builds
    positional_model: bool  # the image's entrypoint takes the model as its first argument
    probe: tuple[str, ...]  # an HTTP GET the image can run for a healthcheck ({url} is filled in)


@dataclass(frozen=True)
class ExportTraits:
    """What `llmhost export`'s targets may do with one runtime of an engine (docs/scale-out.md).

    The targets ask these, never the runtime's name; a runtime with none of them exports to `systemd`
    (llmhost on the node itself) and `litellm` only."""

    image: ContainerImage | None = None  # compose, kubernetes: the official image it runs in
    kserve: bool = False  # KServe's Hugging Face runtime (vLLM backend) takes its flags as engine args
    ray_serve: bool = False  # Ray Serve LLM runs it from the same engine args
    ray_cluster: bool = False  # one plan over several nodes through Ray (vllm-cluster)
    large_shm: bool = False  # its processes pass tensors through /dev/shm: a container needs room


class Engine(Protocol):
    name: str
    # `--engine` spellings that choose this engine -> the runtime each forces (None: the engine picks).
    aliases: Mapping[str, str | None]
    # Names `llmhost engines install` takes for this engine (empty: nothing to install).
    installable: tuple[str, ...]

    def status(self, hardware: Hardware) -> list[EngineStatus]: ...

    def build_launch(self, candidate: Candidate, options: ServeOptions) -> LaunchSpec: ...

    def classify_failure(self, log_tail: str) -> FailureCause | None: ...

    def parse_startup(self, log_text: str) -> StartupReport: ...

    def install(self, name: str, *, force: bool, log: Callable[[str], None]) -> str:
        """Install `name` (one of `installable`); where it is (a binary or a virtualenv)."""
        ...

    def plan_fields(self, runtime: str | None, engine_bin: str | None) -> dict[str, str]:
        """`PlanRequest` fields for the runtime serve will launch (`runtime`: the one `--engine` forced)."""
        ...

    def refuses_engine_bin(self, runtime: str | None) -> bool:
        """True when `--engine-bin` contradicts what `--engine` chose (this engine, forcing `runtime`)."""
        ...

    def planned_kv_tokens(self, candidate: Candidate) -> int:
        """The KV cache tokens this engine's start-up log reports, as the plan sized them."""
        ...

    def hub_files(self, spec: ModelSpec, candidate: Candidate) -> list[tuple[str, int | None]]:
        """Repo paths (and sizes) `serve` downloads before launching the candidate; [] for none."""
        ...

    def chat_template_args(self, template: str, *, is_file: bool, runtime: str) -> list[str]:
        """The flags that make `runtime` apply `template` (an existing, expanded file path if `is_file`,
        else a built-in name); ProfileError when it takes no such thing."""
        ...

    def export_traits(self, runtime: str) -> ExportTraits:
        """What the export targets may do with `runtime` (one of this engine's `LaunchSpec.runtime`s)."""
        ...

    def side_port_window(self, candidate: Candidate, api_port: int) -> range | None:
        """Where serve picks `ServeOptions.side_port` for the deployment on `api_port`; None: no side port."""
        ...


class EngineDefaults:
    """The answers an engine gives unless it says otherwise: nothing for the plan to size per runtime,
    `--engine-bin` let through, KV counted as context x slots (llama.cpp's n_ctx, MLX LM's caches),
    nothing for serve to download, and no export target beyond `systemd` and `litellm`."""

    def plan_fields(self, runtime: str | None, engine_bin: str | None) -> dict[str, str]:
        return {}

    def refuses_engine_bin(self, runtime: str | None) -> bool:
        return False

    def planned_kv_tokens(self, candidate: Candidate) -> int:
        return candidate.context_length * candidate.concurrency

    def hub_files(self, spec: ModelSpec, candidate: Candidate) -> list[tuple[str, int | None]]:
        return []

    def export_traits(self, runtime: str) -> ExportTraits:
        return ExportTraits()

    def side_port_window(self, candidate: Candidate, api_port: int) -> range | None:
        return None


def template_file_only(template: str, is_file: bool, *, engine: str, hint: str) -> None:
    """Refuse a built-in template name for an engine that takes only a template file."""
    if not is_file:
        from llmhost.errors import ProfileError

        raise ProfileError(f"chat_template: {engine} has no built-in template named {template!r}.", hint=hint)
