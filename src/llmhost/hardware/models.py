"""The `Hardware` contract: what `detect` produces and `estimate`/`plan` consume.

Sizes are bytes, bandwidths bytes per second, so arithmetic never mixes GB and GiB.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmhost.contract import FrozenContract

BandwidthSource = Literal["nvml", "catalog", "estimate", "unknown"]


class GPUProcess(FrozenContract):
    pid: int
    name: str | None = None
    used_memory_bytes: int | None = None


class GPU(FrozenContract):
    index: int = Field(description="Index as the engine sees it (after CUDA_VISIBLE_DEVICES).")
    vendor: Literal["nvidia", "amd", "apple"]
    name: str
    uuid: str | None = None
    catalog_id: str | None = Field(default=None, description="Matching entry of the accelerator catalog.")
    memory_total_bytes: int
    memory_free_bytes: int | None = None
    memory_used_bytes: int | None = None
    compute_capability: str | None = Field(default=None, description='CUDA compute capability, e.g. "9.0".')
    architecture: str | None = None
    memory_bus_width_bits: int | None = None
    memory_max_clock_mhz: int | None = None
    memory_bandwidth_bytes_per_s: float | None = None
    bandwidth_source: BandwidthSource = "unknown"
    fp16_tflops: float | None = None
    fp8_tflops: float | None = None
    fp8_supported: bool = False
    pcie_generation: int | None = None
    pcie_width: int | None = None
    nvlink_active_links: int | None = None
    mig_mode: bool | None = None
    power_limit_w: float | None = None
    processes: list[GPUProcess] = Field(default_factory=list)
    unified_memory: bool = Field(default=False, description="Shares system RAM (Apple Silicon).")
    gpu_cores: int | None = None
    physical_index: int | None = Field(
        default=None, description="NVML/driver index before CUDA_VISIBLE_DEVICES renumbering."
    )
    parent_uuid: str | None = Field(default=None, description="For a MIG instance: the UUID of its GPU.")
    memory_limit_source: str | None = Field(
        default=None,
        description="Why memory_total_bytes is less than the device total (Apple: Metal working-set rule).",
    )


class CPU(FrozenContract):
    model_name: str
    architecture: str = Field(description="Machine architecture, e.g. x86_64 or arm64.")
    physical_cores: int | None = None
    logical_cores: int
    isa_flags: list[str] = Field(
        default_factory=list,
        description="Engine-relevant ISA features: avx2, avx512f, avx512_bf16, amx, neon...",
    )
    memory_bandwidth_bytes_per_s: float | None = None
    bandwidth_source: BandwidthSource = "unknown"


class Hardware(FrozenContract):
    source: Literal["detected", "catalog"] = "detected"
    os: str = Field(description="linux, darwin, windows")
    cpu: CPU
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[GPU] = Field(default_factory=list)
    driver_version: str | None = None
    cuda_version: str | None = None
    notes: list[str] = Field(default_factory=list, description="What could not be read, and why.")

    @property
    def has_nvidia(self) -> bool:
        return any(g.vendor == "nvidia" for g in self.gpus)

    @property
    def has_amd(self) -> bool:
        return any(g.vendor == "amd" for g in self.gpus)

    @property
    def is_apple_silicon(self) -> bool:
        return any(g.vendor == "apple" for g in self.gpus)
