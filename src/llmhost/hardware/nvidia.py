"""NVIDIA GPUs through NVML (`import pynvml`, from the nvidia-ml-py distribution).

The NVML module is passed in (`read_nvidia(nvml, ...)`): production passes the real `pynvml`,
tests pass a fake built from readings of a real H100, so the parsing, the bandwidth arithmetic
and the CUDA_VISIBLE_DEVICES rules run unchanged in tests. No NVML library or no driver is the
normal case on a machine without NVIDIA GPUs: it yields no GPUs and a note, never an error.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import psutil

from llmhost.hardware.models import GPU, BandwidthSource, GPUProcess
from llmhost.hardware.visible import Device, select_visible

# NVML architecture enum (nvml.h nvmlDeviceArchitecture_t) -> name.
_ARCHITECTURES = {
    2: "kepler",
    3: "maxwell",
    4: "pascal",
    5: "volta",
    6: "turing",
    7: "ampere",
    8: "ada",
    9: "hopper",
    10: "blackwell",
    13: "rubin",
}
_NVML_CLOCK_MEM = 2
_NVML_NVLINK_MAX_LINKS = 18
_NVML_FEATURE_ENABLED = 1
_NVML_DEVICE_MIG_ENABLE = 1
_NVML_VALUE_NOT_AVAILABLE = 0xFFFFFFFFFFFFFFFF
# Init failures that just mean "no NVIDIA GPU here".
_NO_DRIVER_ERRORS = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded", "NVMLError_NoPermission")


def peak_memory_bandwidth(bus_width_bits: int, max_memory_clock_mhz: int) -> float:
    """Peak DRAM bandwidth in bytes/s: bytes per transfer x clock x 2 transfers per clock (DDR).

    H100 SXM: 5120 / 8 * 2619e6 * 2 = 3.352e12 B/s, the 3.35 TB/s of the datasheet. NVML reports
    GDDR6X clocks so that the same x2 holds (RTX 4090: 384 / 8 * 10501e6 * 2 = 1.008e12).
    """
    return bus_width_bits / 8 * max_memory_clock_mhz * 1e6 * 2


@dataclass
class NvidiaReading:
    gpus: list[GPU] = field(default_factory=list)
    driver_version: str | None = None
    cuda_version: str | None = None
    notes: list[str] = field(default_factory=list)


def load_nvml() -> tuple[Any | None, str | None]:
    """Import the real `pynvml` module, or say why not."""
    try:
        import pynvml
    except ImportError:
        return (
            None,
            "NVIDIA: the nvidia-ml-py package (pynvml) is not installed, so NVIDIA GPUs were not probed.",
        )
    return pynvml, None


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__


class _Reader:
    """Calls NVML functions, turning NVMLError (NotSupported, NoPermission...) into None."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.error: type[BaseException] = nvml.NVMLError

    def get(self, function: str, *args: object) -> Any:
        fn = getattr(self.nvml, function, None)
        if fn is None:  # an older nvidia-ml-py without this query
            return None
        try:
            return fn(*args)
        except self.error:
            return None


def cuda_version_text(version: int | None) -> str | None:
    """NVML's CUDA driver version integer (13000, 12040) -> "13.0", "12.4"."""
    if not version:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


def read_nvidia(nvml: Any, visible_devices: str | None) -> NvidiaReading:
    """Every NVIDIA GPU an engine started with `CUDA_VISIBLE_DEVICES=visible_devices` would see."""
    reading = NvidiaReading()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        if _error_name(exc) in _NO_DRIVER_ERRORS:
            reading.notes.append(f"NVIDIA: no usable driver ({exc}); no NVIDIA GPUs.")
        else:
            reading.notes.append(
                f"NVIDIA: NVML failed to initialise ({exc}); NVIDIA GPUs not detected. "
                "Check the driver with `nvidia-smi`."
            )
        return reading
    try:
        _read_initialised(_Reader(nvml), visible_devices, reading)
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
    return reading


