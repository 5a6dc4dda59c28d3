"""Apple Silicon: chip, unified memory, GPU cores and the memory Metal lets the GPU use.

Read from `sysctl` and `system_profiler SPHardwareDataType SPDisplaysDataType -json`, both run
with a list argv (no shell) and parsed by pure functions that tests feed with recorded output.
Bandwidth and TFLOPS come from the chip catalog. The working-set rule is in docs/hardware.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from llmhost.hardware._run import Runner, run_command
from llmhost.hardware.models import CPU, GPU
from llmhost.hardware.unified_memory import metal_working_set_bytes
from llmhost.units import GIB, MIB

SYSCTL_KEYS = (
    "hw.memsize",
    "hw.model",
    "machdep.cpu.brand_string",
    "hw.physicalcpu",
    "hw.logicalcpu",
    "hw.perflevel0.physicalcpu",
    "hw.perflevel1.physicalcpu",
    "iogpu.wired_limit_mb",
    "debug.iogpu.wired_limit",
    "hw.optional.AdvSIMD",
    "hw.optional.arm.FEAT_FP16",
    "hw.optional.arm.FEAT_DotProd",
    "hw.optional.arm.FEAT_I8MM",
    "hw.optional.arm.FEAT_BF16",
    "hw.optional.arm.FEAT_SME",
)
SYSTEM_PROFILER_ARGV = ("system_profiler", "SPHardwareDataType", "SPDisplaysDataType", "-json")

_SYSCTL_ISA = {
    "hw.optional.AdvSIMD": "neon",
    "hw.optional.arm.FEAT_FP16": "fp16",
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_BF16": "bf16",
    "hw.optional.arm.FEAT_SME": "sme",
}


def parse_sysctl(text: str) -> dict[str, str]:
    """`sysctl key ...` output (`key: value` lines) -> dict."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class SystemProfile:
    """The parts of `system_profiler SPHardwareDataType SPDisplaysDataType -json` we use."""

    chip: str | None = None
    machine_model: str | None = None
    memory_bytes: int | None = None
    cpu_cores: int | None = None
    performance_cores: int | None = None
    efficiency_cores: int | None = None
    gpu_name: str | None = None
    gpu_cores: int | None = None
    notes: list[str] = field(default_factory=list)


def _parse_size(text: str) -> int | None:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(GB|TB|MB)\s*", text)
    if not match:
        return None
    scale = {"MB": MIB, "GB": GIB, "TB": 1024 * GIB}[match.group(2)]
    return int(float(match.group(1)) * scale)


