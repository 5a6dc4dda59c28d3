"""vLLM's command line from a plan candidate: flags, internal ports, readiness deadline, CPU KV space.

Why each flag is set is in the `engines.vllm` module docstring and docs/vllm.md."""

from __future__ import annotations

import math
import os
import re

from llmhost.engines.base import ServeOptions
from llmhost.errors import UsageError
from llmhost.plan.models import Candidate
from llmhost.plan.options import VllmOptions

GIB = 1024**3
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# The same server as the `vllm` CLI starts it (what vLLM's container image runs): the model positional.
SERVE_COMMAND = ("vllm", "serve")
# In-flight requests get this long to finish on SIGTERM; the supervisor waits longer before SIGKILL.
SHUTDOWN_DRAIN_S = 10
STOP_GRACE_S = SHUTDOWN_DRAIN_S + 20.0
# Internal ports live far above the usual API ports; the offset keeps neighbouring deployments apart.
INTERNAL_PORT_BASE = 30000
INTERNAL_PORT_SPAN = 30000
INTERNAL_PORT_STRIDE = 64
# Data parallelism: vLLM's --data-parallel-rpc-port defaults to a fixed 29550 (v0.32.0
# config/parallel.py:160), the same for every deployment on the machine; serve gives each its own, in the
# top quarter of the deployment's internal window (vLLM scans upward from VLLM_PORT, the window's start,
# for its other ports, DP master ports included: v0.32.0 config/parallel.py:992-995, get_open_ports_list).
DP_RPC_PORT_OFFSET = 48
DP_RPC_PORT_SPAN = INTERNAL_PORT_STRIDE - DP_RPC_PORT_OFFSET
# Readiness: imports + torch.compile warm-up dominate small models (about 70 s on 2 CPU cores);
# loading weights adds roughly 15 s per GiB per rank on slow disks.
READY_BASE_S = 300.0
READY_PER_GIB_S = 15.0
# Once ready, a 1-token completion this often (and at most this slow) proves the engine still serves:
# vLLM's /health stays 200 while a stuck engine core serves nothing. Three misses in a row: restart.
COMPLETION_PROBE_INTERVAL_S = 60.0
COMPLETION_PROBE_TIMEOUT_S = 60.0
PROBE_INTERVAL_ENV = "LLMHOST_COMPLETION_PROBE_INTERVAL_S"
PROBE_TIMEOUT_ENV = "LLMHOST_COMPLETION_PROBE_TIMEOUT_S"
# Endpoints llmhost itself polls, kept out of vLLM's access log (the flag exists in the pinned 0.32).
QUIET_ENDPOINTS = "/health,/metrics,/v1/models"
QUIET_ENDPOINTS_SINCE = (0, 32)
# `--runner pooling` (and `--convert`) replaced `--task embed` in vLLM 0.10.
RUNNER_FLAG_SINCE = (0, 10)
# Inherited variables that would silently change what the plan decided (ports, memory, the key).
ENV_REMOVE = ["VLLM_PORT", "VLLM_DP_MASTER_PORT", "VLLM_API_KEY", "VLLM_CPU_KVCACHE_SPACE", "VLLM_HOST_IP"]

# Methods vLLM can apply to an unquantized checkpoint while loading it; every other method (awq, gptq,
# compressed-tensors, nvfp4...) is read from the checkpoint's config.json and needs no flag.
ONLINE_QUANTIZATION = {"fp8", "bitsandbytes", "experts_int8", "ptpc_fp8"}
# The plan's KV dtype names -> vLLM's --kv-cache-dtype choices (auto = the model dtype).
_KV_DTYPES = {
    "auto": "auto",
    "f16": "auto",
    "fp16": "auto",
    "bf16": "auto",
    "bfloat16": "auto",
    "float16": "auto",
    "fp8": "fp8",
    "fp8_e4m3": "fp8_e4m3",
    "fp8_e5m2": "fp8_e5m2",
    "q8_0": "fp8",  # a llama.cpp name reaching vLLM: the closest 8-bit cache
}
_DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "f16": "float16",
    "float16": "float16",
}


def internal_port(api_port: int) -> int:
    """First internal port for the deployment serving on `api_port` (distinct per API port)."""
    return INTERNAL_PORT_BASE + (api_port * INTERNAL_PORT_STRIDE) % INTERNAL_PORT_SPAN


def dp_rpc_port_start(api_port: int) -> int:
    """The first --data-parallel-rpc-port tried for the deployment serving on `api_port`."""
    return internal_port(api_port) + DP_RPC_PORT_OFFSET


def dp_rpc_port_window(candidate: Candidate, api_port: int) -> range | None:
    """Where serve picks a data-parallel plan's --data-parallel-rpc-port; None without data parallelism."""
    if _options(candidate).replicas <= 1:
        return None
    start = dp_rpc_port_start(api_port)
    return range(start, start + DP_RPC_PORT_SPAN)


def dp_rpc_port(candidate: Candidate, options: ServeOptions) -> int | None:
    """The --data-parallel-rpc-port the deployment launches with: serve's pick, else its window's first."""
    window = dp_rpc_port_window(candidate, options.port)
    if window is None:
        return None
    return options.side_port if options.side_port is not None else window.start


def ready_deadline_s(candidate: Candidate) -> float:
    replicas = _options(candidate).data_parallel_size  # each DP replica loads its own ranks at once
    ranks = max(candidate.tensor_parallel_size, 1) * max(replicas or 1, 1)
    per_rank = candidate.memory.weights_bytes / ranks
    return READY_BASE_S + READY_PER_GIB_S * per_rank / GIB


