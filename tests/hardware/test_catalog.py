"""The accelerator catalog and what-if hardware (`--hardware NAME[:COUNT]`)."""

from __future__ import annotations

import pytest

from llmhost.errors import HardwareError
from llmhost.hardware.catalog import (
    Catalog,
    CatalogEntry,
    hardware_from_spec,
    list_catalog,
    load_catalog,
    lookup,
    match_gpu,
)

GIB = 2**30

REQUIRED = [
    "h100-80gb", "h100-pcie-80gb", "h100-nvl-94gb", "h200-141gb", "b200-180gb", "gh200-96gb",
    "a100-40gb", "a100-80gb", "a100-pcie-40gb", "a100-pcie-80gb", "l40s-48gb", "l40-48gb",
    "a10g-24gb", "a10-24gb", "l4-24gb", "t4-16gb", "v100-32gb", "rtx-3090-24gb", "rtx-3090-ti-24gb",
    "rtx-4080-16gb", "rtx-4090-24gb", "rtx-5090-32gb", "rtx-a6000-48gb", "rtx-6000-ada-48gb",
    "m1", "m1-pro", "m1-max", "m1-ultra", "m2", "m2-pro", "m2-max", "m2-ultra",
    "m3", "m3-pro", "m3-max", "m3-ultra", "m4", "m4-pro", "m4-max", "mi300x-192gb",
]  # fmt: skip


def test_catalog_has_every_required_accelerator():
    ids = {e.id for e in list_catalog()}
    assert set(REQUIRED) <= ids


def test_nvidia_fp8_flag_follows_compute_capability():
    for entry in list_catalog():
        if entry.vendor != "nvidia":
            continue
        major, minor = (int(x) for x in entry.compute_capability.split("."))
        assert entry.supports_fp8 == ((major, minor) >= (8, 9)), entry.id
        # An FP8 rate is listed exactly for the parts that have FP8 tensor cores.
        assert (entry.fp8_tflops is not None) == entry.supports_fp8, entry.id


def test_bus_width_and_bandwidth_are_consistent():
    """Bandwidth / bus width is a per-pin data rate that must be physically plausible for the memory type."""
    gbps_per_pin = {"HBM2": (1.5, 2.6), "HBM2e": (2.4, 3.3), "HBM3": (4.8, 6.5), "HBM3e": (6.0, 9.9),
                    "GDDR6": (10, 20), "GDDR6X": (19, 23), "GDDR7": (27, 29), "LPDDR4X": (4.2, 4.3),
                    "LPDDR5": (6.0, 6.5), "LPDDR5X": (7.4, 8.6)}  # fmt: skip
    for entry in list_catalog():
        rate = entry.bandwidth_gb_s * 8 / entry.memory_bus_width_bits
        low, high = gbps_per_pin[entry.memory_type]
        assert low <= rate <= high, (entry.id, round(rate, 2))


def test_duplicate_names_are_rejected():
    entry = load_catalog().entries[0]
    with pytest.raises(ValueError, match="used by"):
        Catalog(entries=[entry, entry.model_copy(update={"id": "other"})])
    with pytest.raises(ValueError):
        CatalogEntry.model_validate({**entry.model_dump(), "unexpected": 1})


def test_h100_times_two_is_the_done_when_example():
    hardware = hardware_from_spec("h100-80gb:2")
    assert hardware.source == "catalog" and hardware.os == "linux"
    assert len(hardware.gpus) == 2
    for index, gpu in enumerate(hardware.gpus):
        assert gpu.index == index and gpu.vendor == "nvidia"
        assert round(gpu.memory_total_bytes / GIB) == 80
        assert gpu.memory_bandwidth_bytes_per_s == 3.35e12 and gpu.bandwidth_source == "catalog"
        assert gpu.fp8_supported and gpu.compute_capability == "9.0"
    assert hardware.ram_total_bytes >= 2 * sum(g.memory_total_bytes for g in hardware.gpus)
    assert any("RAM assumed" in n for n in hardware.notes)


