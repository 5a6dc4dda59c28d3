"""After a stop, the supervisor asks NVML whether the engine's processes still hold GPU memory.

NVML is faked with the hardware tests' `FakeNvml`, which answers from the recorded H100 reading
(tests/fixtures/hardware/nvml_h100.json) with a compute process added or removed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from llmhost.supervise import gpu

_spec = importlib.util.spec_from_file_location(
    "hardware_fakes", Path(__file__).resolve().parents[1] / "hardware" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
hardware_fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hardware_fakes)


def _nvml_with(pids: list[int]) -> Any:
    reading = hardware_fakes.h100_reading()
    reading["devices"][0]["compute_processes"] = [{"pid": p, "usedGpuMemory": 70 * 1024**3} for p in pids]
    reading["devices"][0]["graphics_processes"] = []
    return hardware_fakes.FakeNvml(reading)


def test_engine_pids_still_on_the_gpu_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = _nvml_with([4242, 999])
    monkeypatch.setattr(gpu, "load_nvml", lambda: (nvml, None))
    held = gpu.gpu_memory_holders({4242, 5555})
    assert [p.pid for p in held] == [4242] and held[0].used_memory_bytes == 70 * 1024**3
    assert gpu.wait_gpu_released({4242}, timeout_s=0.2, poll_s=0.05)[0].pid == 4242
    assert nvml.shutdown_calls >= 1  # NVML is shut down after every look


def test_released_memory_and_no_nvml_report_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "load_nvml", lambda: (_nvml_with([999]), None))
    assert gpu.wait_gpu_released({4242}, timeout_s=5) == []
    monkeypatch.setattr(gpu, "load_nvml", lambda: (None, "no pynvml"))
    assert gpu.gpu_memory_holders({4242}) == []
    broken = hardware_fakes.FakeNvml(hardware_fakes.h100_reading(), init_error="NVMLError_DriverNotLoaded")
    monkeypatch.setattr(gpu, "load_nvml", lambda: (broken, None))
    assert gpu.gpu_memory_holders({4242}) == []
