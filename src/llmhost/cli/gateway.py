"""`llmhost gateway` (serve every configured model behind one endpoint), `gateway status`, `gateway stop`,
`gateway plan`: thin commands over `llmhost.gateway.service` and `llmhost.gateway.plan`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from llmhost.cli._options import HardwareOpt, JsonOpt, text
from llmhost.cli._output import emit, info, literal, warn
from llmhost.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console

    from llmhost.gateway.plan import GatewayPlan
    from llmhost.gateway.service import GatewayRecord, GatewayStatus

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        help="The models file (YAML). Default: $XDG_CONFIG_HOME/llmhost/gateway.yaml.",
        callback=text,
    ),
]


def _gib(n: int | None) -> str:
    return format_bytes(n, ".2f", units=("GiB", "MiB", "KiB", "B"))


HostOpt = Annotated[
    str | None,
    typer.Option("--host", help="Listen address (default 127.0.0.1; others need a key).", callback=text),
]
PortOpt = Annotated[int | None, typer.Option("--port", help="Listen port (default 7411).")]
DetachOpt = Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")]
InsecureNoAuthOpt = Annotated[
    bool, typer.Option("--insecure-no-auth", help="Listen beyond loopback with no API key.")
]


def register(app: typer.Typer) -> None:
    """Register `gateway` and its subcommands."""
    gateway_app = typer.Typer(
        name="gateway",
        help="One OpenAI-compatible endpoint for every configured model: loaded on demand, placed and "
        "evicted by the planner (docs/gateway.md).",
        no_args_is_help=False,
        rich_markup_mode=None,
    )
    gateway_app.callback(invoke_without_command=True)(gateway)
    gateway_app.command("status")(status)
    gateway_app.command("stop")(stop)
    gateway_app.command("plan")(plan)
    app.add_typer(gateway_app)


def gateway(
    ctx: typer.Context,
    config: ConfigOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    detach: DetachOpt = False,
    insecure_no_auth: InsecureNoAuthOpt = False,
) -> None:
    """Serve every model of the models file on one endpoint (keys: $LLMHOST_API_KEY, a 0600 keys file)."""
    if ctx.invoked_subcommand is not None:
        return
    from llmhost.gateway import service

    if detach:
        record = service.start_detached(config, host=host, port=port, insecure_no_auth=insecure_no_auth)
        info(f"gateway running in the background (PID {record.process.pid}): {record.url}")
        return

    def ready(record: GatewayRecord) -> None:
        info(f"gateway listening on {record.url} (models file: {record.config}); Ctrl-C stops it")

    service.run_gateway(
        config, host=host, port=port, insecure_no_auth=insecure_no_auth, on_ready=ready, warn=warn
    )
    info("gateway stopped")


def status(as_json: JsonOpt = False) -> None:
    """Is the gateway running, where, and the models it has loaded."""
    from llmhost.gateway.service import gateway_status

    result = gateway_status()
    emit(result, as_json=as_json, human=lambda c: _render_status(c, result))


def stop() -> None:
    """Stop the gateway: drain in-flight requests, then stop the models it started (or those a killed
    gateway left running)."""
    from llmhost.gateway.service import stop_gateway

    result = stop_gateway()
    if result.record is not None:
        info(f"gateway (PID {result.record.process.pid}) stopped")
    else:
        info(f"no gateway was running; stopped the models it left running: {', '.join(result.left_over)}")


def plan(config: ConfigOpt = None, hardware: HardwareOpt = None, as_json: JsonOpt = False) -> None:
    """Which configured models fit together, per device, and who evicts whom (launches nothing)."""
    from llmhost.gateway.config import load_config
    from llmhost.gateway.plan import plan_gateway

    cfg, _ = load_config(config)
    result = plan_gateway(cfg, hardware=hardware, warn=warn)
    emit(result, as_json=as_json, human=lambda c: _render_plan(c, result))


def _render_status(console: Console, status: GatewayStatus) -> None:
    if status.record is None:
        console.print("gateway: not running")
    else:
        console.print(literal(f"gateway: running, PID {status.record.process.pid}, {status.record.url}"))
        console.print(literal(f"models file: {status.record.config}"))
    from rich.table import Table

    table = Table("deployment", "state", "engine", "memory", "url", box=None)
    for dep in status.models:
        table.add_row(dep.name, str(dep.state), dep.runtime, _gib(dep.memory_bytes), dep.base_url)
    if status.models:
        console.print(table)


def _render_plan(console: Console, result: GatewayPlan) -> None:
    devices = [d.device for d in result.devices]
    console.print(literal(f"gateway plan on {result.hardware} (placement: {result.placement})"))
    from rich.table import Table

    table = Table("model", "engine", "quant", "context", *devices, "evicts", box=None)
    for row in result.models:
        cells = [
            _gib(row.placed_on.get(d) or row.need.get(d)) if (row.placed_on or row.need).get(d) else "-"
            for d in devices
        ]
        evicts = ", ".join(row.evicts) or "-"
        if row.error:
            evicts = f"{'does not fit' if row.need else 'cannot plan'}: {row.error}"
        table.add_row(
            literal(row.name + (" (pin)" if row.pinned else "")),
            literal(row.engine or "-"),
            literal(row.quantization or "-"),
            str(row.context or "-"),
            *cells,
            literal(evicts),
        )
    capacity = ["capacity", "", "", ""] + [_gib(d.capacity_bytes) for d in result.devices] + [""]
    budget = (
        ["budget", "", "", ""]
        + [_gib(d.budget_bytes) if d.budget_bytes else "-" for d in result.devices]
        + [""]
    )
    table.add_row(*capacity)
    table.add_row(*budget)
    console.print(table)
    together = ", ".join(result.resident_together) or "none"
    verdict = "all fit together" if result.all_fit else "not all fit together"
    console.print(literal(f"{verdict}; resident after loading in order: {together}"))
