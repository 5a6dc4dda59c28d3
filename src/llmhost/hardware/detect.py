"""`detect()`: compose the probes (CPU/RAM, NVIDIA, AMD, Apple) into one `Hardware`.

Each probe is optional and never raises for missing hardware or tools: what could not be read
goes into `Hardware.notes`. The seams (`nvml`, `environ`, `run`) let tests drive every path.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any

from llmhost.hardware._run import Runner, run_command
from llmhost.hardware.models import GPU, Hardware

_USE_REAL_NVML: Any = object()


def _os_name(system: str) -> str:
    return {"Linux": "linux", "Darwin": "darwin", "Windows": "windows"}.get(
        system, system.lower() or "unknown"
    )


def detect(
    *,
    nvml: Any = _USE_REAL_NVML,
    environ: Mapping[str, str] | None = None,
    run: Runner = run_command,
    system: str | None = None,
    machine: str | None = None,
) -> Hardware:
    """Detect this machine's hardware. Keyword arguments exist for tests; callers pass none."""
    # The probes (psutil, the YAML catalog, pynvml) load here, not when `llmhost.hardware` is
    # imported: every CLI command imports the `Hardware` model, few of them detect.
    from llmhost.hardware.amd import read_amd
    from llmhost.hardware.apple import read_apple
    from llmhost.hardware.cpu import read_cpu, read_ram
    from llmhost.hardware.nvidia import load_nvml, read_nvidia

    environ = os.environ if environ is None else environ
    system = system or platform.system()
    machine = machine or platform.machine()
    notes: list[str] = []
    gpus: list[GPU] = []
    driver_version: str | None = None
    cuda_version: str | None = None

    cpu = read_cpu()
    ram_total, ram_available = read_ram()

    if system == "Darwin" and machine.lower() == "arm64":
        apple = read_apple(run)
        notes.extend(apple.notes)
        if apple.gpu is not None:
            gpus.append(apple.gpu)
        if apple.cpu is not None:
            cpu = apple.cpu
        if apple.ram_total_bytes:
            ram_total = apple.ram_total_bytes
    elif system != "Darwin":  # macOS dropped NVIDIA/CUDA after 10.13
        if nvml is _USE_REAL_NVML:
            nvml, note = load_nvml()
            if note:
                notes.append(note)
        if nvml is not None:
            reading = read_nvidia(nvml, environ.get("CUDA_VISIBLE_DEVICES"))
            notes.extend(reading.notes)
            gpus.extend(reading.gpus)
            driver_version, cuda_version = reading.driver_version, reading.cuda_version
        amd = read_amd(run)
        notes.extend(amd.notes)
        offset = len(gpus)
        gpus.extend(g.model_copy(update={"index": offset + g.index}) for g in amd.gpus)

    if not gpus:
        notes.append("No GPU found: engines will run on the CPU.")
    return Hardware(
        source="detected",
        os=_os_name(system),
        cpu=cpu,
        ram_total_bytes=ram_total,
        ram_available_bytes=min(ram_available, ram_total),
        gpus=gpus,
        driver_version=driver_version,
        cuda_version=cuda_version,
        notes=notes,
    )
