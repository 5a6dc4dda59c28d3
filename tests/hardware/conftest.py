"""Fixtures for the hardware tests; the main one is a stand-in for the `pynvml` module.

`FakeNvml` answers from a recorded NVML reading: `tests/fixtures/hardware/nvml_h100.json` is what
NVML returned on a real H100 80GB HBM3, errors included. Only the edge is faked; the exceptions are
the real pynvml ones, so llmhost's NVML code runs unchanged. A value recorded as
{"error": "NVMLError_X"} raises that error; a query the reading does not mention raises
NotSupported, as NVML does for features a GPU lacks.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hardware"


def h100_reading() -> dict[str, Any]:
    return json.loads((FIXTURES / "nvml_h100.json").read_text())


def _raise(error_name: str) -> None:
    raise getattr(pynvml, error_name)()


class FakeNvml:
    NVMLError = pynvml.NVMLError
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    NVML_NVLINK_MAX_LINKS = pynvml.NVML_NVLINK_MAX_LINKS

    def __init__(self, reading: dict[str, Any], *, init_error: str | None = None) -> None:
        self.reading = copy.deepcopy(reading)
        self.init_error = init_error
        self.initialised = False
        self.shutdown_calls = 0

    # -- helpers
    @staticmethod
    def _value(source: dict[str, Any], key: str) -> Any:
        if key not in source:
            _raise("NVMLError_NotSupported")
        value = source[key]
        if isinstance(value, dict) and "error" in value:
            _raise(value["error"])
        return value

    def _require_init(self) -> None:
        if not self.initialised:
            _raise("NVMLError_Uninitialized")

    # -- library
    def nvmlInit(self) -> None:
        if self.init_error:
            _raise(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._require_init()
        return self._value(self.reading, "driver_version")

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._require_init()
        return self._value(self.reading, "cuda_driver_version")

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        return self._value(self.reading.get("process_names", {}), str(pid))

    # -- devices
    def nvmlDeviceGetCount(self) -> int:
        self._require_init()
        return len(self.reading["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        self._require_init()
        devices = self.reading["devices"]
        if not 0 <= index < len(devices):
            _raise("NVMLError_InvalidArgument")
        return devices[index]

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> str:
        return self._value(h, "name")

    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> str:
        return self._value(h, "uuid")

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(**self._value(h, "memory_info"))

    def nvmlDeviceGetCudaComputeCapability(self, h: dict[str, Any]) -> tuple[int, int]:
        major, minor = self._value(h, "cuda_compute_capability")
        return major, minor

    def nvmlDeviceGetArchitecture(self, h: dict[str, Any]) -> int:
        return self._value(h, "architecture")

    def nvmlDeviceGetMemoryBusWidth(self, h: dict[str, Any]) -> int:
        return self._value(h, "memory_bus_width_bits")

    def nvmlDeviceGetMaxClockInfo(self, h: dict[str, Any], clock_type: int) -> int:
        assert clock_type == pynvml.NVML_CLOCK_MEM, "only the memory clock is recorded"
        return self._value(h, "max_mem_clock_mhz")

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: dict[str, Any]) -> int:
        return self._value(h, "pcie_link_gen_max")

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: dict[str, Any]) -> int:
        return self._value(h, "pcie_link_width_max")

    def nvmlDeviceGetNvLinkState(self, h: dict[str, Any], link: int) -> int:
        links = self._value(h, "nvlink")
        if link >= len(links):
            _raise("NVMLError_InvalidArgument")
        entry = links[link]
        if isinstance(entry, dict):
            _raise(entry["error"])
        return entry

    def nvmlDeviceGetMigMode(self, h: dict[str, Any]) -> list[int]:
        return self._value(h, "mig_mode")

    def nvmlDeviceGetMaxMigDeviceCount(self, h: dict[str, Any]) -> int:
        return self._value(h, "max_mig_device_count")

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: dict[str, Any], index: int) -> dict[str, Any]:
        slots = self._value(h, "mig_devices")
        if index >= len(slots) or slots[index] is None:
            _raise("NVMLError_NotFound")
        return slots[index]

    def nvmlDeviceGetEnforcedPowerLimit(self, h: dict[str, Any]) -> int:
        return self._value(h, "enforced_power_limit_mw")

    def nvmlDeviceGetPowerManagementLimit(self, h: dict[str, Any]) -> int:
        return self._value(h, "power_limit_mw")

    def nvmlDeviceGetComputeRunningProcesses(self, h: dict[str, Any]) -> list[SimpleNamespace]:
        return [SimpleNamespace(**p) for p in self._value(h, "compute_processes")]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: dict[str, Any]) -> list[SimpleNamespace]:
        return [SimpleNamespace(**p) for p in self._value(h, "graphics_processes")]


@pytest.fixture
def h100() -> dict[str, Any]:
    """The recorded H100 reading (a fresh copy per test, free to edit)."""
    return h100_reading()


@pytest.fixture
def make_nvml() -> Callable[..., FakeNvml]:
    return FakeNvml


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES.parent
