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

import math
import os
import re
from dataclasses import dataclass

from llmhost.engines import vllm_env
from llmhost.engines.base import EngineStatus, FailureCause, LaunchSpec, ServeOptions, StartupReport
from llmhost.errors import UsageError
from llmhost.hardware.models import Hardware
from llmhost.net import url_host
from llmhost.plan.models import Candidate

GIB = 1024**3
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# In-flight requests get this long to finish on SIGTERM; the supervisor waits longer before SIGKILL.
SHUTDOWN_DRAIN_S = 10
STOP_GRACE_S = SHUTDOWN_DRAIN_S + 20.0
# Internal ports live far above the usual API ports; the offset keeps neighbouring deployments apart.
INTERNAL_PORT_BASE = 30000
INTERNAL_PORT_SPAN = 30000
INTERNAL_PORT_STRIDE = 64
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


def ready_deadline_s(candidate: Candidate) -> float:
    per_rank = candidate.memory.weights_bytes / max(candidate.tensor_parallel_size, 1)
    return READY_BASE_S + READY_PER_GIB_S * per_rank / GIB


def runs_on_cpu(candidate: Candidate) -> bool:
    """The plan placed this candidate on the CPU (vLLM's CPU build)."""
    if "device" in candidate.engine_options:
        return str(candidate.engine_options["device"]) == "cpu"
    if candidate.per_device:
        return all(d.device.startswith("cpu") for d in candidate.per_device)
    return "cpu_kv_cache_gib" in candidate.engine_options and "gpu_memory_utilization" not in (
        candidate.engine_options
    )


def cpu_kv_cache_gib(candidate: Candidate) -> int:
    """VLLM_CPU_KVCACHE_SPACE is a whole number of GiB: the plan's figure, else its KV bytes rounded up."""
    planned = candidate.engine_options.get("cpu_kv_cache_gib")
    if planned is not None and not isinstance(planned, str):
        return max(1, math.ceil(float(planned)))
    return max(1, math.ceil(candidate.memory.kv_cache_bytes / GIB))


def _opt(candidate: Candidate, key: str) -> str | int | float | bool | None:
    return candidate.engine_options.get(key)


def _quantization_flag(candidate: Candidate) -> str | None:
    value = _opt(candidate, "quantization")
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip().lower()
    # The planner marks a pre-quantized checkpoint (quantize_online=False): vLLM reads its method from
    # config.json and refuses a --quantization that names another one (compressed-tensors vs fp8).
    if text not in ONLINE_QUANTIZATION or _opt(candidate, "quantize_online") is False:
        return None
    return text


def _kv_dtype_flag(candidate: Candidate) -> str:
    planned = _opt(candidate, "kv_cache_dtype")
    name = str(planned if planned is not None else candidate.kv_cache_dtype).lower()
    return _KV_DTYPES.get(name, name)


def _dtype_flag(candidate: Candidate) -> str | None:
    planned = _opt(candidate, "dtype")
    if planned is not None:
        return str(planned)
    return _DTYPES.get(candidate.quantization.lower())


def _version_at_least(version: str, wanted: tuple[int, int]) -> bool:
    match = re.match(r"(\d+)\.(\d+)", version)
    return match is not None and (int(match[1]), int(match[2])) >= wanted


def build_argv(
    python: str, candidate: Candidate, options: ServeOptions, *, quiet_probes: bool = False
) -> list[str]:
    argv = [python, "-m", API_SERVER_MODULE, "--model", candidate.model_source]
    argv += ["--served-model-name", options.served_model_name]
    argv += ["--host", options.host, "--port", str(options.port)]
    argv += ["--max-model-len", str(candidate.context_length)]
    dtype = _dtype_flag(candidate)
    if dtype:
        argv += ["--dtype", dtype]
    quant = _quantization_flag(candidate)
    if quant:
        argv += ["--quantization", quant]
    argv += ["--kv-cache-dtype", _kv_dtype_flag(candidate)]
    if candidate.tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(candidate.tensor_parallel_size)]
    if candidate.pipeline_parallel_size > 1:
        argv += ["--pipeline-parallel-size", str(candidate.pipeline_parallel_size)]
    utilization = _opt(candidate, "gpu_memory_utilization")
    if utilization is not None and not runs_on_cpu(candidate):
        argv += ["--gpu-memory-utilization", f"{float(utilization):.2f}"]
    max_seqs = _opt(candidate, "max_num_seqs")
    argv += ["--max-num-seqs", str(int(max_seqs) if max_seqs is not None else max(candidate.concurrency, 1))]
    batched = _opt(candidate, "max_num_batched_tokens")
    if batched is not None:
        argv += ["--max-num-batched-tokens", str(int(batched))]
    prefix = _opt(candidate, "enable_prefix_caching")
    if prefix is not None:
        argv.append("--enable-prefix-caching" if prefix else "--no-enable-prefix-caching")
    if _opt(candidate, "enforce_eager") is True:
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


