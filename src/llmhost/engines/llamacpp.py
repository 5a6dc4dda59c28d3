"""The llama.cpp engine: one module, two runtimes.

1. `llama-server`, llama.cpp's native server (continuous batching over `-np` slots, `/health`, `/metrics`):
   used when given with `--engine-bin`, found on PATH, or built by `llmhost engines install llama-server`.
2. llama-cpp-python's server (`python -m llama_cpp.server`, extra `llmhost[llamacpp]`): the embedded
   default that pip alone installs. It serialises requests behind a lock and by default cancels an in-flight
   stream when a new request arrives (`interrupt_requests=True` in its settings), so llmhost always starts
   it with `--interrupt_requests False`: concurrent clients then queue instead of cutting each other off.

Secrets: the API key reaches llama-server through `LLAMA_API_KEY` (its documented env alias of
`--api-key`) and llama-cpp-python through `API_KEY` (pydantic-settings reads every setting from the
environment); never argv. Inherited variables that would silently change either server (`LLAMA_ARG_*`,
llama-cpp-python's `HOST`/`PORT`/`API_KEY`/`CONFIG_FILE`) are removed first.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from llmhost.engine_ids import LLAMA_CPP_PYTHON, LLAMA_SERVER, LLAMACPP, TITLES
from llmhost.engines.base import (
    ContainerImage,
    Engine,
    EngineDefaults,
    EngineStatus,
    ExportTraits,
    FailureCause,
    LaunchSpec,
    ServeOptions,
    StartupReport,
)
from llmhost.engines.llamacpp_build import find_cached_binary
from llmhost.errors import ProfileError, UsageError
from llmhost.hardware.models import Hardware
from llmhost.net import base_url
from llmhost.plan.models import Candidate
from llmhost.plan.options import LlamaCppOptions

if TYPE_CHECKING:
    from llmhost.models.spec import ModelSpec

RUNTIME_SERVER = LLAMA_SERVER
RUNTIME_PYTHON = LLAMA_CPP_PYTHON
RUNTIMES = (RUNTIME_SERVER, RUNTIME_PYTHON)

# llama.cpp KV cache types (`-ctk/-ctv`) and their ggml_type numbers (llama-cpp-python's type_k/type_v).
KV_CACHE_TYPES: dict[str, int] = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30,
}  # fmt: skip

# llama-cpp-python's server started through llmhost's wrapper, with llama.cpp's extra CPU buffer types off.
_NO_REPACK_SERVER = "llmhost.engines._llama_cpp_python_server"
_SERVER_EXTRA_MODULES = ("uvicorn", "fastapi", "sse_starlette", "pydantic_settings", "starlette_context")

# llama.cpp's server images (rolling tags published by ggml-org) run /app/llama-server; they ship curl
# (their own HEALTHCHECK uses it). llama-cpp-python has no official image.
SERVER_IMAGE = ContainerImage(
    cpu="ghcr.io/ggml-org/llama.cpp:server",
    gpu="ghcr.io/ggml-org/llama.cpp:server-cuda",
    model_flag="-m",
    positional_model=False,
    probe=("curl", "-fsS", "{url}"),
)


def find_llama_server(engine_bin: str | None = None) -> Path | None:
    """`--engine-bin`, else `llama-server` on PATH, else the binary cached by `engines install`."""
    if engine_bin:
        path = Path(engine_bin).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise UsageError(
                f"--engine-bin {engine_bin} is not an executable file.",
                hint="Pass a llama-server binary, or build one: `llmhost engines install llama-server`.",
            )
        return path
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    return find_cached_binary()


def llama_cpp_python_available() -> tuple[bool, str | None, str | None]:
    """(installed with its server extra?, version, why not)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return False, None, "llama-cpp-python is not installed: `pip install 'llmhost[llamacpp]'`."
    try:
        version: str | None = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        version = None
    missing = [m for m in _SERVER_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return (
            False,
            version,
            (
                f"llama-cpp-python's server extra is missing ({', '.join(missing)}): "
                "`pip install 'llama-cpp-python[server]'`."
            ),
        )
    return True, version, None


def llama_server_version(binary: Path) -> str | None:
    try:
        proc = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    # "version: 7890 (abc1234)" (releases) or "version: 0.5.0-dev (build 0, commit unknown)" (sdist).
    match = re.search(r"version:\s*([^\n]+)", proc.stdout + proc.stderr)
    return match.group(1).strip() if match else None


def _build_info(binary: Path) -> str:
    info = binary.parent.parent / "BUILD_INFO"
    return info.read_text() if info.is_file() else ""


def _built_from(binary: Path) -> str | None:
    """'llama-cpp-python 0.3.36' for a binary llmhost built from that sdist (BUILD_INFO), else None."""
    match = re.search(r"^sdist=llama_cpp_python-(.+?)\.tar\.gz$", _build_info(binary), re.MULTILINE)
    return f"llama-cpp-python {match.group(1)}" if match else None


class LlamaCppEngine(EngineDefaults):
    """Answers the defaults where llama.cpp has nothing of its own: its start-up log counts context x
    slots (n_ctx), as `planned_kv_tokens` does."""

    name = LLAMACPP
    # `--engine llamacpp` lets serve pick the runtime; naming a runtime forces it.
    aliases: Mapping[str, str | None] = MappingProxyType(
        {
            LLAMACPP: None,
            TITLES[LLAMACPP]: None,
            RUNTIME_SERVER: RUNTIME_SERVER,
            RUNTIME_PYTHON: RUNTIME_PYTHON,
        }
    )
    # llama-cpp-python comes with pip (`llmhost[llamacpp]`); the native server is built here.
    installable: tuple[str, ...] = (RUNTIME_SERVER,)

    # -- what is installed ---------------------------------------------------------------------------
    def status(self, hardware: Hardware) -> list[EngineStatus]:
        out = []
        try:
            binary = find_llama_server()
        except UsageError:
            binary = None
        if binary is None:
            out.append(
                EngineStatus(
                    name=self.name,
                    runtime=RUNTIME_SERVER,
                    installed=False,
                    usable=False,
                    reason="Not found on PATH or in the llmhost cache: build it with "
                    "`llmhost engines install llama-server` (or `make llama-server`).",
                )
            )
        else:
            version = llama_server_version(binary)
            reason = None
            usable = version is not None
            source = _built_from(binary)
            if version is not None and source and "commit unknown" in version:
                # A build from the sdist carries no git data: name the sources instead.
                version = f"{version.split(' (')[0]} (llama.cpp vendored in {source})"
            if not usable:
                reason = f"{binary} did not run (`{binary} --version` failed): rebuild it."
            elif hardware.has_nvidia and "GGML_CUDA=ON" not in _build_info(binary) and _build_info(binary):
                reason = "CPU-only build on a machine with NVIDIA GPUs: rebuild with CUDA (needs nvcc)."
            out.append(
                EngineStatus(
                    name=self.name,
                    runtime=RUNTIME_SERVER,
                    installed=True,
                    usable=usable,
                    version=version,
                    location=str(binary),
                    reason=reason,
                )
            )
        ok, version, why = llama_cpp_python_available()
        out.append(
            EngineStatus(
                name=self.name,
                runtime=RUNTIME_PYTHON,
                installed=version is not None,
                usable=ok,
                version=version,
                location=sys.executable if version is not None else None,
                reason=why,
            )
        )
        return out

    def install(self, name: str, *, force: bool, log: Callable[[str], None]) -> str:
        """Build the native llama-server for this machine (CUDA/Metal when it has them)."""
        from llmhost.engines.llamacpp_build import build_llama_server
        from llmhost.hardware import detect

        hardware = detect()
        path = build_llama_server(
            has_nvidia=hardware.has_nvidia, is_apple=hardware.is_apple_silicon, force=force, log=log
        )
        return str(path)

    def pick_runtime(self, options: ServeOptions) -> str:
        if options.runtime:
            if options.runtime not in RUNTIMES:
                raise UsageError(
                    f"Unknown llama.cpp runtime {options.runtime!r}.",
                    hint=f"Use one of: {', '.join(RUNTIMES)}.",
                )
            return options.runtime
        return _default_runtime(options.engine_bin)

    # -- what the other stages ask ---------------------------------------------------------------------
    def plan_fields(self, runtime: str | None, engine_bin: str | None) -> dict[str, str]:
        """The plan sizes llama.cpp's buffers for the runtime serve will launch: the forced one, else
        llama-server where there is one (`--engine-bin`, PATH, the cache), else llama-cpp-python."""
        return {"llamacpp_runtime": runtime if runtime in RUNTIMES else _default_runtime(engine_bin)}

    def refuses_engine_bin(self, runtime: str | None) -> bool:
        """`--engine-bin` names a llama-server binary: llama-cpp-python's server takes none."""
        return runtime == RUNTIME_PYTHON

    def hub_files(self, spec: ModelSpec, candidate: Candidate) -> list[tuple[str, int | None]]:
        """The GGUF file(s) the candidate loads from the Hub; [] when it is local or no Hub model."""
        if spec.repo_id is None:
            return []
        wanted = candidate.gguf_file
        if wanted and Path(wanted).is_file():
            return []
        for variant in spec.gguf_variants:
            paths_in_variant = [f.path for f in variant.files]
            if (wanted and wanted in paths_in_variant) or (
                not wanted and variant.tag == candidate.quantization
            ):
                return [(f.path, f.size_bytes) for f in variant.files]
        if wanted:
            return [(wanted, None)]
        return []

    def chat_template_args(self, template: str, *, is_file: bool, runtime: str) -> list[str]:
        """llama-server takes a built-in name and a file, llama-cpp-python's server its format names."""
        if runtime == RUNTIME_PYTHON:
            if is_file:
                raise ProfileError(
                    "chat_template: llama-cpp-python's server takes a chat format name (e.g. gemma), "
                    "not a file.",
                    hint="Name a format, or serve with --engine llama-server.",
                )
            return ["--chat_format", template]
        if is_file:
            return ["--chat-template-file", template]
        # llama-server renders templates with Jinja by default, and then takes `--chat-template gemma` as
        # the literal template text "gemma" (every prompt became that word); its built-in names need
        # --no-jinja.
        return ["--no-jinja", "--chat-template", template]

    def export_traits(self, runtime: str) -> ExportTraits:
        """llama-server runs in ggml-org's images (CPU and CUDA); llama-cpp-python has none."""
        return ExportTraits(image=SERVER_IMAGE) if runtime == RUNTIME_SERVER else ExportTraits()

    # -- launch ----------------------------------------------------------------------------------------
    def build_launch(self, candidate: Candidate, options: ServeOptions) -> LaunchSpec:
        model_path = candidate.gguf_file or candidate.model_source
        if not str(model_path).lower().endswith(".gguf") and not Path(model_path).is_file():
            raise UsageError(
                f"llama.cpp loads GGUF files; {model_path} is not one.",
                hint="Serve a .gguf file or org/name-GGUF:Q4_K_M, or use --engine vllm for this model.",
            )
        runtime = self.pick_runtime(options)
        opts = candidate.engine_options
        if not isinstance(opts, LlamaCppOptions):
            raise UsageError(
                f"llama.cpp cannot launch a {candidate.engine} candidate.", hint="Plan it for llama.cpp."
            )
        context = int(candidate.context_length)
        parallel = (opts.n_parallel if opts.n_parallel is not None else candidate.concurrency) or 1
        gpu_layers = candidate.gpu_layers if candidate.gpu_layers is not None else 0
        threads, n_batch, n_ubatch = opts.threads, opts.n_batch, opts.n_ubatch
        # f16 is both runtimes' default: pass a cache type only when the plan chose another one.
        kv_type = candidate.kv_cache_dtype if candidate.kv_cache_dtype in KV_CACHE_TYPES else None
        if kv_type == "f16":
            kv_type = None
        flash = opts.flash_attn
        if kv_type not in (None, "f16", "bf16", "f32") and flash is None:
            flash = True  # llama.cpp needs flash attention for a quantized V cache
        size = (
            Path(model_path).stat().st_size if Path(model_path).is_file() else candidate.memory.weights_bytes
        )
        # Loading reads the file once (mmap); allow ~50 MB/s worst case on slow disks, at least a minute.
        deadline = max(60.0, 60.0 + size / 50e6)
        common = dict(
            engine=self.name,
            runtime=runtime,
            host=options.host,
            port=options.port,
            base_url=base_url(options.host, options.port),
            served_model_name=options.served_model_name,
            api_key_env=options.api_key_env,
            ready_deadline_s=deadline,
            model_path=str(model_path),
        )
        if runtime == RUNTIME_SERVER:
            binary = find_llama_server(options.engine_bin)
            if binary is None:
                raise UsageError(
                    "The native llama-server is not installed.",
                    hint="Run `llmhost engines install llama-server`, or use --engine llama-cpp-python.",
                )
            argv = [
                str(binary), "-m", str(model_path),
                "--host", options.host, "--port", str(options.port),
                "--alias", options.served_model_name,
                # -c is the total KV budget shared by the -np slots (as Ollama passes it: ctx x parallel).
                "-c", str(context * parallel), "-np", str(parallel),
                "-ngl", str(gpu_layers),
                "--metrics", "--no-webui",
                # Verbosity 4 ("trace") keeps the model/KV/compute buffer lines parse_startup reads;
                # the default (3) drops them. It adds a few lines per request; the log is rotated.
                "-lv", "4",
            ]  # fmt: skip
            if threads:
                argv += ["-t", str(threads)]
            if n_batch:
                argv += ["-b", str(n_batch)]
            if n_ubatch:
                argv += ["-ub", str(n_ubatch)]
            if flash is not None:
                argv += ["-fa", "on" if flash else "off"]
            if kv_type:
                argv += ["-ctk", kv_type, "-ctv", kv_type]
            if opts.repack is False:  # an AMX CPU (plan/llamacpp_candidates.amx_host)
                argv += ["--no-repack"]
            if options.embeddings:  # llama-server: the embedding use case only (a dedicated embedder)
                argv += ["--embeddings"]
            argv += options.extra_args
            return LaunchSpec(
                argv=argv,
                env=dict(options.env),
                env_remove=["LLAMA_ARG_*", "LLAMA_API_KEY"],
                secret_env={"LLAMA_API_KEY": options.api_key_env} if options.api_key_env else {},
                health_path="/health",
                models_path="/v1/models",
                metrics_path="/metrics",
                **common,
            )
        ok, _, why = llama_cpp_python_available()
        if not ok:
            raise UsageError(f"llama-cpp-python cannot run: {why}", hint="Or use the native llama-server.")
        # An AMX CPU: its server has no --no-repack, so a small wrapper clears use_extra_bufts for it.
        server_module = "llama_cpp.server" if opts.repack is not False else _NO_REPACK_SERVER
        argv = [
            sys.executable, "-m", server_module,
            "--model", str(model_path),
            "--model_alias", options.served_model_name,
            "--host", options.host, "--port", str(options.port),
            "--n_ctx", str(context),
            "--n_gpu_layers", str(gpu_layers),
            # Never cancel an in-flight stream when another request arrives: requests queue instead.
            "--interrupt_requests", "False",
        ]  # fmt: skip
        if threads:
            argv += ["--n_threads", str(threads)]
        if n_batch:
            argv += ["--n_batch", str(n_batch)]
        if n_ubatch:
            argv += ["--n_ubatch", str(n_ubatch)]
        if flash is not None:
            argv += ["--flash_attn", "True" if flash else "False"]
        if kv_type:
            argv += ["--type_k", str(KV_CACHE_TYPES[kv_type]), "--type_v", str(KV_CACHE_TYPES[kv_type])]
        if server_module == _NO_REPACK_SERVER:
            argv += ["--no-repack"]
        if options.embeddings:
            argv += ["--embedding", "True"]
        argv += options.extra_args
        # Its __main__ reads HOST/PORT from the environment *over* the flags: pin them to ours.
        env = {**options.env, "HOST": options.host, "PORT": str(options.port)}
        return LaunchSpec(
            argv=argv,
            env=env,
            env_remove=["API_KEY", "CONFIG_FILE", "MODEL", "MODEL_ALIAS", "INTERRUPT_REQUESTS", "ROOT_PATH"],
            secret_env={"API_KEY": options.api_key_env} if options.api_key_env else {},
            health_path="/v1/models",
            models_path="/v1/models",
            metrics_path=None,
            **common,
        )

    # -- logs --------------------------------------------------------------------------------------------
    def classify_failure(self, log_tail: str) -> FailureCause | None:
        text = log_tail.lower()
        for cause, needles in _FAILURE_PATTERNS:
            if any(n in text for n in needles):
                return cause
        return None

    def parse_startup(self, log_text: str) -> StartupReport:
        weights = kv = compute = 0.0
        seen = {"weights": False, "kv": False, "compute": False}
        raw: dict[str, str] = {}
        kv_tokens = None
        mapped = repack = 0.0  # MiB in CPU_Mapped and CPU_REPACK model buffers
        for line in log_text.splitlines():
            if m := _MODEL_BUFFER.search(line):
                size = float(m.group(2))
                if m.group(1) == "CPU_REPACK":
                    repack += size
                else:
                    weights += size
                    mapped += size if m.group(1).endswith("_Mapped") else 0.0
                seen["weights"] = True
            elif m := _KV_BUFFER.search(line):
                kv += float(m.group(1))
                seen["kv"] = True
            elif m := _COMPUTE_BUFFER.search(line):
                compute += float(m.group(1))
                seen["compute"] = True
            elif m := _KV_CELLS.search(line):
                # A sliding-window model has two caches (non-SWA, then SWA: window + ubatch cells); the
                # context is what the full-attention one holds, the larger.
                tokens = int(m.group(1)) * int(m.group(2))
                if kv_tokens is None or tokens > kv_tokens:
                    kv_tokens = tokens
                    raw["kv_cache"] = line.split(":", 1)[-1].strip()
            elif m := _CTX_SETTING.search(line):
                raw[m.group(1)] = m.group(2)
        # The CPU backend copies Q4_0/Q4_K/IQ4_NL... matrices into a CPU_REPACK buffer. With mmap the
        # CPU_Mapped buffer still spans those tensors' file pages, which are then never read again
        # (clean page cache the OS drops): the plan counts them once (DeviceBuffers.resident_bytes), and
        # so does this figure. Without mmap the plain CPU buffer leaves them out: the copy is the only one.
        if repack:
            raw["cpu_repack_mib"] = f"{repack:.2f}"
            weights += 0.0 if mapped else repack
        mib = 1024 * 1024
        parallel = raw.get("n_seq_max")
        concurrency = None
        if kv_tokens and parallel and raw.get("n_ctx_seq"):
            concurrency = kv_tokens / max(int(raw["n_ctx_seq"]), 1)
        elif parallel:
            concurrency = float(parallel)
        return StartupReport(
            weights_bytes=int(weights * mib) if seen["weights"] else None,
            kv_cache_bytes=int(kv * mib) if seen["kv"] else None,
            kv_cache_tokens=kv_tokens,
            compute_bytes=int(compute * mib) if seen["compute"] else None,
            max_concurrency=concurrency,
            raw=raw,
        )


_MODEL_BUFFER = re.compile(r"(\S+) model buffer size =\s+([\d.]+) MiB")
_KV_BUFFER = re.compile(r"\S+ KV buffer size =\s+([\d.]+) MiB")
_COMPUTE_BUFFER = re.compile(r"\S+ compute buffer size =\s+([\d.]+) MiB")
# "(1024 cells, 4 layers, 2/2 seqs)": cells per stream; llama-server without a unified KV keeps one
# stream per slot, so the tokens the cache holds are cells x streams.
_KV_CELLS = re.compile(
    r"llama_kv_cache: size =\s+[\d.]+ MiB \(\s*(\d+) cells,\s+\d+ layers,\s+\d+/(\d+) seqs"
)
_CTX_SETTING = re.compile(r"llama_context: (n_ctx|n_ctx_seq|n_seq_max|n_batch|n_ubatch|flash_attn)\s+= (\S+)")

# Order matters: an allocation failure is often followed by "failed to load model".
_FAILURE_PATTERNS: tuple[tuple[FailureCause, tuple[str, ...]], ...] = (
    (
        "out_of_memory",
        (
            "out of memory", "cudamalloc failed", "failed to allocate", "unable to allocate",
            "cannot allocate memory", "std::bad_alloc", "vk_error_out_of_device_memory", "memoryerror",
            "ggml_assert(ctx->mem_buffer != null)",
        ),
    ),
    (
        "port_in_use",
        ("address already in use", "couldn't bind", "errno 98", "failed to bind", "address in use"),
    ),
    (
        "missing_library",
        (
            "error while loading shared libraries", "cannot open shared object file", "no module named",
            "modulenotfounderror", "importerror", "failed to load shared library",
        ),
    ),
    (
        "model_invalid",
        (
            "invalid magic", "failed to load model", "error loading model", "gguf_init_from_file",
            "not a gguf", "failed to read magic", "model file not found", "unknown model architecture",
        ),
    ),
    (
        "bad_argument",
        ("error: invalid argument", "unknown argument", "unrecognized arguments", "invalid value for"),
    ),
)  # fmt: skip


def _default_runtime(engine_bin: str | None) -> str:
    """llama-server where there is one (`--engine-bin`, PATH, the cache), else llama-cpp-python."""
    return RUNTIME_SERVER if engine_bin or find_llama_server() is not None else RUNTIME_PYTHON


ENGINE: Engine = LlamaCppEngine()
