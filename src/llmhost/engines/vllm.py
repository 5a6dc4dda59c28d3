"""The vLLM engine: plan candidate -> `python -m vllm.entrypoints.openai.api_server` argv + env.

What llmhost sets, and why (details and sources in docs/vllm.md):
- `--max-model-len`, `--max-num-seqs`, `--max-num-batched-tokens`, `--gpu-memory-utilization`,
  `--kv-cache-dtype`, `--tensor/pipeline-parallel-size`, `--dtype` come from the plan, so vLLM sizes its
  KV cache to what the estimator checked, instead of failing on a model's 128k default context.
- `--gpu-memory-utilization` is a share of TOTAL device memory (vllm/v1/worker/gpu_worker.py); the
  planner lowers it when other processes hold memory. On the CPU build the KV pool is
  `VLLM_CPU_KVCACHE_SPACE` GiB of RAM instead (vllm/v1/worker/cpu_worker.py).
- `--quantization` only for methods vLLM applies on the fly (fp8 of a bf16 checkpoint, bitsandbytes):
  a pre-quantized checkpoint (AWQ, GPTQ...) declares its method in config.json and vLLM picks the
  fastest kernel for it; forcing `--quantization awq` would turn `awq_marlin` off.
- The API key reaches vLLM as `VLLM_API_KEY` in its environment, never in argv (visible in `ps`).
- `--shutdown-timeout` lets in-flight requests drain on SIGTERM; the supervisor's grace period is longer.
- Internal ports: `VLLM_PORT` is the first port vLLM scans upward from for its internal sockets
  (vllm/utils/network_utils.py); an inherited value would make two instances race for the same ports,
  so each deployment gets its own, derived from its API port. ZMQ IPC paths are uuid4-named already.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from llmhost.engine_ids import TITLES, VLLM, VLLM_RUNTIME
from llmhost.engines import base as engine_base
from llmhost.engines import vllm_env
from llmhost.engines.base import EngineStatus, FailureCause, LaunchSpec, ServeOptions, StartupReport
from llmhost.engines.log_readers import LogReaders
from llmhost.engines.vllm_argv import (
    COMPLETION_PROBE_INTERVAL_S,
    COMPLETION_PROBE_TIMEOUT_S,
    ENV_REMOVE,
    GIB,
    PROBE_INTERVAL_ENV,
    PROBE_TIMEOUT_ENV,
    QUIET_ENDPOINTS_SINCE,
    READY_BASE_S,
    SHUTDOWN_DRAIN_S,
    STOP_GRACE_S,
    _env_seconds,
    _version_at_least,
    build_argv,
    cpu_kv_cache_gib,
    dp_rpc_port,
    dp_rpc_port_window,
    internal_port,
    ready_deadline_s,
    runs_on_cpu,
)
from llmhost.engines.vllm_failures import RunSettings, classify_failure, suggest_fix
from llmhost.engines.vllm_startup import parse_startup
from llmhost.hardware.models import Hardware
from llmhost.net import url_host

# The engine's parts, re-exported for callers that know vLLM by this one module.
__all__ = [
    "ENGINE",
    "GIB",
    "READY_BASE_S",
    "SHUTDOWN_DRAIN_S",
    "RunSettings",
    "VllmEngine",
    "build_argv",
    "classify_failure",
    "parse_startup",
    "suggest_fix",
]
from llmhost.plan.models import Candidate

# The official image, pinned to the vLLM version llmhost generates flags for (a newer image may rename a
# flag). Its entrypoint is `vllm serve`: the model is positional; it has python3, not curl. No CPU image.
IMAGE = engine_base.ContainerImage(
    cpu=None,
    gpu=f"vllm/vllm-openai:v{vllm_env.VLLM_VERSION}",
    model_flag="--model",
    positional_model=True,
    probe=("python3", "-c", "import urllib.request; urllib.request.urlopen('{url}', timeout=5)"),
)
# vLLM's GPU build: what KServe, Ray Serve LLM and a Ray cluster run. It moves tensors between its
# processes through shared memory (PyTorch), so a container needs more than Docker's 64 MB /dev/shm.
GPU_EXPORT_TRAITS = engine_base.ExportTraits(
    image=IMAGE, kserve=True, ray_serve=True, ray_cluster=True, large_shm=True
)


class VllmEngine(LogReaders, engine_base.EngineDefaults):
    name = VLLM
    aliases: Mapping[str, str | None] = MappingProxyType({VLLM: None})
    installable: tuple[str, ...] = (VLLM,)

    def status(self, hardware: Hardware) -> list[EngineStatus]:
        runtime = None if hardware.os in ("darwin", "windows") else vllm_env.find_runtime(hardware)
        base = EngineStatus(name=self.name, runtime="vllm", installed=False, usable=False)
        if hardware.os == "darwin":
            return [
                base.model_copy(
                    update={"reason": "vLLM does not run on macOS; llmhost uses llama.cpp (Metal) instead."}
                )
            ]
        if hardware.os != "linux":
            return [base.model_copy(update={"reason": f"vLLM runs on Linux only (this is {hardware.os})."})]
        if runtime is None:
            package = vllm_env.choose_package(hardware)
            return [
                base.model_copy(
                    update={
                        "runtime": package.distribution,
                        "reason": "Not installed: run `llmhost engines install vllm` "
                        f"({package.distribution} {package.version} into its own virtualenv).",
                    }
                )
            ]
        installed = base.model_copy(
            update={
                "runtime": runtime.distribution,
                "installed": True,
                "version": runtime.version,
                "location": runtime.location,
            }
        )
        has_gpu = hardware.has_nvidia or hardware.has_amd
        if runtime.device in ("cuda", "rocm") and not has_gpu:
            reason = "This vLLM build needs an NVIDIA/AMD GPU and none was detected; llama.cpp runs on CPU."
            return [installed.model_copy(update={"reason": reason})]
        if runtime.device == "cpu" and has_gpu:
            reason = "The CPU build is installed; for the GPUs run `llmhost engines install vllm --force`."
            return [installed.model_copy(update={"usable": True, "reason": reason})]
        if runtime.device == "cpu" and hardware.cpu.architecture not in (
            "x86_64",
            "amd64",
            "aarch64",
            "arm64",
        ):
            reason = f"vLLM's CPU build has no kernels for {hardware.cpu.architecture}."
            return [installed.model_copy(update={"reason": reason})]
        return [installed.model_copy(update={"usable": True})]

    def build_launch(self, candidate: Candidate, options: ServeOptions) -> LaunchSpec:
        on_cpu = runs_on_cpu(candidate)
        runtime = vllm_env.find_runtime(device="cpu" if on_cpu else "gpu")
        # Not installed for this device (e.g. a what-if GPU plan on a laptop): the command still reads
        # right for a machine where `python3` has vLLM; serving it here fails with a clear cause.
        python = runtime.python if runtime is not None else "python3"
        quiet = runtime is not None and _version_at_least(runtime.version, QUIET_ENDPOINTS_SINCE)
        version = runtime.version if runtime is not None else None
        argv = build_argv(python, candidate, options, quiet_probes=quiet, version=version)
        deadline = ready_deadline_s(candidate)
        env = {
            "VLLM_PORT": str(internal_port(options.port)),
            # vLLM's own wait for the engine core; never shorter than ours, or it gives up first.
            "VLLM_ENGINE_READY_TIMEOUT_S": str(int(deadline)),
            # vLLM reads no stdin; keep its logs unbuffered so start-up figures reach the log at once.
            "PYTHONUNBUFFERED": "1",
        }
        if on_cpu:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(cpu_kv_cache_gib(candidate))
        env.update(options.env)
        secret_env = {"VLLM_API_KEY": options.api_key_env} if options.api_key_env else {}
        host = url_host(options.host)  # a wildcard bind is reached through loopback
        interval = options.completion_probe_interval_s
        if interval is None:
            interval = _env_seconds(PROBE_INTERVAL_ENV, COMPLETION_PROBE_INTERVAL_S)
        if options.embeddings:
            interval = 0  # a pooling model generates nothing: no 1-token completion to probe it with
        return LaunchSpec(
            engine=self.name,
            runtime=runtime.distribution if runtime is not None else ("vllm-cpu" if on_cpu else "vllm"),
            argv=argv,
            env=env,
            health_path="/health",
            models_path="/v1/models",
            ready_deadline_s=deadline,
            base_url=f"http://{host}:{options.port}/v1",
            host=options.host,
            port=options.port,
            side_ports=[p for p in (dp_rpc_port(candidate, options),) if p is not None],
            served_model_name=options.served_model_name,
            secret_env=secret_env,
            api_key_env=options.api_key_env,
            env_remove=list(ENV_REMOVE),
            metrics_path="/metrics",
            stop_grace_s=STOP_GRACE_S,
            model_path=candidate.model_source,
            completion_probe_interval_s=interval or None,
            completion_probe_timeout_s=_env_seconds(PROBE_TIMEOUT_ENV, COMPLETION_PROBE_TIMEOUT_S),
        )

    def suggest_fix(
        self, cause: FailureCause | None, log_tail: str, launch: LaunchSpec, planned: StartupReport | None
    ) -> str | None:
        """The supervisor's hook: a fix for a failed start, from the launch spec and the plan's figures."""
        return suggest_fix(cause, RunSettings.of_launch(launch, planned), log_tail)

    # -- what the other stages ask ---------------------------------------------------------------------
    def install(self, name: str, *, force: bool, log: Callable[[str], None]) -> str:
        """vLLM (GPU or CPU build, as this machine needs) into its own virtualenv."""
        result = vllm_env.install(force=force)
        return str(result.location if result.location is not None else result)

    def refuses_engine_bin(self, runtime: str | None) -> bool:
        """vLLM is a Python package: there is no binary to name."""
        return True

    def planned_kv_tokens(self, candidate: Candidate) -> int:
        """vLLM reports the tokens its whole KV pool holds ("KV cache size: N tokens"); vLLM downloads
        its checkpoint itself (`hub_files`: none)."""
        if candidate.kv_bytes_per_token > 0:
            return candidate.memory.kv_cache_bytes // candidate.kv_bytes_per_token
        return super().planned_kv_tokens(candidate)

    def chat_template_args(self, template: str, *, is_file: bool, runtime: str) -> list[str]:
        """vLLM takes a template (a file), no built-in names."""
        hint = "Give a .jinja file, or serve with --engine llama-server."
        engine_base.template_file_only(template, is_file, engine=TITLES[VLLM], hint=hint)
        return ["--chat-template", template]

    def export_traits(self, runtime: str) -> engine_base.ExportTraits:
        """The GPU build exports everywhere; the CPU build (vllm-cpu) has no official image."""
        return GPU_EXPORT_TRAITS if runtime == VLLM_RUNTIME else engine_base.ExportTraits()

    def side_port_window(self, candidate: Candidate, api_port: int) -> range | None:
        """A data-parallel plan's --data-parallel-rpc-port (vLLM's default, 29550, is the same for every
        deployment on the machine): the top of the deployment's internal port window."""
        return dp_rpc_port_window(candidate, api_port)


ENGINE: engine_base.Engine = VllmEngine(classify_failure, parse_startup)