@pytest.mark.parametrize(
    ("spec", "catalog_id", "count"),
    [("h100-sxm", "h100-80gb", 1), ("H100", "h100-80gb", 1), ("rtx-4090:2", "rtx-4090-24gb", 2),
     ("rtx4090:4", "rtx-4090-24gb", 4), ("a100", "a100-80gb", 1), ("l4:8", "l4-24gb", 8)],
)  # fmt: skip
def test_aliases_and_counts(spec, catalog_id, count):
    hardware = hardware_from_spec(spec)
    assert [g.catalog_id for g in hardware.gpus] == [catalog_id] * count


def test_host_options():
    hardware = hardware_from_spec("h100-80gb:8, ram=2t, cpus=96")
    assert hardware.ram_total_bytes == 2048 * GIB
    assert hardware.cpu.physical_cores == 96
    assert not any("RAM assumed" in n for n in hardware.notes)


def test_apple_memory_suffix_and_default():
    chosen = hardware_from_spec("m3-max-64gb")
    assert chosen.os == "darwin" and chosen.ram_total_bytes == 64 * GIB
    (gpu,) = chosen.gpus
    assert gpu.unified_memory and gpu.memory_total_bytes == 48 * GIB  # 3/4 above 32 GiB
    default = hardware_from_spec("m2-ultra")
    assert default.ram_total_bytes == 192 * GIB
    assert any("largest option" in n for n in default.notes)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("h100-80gbb", "Did you mean: h100-80gb"),
        ("rtx4900", "rtx-4090"),
        ("nosuchthing", "--list-catalog"),
        ("h100:zero", "not a number"),
        ("h100:0", "out of range"),
        ("h100,ram=lots", "Cannot read the size"),
        ("h100,colour=red", "Unknown or bad option"),
        ("m3-max-40gb", "does not come with 40 GB"),
        ("m2-max:2", "single chip"),
        ("", "Empty"),
    ],
)
def test_bad_specs_say_what_to_do(spec, message):
    with pytest.raises(HardwareError) as caught:
        hardware_from_spec(spec)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("nvml_name", "memory_gib", "catalog_id"),
    [
        ("NVIDIA H100 80GB HBM3", 79.6, "h100-80gb"),
        ("NVIDIA H100 PCIe", 79.6, "h100-pcie-80gb"),
        ("NVIDIA H100 NVL", 93.6, "h100-nvl-94gb"),
        ("NVIDIA H200", 140.4, "h200-141gb"),
        ("NVIDIA A100-SXM4-80GB", 80, "a100-80gb"),
        ("NVIDIA A100-SXM4-40GB", 40, "a100-40gb"),
        ("NVIDIA A100 80GB PCIe", 80, "a100-pcie-80gb"),
        ("NVIDIA A100-PCIE-40GB", 40, "a100-pcie-40gb"),
        ("NVIDIA L40S", 44.5, "l40s-48gb"),
        ("NVIDIA L40", 44.5, "l40-48gb"),
        ("NVIDIA A10G", 22.5, "a10g-24gb"),
        ("NVIDIA A10", 22.5, "a10-24gb"),
        ("NVIDIA L4", 22.5, "l4-24gb"),
        ("Tesla T4", 15, "t4-16gb"),
        ("Tesla V100-SXM2-16GB", 16, "v100-16gb"),
        ("Tesla V100-SXM2-32GB", 32, "v100-32gb"),
        ("NVIDIA GeForce RTX 3090", 24, "rtx-3090-24gb"),
        ("NVIDIA GeForce RTX 3090 Ti", 24, "rtx-3090-ti-24gb"),
        ("NVIDIA GeForce RTX 4090", 24, "rtx-4090-24gb"),
        ("NVIDIA GeForce RTX 5090", 32, "rtx-5090-32gb"),
        ("NVIDIA RTX A6000", 48, "rtx-a6000-48gb"),
        ("NVIDIA RTX 6000 Ada Generation", 48, "rtx-6000-ada-48gb"),
        ("NVIDIA B200", 179, "b200-180gb"),
        ("NVIDIA GH200 480GB", 95, "gh200-96gb"),
    ],
)
def test_detected_names_match_their_catalog_rows(nvml_name, memory_gib, catalog_id):
    entry = match_gpu(nvml_name, vendor="nvidia", memory_bytes=int(memory_gib * GIB))
    assert entry is not None and entry.id == catalog_id


