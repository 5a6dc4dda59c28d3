"""CPU parsing on recorded /proc/cpuinfo, the bandwidth estimate, and AMD rocm-smi parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmhost.hardware.amd import ROCM_SMI_ARGV, parse_rocm_smi, read_amd
from llmhost.hardware.cpu import estimate_memory_bandwidth, isa_features, parse_cpuinfo

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def cpuinfo(name: str):
    return parse_cpuinfo((FIXTURES / "cpu" / name).read_text())


def test_epyc_vm_has_avx512_bf16_but_no_amx():
    info = cpuinfo("amd_epyc_vm_2vcpu.cpuinfo")
    assert info.model_name == "AMD EPYC"
    flags = isa_features(info.flags, "x86_64")
    assert {"avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_vnni"} <= set(flags)
    assert "amx" not in flags and "avx_vnni" not in flags


def test_sapphire_rapids_reports_amx():
    info = cpuinfo("xeon_platinum_8480_sapphire_rapids.cpuinfo")
    assert info.model_name == "Intel(R) Xeon(R) Platinum 8480+"
    flags = isa_features(info.flags, "x86_64")
    assert {"amx_tile", "amx_bf16", "amx_int8", "amx", "avx512_fp16", "avx512_bf16", "avx_vnni"} <= set(flags)
    assert flags[-1] == "amx"


def test_arm_server_has_neon_and_a_name_from_its_part_number():
    info = cpuinfo("neoverse_n2_aarch64.cpuinfo")
    assert info.model_name == "Arm Neoverse-N2"
    assert isa_features(info.flags, "aarch64") == ["neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2"]
    # The same flags on an x86 box mean nothing to us.
    assert isa_features(info.flags, "x86_64") == []


@pytest.mark.parametrize(
    ("name", "physical", "logical", "expected_gb_s"),
    [
        ("AMD EPYC", 2, 2, 24.0),  # a 2-vCPU VM: bounded by its cores, not the socket
        ("Intel(R) Xeon(R) Platinum 8480+", 112, 224, 204.8),  # server platform bound
        ("AMD Ryzen 9 7950X 16-Core Processor", 16, 32, 51.2),  # desktop dual channel bound
        ("Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz", 4, 8, 48.0),
    ],
)
def test_cpu_bandwidth_estimate(name, physical, logical, expected_gb_s):
    assert estimate_memory_bandwidth(name, physical, logical) == pytest.approx(expected_gb_s * 1e9)


def test_rocm_smi_mi300x():
    reading = parse_rocm_smi((FIXTURES / "hardware" / "rocm_smi_mi300x.json").read_text())
    assert reading.notes == []
    first, second = reading.gpus
    assert first.vendor == "amd" and first.name == "AMD Instinct MI300X"
    assert first.memory_total_bytes == 205822885888
    assert second.memory_used_bytes == 12884901888 and second.physical_index == 1
    assert first.catalog_id == "mi300x-192gb" and first.fp8_supported
    assert first.memory_bandwidth_bytes_per_s == 5.3e12


def test_rocm_smi_missing_vram_and_bad_output():
    reading = parse_rocm_smi('{"card0": {"Card Series": "Radeon Thing"}, "system": {}}')
    assert reading.gpus == [] and "did not report its VRAM" in reading.notes[0]
    assert parse_rocm_smi("ERROR: no GPUs").notes
    assert read_amd(run=lambda argv: None).gpus == []  # no rocm-smi: nothing, silently
    seen = []
    read_amd(run=lambda argv: seen.append(tuple(argv)))
    assert seen == [ROCM_SMI_ARGV]
