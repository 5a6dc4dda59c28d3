"""The engine interface. An engine is one module implementing `Engine`; nothing else branches on names.

An engine turns a plan `Candidate` plus user options into a `LaunchSpec` (argv + env + readiness
rules), says whether it can run on this machine, and reads its own logs (start-up figures, failure
causes). The supervisor runs any `LaunchSpec` the same way.

Owned by the serve work; the vLLM engine implements the same interface. Additive changes only.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import Field

from llmhost.contract import Contract
from llmhost.hardware.models import Hardware
from llmhost.plan.models import Candidate

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
    data_parallel_rpc_port: int | None = Field(
        default=None,
        description="vLLM --data-parallel-rpc-port of a data-parallel plan (serve picks a free one per "
        "deployment; None: the deployment's default, engines.vllm_argv.dp_rpc_port_start).",
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


class Engine(Protocol):
    name: str

    def status(self, hardware: Hardware) -> list[EngineStatus]: ...

    def build_launch(self, candidate: Candidate, options: ServeOptions) -> LaunchSpec: ...

    def classify_failure(self, log_tail: str) -> FailureCause | None: ...

    def parse_startup(self, log_text: str) -> StartupReport: ...
