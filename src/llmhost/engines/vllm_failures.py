"""Why a vLLM start failed (its log tail to a `FailureCause`), and the settings that would work instead,
computed the way vLLM's own error messages compute them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmhost.engines.base import FailureCause, LaunchSpec, StartupReport
from llmhost.engines.vllm_argv import GIB, max_num_seqs
from llmhost.plan.models import Candidate

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
        return cls(
            context_length=candidate.context_length,
            max_num_seqs=max_num_seqs(candidate),
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
