"""NVIDIA detection through NVML, driven by a real H100 reading (see conftest.FakeNvml)."""

from __future__ import annotations

import copy
import sys
import xml.etree.ElementTree as ET

import pytest

from llmhost.hardware import detect
from llmhost.hardware.nvidia import load_nvml, peak_memory_bandwidth, read_nvidia

H100_UUID = "GPU-29953f67-b3c4-982f-4864-f700df6edb9a"
A100_UUID = "GPU-0d1f3a5b-7c9e-4b2d-8f60-1a2b3c4d5e6f"


def a100_40gb(h100: dict) -> dict:
    """A second, different GPU: the H100 record with an A100 40GB's identity and memory system."""
    device = copy.deepcopy(h100["devices"][0])
    device.update(
        index=1,
        name="NVIDIA A100-SXM4-40GB",
        uuid=A100_UUID,
        memory_info={"total": 42949672960, "free": 40000000000, "used": 2949672960},
        cuda_compute_capability=[8, 0],
        architecture=7,
        memory_bus_width_bits=5120,
        max_mem_clock_mhz=1215,
        power_limit_mw=400000,
        compute_processes=[{"pid": 4242, "usedGpuMemory": 2147483648}],
    )
    return device


@pytest.fixture
def two_gpus(h100: dict) -> dict:
    h100["devices"].append(a100_40gb(h100))
    h100["process_names"] = {"4242": "python3"}
    return h100


def test_h100_reading_gives_every_field(h100, make_nvml):
    nvml = make_nvml(h100)
    reading = read_nvidia(nvml, visible_devices=None)
    assert reading.notes == []
    assert reading.driver_version == "580.159.04"
    assert reading.cuda_version == "13.0"
    (gpu,) = reading.gpus
    assert gpu.index == 0 and gpu.physical_index == 0
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.uuid == H100_UUID
    assert gpu.memory_total_bytes == 85520809984
    assert gpu.memory_free_bytes == 85017493504
    assert gpu.memory_used_bytes == 503316480
    assert gpu.compute_capability == "9.0"
    assert gpu.architecture == "hopper"
    assert (gpu.memory_bus_width_bits, gpu.memory_max_clock_mhz) == (5120, 2619)
    assert gpu.bandwidth_source == "nvml"
    assert gpu.memory_bandwidth_bytes_per_s == 5120 / 8 * 2619e6 * 2
    assert gpu.memory_bandwidth_bytes_per_s == pytest.approx(3.35e12, rel=0.002)
    assert (gpu.pcie_generation, gpu.pcie_width) == (5, 16)
    assert gpu.nvlink_active_links is None  # NotSupported on link 0: a PCIe-attached view
    assert gpu.mig_mode is False
    assert gpu.power_limit_w == 700.0  # enforced limit NotSupported -> management limit
    assert gpu.processes == []
    # Filled from the catalog row the NVML name matched.
    assert gpu.catalog_id == "h100-80gb"
    assert gpu.fp16_tflops == 989.4 and gpu.fp8_tflops == 1978.9
    assert gpu.fp8_supported is True
    assert nvml.shutdown_calls == 1


def test_h100_agrees_with_nvidia_smi_on_the_same_machine(h100, make_nvml, fixtures_dir):
    """nvidia-smi -q -x read the same GPU independently: the NVML path must report the same facts."""
    root = ET.parse(fixtures_dir / "hardware" / "nvidia_smi_q_h100.xml").getroot()
    smi = root.find("gpu")
    (gpu,) = read_nvidia(make_nvml(h100), visible_devices=None).gpus
    assert gpu.name == smi.findtext("product_name")
    assert gpu.uuid == smi.findtext("uuid")
    assert f"{gpu.memory_total_bytes // 2**20} MiB" == smi.findtext("fb_memory_usage/total")
    assert f"{gpu.memory_max_clock_mhz} MHz" == smi.findtext("max_clocks/mem_clock")
    assert str(gpu.pcie_generation) == smi.findtext("pci/pci_gpu_link_info/pcie_gen/max_link_gen")
    assert f"{gpu.pcie_width}x" == smi.findtext("pci/pci_gpu_link_info/link_widths/max_link_width")
    assert root.findtext("driver_version") == "580.159.04"
    assert root.findtext("cuda_version") == "13.0"
    assert smi.findtext("mig_mode/current_mig") == "Disabled" and gpu.mig_mode is False