def _read_initialised(nvml: _Reader, visible_devices: str | None, reading: NvidiaReading) -> None:
    driver = nvml.get("nvmlSystemGetDriverVersion")
    reading.driver_version = _text(driver) if driver is not None else None
    reading.cuda_version = cuda_version_text(nvml.get("nvmlSystemGetCudaDriverVersion"))
    count = nvml.get("nvmlDeviceGetCount")
    if count is None:
        reading.notes.append("NVIDIA: NVML could not count the GPUs.")
        return
    # Candidates CUDA can select: whole GPUs, or the MIG instances of a GPU in MIG mode.
    candidates: list[GPU] = []
    for index in range(count):
        handle = nvml.get("nvmlDeviceGetHandleByIndex", index)
        if handle is None:
            reading.notes.append(f"NVIDIA: GPU {index} could not be opened (NVML); skipped.")
            continue
        gpu = _read_device(nvml, handle, index, reading.notes)
        if gpu.mig_mode:
            instances = _read_mig_instances(nvml, handle, gpu)
            reading.notes.append(
                f"NVIDIA: GPU {index} ({gpu.name}) is in MIG mode; engines see its "
                f"{len(instances)} MIG instance(s), listed instead of the whole GPU."
            )
            candidates.extend(instances)
        else:
            candidates.append(gpu)
    devices = [
        Device(index=g.physical_index if g.physical_index is not None else -1, uuid=g.uuid)
        for g in candidates
    ]
    selection = select_visible(visible_devices, devices)
    reading.notes.extend(selection.notes)
    if visible_devices is not None and visible_devices.strip():
        reading.notes.append(
            f"CUDA_VISIBLE_DEVICES={visible_devices!r}: {len(selection.chosen)} of {len(candidates)} "
            "NVIDIA device(s) visible."
        )
    reading.gpus = [
        candidates[pos].model_copy(update={"index": new_index})
        for new_index, pos in enumerate(selection.chosen)
    ]


def _read_device(nvml: _Reader, handle: object, index: int, notes: list[str]) -> GPU:
    # The catalog (pydantic models, YAML) loads only when a GPU is found.
    from llmhost.hardware.catalog import fp8_supported_for_cc, match_gpu

    name = _text(nvml.get("nvmlDeviceGetName", handle) or f"NVIDIA GPU {index}")
    uuid_raw = nvml.get("nvmlDeviceGetUUID", handle)
    memory = nvml.get("nvmlDeviceGetMemoryInfo", handle)
    total = int(memory.total) if memory is not None else 0
    if memory is None:
        notes.append(f"NVIDIA: GPU {index} did not report its memory.")
    cc_pair = nvml.get("nvmlDeviceGetCudaComputeCapability", handle)
    cc = f"{cc_pair[0]}.{cc_pair[1]}" if cc_pair is not None else None
    arch_code = nvml.get("nvmlDeviceGetArchitecture", handle)
    bus_bits = nvml.get("nvmlDeviceGetMemoryBusWidth", handle)
    mem_clock = nvml.get(
        "nvmlDeviceGetMaxClockInfo", handle, getattr(nvml.nvml, "NVML_CLOCK_MEM", _NVML_CLOCK_MEM)
    )
    entry = match_gpu(name, vendor="nvidia", memory_bytes=total or None)

    bandwidth: float | None = None
    source: BandwidthSource = "unknown"
    if bus_bits and mem_clock:
        bandwidth, source = peak_memory_bandwidth(int(bus_bits), int(mem_clock)), "nvml"
    elif entry is not None:
        bandwidth, source = entry.bandwidth_bytes_per_s(), "catalog"
        notes.append(
            f"NVIDIA: GPU {index} did not report bus width/memory clock; bandwidth from the catalog."
        )
    else:
        notes.append(f"NVIDIA: GPU {index} bandwidth unknown (no NVML bus width/clock, not in the catalog).")

    mig = nvml.get("nvmlDeviceGetMigMode", handle)
    power_mw = nvml.get("nvmlDeviceGetEnforcedPowerLimit", handle) or nvml.get(
        "nvmlDeviceGetPowerManagementLimit", handle
    )
    return GPU(
        index=index,
        physical_index=index,
        vendor="nvidia",
        name=name,
        uuid=_text(uuid_raw) if uuid_raw is not None else None,
        catalog_id=entry.id if entry else None,
        memory_total_bytes=total,
        memory_free_bytes=int(memory.free) if memory is not None else None,
        memory_used_bytes=int(memory.used) if memory is not None else None,
        compute_capability=cc,
        # An enum value newer than this table (or NotSupported) falls back to the catalog row.
        architecture=_ARCHITECTURES.get(arch_code) or (entry.architecture if entry else None),
        memory_bus_width_bits=int(bus_bits) if bus_bits else None,
        memory_max_clock_mhz=int(mem_clock) if mem_clock else None,
        memory_bandwidth_bytes_per_s=bandwidth,
        bandwidth_source=source,
        fp16_tflops=entry.fp16_tflops if entry else None,
        fp8_tflops=entry.fp8_tflops if entry else None,
        fp8_supported=fp8_supported_for_cc(cc) if cc else bool(entry and entry.supports_fp8),
        pcie_generation=_int_or_none(nvml.get("nvmlDeviceGetMaxPcieLinkGeneration", handle)),
        pcie_width=_int_or_none(nvml.get("nvmlDeviceGetMaxPcieLinkWidth", handle)),
        nvlink_active_links=_nvlink_links(nvml, handle),
        mig_mode=(mig[0] == _NVML_DEVICE_MIG_ENABLE) if mig is not None else None,
        power_limit_w=power_mw / 1000 if power_mw else None,
        processes=_processes(nvml, handle),
    )


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int) else None


