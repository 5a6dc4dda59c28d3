"""`llmhost hw` (this machine or a catalog machine) and `llmhost doctor` (hardware + engines)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import Field

from llmhost.cli._options import HardwareOpt, JsonOpt
from llmhost.cli._output import emit, literal
from llmhost.contract import Contract
from llmhost.engines.base import EngineStatus
from llmhost.errors import UsageError
from llmhost.hardware import hardware_for
from llmhost.hardware.models import Hardware
from llmhost.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from llmhost.hardware.models import GPU


class DoctorReport(Contract):
    """What `llmhost doctor --json` prints: the hardware and, per engine runtime, whether it can run."""

    hardware: Hardware
    engines: list[EngineStatus] = Field(default_factory=list)


def _gib(value: int | None) -> str:
    return format_bytes(value, ".1f", units=("GiB",))


def _bandwidth(value: float | None, source: str) -> str:
    if value is None:
        return "unknown"
    return f"{value / 1e12:.2f} TB/s ({source})" if value >= 1e12 else f"{value / 1e9:.0f} GB/s ({source})"


def render_hardware(console: Console, hardware: Hardware) -> None:
    title = "Catalog hardware" if hardware.source == "catalog" else "This machine"
    if hardware.gpus:
        console.print(_gpu_table(f"{title}: GPUs", hardware))
        for gpu in hardware.gpus:
            if gpu.memory_limit_source:
                console.print(
                    literal(
                        f"* GPU {gpu.index} memory is what Metal lets the GPU use "
                        f"({gpu.memory_limit_source})."
                    )
                )
    console.print(_host_table(f"{title}: host", hardware))
    for note in hardware.notes:
        console.print(literal(f"note: {note}"))


def _gpu_table(title: str, hardware: Hardware) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for column in ("#", "GPU", "memory", "free", "bandwidth", "arch / CC", "FP16/FP8 TFLOPS", "link"):
        table.add_column(column, no_wrap=column in ("#", "memory", "bandwidth"))
    for gpu in hardware.gpus:
        memory = _gib(gpu.memory_total_bytes) + (" *" if gpu.memory_limit_source else "")
        arch = " ".join(x for x in (gpu.architecture, gpu.compute_capability) if x) or "-"
        flops = f"{gpu.fp16_tflops or '-'} / {gpu.fp8_tflops or '-'}"
        if gpu.fp8_supported:
            flops += " (FP8)"
        # Names and versions come from drivers, /proc and catalog files: literal text.
        table.add_row(
            str(gpu.index),
            literal(gpu.name),
            memory,
            _gib(gpu.memory_free_bytes),
            literal(_bandwidth(gpu.memory_bandwidth_bytes_per_s, gpu.bandwidth_source)),
            literal(arch),
            flops,
            ", ".join(_links(gpu)) or "-",
        )
    return table


def _links(gpu: GPU) -> list[str]:
    """A GPU's link column: PCIe, NVLink, MIG, cores, processes."""
    link = []
    if gpu.pcie_generation:
        link.append(f"PCIe {gpu.pcie_generation}x{gpu.pcie_width or '?'}")
    if gpu.nvlink_active_links:
        link.append(f"NVLink x{gpu.nvlink_active_links}")
    if gpu.mig_mode:
        link.append("MIG")
    if gpu.gpu_cores:
        link.append(f"{gpu.gpu_cores} GPU cores")
    if gpu.processes:
        link.append(f"{len(gpu.processes)} process(es)")
    return link


def _host_table(title: str, hardware: Hardware) -> Table:
    from rich.table import Table

    cpu = hardware.cpu
    host = Table(title=title, show_header=False)
    host.add_column("what")
    host.add_column("value")
    host.add_row("OS", literal(hardware.os))
    cores = f"{cpu.physical_cores or '?'} physical / {cpu.logical_cores} logical"
    host.add_row("CPU", literal(f"{cpu.model_name} ({cpu.architecture}, {cores})"))
    host.add_row("ISA", literal(", ".join(cpu.isa_flags) or "-"))
    host.add_row(
        "CPU memory bandwidth", literal(_bandwidth(cpu.memory_bandwidth_bytes_per_s, cpu.bandwidth_source))
    )
    host.add_row(
        "RAM", f"{_gib(hardware.ram_total_bytes)} total, {_gib(hardware.ram_available_bytes)} available"
    )
    if hardware.driver_version or hardware.cuda_version:
        host.add_row(
            "NVIDIA driver / CUDA",
            literal(f"{hardware.driver_version or '?'} / {hardware.cuda_version or '?'}"),
        )
    return host


def render_doctor(console: Console, report: DoctorReport) -> None:
    from rich.table import Table

    render_hardware(console, report.hardware)
    table = Table(title="Engines")
    for column in ("engine", "runtime", "installed", "usable", "version", "why not / where"):
        table.add_column(column)
    for status in report.engines:
        table.add_row(
            literal(status.name),
            literal(status.runtime),
            "yes" if status.installed else "no",
            "yes" if status.usable else "no",
            literal(status.version or "-"),
            literal(status.reason or status.location or "-"),
        )
    console.print(table)


def render_catalog(console: Console) -> None:
    from rich.table import Table

    from llmhost.hardware.catalog import list_catalog

    table = Table(title="Accelerator catalog (use with --hardware NAME[:COUNT])")
    for column in ("id", "aliases", "name", "memory", "bandwidth", "FP16/FP8 TFLOPS", "CC"):
        # The id is what users type: never truncate it.
        table.add_column(column, no_wrap=column in ("id", "bandwidth"))
    for entry in list_catalog():
        memory = f"{entry.memory_gb:g} GB"
        if entry.memory_options_gb:
            memory = "/".join(str(gb) for gb in entry.memory_options_gb) + " GB"
        table.add_row(
            literal(entry.id),
            literal(", ".join(entry.aliases) or "-"),
            literal(entry.name),
            memory,
            f"{entry.bandwidth_gb_s:g} GB/s",
            f"{entry.fp16_tflops or '-'} / {entry.fp8_tflops or '-'}",
            literal(entry.compute_capability or "-"),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Register `hw` and `doctor`."""

    @app.command("hw")
    def hw(
        json_output: JsonOpt = False,
        hardware: HardwareOpt = None,
        list_catalog: Annotated[
            bool, typer.Option("--list-catalog", help="List the accelerator catalog (names for --hardware).")
        ] = False,
    ) -> None:
        """Show this machine's GPUs, CPU, RAM and bandwidth (or a catalog machine with --hardware)."""
        if list_catalog:
            from llmhost.hardware.catalog import load_catalog

            if hardware is not None:  # the listing is the whole catalog: --hardware would be ignored
                raise UsageError(
                    "--list-catalog lists every accelerator; it takes no --hardware.",
                    hint=f"Drop one: `llmhost hw --list-catalog`, or `llmhost hw --hardware {hardware}`.",
                )

            emit(load_catalog(), as_json=json_output, human=render_catalog)
            return
        result = hardware_for(hardware)
        emit(result, as_json=json_output, human=lambda console: render_hardware(console, result))

    @app.command("doctor")
    def doctor(json_output: JsonOpt = False, hardware: HardwareOpt = None) -> None:
        """Show the hardware and which engines are installed and usable here, and why not."""
        found = hardware_for(hardware)
        from llmhost.app.engines import engine_statuses

        report = DoctorReport(hardware=found, engines=engine_statuses(found))
        emit(report, as_json=json_output, human=lambda console: render_doctor(console, report))
