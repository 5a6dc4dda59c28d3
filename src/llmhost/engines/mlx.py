"""The MLX LM engine: plan candidate -> `python -m mlx_lm server` from its own virtualenv.

mlx_lm.server (mlx-lm 0.32) serves `/v1/completions`, `/v1/chat/completions`, `/v1/models` and
`/health` over Python's ThreadingHTTPServer. What llmhost sets, and why:
- `--model` is the resolved local directory: mlx_lm loads whatever a request's `model` field names
  (a path or a Hub repo), and a request that names the `--model` string exactly reuses the loaded
  model; `/v1/models` lists that resolved path. So the served model name IS the path, and clients send it.
- `--decode-concurrency` / `--prompt-concurrency`: the plan's concurrency (mlx_lm batches up to 32 decodes
  and 8 prompts by default; each sequence in a batch holds its own KV cache, so the default can take 32x
  the planned KV memory).
- `--prompt-cache-bytes`: the plan's KV bytes. mlx_lm keeps finished requests' KV caches for prefix reuse
  and trims that cache to `prompt_cache_bytes - active KV` after each step, so the flag bounds the cached
  and the active KV together; without it the LRU holds 10 caches of any size.
- `--max-tokens`: the default when a request gives none (mlx_lm: 512), never above the planned context.
  mlx_lm enforces no context limit of its own: a client asking for more grows the KV cache past the plan.
- No API key: mlx_lm.server has no authentication, so llmhost binds it to loopback only and refuses any
  other --host or an API key it could not enforce (put a gateway or a keyed proxy in front).
- `HF_HUB_OFFLINE=1`: a request naming another model makes mlx_lm load it; offline, it can only name
  what is already on disk, never make the server download a repository.
- `HF_HUB_CACHE`: `/v1/models` scans the Hugging Face cache and answers 500 when that directory does
  not exist (huggingface_hub's CacheNotFound, seen on a fresh machine); a dedicated, existing, empty
  cache keeps the listing to the served model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from llmhost.cache import engines_dir
from llmhost.engine_ids import MLX, TITLES
from llmhost.engines import mlx_env
from llmhost.engines.base import (
    Engine,
    EngineDefaults,
    EngineStatus,
    FailureCause,
    LaunchSpec,
    ServeOptions,
    StartupReport,
    template_file_only,
)
from llmhost.engines.log_readers import LogReaders
from llmhost.errors import ProfileError, UsageError
from llmhost.hardware.models import Hardware
from llmhost.net import base_url, is_loopback
from llmhost.plan.models import Candidate
from llmhost.plan.options import MlxOptions

GIB = 1024**3
SERVER_ARGV = ("-m", "mlx_lm", "server")
DEFAULT_MAX_TOKENS = 512  # mlx_lm.server's own default for requests without max_tokens
PROMPT_CONCURRENCY_CAP = 8  # mlx_lm's default --prompt-concurrency: prefill batches past it gain little
# Start-up: importing mlx_lm + transformers takes ~5 s on 2 cores; loading weights is an mmap of the
# safetensors (about 10 s per GiB from a slow disk, less from the page cache).
READY_BASE_S = 120.0
READY_PER_GIB_S = 10.0
# /health is 200 while the generation thread lives, which includes while it is still loading the model
# (and a load that failed leaves the process up, /health 503). A 1-token completion after readiness is
# what proves the model answers; three misses in a row restart it.
COMPLETION_PROBE_INTERVAL_S = 30.0
COMPLETION_PROBE_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
# Inherited variables that would change what the server loads or where it looks.
ENV_REMOVE = ["HF_HUB_OFFLINE", "HF_HUB_CACHE", "TRANSFORMERS_OFFLINE", "MLX_*"]


def check_options(options: ServeOptions) -> None:
    """mlx_lm.server authenticates nobody: refuse what would expose it or promise a key it ignores."""
    if not is_loopback(options.host):
        raise UsageError(
            f"MLX LM's server has no API key, so llmhost never binds it beyond loopback "
            f"(--host {options.host}).",
            hint="Serve it on 127.0.0.1 and put a gateway or a proxy with a key in front, or use "
            "--engine llamacpp, which enforces --api-key.",
        )
    if options.api_key_env:
        raise UsageError(
            "MLX LM's server cannot check an API key: llmhost will not pretend it does.",
            hint="Serve it on 127.0.0.1 without --api-key (and unset LLMHOST_API_KEY), behind a keyed "
            "gateway.",
        )


def model_dir(candidate: Candidate) -> Path:
    """The local checkpoint directory mlx_lm loads; a Hub repo id is refused (see the module docstring)."""
    path = Path(candidate.model_source).expanduser()
    if not path.is_dir():
        raise UsageError(
            f"MLX LM serves a local checkpoint directory; {candidate.model_source} is not one.",
            hint="Download it first (`hf download REPO --local-dir DIR`), then "
            "`llmhost serve DIR --engine mlx`.",
        )
    return path.resolve()


def hub_cache_dir() -> Path:
    return engines_dir() / "mlx-hf-cache"


def build_argv(python: str, candidate: Candidate, options: ServeOptions, model: Path) -> list[str]:
    argv = [python, *SERVER_ARGV, "--model", str(model), "--host", options.host, "--port", str(options.port)]
    conc = max(candidate.concurrency, 1)
    prompts = min(conc, PROMPT_CONCURRENCY_CAP)
    argv += ["--decode-concurrency", str(conc), "--prompt-concurrency", str(prompts)]
    if candidate.memory.kv_cache_bytes > 0:
        argv += ["--prompt-cache-bytes", str(candidate.memory.kv_cache_bytes)]
    argv += ["--max-tokens", str(min(DEFAULT_MAX_TOKENS, candidate.context_length))]
    if options.trust_remote_code:
        argv.append("--trust-remote-code")
    argv += options.extra_args  # last: argparse keeps the last value, so a profile's flag wins
    return argv


def ready_deadline_s(candidate: Candidate) -> float:
    return READY_BASE_S + READY_PER_GIB_S * candidate.memory.weights_bytes / GIB


def probe_timeout_s(candidate: Candidate) -> float:
    """The first probe may wait behind the weights still loading (/health said ready before they were):
    give it the load time on top of a normal answer's, so a big model is not restarted for loading."""
    return COMPLETION_PROBE_TIMEOUT_S + READY_PER_GIB_S * candidate.memory.weights_bytes / GIB


