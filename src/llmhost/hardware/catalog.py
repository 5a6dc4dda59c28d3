"""The accelerator catalog (package data) and what-if hardware built from it.

`hardware_from_spec("rtx-4090:2")` builds a `Hardware` for a machine you do not have;
`match_gpu(name, memory)` finds the catalog row of a detected GPU to fill in TFLOPS and FP8.
The id scheme and the sources of the numbers are in docs/hardware.md.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from importlib import resources
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from llmhost.contract import FrozenContract
from llmhost.errors import HardwareError
from llmhost.hardware.models import CPU, GPU, Hardware
from llmhost.hardware.unified_memory import metal_working_set_bytes

GIB = 1024**3
MIB = 1024**2
GB = 1e9
TERA = 1e12

Vendor = Literal["nvidia", "amd", "apple"]


class HostSpec(FrozenContract):
    """The host a superchip brings with it (GH200: Grace CPU and its LPDDR5X)."""

    cpu: str
    architecture: str
    cores: int = Field(gt=0)
    ram_gb: int = Field(gt=0)
    memory_bandwidth_gb_s: float = Field(gt=0)
    isa_flags: list[str] = Field(default_factory=list)


class CatalogEntry(FrozenContract):
    """One accelerator model. Units: GB/s for bandwidth, dense TFLOPS, marketed GB for memory."""

    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    aliases: list[str] = Field(default_factory=list)
    vendor: Vendor
    name: str
    name_patterns: list[str] = Field(
        default_factory=list, description="Regexes matched against a normalised detected device name."
    )
    segment: Literal["datacenter", "workstation", "consumer", "soc"]
    architecture: str
    compute_capability: str | None = None
    memory_gb: float = Field(gt=0, description="Marketed memory size (Apple: the default configuration).")
    memory_mib: int | None = Field(default=None, description="Total as NVML reports it, where known.")
    memory_options_gb: list[int] = Field(default_factory=list, description="Apple unified-memory options.")
    memory_type: str
    memory_bus_width_bits: int | None = None
    bandwidth_gb_s: float = Field(gt=0)
    bandwidth_by_gpu_cores: dict[int, float] = Field(default_factory=dict)
    fp16_tflops: float | None = None
    fp8_tflops: float | None = None
    fp8_supported: bool | None = Field(default=None, description="Override; NVIDIA derives it from CC.")
    gpu_cores: list[int] = Field(default_factory=list)
    cpu_cores: int | None = None
    gpu_cores_by_memory_gb: dict[int, int] = Field(
        default_factory=dict, description="Apple: memory options sold only with a binned GPU."
    )
    host: HostSpec | None = Field(default=None, description="Per-GPU host of a superchip (GH200).")
    power_w: float | None = None
    source: str

    @model_validator(mode="after")
    def _apple_has_memory_options(self) -> CatalogEntry:
        if self.vendor == "apple" and not self.memory_options_gb:
            raise ValueError(f"{self.id}: an Apple chip needs memory_options_gb")
        return self

    @property
    def supports_fp8(self) -> bool:
        """FP8 tensor cores: NVIDIA compute capability >= 8.9 (Ada, Hopper, Blackwell)."""
        if self.fp8_supported is not None:
            return self.fp8_supported
        return fp8_supported_for_cc(self.compute_capability)

    @property
    def memory_bytes(self) -> int:
        if self.memory_mib is not None:
            return self.memory_mib * MIB
        return int(self.memory_gb * GIB)

    def bandwidth_bytes_per_s(self, gpu_cores: int | None = None) -> float:
        if gpu_cores is not None and gpu_cores in self.bandwidth_by_gpu_cores:
            return self.bandwidth_by_gpu_cores[gpu_cores] * GB
        return self.bandwidth_gb_s * GB


def fp8_supported_for_cc(compute_capability: str | None) -> bool:
    if not compute_capability:
        return False
    try:
        major, _, minor = compute_capability.partition(".")
        return (int(major), int(minor or 0)) >= (8, 9)
    except ValueError:
        return False


class Catalog(FrozenContract):
    entries: list[CatalogEntry]

    @model_validator(mode="after")
    def _names_are_unique(self) -> Catalog:
        seen: dict[str, str] = {}
        for entry in self.entries:
            for name in (entry.id, *entry.aliases):
                if name in seen:
                    raise ValueError(f"catalog name {name!r} is used by {seen[name]} and {entry.id}")
                seen[name] = entry.id
        return self

    def names(self) -> dict[str, CatalogEntry]:
        """Every id and alias -> its entry."""
        return {name: e for e in self.entries for name in (e.id, *e.aliases)}


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """Read and validate `llmhost/data/accelerators.yaml` (package data)."""
    import yaml  # only the first lookup pays for it (the result is cached for the process)

    text = resources.files("llmhost").joinpath("data/accelerators.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    try:
        return Catalog(entries=raw)
    except ValidationError as exc:  # a packaging bug, not a user error
        raise RuntimeError(f"the packaged accelerator catalog is invalid: {exc}") from exc


# ---------------------------------------------------------------- lookups


def lookup(name: str) -> tuple[CatalogEntry, int | None]:
    """Resolve a catalog id or alias; Apple ids may carry a memory suffix (`m3-max-64gb`).

    Returns the entry and, for Apple, the unified memory in GB the name asked for (else None).
    Raises `HardwareError` listing close matches when nothing is found.
    """
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    names = load_catalog().names()
    if key in names:
        return names[key], None
    match = re.fullmatch(r"(?P<chip>m\d+(?:-pro|-max|-ultra)?)-(?P<gb>\d+)gb?", key)
    if match and match.group("chip") in names:
        entry = names[match.group("chip")]
        memory_gb = int(match.group("gb"))
        if memory_gb not in entry.memory_options_gb:
            options = ", ".join(f"{entry.id}-{gb}gb" for gb in entry.memory_options_gb)
            raise HardwareError(
                f"{entry.name} does not come with {memory_gb} GB.", hint=f"Choose one of: {options}."
            )
        return entry, memory_gb
    close = difflib.get_close_matches(key, list(names), n=4, cutoff=0.5)
    hint = f"Did you mean: {', '.join(close)}?" if close else ""
    raise HardwareError(
        f"Unknown hardware {name!r}.",
        hint=(hint + " " if hint else "") + "See `llmhost hw --list-catalog` for every name.",
    )


def _normalise_device_name(name: str) -> str:
    text = name.lower()
    text = re.sub(r"\b(nvidia|geforce|tesla|quadro|amd|instinct|radeon)\b", " ", text)
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return " ".join(text.split())


def match_gpu(
    name: str, *, vendor: Vendor | None = None, memory_bytes: int | None = None
) -> CatalogEntry | None:
    """The catalog row for a detected device name (NVML, rocm-smi or `Apple M3 Max`), or None.

    When several rows match (an "A100 PCIe" in 40 and 80 GB), the one closest in memory wins.
    """
    normalised = _normalise_device_name(name)
    candidates = [
        e
        for e in load_catalog().entries
        if (vendor is None or e.vendor == vendor) and any(re.search(p, normalised) for p in e.name_patterns)
    ]
    if not candidates:
        return None
    if memory_bytes is None or len(candidates) == 1:
        return candidates[0]
    return min(candidates, key=lambda e: abs(e.memory_bytes - memory_bytes))


# ---------------------------------------------------------------- what-if hardware

_SPEC_HELP = "Pass it as NAME[:COUNT][,ram=SIZE][,cpus=N], e.g. h100-80gb:2 or rtx-4090:2,ram=128g."
# Host defaults for catalog machines (docs/hardware.md "What-if hardware").
_HOST_RAM_MIN_BYTES = 64 * GIB
_HOST_CORES_PER_GPU = 8
_HOST_ISA = ["avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl"]


def parse_size(text: str) -> int:
    """`512g`, `512gb`, `1.5t`, `64gib` -> bytes (binary units: RAM is sold in GiB)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise HardwareError(f"Cannot read the size {text!r}.", hint="Pass a size like 512g or 1t.")
    value = float(match.group(1))
    scale = {"": 1, "k": 1024, "m": MIB, "g": GIB, "t": 1024 * GIB}[match.group(2)]
    return int(value * scale)