# Start-up lines, newest wording first (vLLM 0.32 sources named; older V1 and V0 wordings after them,
# as quoted in public logs: benchmarks/data/vllm_startup_logs.json). The first pattern that matches wins.
_NUM = r"(?P<n>-?[\d.]+)"  # negative: V0 logged the shortfall ("reserved for KV Cache is -1.05GiB")
_WEIGHTS = [  # (pattern, unit): vLLM's "GB" is GiB (it divides by 2**30); "MB" is MiB
    (re.compile(rf"Model loading took {_NUM} ?(?P<unit>GiB|GB)"), GIB),  # v1/worker/gpu_model_runner.py
    (re.compile(rf"weights memory: {_NUM} ?GiB"), GIB),  # v1/worker/gpu_worker.py (debug summary)
    (re.compile(rf"model weights take\s+{_NUM} ?GiB"), GIB),  # V0 memory profiling summary
    (re.compile(rf"Loading model weights took {_NUM} ?GB"), GIB),  # V0
    (re.compile(rf"Loading model weights took {_NUM} ?MB"), 1024**2),  # early V0
]
_KV_BYTES = [
    re.compile(rf"Available KV cache memory: {_NUM} ?GiB"),  # v1/worker/gpu_worker.py
    re.compile(rf"(?:Explicitly|Auto) set \({_NUM}/[\d.]+\) GiB for KV cache"),  # v1/worker/cpu_worker.py
    re.compile(rf"available_kv_cache_memory\s+{_NUM} ?GiB"),  # V0 table
    re.compile(rf"reserved for KV Cache is {_NUM} ?GiB"),  # V0 summary
    re.compile(rf"kv_cache_size={_NUM} ?GiB"),  # V0 "Memory profiling results"
    re.compile(rf"larger than the available KV cache memory \({_NUM} GiB\)"),  # the start-up error
]
_KV_TOKENS = [
    re.compile(r"(?P<device>[A-Z]+)(?: \+ host)? KV cache size: (?P<n>[\d,]+) tokens"),  # kv_cache_utils.py
    re.compile(r"(?P<device>GPU|CUDA|cuda|CPU) blocks: (?P<blocks>\d+)"),  # older: blocks of 16 tokens
    re.compile(r"stored in KV cache \((?P<n>\d+)\)"),  # V0 start-up error
]
OLD_BLOCK_TOKENS = 16
_CONCURRENCY = re.compile(r"Maximum concurrency for (?P<len>[\d,]+) tokens per request: (?P<x>[\d.]+)x")
_ACTIVATION = [
    re.compile(rf"activation peak memory(?: takes)?\s+{_NUM} ?GiB"),
    re.compile(rf"torch peak memory increase: {_NUM} ?GiB"),
]
_GRAPHS = [
    re.compile(
        rf"Graph capturing finished in [\d.]+ secs?, took {_NUM} GiB"
    ),  # v1/worker/gpu_model_runner.py
    re.compile(rf"Estimated CUDA graph memory: {_NUM} ?GiB"),
]
_VERSION = re.compile(r"(?:version|vLLM engine \(v)\s*(?P<v>\d+\.\d+\.\d+[\w.+-]*)")
_ENGINE_INIT = re.compile(r"init engine \(profile, create kv cache, warmup model\) took (?P<s>[\d.]+) ?s")
_LOADING_S = re.compile(r"Model loading took [\d.]+ ?(?:GiB|GB)(?: memory)? and (?P<s>[\d.]+) ?s")
_CPU_KV = re.compile(r"(?P<how>Explicitly|Auto) set \([\d.]+/(?P<total>[\d.]+)\) GiB for KV cache")


def _first(patterns: list[re.Pattern[str]], text: str) -> re.Match[str] | None:
    for pattern in patterns:
        if m := pattern.search(text):
            return m
    return None


