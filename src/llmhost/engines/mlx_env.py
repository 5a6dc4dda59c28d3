"""MLX LM's own virtualenv: installed once per (platform, pinned versions), kept out of llmhost's env.

mlx-lm pulls in transformers, its own numpy and huggingface_hub pins; beside llmhost they would fight
ours, so `llmhost engines install mlx` makes `$LLMHOST_CACHE_DIR/engines/mlx-lm-<ver>-<device>/` and
llmhost launches `python -m mlx_lm server` with that env's python.

Which MLX backend goes in depends on the platform: on macOS arm64 the `mlx` wheel needs `mlx-metal`
(the Metal kernels, Apple GPU); on Linux `mlx` needs a backend package and `mlx-cpu` is the CPU one.
The CPU backend runs the same mlx_lm code (server, cache, sampling), which is what lets the tests here
serve through the real mlx_lm.server; what it does not exercise is Metal itself.

The env directory name carries every pinned version, so bumping a pin installs a new env beside the old
one instead of mutating it; the marker file is written last, after the env imported mlx_lm and mlx.core,
so a half-made env is never taken for a usable one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llmhost.cache import engines_dir
from llmhost.engines.base import EngineStatus
from llmhost.engines.vllm_env import MARKER, _install_lock, _log, _run, check_python, env_python, read_marker
from llmhost.errors import EngineError

MLX_LM_VERSION = "0.32.2"
MLX_VERSION = "0.32.4"  # mlx, mlx-metal and mlx-cpu are released together, same version number
INSTALL_TIMEOUT_S = 1800.0
VERIFY_TIMEOUT_S = 300.0
ENGINE = "mlx"
PYTHON_OVERRIDE_ENV = "LLMHOST_MLX_PYTHON"


@dataclass(frozen=True)
class MlxPackage:
    """The packages that make MLX LM run on this platform."""

    device: str  # "metal" or "cpu"
    requirements: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"mlx-lm-{MLX_LM_VERSION}-mlx-{MLX_VERSION}-{self.device}"


@dataclass(frozen=True)
class MlxRuntime:
    python: str
    version: str  # mlx_lm's version
    device: str
    location: str


def choose_package(platform: str | None = None, machine: str | None = None) -> MlxPackage:
    """`mlx-metal` on macOS arm64, `mlx-cpu` on Linux; refuses where MLX publishes no wheels."""
    platform = platform or sys.platform
    machine = (machine or os.uname().machine).lower()
    base = (f"mlx-lm=={MLX_LM_VERSION}", f"mlx=={MLX_VERSION}")
    if platform == "darwin":
        if machine not in ("arm64", "aarch64"):
            raise EngineError(
                "MLX runs on Apple Silicon only; this Mac is Intel.",
                hint="Use the llama.cpp engine: `llmhost serve MODEL --engine llamacpp`.",
            )
        return MlxPackage("metal", (*base, f"mlx-metal=={MLX_VERSION}"))
    if platform.startswith("linux"):
        return MlxPackage("cpu", (*base, f"mlx-cpu=={MLX_VERSION}"))
    raise EngineError(
        f"MLX has no build for {platform}.", hint="Use the llama.cpp engine (`--engine llamacpp`)."
    )


def env_dir(package: MlxPackage) -> Path:
    return engines_dir() / package.key


def _runtime(directory: Path, marker: dict[str, str]) -> MlxRuntime:
    return MlxRuntime(
        python=str(env_python(directory)),
        version=marker.get("version", "?"),
        device=marker.get("device", "?"),
        location=str(directory),
    )


def find_runtime() -> MlxRuntime | None:
    """This platform's installed env, else None; `LLMHOST_MLX_PYTHON` (a python with mlx_lm) overrides."""
    override = os.environ.get(PYTHON_OVERRIDE_ENV)
    if override:
        return MlxRuntime(override, "?", "?", override)
    try:
        directory = env_dir(choose_package())
    except EngineError:
        return None
    marker = read_marker(directory)
    if marker is None or marker.get("engine") != ENGINE:
        return None
    return _runtime(directory, marker)


def verify(python: str, timeout: float = VERIFY_TIMEOUT_S) -> str:
    """Import mlx_lm and run one MLX op with `python`; return mlx_lm's version.

    Importing mlx.core alone succeeds without a backend package; evaluating an array is what fails
    when mlx-cpu / mlx-metal is missing, so the check computes something.
    """
    code = (
        "import sys, mlx.core as mx, mlx_lm; from importlib.metadata import version; "
        "mx.eval(mx.array([1.0]) + 1); sys.stdout.write(version('mlx-lm'))"
    )
    return check_python(python, code, ENGINE, timeout)


def status_of(runtime: MlxRuntime) -> EngineStatus:
    return EngineStatus(
        name=ENGINE,
        runtime="mlx-lm",
        installed=True,
        usable=True,
        version=runtime.version,
        location=runtime.location,
    )


def install(*, force: bool = False) -> EngineStatus:
    """Create (or reuse) the MLX LM virtualenv for this platform; progress goes to stderr.

    Idempotent: a complete env (its marker exists) is reused at once; `force` rebuilds it.
    """
    package = choose_package()
    directory = env_dir(package)
    with _install_lock(directory):
        marker = read_marker(directory)
        if marker is not None and not force:
            _log(f"{package.key} already installed in {directory}", ENGINE)
            return status_of(_runtime(directory, marker))
        started = time.monotonic()
        if directory.exists():
            _log(f"removing incomplete or old env {directory}", ENGINE)
            shutil.rmtree(directory)
        _run([sys.executable, "-m", "venv", str(directory)], "create the MLX virtualenv", 300, ENGINE)
        python = str(env_python(directory))
        _log(f"installing {' '.join(package.requirements)} (a minute or two; cached afterwards)", ENGINE)
        _run(
            [python, "-m", "pip", "install", "--progress-bar", "off", *package.requirements],
            "install mlx-lm",
            INSTALL_TIMEOUT_S,
            ENGINE,
        )
        _log("verifying: importing mlx_lm and running one MLX op in the new env", ENGINE)
        version = verify(python)
        marker = {
            "engine": ENGINE,
            "version": version,
            "mlx_version": MLX_VERSION,
            "device": package.device,
            "requirements": " ".join(package.requirements),
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (directory / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        took = time.monotonic() - started
        _log(f"MLX LM {version} ({package.device}) ready in {directory} ({took:.0f} s)", ENGINE)
        return status_of(_runtime(directory, marker))