def _nvlink_links(nvml: _Reader, handle: object) -> int | None:
    """Active NVLink links; None when the GPU has no NVLink (NotSupported on link 0)."""
    active = 0
    max_links = getattr(nvml.nvml, "NVML_NVLINK_MAX_LINKS", _NVML_NVLINK_MAX_LINKS)
    for link in range(max_links):
        state = nvml.get("nvmlDeviceGetNvLinkState", handle, link)
        if state is None:
            if link == 0:
                return None
            break  # past the last link this GPU has
        if state == _NVML_FEATURE_ENABLED:
            active += 1
    return active


def _processes(nvml: _Reader, handle: object) -> list[GPUProcess]:
    seen: dict[int, GPUProcess] = {}
    for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for proc in nvml.get(query, handle) or []:
            pid = int(proc.pid)
            used = getattr(proc, "usedGpuMemory", None)
            used_bytes = int(used) if used is not None and used != _NVML_VALUE_NOT_AVAILABLE else None
            name = nvml.get("nvmlSystemGetProcessName", pid)
            text = _text(name) if name else _process_name(pid)
            seen.setdefault(pid, GPUProcess(pid=pid, name=text, used_memory_bytes=used_bytes))
    return list(seen.values())


def _process_name(pid: int) -> str | None:
    """NVML cannot always name a process (another container's, another user's); the OS may."""
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return None


def _read_mig_instances(nvml: _Reader, handle: object, parent: GPU) -> list[GPU]:
    instances: list[GPU] = []
    for slot in range(nvml.get("nvmlDeviceGetMaxMigDeviceCount", handle) or 0):
        mig = nvml.get("nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)
        if mig is None:
            continue  # an empty slot
        memory = nvml.get("nvmlDeviceGetMemoryInfo", mig)
        uuid = nvml.get("nvmlDeviceGetUUID", mig)
        name = nvml.get("nvmlDeviceGetName", mig)
        total = int(memory.total) if memory is not None else 0
        share = total / parent.memory_total_bytes if parent.memory_total_bytes else None
        instances.append(
            parent.model_copy(
                update={
                    "name": _text(name) if name else f"{parent.name} MIG {slot}",
                    "uuid": _text(uuid) if uuid else None,
                    "parent_uuid": parent.uuid,
                    "memory_total_bytes": total,
                    "memory_free_bytes": int(memory.free) if memory is not None else None,
                    "memory_used_bytes": int(memory.used) if memory is not None else None,
                    # A slice gets its share of the memory controllers, so of the bandwidth.
                    "memory_bandwidth_bytes_per_s": (
                        parent.memory_bandwidth_bytes_per_s * share
                        if share is not None and parent.memory_bandwidth_bytes_per_s
                        else None
                    ),
                    "fp16_tflops": None,
                    "fp8_tflops": None,
                    "processes": [],
                }
            )
        )
    return instances