def parse_system_profiler(text: str) -> SystemProfile:
    """Parse the JSON; missing keys leave fields None (older macOS spells some differently)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return SystemProfile(notes=["system_profiler printed something that is not JSON."])
    if not isinstance(data, dict):
        return SystemProfile(notes=["system_profiler JSON has an unexpected shape."])
    hardware = _first(data.get("SPHardwareDataType"))
    chip = hardware.get("chip_type") or hardware.get("cpu_type")
    memory = _parse_size(str(hardware.get("physical_memory", "")))
    # "proc 10:8:2" is total:performance:efficiency; macOS 26 prints four fields whose order differs
    # between reports ("proc 12:0:8:4", "proc 24:16:8:0"), so from those only the total is taken.
    processors = str(hardware.get("number_processors", ""))
    cores = re.fullmatch(r"proc (\d+)(?::(\d+):(\d+))?", processors)
    total_cores = re.match(r"proc (\d+)", processors)
    displays = data.get("SPDisplaysDataType")
    gpu: dict[str, object] = {}
    for item in displays if isinstance(displays, list) else []:
        # An Apple Silicon Mac lists its own GPU (sppci_model "Apple M..."); skip eGPU/Intel entries.
        if isinstance(item, dict) and str(item.get("sppci_model", "")).startswith("Apple"):
            gpu = item
            break
    gpu_cores_text = str(gpu.get("sppci_cores", ""))
    return SystemProfile(
        chip=str(chip) if chip else None,
        machine_model=_str_or_none(hardware.get("machine_model")),
        memory_bytes=memory,
        cpu_cores=int(total_cores.group(1)) if total_cores else None,
        performance_cores=int(cores.group(2)) if cores and cores.group(2) else None,
        efficiency_cores=int(cores.group(3)) if cores and cores.group(3) else None,
        gpu_name=_str_or_none(gpu.get("sppci_model")),
        gpu_cores=int(gpu_cores_text) if gpu_cores_text.isdigit() else None,
    )


def _first(value: object) -> dict[str, object]:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return {}


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None


@dataclass(frozen=True)
class AppleReading:
    gpu: GPU | None
    cpu: CPU | None
    ram_total_bytes: int | None
    notes: list[str]


def apple_from_outputs(sysctl_text: str | None, profiler_text: str | None) -> AppleReading:
    """Combine recorded `sysctl` and `system_profiler` output into the chip's GPU and CPU."""
    # The catalog (pydantic models, YAML) loads only when a GPU is found.
    from llmhost.hardware.catalog import match_gpu

    notes: list[str] = []
    sysctl = parse_sysctl(sysctl_text or "")
    if sysctl_text is None:
        notes.append("Apple: sysctl could not be run.")
    profile = parse_system_profiler(profiler_text) if profiler_text else SystemProfile()
    if profiler_text is None:
        notes.append("Apple: system_profiler could not be run; GPU core count unknown.")
    notes.extend(profile.notes)

    ram = _int(sysctl.get("hw.memsize")) or profile.memory_bytes
    chip = sysctl.get("machdep.cpu.brand_string") or profile.chip or profile.gpu_name
    if ram is None or chip is None:
        notes.append("Apple: neither sysctl nor system_profiler said which chip and how much memory.")
        return AppleReading(gpu=None, cpu=None, ram_total_bytes=ram, notes=notes)

    working_set, rule = metal_working_set_bytes(
        ram,
        _int(sysctl.get("iogpu.wired_limit_mb")),
        legacy_wired_limit_bytes=_int(sysctl.get("debug.iogpu.wired_limit")),
    )
    entry = match_gpu(chip, vendor="apple")
    gpu_cores = profile.gpu_cores
    if entry is None:
        notes.append(f"Apple: {chip} is not in the catalog; its bandwidth and TFLOPS are unknown.")
    gpu = GPU(
        index=0,
        vendor="apple",
        name=profile.gpu_name or chip,
        catalog_id=entry.id if entry else None,
        memory_total_bytes=working_set,
        architecture=entry.architecture if entry else None,
        memory_bus_width_bits=entry.memory_bus_width_bits if entry else None,
        memory_bandwidth_bytes_per_s=entry.bandwidth_bytes_per_s(gpu_cores) if entry else None,
        bandwidth_source="catalog" if entry else "unknown",
        fp16_tflops=_scaled_tflops(entry.fp16_tflops, entry.gpu_cores, gpu_cores) if entry else None,
        fp8_supported=False,
        unified_memory=True,
        gpu_cores=gpu_cores,
        memory_limit_source=rule,
    )
    physical = _int(sysctl.get("hw.physicalcpu")) or profile.cpu_cores
    logical = _int(sysctl.get("hw.logicalcpu")) or physical or 1
    isa = [name for key, name in _SYSCTL_ISA.items() if sysctl.get(key) == "1"]
    cpu = CPU(
        model_name=chip,
        architecture="arm64",
        physical_cores=physical,
        logical_cores=logical,
        isa_flags=isa or ["neon"],  # every Apple Silicon core has NEON (AdvSIMD)
        memory_bandwidth_bytes_per_s=gpu.memory_bandwidth_bytes_per_s,
        bandwidth_source=gpu.bandwidth_source,
    )
    return AppleReading(gpu=gpu, cpu=cpu, ram_total_bytes=ram, notes=notes)


def _scaled_tflops(full: float | None, options: list[int], cores: int | None) -> float | None:
    """Catalog TFLOPS are for the largest GPU; a binned part has proportionally fewer ALUs."""
    if full is None or not options or cores is None:
        return full
    return round(full * cores / max(options), 2)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def read_apple(run: Runner = run_command) -> AppleReading:
    """Run sysctl and system_profiler on this Mac and parse them."""
    return apple_from_outputs(run(("sysctl", *SYSCTL_KEYS)), run(SYSTEM_PROFILER_ARGV))