class MlxEngine(LogReaders, EngineDefaults):
    name = MLX
    aliases: Mapping[str, str | None] = MappingProxyType({MLX: None})
    installable: tuple[str, ...] = (MLX,)

    def status(self, hardware: Hardware) -> list[EngineStatus]:
        base = EngineStatus(name=self.name, runtime="mlx-lm", installed=False, usable=False)
        if hardware.os == "darwin" and not hardware.is_apple_silicon:
            return [base.model_copy(update={"reason": "MLX runs on Apple Silicon only (this Mac is Intel)."})]
        if hardware.os not in ("darwin", "linux"):
            return [base.model_copy(update={"reason": f"MLX has no build for {hardware.os}."})]
        runtime = mlx_env.find_runtime()
        if runtime is None:
            package = mlx_env.choose_package()
            return [
                base.model_copy(
                    update={
                        "reason": "Not installed: run `llmhost engines install mlx` "
                        f"({' '.join(package.requirements)} into its own virtualenv)."
                    }
                )
            ]
        reason = None
        if hardware.os == "linux":
            reason = "mlx-cpu: runs on the CPU only here (the plan offers MLX on Linux with --engine mlx)."
        return [
            base.model_copy(
                update={
                    "installed": True,
                    "usable": True,
                    "version": runtime.version,
                    "location": runtime.location,
                    "reason": reason,
                }
            )
        ]

    def build_launch(self, candidate: Candidate, options: ServeOptions) -> LaunchSpec:
        check_options(options)
        opts = candidate.engine_options
        if isinstance(opts, MlxOptions) and opts.needs_conversion:
            raise UsageError(
                f"This plan's {candidate.quantization} needs an MLX conversion of the checkpoint first.",
                hint=opts.convert_command or "See `llmhost plan MODEL`.",
            )
        model = model_dir(candidate)
        runtime = mlx_env.find_runtime()
        # Not installed: the command still reads right for a python that has mlx_lm; serving it fails
        # with a clear cause (missing_library) and `llmhost engines` says how to install it.
        python = runtime.python if runtime is not None else "python3"
        cache = hub_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
        env.update(options.env)
        interval = options.completion_probe_interval_s
        if interval is None:
            interval = _env_seconds("LLMHOST_COMPLETION_PROBE_INTERVAL_S", COMPLETION_PROBE_INTERVAL_S)
        return LaunchSpec(
            engine=self.name,
            runtime="mlx-lm",
            argv=build_argv(python, candidate, options, model),
            env=env,
            health_path="/health",
            models_path="/v1/models",
            ready_deadline_s=ready_deadline_s(candidate),
            base_url=base_url(options.host, options.port),
            host=options.host,
            port=options.port,
            served_model_name=str(model),
            env_remove=list(ENV_REMOVE),
            stop_grace_s=STOP_GRACE_S,
            model_path=str(model),
            completion_probe_interval_s=interval or None,
            completion_probe_timeout_s=_env_seconds(
                "LLMHOST_COMPLETION_PROBE_TIMEOUT_S", probe_timeout_s(candidate)
            ),
        )

    def suggest_fix(
        self, cause: FailureCause | None, log_tail: str, launch: LaunchSpec, planned: StartupReport | None
    ) -> str | None:
        """The supervisor's hook: what to change after a failed start, in MLX LM's terms."""
        return suggest_fix(cause, launch)

    # -- what the other stages ask ---------------------------------------------------------------------
    def install(self, name: str, *, force: bool, log: Callable[[str], None]) -> str:
        """mlx-lm (mlx-metal on Apple Silicon, mlx-cpu on Linux) into its own virtualenv."""
        return str(mlx_env.install(force=force).location)

    def refuses_engine_bin(self, runtime: str | None) -> bool:
        """mlx_lm runs from its virtualenv and never reads `--engine-bin`; serve has always let the flag
        pass unused here (refusing it would change behaviour: issue 9 moved this check, nothing more).
        The other answers are the defaults: KV as context x slots, nothing to download (mlx_lm loads a
        local directory, `model_dir`), no official image."""
        return False

    def chat_template_args(self, template: str, *, is_file: bool, runtime: str) -> list[str]:
        """mlx_lm.server takes the template's text, and has no built-in names: llmhost reads the file."""
        hint = "Give a .jinja file (mlx_lm.server takes the template text; llmhost reads the file)."
        template_file_only(template, is_file, engine=TITLES[MLX], hint=hint)
        from llmhost.inputs import decode_utf8, read_regular_file

        path = Path(template)
        data = read_regular_file(path, what="chat_template file", limit=1024**2, error=ProfileError)
        return ["--chat-template", decode_utf8(data, source=template, error=ProfileError)]