@pytest.mark.parametrize(
    ("bus_bits", "clock_mhz", "expected"),
    [
        (5120, 2619, 3.35e12),  # H100 SXM5 HBM3 (datasheet 3.35 TB/s)
        (5120, 1593, 2.039e12),  # A100 80GB SXM4 HBM2e (datasheet 2,039 GB/s)
        (384, 10501, 1.008e12),  # RTX 4090 GDDR6X as NVML reports its clock (1,008 GB/s)
    ],
)
def test_bandwidth_formula_matches_datasheets(bus_bits, clock_mhz, expected):
    assert peak_memory_bandwidth(bus_bits, clock_mhz) == pytest.approx(expected, rel=0.003)


def test_no_nvml_library_is_normal_not_an_error(h100, make_nvml):
    reading = read_nvidia(make_nvml(h100, init_error="NVMLError_LibraryNotFound"), visible_devices=None)
    assert reading.gpus == []
    assert reading.driver_version is None
    assert len(reading.notes) == 1 and "no usable driver" in reading.notes[0]


def test_pynvml_not_installed_is_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    module, note = load_nvml()
    assert module is None and "nvidia-ml-py" in note
    hardware = detect(environ={}, run=lambda argv: None, system="Linux", machine="x86_64")
    assert hardware.gpus == []
    assert any("nvidia-ml-py" in n for n in hardware.notes)


def test_nvml_init_failure_is_reported_with_what_to_check(h100, make_nvml):
    reading = read_nvidia(make_nvml(h100, init_error="NVMLError_Unknown"), visible_devices=None)
    assert reading.gpus == []
    assert "failed to initialise" in reading.notes[0] and "nvidia-smi" in reading.notes[0]


def test_not_supported_queries_fall_back_or_stay_empty(h100, make_nvml):
    device = h100["devices"][0]
    not_supported = {"error": "NVMLError_NotSupported"}
    device["memory_bus_width_bits"] = not_supported
    device["power_limit_mw"] = not_supported
    device["cuda_compute_capability"] = not_supported
    device["architecture"] = not_supported
    reading = read_nvidia(make_nvml(h100), visible_devices=None)
    (gpu,) = reading.gpus
    assert gpu.memory_bandwidth_bytes_per_s == 3.35e12 and gpu.bandwidth_source == "catalog"
    assert any("bandwidth from the catalog" in n for n in reading.notes)
    assert gpu.power_limit_w is None
    assert gpu.compute_capability is None
    assert gpu.architecture == "hopper"  # from the catalog row
    assert gpu.fp8_supported is True  # the catalog knows an H100 does FP8


def test_unknown_gpu_without_bus_width_has_unknown_bandwidth(h100, make_nvml):
    device = h100["devices"][0]
    device["name"] = "NVIDIA Prototype X1"
    device["max_mem_clock_mhz"] = {"error": "NVMLError_NoPermission"}
    reading = read_nvidia(make_nvml(h100), visible_devices=None)
    (gpu,) = reading.gpus
    assert gpu.catalog_id is None and gpu.fp16_tflops is None
    assert gpu.memory_bandwidth_bytes_per_s is None and gpu.bandwidth_source == "unknown"
    assert gpu.fp8_supported is True  # CC 9.0 from NVML
    assert any("bandwidth unknown" in n for n in reading.notes)


def test_two_gpus_with_different_memory(two_gpus, make_nvml):
    reading = read_nvidia(make_nvml(two_gpus), visible_devices=None)
    h100, a100 = reading.gpus
    assert (h100.index, a100.index) == (0, 1)
    assert h100.memory_total_bytes == 85520809984 and a100.memory_total_bytes == 42949672960
    assert a100.catalog_id == "a100-40gb" and a100.architecture == "ampere"
    assert a100.memory_bandwidth_bytes_per_s == pytest.approx(1.555e12, rel=0.001)
    assert a100.fp8_supported is False and h100.fp8_supported is True
    assert a100.power_limit_w == 400.0
    (proc,) = a100.processes
    assert (proc.pid, proc.name, proc.used_memory_bytes) == (4242, "python3", 2147483648)


@pytest.mark.parametrize(
    ("value", "expected_uuids", "expected_physical"),
    [
        ("1", [A100_UUID], [1]),
        ("1,0", [A100_UUID, H100_UUID], [1, 0]),
        (H100_UUID, [H100_UUID], [0]),
        ("GPU-0d1f3a5b", [A100_UUID], [1]),  # a unique UUID prefix is enough for CUDA
        ("0,7,1", [H100_UUID], [0]),  # CUDA stops at the first entry that matches nothing
        ("GPU-", [], []),  # ambiguous prefix: matches nothing
        ("", [], []),  # empty: no GPU at all
    ],
)
def test_cuda_visible_devices_filters_and_renumbers(
    two_gpus, make_nvml, value, expected_uuids, expected_physical
):
    reading = read_nvidia(make_nvml(two_gpus), visible_devices=value)
    assert [g.uuid for g in reading.gpus] == expected_uuids
    assert [g.physical_index for g in reading.gpus] == expected_physical
    assert [g.index for g in reading.gpus] == list(range(len(expected_uuids)))


