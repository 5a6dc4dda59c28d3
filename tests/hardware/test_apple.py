"""Apple Silicon parsing on recorded sysctl / system_profiler output (tests/fixtures/apple/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmhost.hardware import detect
from llmhost.hardware.apple import (
    SYSTEM_PROFILER_ARGV,
    apple_from_outputs,
    metal_working_set_bytes,
    parse_sysctl,
    parse_system_profiler,
)

APPLE = Path(__file__).resolve().parents[1] / "fixtures" / "apple"
GIB = 2**30
MIB = 2**20


def outputs(name: str) -> tuple[str, str]:
    return (APPLE / f"{name}.sysctl.txt").read_text(), (APPLE / f"{name}.system_profiler.json").read_text()


@pytest.mark.parametrize(
    ("name", "chip", "catalog_id", "ram_gib", "gpu_cores", "bandwidth", "cpu_cores"),
    [
        ("m1_max_64gb", "Apple M1 Max", "m1-max", 64, 32, 400e9, 10),
        ("m2_max_32gb", "Apple M2 Max", "m2-max", 32, 30, 400e9, 12),
        # The binned 30-core M3 Max has a narrower bus: 300 GB/s, not the 40-core's 400.
        ("m3_max_36gb", "Apple M3 Max", "m3-max", 36, 30, 300e9, 14),
    ],
)
def test_m_series_max_chips(name, chip, catalog_id, ram_gib, gpu_cores, bandwidth, cpu_cores):
    reading = apple_from_outputs(*outputs(name))
    assert reading.notes == []
    assert reading.ram_total_bytes == ram_gib * GIB
    gpu = reading.gpu
    assert gpu.vendor == "apple" and gpu.name == chip and gpu.unified_memory
    assert gpu.catalog_id == catalog_id
    assert gpu.gpu_cores == gpu_cores
    assert gpu.memory_bandwidth_bytes_per_s == bandwidth and gpu.bandwidth_source == "catalog"
    assert gpu.fp8_supported is False
    assert gpu.memory_total_bytes < reading.ram_total_bytes
    assert reading.cpu.model_name == chip and reading.cpu.architecture == "arm64"
    assert reading.cpu.physical_cores == cpu_cores
    assert "neon" in reading.cpu.isa_flags
    assert reading.cpu.memory_bandwidth_bytes_per_s == bandwidth


def test_isa_flags_come_from_sysctl():
    m1 = apple_from_outputs(*outputs("m1_max_64gb")).cpu
    m2 = apple_from_outputs(*outputs("m2_max_32gb")).cpu
    assert m1.isa_flags == ["neon", "fp16", "dotprod"]  # M1 has no I8MM/BF16
    assert m2.isa_flags == ["neon", "fp16", "dotprod", "i8mm", "bf16"]


@pytest.mark.parametrize(
    ("ram_gib", "logged_mib"),
    [
        # recommendedMaxWorkingSetSize as llama.cpp logged it on real Macs (fixtures/apple/README.md)
        (16, 10922.67),  # llama-cpp-python #687
        (32, 21845.34),  # ollama #434, M2 Max 32 GB
        (64, 49152.00),  # llama.cpp #1870, M1 Max 64 GB
        (96, 73728.00),  # llama.cpp #3213, M2 Max 96 GB
    ],
)
def test_working_set_rule_reproduces_what_metal_reported(ram_gib, logged_mib):
    working_set, rule = metal_working_set_bytes(ram_gib * GIB, wired_limit_mb=None)
    assert round(working_set / MIB, 2) == logged_mib
    assert ("2/3" in rule) == (ram_gib <= 32)


def test_wired_limit_overrides_the_default():
    sysctl, profiler = outputs("m1_max_64gb")
    sysctl = sysctl.replace("iogpu.wired_limit_mb: 0", "iogpu.wired_limit_mb: 57344")
    gpu = apple_from_outputs(sysctl, profiler).gpu
    assert gpu.memory_total_bytes == 57344 * MIB
    assert gpu.memory_limit_source == "iogpu.wired_limit_mb=57344"


def test_missing_system_profiler_keeps_chip_from_sysctl():
    sysctl, _ = outputs("m2_max_32gb")
    reading = apple_from_outputs(sysctl, None)
    assert reading.gpu.name == "Apple M2 Max" and reading.gpu.gpu_cores is None
    assert reading.gpu.memory_bandwidth_bytes_per_s == 400e9  # the unbinned figure
    assert any("system_profiler could not be run" in n for n in reading.notes)


def test_unknown_chip_is_reported_without_catalog_numbers():
    sysctl, _ = outputs("m3_max_36gb")
    reading = apple_from_outputs(sysctl.replace("Apple M3 Max", "Apple M9 Hyper"), None)
    assert reading.gpu.catalog_id is None and reading.gpu.memory_bandwidth_bytes_per_s is None
    assert any("not in the catalog" in n for n in reading.notes)


def test_nothing_readable_gives_no_gpu_and_a_note():
    reading = apple_from_outputs(None, None)
    assert reading.gpu is None and reading.cpu is None
    assert any("neither sysctl nor system_profiler" in n for n in reading.notes)


def test_macos26_four_field_processor_count():
    profile = parse_system_profiler((APPLE / "m2_pro_16gb_macos26.system_profiler.json").read_text())
    assert (profile.chip, profile.gpu_cores, profile.memory_bytes) == ("Apple M2 Pro", 19, 16 * GIB)
    assert profile.cpu_cores == 12 and profile.performance_cores is None


def test_bad_json_is_a_note_not_a_crash():
    assert parse_system_profiler("not json").notes
    assert parse_sysctl("garbage without colon\nhw.memsize: 8") == {"hw.memsize": "8"}


def test_detect_on_a_mac_runs_both_commands_with_list_argv():
    sysctl, profiler = outputs("m1_max_64gb")
    calls: list[tuple[str, ...]] = []

    def run(argv):
        calls.append(tuple(argv))
        return {"sysctl": sysctl, "system_profiler": profiler}.get(argv[0])

    hardware = detect(run=run, system="Darwin", machine="arm64", environ={})
    assert hardware.os == "darwin" and hardware.is_apple_silicon
    assert hardware.ram_total_bytes == 64 * GIB
    assert hardware.cpu.model_name == "Apple M1 Max"
    assert hardware.gpus[0].memory_total_bytes == 48 * GIB
    assert tuple(SYSTEM_PROFILER_ARGV) in calls
    assert any(c[0] == "sysctl" and "iogpu.wired_limit_mb" in c for c in calls)
    assert not any(c[0] == "rocm-smi" for c in calls)  # no NVIDIA/AMD probing on macOS


def test_macos13_spelling_of_the_wired_limit_is_bytes():
    sysctl, profiler = outputs("m2_max_32gb")
    sysctl = sysctl.replace("iogpu.wired_limit_mb: 0\n", "debug.iogpu.wired_limit: 28000000000\n")
    gpu = apple_from_outputs(sysctl, profiler).gpu
    assert gpu.memory_total_bytes == 28_000_000_000
    assert gpu.memory_limit_source == "debug.iogpu.wired_limit=28000000000"
