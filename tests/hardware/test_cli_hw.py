"""`llmhost hw` and `llmhost doctor` through the real CLI, on this machine and on catalog hardware."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from llmhost.cli import main
from llmhost.cli.hw import DoctorReport
from llmhost.engines.registry import ENGINE_MODULES
from llmhost.hardware.catalog import Catalog
from llmhost.hardware.cpu import isa_features, parse_cpuinfo
from llmhost.hardware.models import Hardware

GIB = 2**30


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "llmhost", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc/cpuinfo")
def test_hw_json_reports_this_machine():
    result = run_cli("hw", "--json")
    assert result.returncode == 0, result.stderr
    hardware = Hardware.model_validate_json(result.stdout)
    assert hardware.source == "detected" and hardware.os == "linux"
    # The same facts, read independently here.
    info = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    assert hardware.cpu.model_name == info.model_name
    assert hardware.cpu.logical_cores == psutil.cpu_count(logical=True)
    assert hardware.cpu.isa_flags == isa_features(info.flags, os.uname().machine)
    for flag in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "fma", "f16c"):
        assert (flag in hardware.cpu.isa_flags) == (flag in info.flags), flag
    assert hardware.ram_total_bytes == psutil.virtual_memory().total
    assert 0 < hardware.ram_available_bytes <= hardware.ram_total_bytes
    assert hardware.cpu.memory_bandwidth_bytes_per_s and hardware.cpu.bandwidth_source == "estimate"
    if not hardware.gpus:  # this development machine has no GPU: the notes must say so
        assert any("No GPU found" in n for n in hardware.notes)


def test_hw_human_table_names_the_cpu(capsys):
    assert main(["hw"]) == 0
    out = capsys.readouterr().out
    assert "This machine" in out and "RAM" in out and "ISA" in out


def test_hw_catalog_h100_x2_json(capsys):
    assert main(["hw", "--hardware", "h100-80gb:2", "--json"]) == 0
    hardware = Hardware.model_validate_json(capsys.readouterr().out)
    assert hardware.source == "catalog" and len(hardware.gpus) == 2
    for gpu in hardware.gpus:
        assert round(gpu.memory_total_bytes / GIB) == 80
        assert gpu.memory_bandwidth_bytes_per_s == 3.35e12


def test_hw_catalog_human_shows_bandwidth(capsys):
    assert main(["hw", "--hardware", "rtx-4090:2"]) == 0
    out = capsys.readouterr().out
    assert out.count("1.01 TB/s (catalog)") == 2  # one row per GPU


def test_unknown_hardware_is_one_line_with_suggestions():
    result = run_cli("hw", "--hardware", "h100-80gbb")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "Unknown hardware 'h100-80gbb'" in result.stderr and "h100-80gb" in result.stderr


def test_list_catalog_json_and_table(capsys):
    assert main(["hw", "--list-catalog", "--json"]) == 0
    catalog = Catalog.model_validate_json(capsys.readouterr().out)
    assert any(e.id == "h100-80gb" for e in catalog.entries)
    assert main(["hw", "--list-catalog"]) == 0
    assert "rtx-4090-24gb" in capsys.readouterr().out


def test_doctor_json_lists_every_engine(capsys):
    assert main(["doctor", "--json", "--hardware", "h100-80gb"]) == 0
    report = DoctorReport.model_validate_json(capsys.readouterr().out)
    assert report.hardware.gpus[0].catalog_id == "h100-80gb"
    assert {s.name for s in report.engines} == set(ENGINE_MODULES)
    for status in report.engines:
        assert status.usable or status.reason, status  # every "no" says why


def test_doctor_human(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "Engines" in out and "llamacpp" in out


def test_apple_table_explains_the_gpu_memory(capsys):
    assert main(["hw", "--hardware", "m2-max-32gb"]) == 0
    out = capsys.readouterr().out
    assert "21.3 GiB *" in out and "what Metal lets the GPU use" in out
