"""CPU and RAM: model name, cores, engine-relevant ISA features, and a memory-bandwidth figure.

`/proc/cpuinfo` is parsed by a pure function (tests feed it recorded files); psutil gives core
counts and RAM. The bandwidth figure is an estimate whose method is documented in
docs/hardware.md ("CPU memory bandwidth"); `bandwidth_source` says so.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from llmhost.hardware.models import CPU

# x86 flags as /proc/cpuinfo spells them, in the order we report them. Only features that engines
# (llama.cpp's ggml CPU backend, vLLM's CPU backend, oneDNN) pick kernels by.
_X86_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
# Linux arm64 "Features" names -> the name we report.
_ARM_FLAGS = {
    "asimd": "neon",
    "fphp": "fp16",
    "asimdhp": "fp16",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "bf16": "bf16",
    "sve": "sve",
    "sve2": "sve2",
    "sme": "sme",
}

GB = 1e9
# Peak DRAM bandwidth of the platform, by class (see docs/hardware.md for the arithmetic):
#   server:  8 channels x DDR4-3200 (25.6 GB/s each) = 204.8 GB/s
#   desktop: 2 channels x DDR4-3200                  =  51.2 GB/s
_SERVER_PLATFORM_BYTES_PER_S = 204.8 * GB
_DESKTOP_PLATFORM_BYTES_PER_S = 51.2 * GB
# What one core can pull from DRAM with streaming loads; a VM with few vCPUs gets no more.
_PER_CORE_BYTES_PER_S = 12.0 * GB
_SERVER_NAME = re.compile(r"epyc|xeon|threadripper|graviton|ampere|neoverse|grace", re.IGNORECASE)


# Linux arm64 /proc/cpuinfo has no model name: (implementer, part) -> name, for the server cores
# LLM hosts use (Arm's Technical Reference Manuals list the MIDR part numbers).
_ARM_PARTS = {
    ("0x41", "0xd0c"): "Arm Neoverse-N1",
    ("0x41", "0xd40"): "Arm Neoverse-V1",
    ("0x41", "0xd49"): "Arm Neoverse-N2",
    ("0x41", "0xd4f"): "Arm Neoverse-V2",
    ("0x41", "0xd8e"): "Arm Neoverse-N3",
    ("0x41", "0xd84"): "Arm Neoverse-V3",
    ("0x41", "0xd08"): "Arm Cortex-A72",
    ("0x41", "0xd0b"): "Arm Cortex-A76",
}


@dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo says: the model name and the raw feature flags."""

    model_name: str | None
    flags: frozenset[str] = field(default_factory=frozenset)


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse Linux /proc/cpuinfo (x86 `flags`, arm64 `Features`); the first processor is enough."""
    model: str | None = None
    flags: set[str] = set()
    implementer: str | None = None
    part: str | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        value = value.strip()
        if key in ("model name", "hardware", "cpu model") and model is None and value:
            model = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key == "cpu implementer" and implementer is None:
            implementer = value.lower()
        elif key == "cpu part" and part is None:
            part = value.lower()
    if model is None and implementer and part:
        model = _ARM_PARTS.get((implementer, part), f"Arm CPU (implementer {implementer}, part {part})")
    return CpuInfo(model_name=model, flags=frozenset(flags))


def isa_features(flags: frozenset[str] | set[str], machine: str) -> list[str]:
    """The engine-relevant subset of `flags`, normalised (`amx` added when any AMX unit exists)."""
    if _is_arm(machine):
        found = {_ARM_FLAGS[f] for f in flags if f in _ARM_FLAGS}
        order = ["neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2", "sme"]
        return [name for name in order if name in found]
    result = [f for f in _X86_FLAGS if f in flags]
    if any(f.startswith("amx_") for f in flags):
        result.append("amx")
    return result


def _is_arm(machine: str) -> bool:
    return machine.lower() in ("arm64", "aarch64") or machine.lower().startswith("armv")


def estimate_memory_bandwidth(
    model_name: str, physical_cores: int | None, logical_cores: int, *, server: bool | None = None
) -> float:
    """A documented estimate of sustained DRAM bandwidth (bytes/s) for a CPU we have no catalog row for.

    min(platform peak by class, cores x per-core streaming rate): a 2-vCPU VM on a 12-channel EPYC
    cannot use the socket's bandwidth, and a 64-core desktop cannot exceed two channels.
    """
    if server is None:
        server = bool(_SERVER_NAME.search(model_name))
    platform_peak = _SERVER_PLATFORM_BYTES_PER_S if server else _DESKTOP_PLATFORM_BYTES_PER_S
    cores = physical_cores or logical_cores
    return min(platform_peak, max(1, cores) * _PER_CORE_BYTES_PER_S)


def read_cpu(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> CPU:
    """The CPU of this machine (Linux /proc/cpuinfo when present, otherwise `platform`)."""
    machine = platform.machine() or "unknown"
    info = CpuInfo(model_name=None)
    with contextlib.suppress(OSError):
        info = parse_cpuinfo(cpuinfo_path.read_text(encoding="utf-8", errors="replace"))
    model = info.model_name or platform.processor() or f"{machine} CPU"
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False)
    return CPU(
        model_name=model,
        architecture=machine,
        physical_cores=physical,
        logical_cores=logical,
        isa_flags=isa_features(info.flags, machine),
        memory_bandwidth_bytes_per_s=estimate_memory_bandwidth(model, physical, logical),
        bandwidth_source="estimate",
    )


def read_ram() -> tuple[int, int]:
    """(total, available) system RAM in bytes."""
    memory = psutil.virtual_memory()
    return int(memory.total), int(memory.available)