def parse_startup(log_text: str) -> StartupReport:
    """Figures vLLM prints while starting: KV tokens, concurrency, weights, KV and graph memory.

    With tensor parallelism every rank logs its own figures; the first one (rank 0) is kept, so byte
    figures are per device.
    """
    raw: dict[str, str] = {}
    report = StartupReport()
    for pattern, unit in _WEIGHTS:
        if m := pattern.search(log_text):
            report.weights_bytes = round(float(m["n"]) * unit)
            break
    if m := _first(_KV_BYTES, log_text):
        report.kv_cache_bytes = round(float(m["n"]) * GIB)
    if m := _first(_KV_TOKENS, log_text):
        if "blocks" in m.groupdict() and m["blocks"] is not None:
            report.kv_cache_tokens = int(m["blocks"]) * OLD_BLOCK_TOKENS
            raw["gpu_blocks"] = m["blocks"]
        else:
            report.kv_cache_tokens = int(m["n"].replace(",", ""))
        if m.groupdict().get("device"):
            raw["kv_cache_device"] = m["device"].upper()
    if m := _CONCURRENCY.search(log_text):
        report.max_concurrency = float(m["x"])
        raw["max_model_len"] = m["len"].replace(",", "")
    activation, graphs = _first(_ACTIVATION, log_text), _first(_GRAPHS, log_text)
    if activation or graphs:
        report.compute_bytes = sum(round(float(m["n"]) * GIB) for m in (activation, graphs) if m)
        if graphs:
            raw["cuda_graphs_gib"] = graphs["n"]
    if m := _CPU_KV.search(log_text):
        raw["cpu_kv_cache"] = m["how"].lower()
        raw["node_memory_gib"] = m["total"]
    if m := _LOADING_S.search(log_text):
        raw["model_loading_s"] = m["s"]
    if m := _VERSION.search(log_text):
        raw["vllm_version"] = m["v"]
    if m := _ENGINE_INIT.search(log_text):
        raw["engine_init_s"] = m["s"]
    report.raw = raw
    return report


# Failure signatures, most specific first. Each is (cause, regex) over the last lines of the log.
_FAILURES: list[tuple[FailureCause, re.Pattern[str]]] = [
    (
        "kv_cache_too_small",
        re.compile(
            r"KV cache is needed, which is larger than the available KV cache memory"
            r"|larger than the maximum number of tokens that can be stored in KV cache"
            r"|max seq len.*larger than",
            re.I,
        ),
    ),
    (
        "out_of_memory",
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|HIP out of memory|cudaMalloc failed|out of memory"
            r"|not enough GPU memory|No available memory for the cache blocks"
            r"|is less than desired GPU memory utilization|is less than the engine's budget"
            r"|on kv cache allocation is less than requested memory|Cannot allocate memory",
            re.I,
        ),
    ),
    ("port_in_use", re.compile(r"Address already in use|\[Errno 98\]|EADDRINUSE", re.I)),
    (
        "model_invalid",
        re.compile(
            r"is not a local folder and is not a valid model identifier|Repository Not Found"
            r"|RepositoryNotFoundError|Cannot find any model weights|SafetensorError|HeaderTooLarge"
            r"|Model architectures? .* (?:are|is) not supported|No such file or directory: .*config\.json"
            r"|Unrecognized model in|does not appear to have a file named config\.json|GatedRepoError",
            re.I,
        ),
    ),
    (
        "bad_argument",
        re.compile(
            r"error: unrecognized arguments|error: argument --|invalid choice|ValidationError"
            r"|set the option `?trust_remote_code=True|requires you to execute the configuration file"
            r"|must be divisible by tensor parallel size|is not divisible by",
            re.I,
        ),
    ),
    (
        "missing_library",
        re.compile(
            r"ModuleNotFoundError|ImportError|cannot open shared object file|undefined symbol"
            r"|libcuda\.so|Failed to infer device type|No CUDA GPUs are available|does not exist",
            re.I,
        ),
    ),
]


def classify_failure(log_tail: str) -> FailureCause | None:
    for cause, pattern in _FAILURES:
        if pattern.search(log_tail):
            return cause
    return None


_ESTIMATED_LEN = re.compile(
    r"estimated maximum model length is (?P<n>\d+)"
    r"|maximum number of tokens that can be stored in KV cache \((?P<v0>\d+)\)"  # V0 wording
)
_NEEDED_KV = re.compile(
    r"\((?P<need>[\d.]+) GiB KV cache is needed, .*?available KV cache memory \((?P<have>[\d.]+) GiB\)"
)
_FREE_ON_DEVICE = re.compile(r"Free memory on device[^(]*\((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\)")
_CPU_AVAILABLE = re.compile(r"Available memory on node \d+ \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\)")