def test_unknown_names_match_nothing():
    assert match_gpu("NVIDIA GeForce GTX 1080", vendor="nvidia") is None
    assert match_gpu("Apple M1 Max", vendor="nvidia") is None
    assert match_gpu("Apple M1 Max", vendor="apple").id == "m1-max"


def test_lookup_is_case_and_separator_insensitive():
    assert lookup("RTX_4090")[0].id == "rtx-4090-24gb"
    assert lookup("M3 Max 128GB") == (lookup("m3-max")[0], 128)


@pytest.mark.parametrize(
    ("spec", "gpu_cores", "bandwidth"),
    [
        ("m3-max-36gb", 30, 300e9),
        ("m3-max-48gb", 40, 400e9),
        ("m4-max-36gb", 32, 410e9),
        ("m4-max", 40, 546e9),
    ],
)
def test_apple_memory_options_sold_only_with_the_binned_gpu(spec, gpu_cores, bandwidth):
    (gpu,) = hardware_from_spec(spec).gpus
    assert gpu.gpu_cores == gpu_cores and gpu.memory_bandwidth_bytes_per_s == bandwidth


def test_superchip_brings_its_own_host():
    hardware = hardware_from_spec("gh200:2")
    assert hardware.cpu.architecture == "aarch64" and "Grace" in hardware.cpu.model_name
    assert hardware.cpu.physical_cores == 144 and "neon" in hardware.cpu.isa_flags
    assert hardware.ram_total_bytes == 2 * 480 * GIB
    assert hardware.cpu.bandwidth_source == "catalog"
    assert not any("RAM assumed" in n for n in hardware.notes)


@pytest.mark.parametrize(
    ("nvml_name", "memory_mib", "catalog_id"),
    [
        # nvidia-smi totals in public logs (the catalog rows' `source`): an idle H20 "4MiB / 97871MiB",
        # H20-3e 143771 MiB, 4x L20 "34651MiB / 46068MiB".
        ("NVIDIA H20", 97871, "h20-96gb"),
        ("NVIDIA H20", 143771, "h20-3e-141gb"),  # the refresh may keep the plain name: memory decides
        ("NVIDIA H20-3e", 143771, "h20-3e-141gb"),
        ("NVIDIA L20", 46068, "l20-48gb"),
    ],
)
def test_h20_and_l20_rows_match_their_nvml_readings(nvml_name, memory_mib, catalog_id):
    entry = match_gpu(nvml_name, vendor="nvidia", memory_bytes=memory_mib * 1024**2)
    assert entry is not None and entry.id == catalog_id
    assert entry.memory_mib == memory_mib


def test_h20_and_l20_what_if_hardware():
    h20 = hardware_from_spec("h20:8")
    assert [g.catalog_id for g in h20.gpus] == ["h20-96gb"] * 8
    assert h20.gpus[0].memory_bandwidth_bytes_per_s == 4.0e12
    (l20,) = hardware_from_spec("l20").gpus
    assert l20.catalog_id == "l20-48gb" and l20.fp8_supported
    assert l20.memory_bandwidth_bytes_per_s == 864e9
    (refresh,) = hardware_from_spec("h20-3e").gpus
    assert refresh.memory_total_bytes == 143771 * 1024**2
