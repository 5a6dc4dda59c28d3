"""After a stop: did the GPU memory of the engine's processes come back? (NVML, when there is a GPU.)

vLLM's engine core and workers hold GPU memory; one that outlives its API server keeps holding it
(vllm#55510). Killing the process tree is not the end of it: the driver frees a process's memory once the
process is fully gone, and NVML lists every process still holding some. So after stopping an engine the
supervisor asks NVML, for a few seconds, whether any of the engine's PIDs is still listed.

Without NVML (no NVIDIA GPU, no driver, no pynvml) there is nothing to check and the answer is "none".
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection

from llmhost.hardware.models import GPUProcess
from llmhost.hardware.nvidia import load_nvml, read_nvidia


def gpu_memory_holders(pids: Collection[int]) -> list[GPUProcess]:
    """The processes among `pids` that NVML lists as holding GPU memory now."""
    if not pids:
        return []
    nvml, _why_not = load_nvml()
    if nvml is None:
        return []
    try:
        reading = read_nvidia(nvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
    except Exception:  # NVML is best effort here: a failed check must never fail a stop
        return []
    wanted = set(pids)
    return [proc for gpu in reading.gpus for proc in gpu.processes if proc.pid in wanted]


def wait_gpu_released(
    pids: Collection[int], timeout_s: float = 10.0, poll_s: float = 0.5
) -> list[GPUProcess]:
    """Poll until none of `pids` holds GPU memory; return those still holding some at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = gpu_memory_holders(pids)
        if not held or time.monotonic() >= deadline:
            return held
        time.sleep(poll_s)