def _env_seconds(name: str, default: float) -> float:
    from llmhost.engines.vllm_argv import _env_seconds as read

    return read(name, default)


# Failure signatures from mlx_lm 0.32 / mlx 0.32 output, most specific first (the messages quoted are
# the ones those sources raise; tests/mlx feeds real logs of a broken model and a taken port).
_FAILURES: list[tuple[FailureCause, re.Pattern[str]]] = [
    (
        "out_of_memory",
        re.compile(
            r"\[metal::malloc\]|Resource limit \(\d+\) exceeded|Insufficient Memory"
            r"|kIOGPUCommandBufferCallbackErrorOutOfMemory|std::bad_alloc|MemoryError|out of memory",
            re.I,
        ),
    ),
    ("port_in_use", re.compile(r"Address already in use|\[Errno (?:48|98)\]", re.I)),
    (
        "model_invalid",
        re.compile(
            r"No safetensors found in|Model type \S+ not supported|Config file not found"
            r"|config\.json.*(?:not found|No such file)|SafetensorError|HeaderTooLarge"
            r"|RepositoryNotFoundError|LocalEntryNotFoundError|Expected shape|Missing \d+ parameters"
            r"|Received \d+ parameters not in model|is not a local folder|JSONDecodeError"
            r"|HFValidationError|Repo id must be in the form",
            re.I,
        ),
    ),
    ("bad_argument", re.compile(r"error: unrecognized arguments|error: argument --|invalid choice", re.I)),
    (
        "missing_library",
        re.compile(
            r"No module named|ModuleNotFoundError|ImportError|cannot open shared object file"
            r"|undefined symbol|Library not loaded",
            re.I,
        ),
    ),
]
_STARTED = re.compile(r"Starting httpd at (?P<host>\S+) on port (?P<port>\d+)")


def classify_failure(log_tail: str) -> FailureCause | None:
    for cause, pattern in _FAILURES:
        if pattern.search(log_tail):
            return cause
    return None


def suggest_fix(cause: FailureCause | None, launch: LaunchSpec) -> str | None:
    model = launch.model_path or "the model directory"
    if cause == "model_invalid":
        return (
            f"mlx_lm loads a Hugging Face or MLX checkpoint directory: check that {model} holds config.json "
            "and *.safetensors (a GGUF file needs --engine llamacpp)."
        )
    if cause == "out_of_memory":
        return (
            "Lower --context or --concurrency, or serve a 4-bit conversion (`mlx_lm.convert -q --q-bits 4`); "
            "on a Mac the GPU may wire more after `sudo sysctl iogpu.wired_limit_mb=N`."
        )
    if cause == "missing_library":
        return "Reinstall the engine: `llmhost engines install mlx --force`."
    return None


def parse_startup(log_text: str) -> StartupReport:
    """mlx_lm.server prints no memory figures at start-up (its KV grows per request): only where it
    listens, so `ps` shows the plan's figures without an 'actual' to compare."""
    raw: dict[str, str] = {}
    if m := _STARTED.search(log_text):
        raw["listening"] = f"{m['host']}:{m['port']}"
    return StartupReport(raw=raw)


ENGINE: Engine = MlxEngine(classify_failure, parse_startup)
