"""What the planner may use of a `Hardware`: free memory per GPU, engine platform support."""

from __future__ import annotations

from llmhost.estimate import overheads as oh
from llmhost.hardware.models import GPU, Hardware


def gpu_free_bytes(gpu: GPU) -> int:
    """Memory other processes leave free (NVML free, else total - used, else total - process sums)."""
    if gpu.memory_free_bytes is not None:
        return min(gpu.memory_free_bytes, gpu.memory_total_bytes)
    if gpu.memory_used_bytes is not None:
        return max(gpu.memory_total_bytes - gpu.memory_used_bytes, 0)
    held = sum(p.used_memory_bytes or 0 for p in gpu.processes)
    return max(gpu.memory_total_bytes - held, 0)


def gpu_held_bytes(gpu: GPU) -> int:
    return gpu.memory_total_bytes - gpu_free_bytes(gpu)


def device_name(gpu: GPU) -> str:
    prefix = {"nvidia": "cuda", "amd": "rocm", "apple": "metal"}[gpu.vendor]
    return f"{prefix}:{gpu.index}"


def vllm_gpus(hardware: Hardware) -> list[GPU]:
    """GPUs vLLM's GPU build can use: NVIDIA (CUDA) or AMD (ROCm) on Linux."""
    if hardware.os != "linux":
        return []
    return [g for g in hardware.gpus if g.vendor in ("nvidia", "amd")]


def vllm_cpu_supported(hardware: Hardware) -> bool:
    arch = hardware.cpu.architecture.lower()
    return hardware.os == "linux" and not hardware.gpus and arch in ("x86_64", "amd64")


def fp8_capable(gpu: GPU) -> bool:
    if gpu.fp8_supported:
        return True
    if gpu.vendor == "nvidia" and gpu.compute_capability:
        try:
            major, minor = (int(x) for x in gpu.compute_capability.split(".")[:2])
        except ValueError:
            return False
        return (major, minor) >= (8, 9)
    return False


def bf16_capable(gpu: GPU) -> bool:
    if gpu.vendor != "nvidia" or not gpu.compute_capability:
        return True
    try:
        return int(gpu.compute_capability.split(".")[0]) >= 8
    except ValueError:
        return True


def host_capacity_bytes(hardware: Hardware) -> int:
    return max(hardware.ram_available_bytes - oh.HOST_RESERVE_BYTES, 0)