def _round_context(tokens: int) -> int:
    """Round down to a multiple of 256 (vLLM blocks are 16; 256 reads better), at least 256."""
    return max(256, tokens // 256 * 256)


@dataclass(frozen=True)
class RunSettings:
    """What a failed start ran with: from the plan candidate, or read back from the launch spec."""

    context_length: int
    max_num_seqs: int
    tensor_parallel_size: int
    kv_bytes_per_token: int  # 0 when unknown

    @classmethod
    def of_candidate(cls, candidate: Candidate) -> RunSettings:
        seqs = _opt(candidate, "max_num_seqs")
        return cls(
            context_length=candidate.context_length,
            max_num_seqs=int(seqs) if seqs is not None else max(candidate.concurrency, 1),
            tensor_parallel_size=candidate.tensor_parallel_size,
            kv_bytes_per_token=candidate.kv_bytes_per_token,
        )

    @classmethod
    def of_launch(cls, launch: LaunchSpec, planned: StartupReport | None = None) -> RunSettings:
        def value(name: str, default: int) -> int:
            """The flag's last value, as argparse takes it (profile extra args come last and win)."""
            argv = launch.argv
            at = [i for i, arg in enumerate(argv[:-1]) if arg == name]
            try:
                return int(argv[at[-1] + 1]) if at else default
            except ValueError:
                return default

        per_token = 0
        if planned and planned.kv_cache_bytes and planned.kv_cache_tokens:
            per_token = planned.kv_cache_bytes // planned.kv_cache_tokens
        return cls(
            context_length=value("--max-model-len", 0),
            max_num_seqs=value("--max-num-seqs", 1),
            tensor_parallel_size=value("--tensor-parallel-size", 1),
            kv_bytes_per_token=per_token,
        )


def suggest_fix(cause: FailureCause | None, run: RunSettings | Candidate, log_tail: str) -> str | None:
    """Concrete settings that would let this start succeed, from vLLM's message and the plan's figures."""
    candidate = RunSettings.of_candidate(run) if isinstance(run, Candidate) else run
    if cause == "kv_cache_too_small":
        tokens: int | None = None
        if m := _ESTIMATED_LEN.search(log_tail):
            tokens = int(m["n"] or m["v0"])
        elif (m := _NEEDED_KV.search(log_tail)) and candidate.kv_bytes_per_token > 0:
            tokens = int(float(m["have"]) * GIB / candidate.kv_bytes_per_token)
        if tokens is None or tokens <= 0:
            return "Lower --context (see `llmhost plan MODEL --engine vllm` for what fits)."
        context = _round_context(min(tokens, candidate.context_length or tokens))
        return (
            f"vLLM has room for about {tokens:,} tokens of KV cache; serve with --context {context} "
            f"(vLLM --max-model-len {context}), or give it more memory."
        )
    if cause == "out_of_memory":
        if m := _FREE_ON_DEVICE.search(log_tail):
            from llmhost.estimate.vllm import max_gpu_memory_utilization

            free, total = float(m["free"]) * GIB, float(m["total"]) * GIB
            share = max_gpu_memory_utilization(int(total), int(free))
            return (
                f"Other processes hold GPU memory: only {m['free']} of {m['total']} GiB is free. "
                f"Stop them, or lower the share: --gpu-memory-utilization {share:.2f} "
                "(it is a share of TOTAL memory)."
            )
        if m := _CPU_AVAILABLE.search(log_tail):
            free_gib = float(m["free"])
            space = max(1, int(free_gib) - 1)
            room = int(space * GIB / candidate.kv_bytes_per_token) if candidate.kv_bytes_per_token else 0
            fits = min(room, candidate.context_length or room)
            ctx = f" and --context {_round_context(fits)}" if room else ""
            return f"Only {free_gib:.1f} GiB of RAM is free: use VLLM_CPU_KVCACHE_SPACE={space}{ctx}."
        seqs_n = candidate.max_num_seqs
        tp = candidate.tensor_parallel_size
        return (
            f"Reduce what vLLM reserves besides weights: --concurrency {max(1, seqs_n // 2)}, a smaller "
            f"--context than {candidate.context_length}, a smaller --quant, or more GPUs "
            f"(tensor parallel {tp * 2}); `llmhost plan MODEL --engine vllm` shows what fits."
        )
    if cause == "bad_argument" and re.search(r"trust_remote_code|execute the configuration file", log_tail):
        return "This model ships its own code: serve it with --trust-remote-code if you trust the repository."
    if cause == "missing_library":
        return "Reinstall the engine: `llmhost engines install vllm --force`."
    return None


class VllmEngine:
    name = "vllm"

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
        argv = build_argv(python, candidate, options, quiet_probes=quiet)
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

    def classify_failure(self, log_tail: str) -> FailureCause | None:
        return classify_failure(log_tail)

    def parse_startup(self, log_text: str) -> StartupReport:
        return parse_startup(log_text)

    def suggest_fix(
        self, cause: FailureCause | None, log_tail: str, launch: LaunchSpec, planned: StartupReport | None
    ) -> str | None:
        """The supervisor's hook: a fix for a failed start, from the launch spec and the plan's figures."""
        return suggest_fix(cause, RunSettings.of_launch(launch, planned), log_tail)


ENGINE = VllmEngine()