_CUSTOM_HELP = (
    "Describe a GPU as gpu=SIZE,bw=BANDWIDTH[,count=N][,name=TEXT][,cc=X.Y][,ram=SIZE][,cpus=N], "
    "e.g. gpu=23.6GiB,bw=936GB/s,count=2."
)


def parse_bandwidth(text: str) -> float:
    """`936GB/s`, `936gb/s`, `3.35TB/s`, `936` (GB/s) -> bytes per second (decimal units, as sold)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:([gt])b?(?:/s)?)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise HardwareError(f"Cannot read the bandwidth {text!r}.", hint=_CUSTOM_HELP)
    return float(match.group(1)) * (1e12 if match.group(2) == "t" else 1e9)


def custom_hardware(options: list[str], spec: str) -> Hardware:
    """A GPU described by its figures (`gpu=23.6GiB,bw=936GB/s,...`): one not in the catalog, or a
    card whose memory differs from its catalog row. The size is the device total as nvidia-smi / NVML
    reports it; plans for vLLM take the driver's reservation off it as for any other GPU."""
    values: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("gpu", "bw", "count", "name", "cc", "ram", "cpus") or key in values:
            raise HardwareError(f"Cannot read {option!r} in {spec!r}.", hint=_CUSTOM_HELP)
        values[key] = value.strip()
    if "bw" not in values:
        raise HardwareError(f"{spec!r} gives no bandwidth (bw=...).", hint=_CUSTOM_HELP)
    memory = parse_size(values["gpu"])
    if memory <= 0:
        raise HardwareError(f"GPU memory {values['gpu']!r} must be more than 0.", hint=_CUSTOM_HELP)
    bandwidth = parse_bandwidth(values["bw"])
    count_text = values.get("count", "1")
    if not count_text.isdigit() or not 1 <= int(count_text) <= 64:
        raise HardwareError(f"GPU count {count_text!r} is not 1 to 64.", hint=_CUSTOM_HELP)
    cc = values.get("cc")
    if cc is not None and not re.fullmatch(r"\d+\.\d+", cc):
        raise HardwareError(f"Compute capability {cc!r} is not X.Y.", hint=_CUSTOM_HELP)
    name = values.get("name") or f"custom GPU {memory / GIB:.1f} GiB"
    entry = CatalogEntry(
        id="custom",
        vendor="nvidia",
        name=name,
        segment="workstation",
        architecture="unknown",
        memory_type="unknown",
        memory_gb=memory / GB,
        memory_mib=memory // MIB,
        bandwidth_gb_s=bandwidth / 1e9,
        compute_capability=cc,
        source=f"--hardware {spec}",
    )
    cpus = values.get("cpus")
    if cpus is not None and not (cpus.isdigit() and int(cpus) > 0):
        raise HardwareError(f"Cannot read cpus={cpus!r}.", hint=_CUSTOM_HELP)
    ram = parse_size(values["ram"]) if "ram" in values else None
    hardware = _discrete_hardware(entry, int(count_text), ram, int(cpus) if cpus else None)
    # The exact size given, not the MiB-rounded catalog figure.
    gpus = [g.model_copy(update={"memory_total_bytes": memory, "catalog_id": None}) for g in hardware.gpus]
    return hardware.model_copy(update={"gpus": gpus})


