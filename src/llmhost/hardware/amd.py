"""AMD GPUs through `rocm-smi --showproductname --showmeminfo vram --json` (ROCm's own CLI).

rocm-smi prints `{"card0": {"Card series": ..., "VRAM Total Memory (B)": "...", ...}, "system": {...}}`
with numbers as strings; `parse_rocm_smi` is a pure function tests feed with recorded output.
Missing rocm-smi is the normal case on a machine without AMD GPUs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from llmhost.hardware._run import Runner, run_command
from llmhost.hardware.models import GPU

ROCM_SMI_ARGV = ("rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json")
_NAME_KEYS = ("Card Series", "Card series", "Card SKU", "Card model", "Marketing Name", "Product Name")


@dataclass
class AmdReading:
    gpus: list[GPU] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_rocm_smi(text: str) -> AmdReading:
    # The catalog (pydantic models, YAML) loads only when a GPU is found.
    from llmhost.hardware.catalog import match_gpu

    reading = AmdReading()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        reading.notes.append("AMD: rocm-smi printed something that is not JSON.")
        return reading
    if not isinstance(data, dict):
        return reading
    cards = sorted(
        (key for key in data if re.fullmatch(r"card\d+", key) and isinstance(data[key], dict)),
        key=lambda key: int(key[4:]),
    )
    for position, key in enumerate(cards):
        fields = data[key]
        name = next((str(fields[k]).strip() for k in _NAME_KEYS if fields.get(k)), "AMD GPU")
        total = _int(fields.get("VRAM Total Memory (B)"))
        used = _int(fields.get("VRAM Total Used Memory (B)"))
        if total is None:
            reading.notes.append(f"AMD: {key} ({name}) did not report its VRAM; skipped.")
            continue
        entry = match_gpu(name, vendor="amd", memory_bytes=total)
        reading.gpus.append(
            GPU(
                index=position,
                physical_index=int(key[4:]),
                vendor="amd",
                name=name,
                catalog_id=entry.id if entry else None,
                memory_total_bytes=total,
                memory_used_bytes=used,
                memory_free_bytes=total - used if used is not None else None,
                architecture=entry.architecture if entry else None,
                memory_bus_width_bits=entry.memory_bus_width_bits if entry else None,
                memory_bandwidth_bytes_per_s=entry.bandwidth_bytes_per_s() if entry else None,
                bandwidth_source="catalog" if entry else "unknown",
                fp16_tflops=entry.fp16_tflops if entry else None,
                fp8_tflops=entry.fp8_tflops if entry else None,
                fp8_supported=bool(entry and entry.supports_fp8),
            )
        )
    return reading


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def read_amd(run: Runner = run_command) -> AmdReading:
    """AMD GPUs on this machine; no rocm-smi means none (no note: it is the usual case)."""
    output = run(ROCM_SMI_ARGV)
    if output is None:
        return AmdReading()
    return parse_rocm_smi(output)