def test_cuda_visible_devices_reaches_detect_and_explains_itself(two_gpus, make_nvml):
    hardware = detect(
        nvml=make_nvml(two_gpus),
        environ={"CUDA_VISIBLE_DEVICES": "1,9"},
        run=lambda argv: None,
        system="Linux",
        machine="x86_64",
    )
    assert [g.name for g in hardware.gpus] == ["NVIDIA A100-SXM4-40GB"]
    assert hardware.driver_version == "580.159.04" and hardware.cuda_version == "13.0"
    assert any("'9' matches no device" in n for n in hardware.notes)
    assert any("1 of 2" in n for n in hardware.notes)
    empty = detect(
        nvml=make_nvml(two_gpus), environ={"CUDA_VISIBLE_DEVICES": ""}, run=lambda a: None, system="Linux"
    )
    assert empty.gpus == [] and any("empty" in n for n in empty.notes)


def mig_reading(h100: dict) -> dict:
    device = h100["devices"][0]
    device["mig_mode"] = [1, 1]
    device["max_mig_device_count"] = 7
    gib = 2**30
    device["mig_devices"] = [
        {
            "name": "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
            "uuid": "MIG-7c5e4a9e-1111-5c1e-9a3b-000000000001",
            "memory_info": {"total": 40 * gib, "free": 40 * gib, "used": 0},
        },
        None,  # an empty slot
        {
            "name": "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
            "uuid": "MIG-7c5e4a9e-2222-5c1e-9a3b-000000000002",
            "memory_info": {"total": 10 * gib, "free": 9 * gib, "used": 1 * gib},
        },
    ]
    return h100


def test_mig_instances_replace_the_whole_gpu(h100, make_nvml):
    reading = read_nvidia(make_nvml(mig_reading(h100)), visible_devices=None)
    big, small = reading.gpus
    assert big.name.endswith("MIG 3g.40gb") and small.name.endswith("MIG 1g.10gb")
    assert big.memory_total_bytes == 40 * 2**30 and small.memory_free_bytes == 9 * 2**30
    assert big.parent_uuid == H100_UUID and big.mig_mode is True
    # A slice gets its share of the bandwidth.
    assert small.memory_bandwidth_bytes_per_s == pytest.approx(
        5120 / 8 * 2619e6 * 2 * 10 * 2**30 / 85520809984, rel=1e-9
    )
    assert any("MIG mode" in n for n in reading.notes)


def test_cuda_visible_devices_selects_a_mig_instance(h100, make_nvml):
    reading = read_nvidia(make_nvml(mig_reading(h100)), visible_devices="MIG-7c5e4a9e-2222")
    (gpu,) = reading.gpus
    assert gpu.index == 0 and gpu.name.endswith("1g.10gb")


def test_nvlink_links_are_counted(h100, make_nvml):
    h100["devices"][0]["nvlink"] = [1] * 18
    (gpu,) = read_nvidia(make_nvml(h100), visible_devices=None).gpus
    assert gpu.nvlink_active_links == 18
    h100["devices"][0]["nvlink"] = [1, 1, 0, 0]
    (gpu,) = read_nvidia(make_nvml(h100), visible_devices=None).gpus
    assert gpu.nvlink_active_links == 2


def test_process_without_an_nvml_name_is_named_by_the_os(h100, make_nvml):
    import os

    import psutil

    h100["devices"][0]["compute_processes"] = [{"pid": os.getpid(), "usedGpuMemory": 1024}]
    (gpu,) = read_nvidia(make_nvml(h100), visible_devices=None).gpus
    (proc,) = gpu.processes
    assert proc.pid == os.getpid() and proc.name == psutil.Process().name()
    assert proc.used_memory_bytes == 1024


def test_detect_reads_cuda_visible_devices_from_the_process_environment(two_gpus, make_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-0d1f3a5b")
    hardware = detect(nvml=make_nvml(two_gpus), run=lambda argv: None, system="Linux")
    assert [g.uuid for g in hardware.gpus] == [A100_UUID]


def test_newer_architecture_enum_falls_back_to_the_catalog(h100, make_nvml):
    h100["devices"][0]["architecture"] = 99  # a future NVML enum value
    (gpu,) = read_nvidia(make_nvml(h100), visible_devices=None).gpus
    assert gpu.architecture == "hopper"