def hardware_from_spec(spec: str) -> Hardware:
    """Build a `Hardware` (source="catalog") from `NAME[:COUNT][,ram=SIZE][,cpus=N]`, or from a custom
    GPU's figures, `gpu=SIZE,bw=BANDWIDTH[,count=N][,name=TEXT][,cc=X.Y][,ram=SIZE][,cpus=N]`."""
    if spec.strip().lower().startswith("gpu="):
        return custom_hardware([part.strip() for part in spec.split(",")], spec)
    head, *options = [part.strip() for part in spec.split(",")]
    name, _, count_text = head.partition(":")
    if not name:
        raise HardwareError(f"Empty hardware spec {spec!r}.", hint=_SPEC_HELP)
    try:
        count = int(count_text) if count_text else 1
    except ValueError:
        raise HardwareError(f"GPU count {count_text!r} is not a number.", hint=_SPEC_HELP) from None
    if not 1 <= count <= 64:
        raise HardwareError(f"GPU count {count} is out of range (1 to 64).", hint=_SPEC_HELP)
    ram_bytes: int | None = None
    cpus: int | None = None
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise HardwareError(f"Cannot read {option!r} in {spec!r}.", hint=_SPEC_HELP)
        if key.strip() == "ram":
            ram_bytes = parse_size(value)
        elif key.strip() == "cpus" and value.strip().isdigit() and int(value) > 0:
            cpus = int(value)
        else:
            raise HardwareError(f"Unknown or bad option {option!r} in {spec!r}.", hint=_SPEC_HELP)

    entry, apple_memory_gb = lookup(name)
    if entry.vendor == "apple":
        if count != 1:
            raise HardwareError(f"{entry.name} is a single chip; drop ':{count}'.", hint=_SPEC_HELP)
        return _apple_hardware(entry, apple_memory_gb, cpus)
    return _discrete_hardware(entry, count, ram_bytes, cpus)


def gpu_from_entry(entry: CatalogEntry, index: int) -> GPU:
    """A GPU exactly as the catalog describes it (no live readings)."""
    return GPU(
        index=index,
        vendor=entry.vendor,
        name=entry.name,
        catalog_id=entry.id,
        memory_total_bytes=entry.memory_bytes,
        compute_capability=entry.compute_capability,
        architecture=entry.architecture,
        memory_bus_width_bits=entry.memory_bus_width_bits,
        memory_bandwidth_bytes_per_s=entry.bandwidth_bytes_per_s(),
        bandwidth_source="catalog",
        fp16_tflops=entry.fp16_tflops,
        fp8_tflops=entry.fp8_tflops,
        fp8_supported=entry.supports_fp8,
        power_limit_w=entry.power_w,
    )


