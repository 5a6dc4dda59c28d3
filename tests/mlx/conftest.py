"""Fixtures for the MLX LM engine tests: recorded Apple hardware, the engine env, the tiny checkpoint.

Apple machines come from the recorded `sysctl` / `system_profiler` output in tests/fixtures/apple, run
through llmhost's real detection (only the command runner is replaced), so the Metal working-set limit
is the one the hardware module computes for that machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmhost.hardware.models import Hardware
from support.ci import IN_CI

APPLE = Path(__file__).resolve().parents[1] / "fixtures" / "apple"
GIB = 1024**3


def apple_hardware(name: str, *, ram_available_gib: float) -> Hardware:
    """The recorded Mac `name` (e.g. "m2_max_32gb") with a fixed amount of free RAM."""
    from llmhost.hardware.detect import detect

    sysctl = (APPLE / f"{name}.sysctl.txt").read_text()
    profiler = (APPLE / f"{name}.system_profiler.json").read_text()

    def run(argv: list[str]) -> str | None:
        return {"sysctl": sysctl, "system_profiler": profiler}.get(argv[0])

    hardware = detect(run=run, system="Darwin", machine="arm64", environ={})
    # RAM available is read from this (Linux) machine's psutil; pin it so the plan is deterministic.
    return hardware.model_copy(update={"ram_available_bytes": int(ram_available_gib * GIB)})


def require_mlx_engine() -> str:
    """The engine env's python; skipped on a developer machine without it, a failure in CI."""
    from llmhost.engines import mlx_env

    runtime = mlx_env.find_runtime()
    if runtime is not None:
        return runtime.python
    message = "MLX LM engine env missing: run `make engines` (llmhost engines install mlx)."
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    from llmhost.tiny_hf import tiny_llama_checkpoint

    return tiny_llama_checkpoint()


@pytest.fixture
def apple() -> object:
    """`apple("m2_max_32gb", ram_available_gib=28)`: a recorded Mac as a `Hardware`."""
    return apple_hardware


@pytest.fixture(scope="session")
def mlx_python() -> str:
    return require_mlx_engine()