def _options(candidate: Candidate) -> VllmOptions:
    options = candidate.engine_options
    if not isinstance(options, VllmOptions):
        raise UsageError(f"vLLM cannot launch a {candidate.engine} candidate.", hint="Plan it for vLLM.")
    return options


def runs_on_cpu(candidate: Candidate) -> bool:
    """The plan placed this candidate on the CPU (vLLM's CPU build)."""
    options = _options(candidate)
    if options.device is not None:
        return options.runs_on_cpu
    if candidate.per_device:
        return all(d.device.startswith("cpu") for d in candidate.per_device)
    return options.cpu_kv_cache_gib is not None and options.gpu_memory_utilization is None


def cpu_kv_cache_gib(candidate: Candidate) -> int:
    """VLLM_CPU_KVCACHE_SPACE is a whole number of GiB: the plan's figure, else its KV bytes rounded up."""
    planned = _options(candidate).cpu_kv_cache_gib
    if planned is not None:
        return max(1, math.ceil(planned))
    return max(1, math.ceil(candidate.memory.kv_cache_bytes / GIB))


def max_num_seqs(candidate: Candidate) -> int:
    """--max-num-seqs: the plan's figure, else one sequence per concurrent request."""
    options = candidate.engine_options
    planned = options.max_num_seqs if isinstance(options, VllmOptions) else None
    return planned if planned is not None else max(candidate.concurrency, 1)


def _quantization_flag(options: VllmOptions) -> str | None:
    if options.quantization is None:
        return None
    text = options.quantization.strip().lower()
    # The planner marks a pre-quantized checkpoint (quantize_online=False): vLLM reads its method from
    # config.json and refuses a --quantization that names another one (compressed-tensors vs fp8).
    if text not in ONLINE_QUANTIZATION or options.quantize_online is False:
        return None
    return text


def _kv_dtype_flag(candidate: Candidate, options: VllmOptions) -> str:
    planned = options.kv_cache_dtype
    name = (planned if planned is not None else candidate.kv_cache_dtype).lower()
    return _KV_DTYPES.get(name, name)


def _dtype_flag(candidate: Candidate, options: VllmOptions) -> str | None:
    if options.dtype is not None:
        return options.dtype
    return _DTYPES.get(candidate.quantization.lower())


def _version_at_least(version: str, wanted: tuple[int, int]) -> bool:
    match = re.match(r"(\d+)\.(\d+)", version)
    return match is not None and (int(match[1]), int(match[2])) >= wanted


def embedding_flags(version: str | None) -> list[str]:
    """How vLLM `version` (None: not installed here, read as the pinned release) serves a model as an
    embedding model: `--runner pooling` since 0.10 (`--convert auto` then turns a *ForCausalLM into an
    embedder, and leaves a native embedding model as it is), `--task embed` before."""
    if version is None or _version_at_least(version, RUNNER_FLAG_SINCE):
        return ["--runner", "pooling"]
    return ["--task", "embed"]


def build_argv(
    python: str,
    candidate: Candidate,
    options: ServeOptions,
    *,
    quiet_probes: bool = False,
    version: str | None = None,
) -> list[str]:
    argv = [python, "-m", API_SERVER_MODULE, "--model", candidate.model_source]
    if options.embeddings:  # the gateway's `embeddings: true`: /v1/embeddings, no generation
        argv += embedding_flags(version)
    argv += ["--served-model-name", options.served_model_name]
    argv += ["--host", options.host, "--port", str(options.port)]
    argv += ["--max-model-len", str(candidate.context_length)]
    opts = _options(candidate)
    dtype = _dtype_flag(candidate, opts)
    if dtype:
        argv += ["--dtype", dtype]
    quant = _quantization_flag(opts)
    if quant:
        argv += ["--quantization", quant]
    argv += ["--kv-cache-dtype", _kv_dtype_flag(candidate, opts)]
    if candidate.tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(candidate.tensor_parallel_size)]
    if candidate.pipeline_parallel_size > 1:
        argv += ["--pipeline-parallel-size", str(candidate.pipeline_parallel_size)]
    if opts.data_parallel_size is not None and opts.data_parallel_size > 1:
        argv += ["--data-parallel-size", str(opts.data_parallel_size)]
    if opts.enable_expert_parallel is True:
        argv.append("--enable-expert-parallel")
    rpc = dp_rpc_port(candidate, options)
    if rpc is not None:
        argv += ["--data-parallel-rpc-port", str(rpc)]
    if opts.gpu_memory_utilization is not None and not runs_on_cpu(candidate):
        argv += ["--gpu-memory-utilization", f"{opts.gpu_memory_utilization:.2f}"]
    argv += ["--max-num-seqs", str(max_num_seqs(candidate))]
    if opts.max_num_batched_tokens is not None:
        argv += ["--max-num-batched-tokens", str(opts.max_num_batched_tokens)]
    if opts.enable_prefix_caching is not None:
        argv.append("--enable-prefix-caching" if opts.enable_prefix_caching else "--no-enable-prefix-caching")
    if opts.enforce_eager is True:
        argv.append("--enforce-eager")
    argv += ["--shutdown-timeout", str(SHUTDOWN_DRAIN_S)]
    if options.trust_remote_code:
        argv.append("--trust-remote-code")
    if quiet_probes:
        # The supervisor polls these every few seconds; their access-log lines would bury real requests.
        argv += ["--disable-access-log-for-endpoints", QUIET_ENDPOINTS]
    argv += options.extra_args
    return argv


def _env_seconds(name: str, default: float) -> float:
    """A duration from llmhost's own environment (tests and operators tune the probe without a flag)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise UsageError(
            f"{name}={raw!r} is not a number of seconds.", hint=f"Set {name}=60, or 0 to turn it off."
        ) from None