def _discrete_hardware(entry: CatalogEntry, count: int, ram_bytes: int | None, cpus: int | None) -> Hardware:
    gpus = [gpu_from_entry(entry, i) for i in range(count)]
    gpu_total = sum(g.memory_total_bytes for g in gpus)
    # Twice the GPU memory (room to stage weights and for CPU offload), rounded up to 64 GiB.
    step = 64 * GIB
    default_ram = max(_HOST_RAM_MIN_BYTES, -(-2 * gpu_total // step) * step)
    ram = ram_bytes or default_ram
    where = "as described" if entry.id == "custom" else "from the catalog"
    notes = [f"what-if hardware {where}: {count} x {entry.name} ({entry.source})."]
    if entry.host is not None:  # a superchip: the host is part of the product, one per GPU
        host = entry.host
        ram = ram_bytes or host.ram_gb * count * GIB
        cores = cpus or host.cores * count
        cpu = CPU(
            model_name=host.cpu if count == 1 else f"{count} x {host.cpu}",
            architecture=host.architecture,
            physical_cores=cores,
            logical_cores=cores,
            isa_flags=list(host.isa_flags),
            memory_bandwidth_bytes_per_s=host.memory_bandwidth_gb_s * GB * count,
            bandwidth_source="catalog",
        )
    else:
        from llmhost.hardware.cpu import estimate_memory_bandwidth  # cpu.py imports psutil

        physical = cpus or _HOST_CORES_PER_GPU * count
        logical = physical * 2
        model = "catalog host (x86_64 server)"
        cpu = CPU(
            model_name=model,
            architecture="x86_64",
            physical_cores=physical,
            logical_cores=logical,
            isa_flags=list(_HOST_ISA),
            memory_bandwidth_bytes_per_s=estimate_memory_bandwidth(model, physical, logical, server=True),
            bandwidth_source="estimate",
        )
        if ram_bytes is None:
            notes.append(f"host RAM assumed {ram // GIB} GiB; set it with ',ram=SIZE'.")
    return Hardware(
        source="catalog",
        os="linux",
        cpu=cpu,
        ram_total_bytes=ram,
        ram_available_bytes=ram,
        gpus=gpus,
        notes=notes,
    )


def _apple_hardware(entry: CatalogEntry, memory_gb: int | None, cpus: int | None) -> Hardware:
    chosen_gb = memory_gb or max(entry.memory_options_gb)
    ram = chosen_gb * GIB
    working_set, rule = metal_working_set_bytes(ram, wired_limit_mb=None)
    # Some memory sizes are sold only with the binned GPU (M3 Max 36 GB: 30 cores, 300 GB/s).
    gpu_cores = entry.gpu_cores_by_memory_gb.get(chosen_gb) or (
        max(entry.gpu_cores) if entry.gpu_cores else None
    )
    bandwidth = entry.bandwidth_bytes_per_s(gpu_cores)
    gpu = GPU(
        index=0,
        vendor="apple",
        name=entry.name,
        catalog_id=entry.id,
        memory_total_bytes=working_set,
        architecture=entry.architecture,
        memory_bus_width_bits=entry.memory_bus_width_bits,
        memory_bandwidth_bytes_per_s=bandwidth,
        bandwidth_source="catalog",
        fp16_tflops=(
            round(entry.fp16_tflops * gpu_cores / max(entry.gpu_cores), 2)
            if entry.fp16_tflops and gpu_cores and entry.gpu_cores
            else entry.fp16_tflops
        ),
        fp8_supported=False,
        unified_memory=True,
        gpu_cores=gpu_cores,
        memory_limit_source=rule,
    )
    cores = cpus or entry.cpu_cores or 8
    cpu = CPU(
        model_name=entry.name,
        architecture="arm64",
        physical_cores=cores,
        logical_cores=cores,
        isa_flags=["neon", "fp16", "dotprod"],
        memory_bandwidth_bytes_per_s=bandwidth,
        bandwidth_source="catalog",
    )
    notes = [f"what-if hardware from the catalog: {entry.name} with {chosen_gb} GB unified memory."]
    if memory_gb is None:
        notes.append(
            f"memory assumed {chosen_gb} GB (the largest option); name another like {entry.id}-"
            f"{min(entry.memory_options_gb)}gb."
        )
    return Hardware(
        source="catalog",
        os="darwin",
        cpu=cpu,
        ram_total_bytes=ram,
        ram_available_bytes=ram,
        gpus=[gpu],
        notes=notes,
    )


def list_catalog() -> list[CatalogEntry]:
    return list(load_catalog().entries)
