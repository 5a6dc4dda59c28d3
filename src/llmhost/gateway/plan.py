"""`llmhost gateway plan`: which configured models can be resident together, per device, and who would
evict whom. Plans each model (no launch: it works for catalog hardware), then replays loading them in
order (pinned first, then the models file's order) through the same `placement.place` the gateway uses.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import Field

from llmhost.contract import Contract
from llmhost.errors import LlmhostError
from llmhost.gateway import deploy
from llmhost.gateway.config import GatewayConfig
from llmhost.gateway.placement import Device, Need, Resident, place, unknown_budget_devices


class DeviceRow(Contract):
    device: str
    capacity_bytes: int = Field(description="What the planner may use there (free memory, host reserve out).")
    budget_bytes: int | None = None


class ModelRow(Contract):
    name: str
    model: str
    engine: str | None = None
    quantization: str | None = None
    context: int | None = None
    concurrency: int | None = None
    pinned: bool = False
    need: dict[str, int] = Field(default_factory=dict, description="Planned bytes per device.")
    placed_on: dict[str, int] = Field(default_factory=dict, description="Bytes per actual device.")
    evicts: list[str] = Field(default_factory=list, description="Loading it (in order) evicts these.")
    error: str | None = Field(default=None, description="Why it cannot be planned or placed.")


class GatewayPlan(Contract):
    hardware: str
    placement: str
    devices: list[DeviceRow]
    models: list[ModelRow]
    resident_together: list[str] = Field(description="What is resident once every model loaded in order.")
    all_fit: bool


def plan_gateway(config: GatewayConfig, *, hardware: str | None, warn: Callable[[str], None]) -> GatewayPlan:
    from llmhost.hardware import hardware_for
    from llmhost.plan.hardware_view import device_name, gpu_free_bytes, host_capacity_bytes

    machine = hardware_for(hardware)
    budget = config.memory_budget if isinstance(config.memory_budget, dict) else {}
    devices = [Device("cpu", host_capacity_bytes(machine), budget_bytes=budget.get("cpu"))]
    devices += [
        Device(device_name(g), gpu_free_bytes(g), budget_bytes=budget.get(device_name(g)))
        for g in machine.gpus
    ]
    if unknown := unknown_budget_devices(budget, devices):
        warn(unknown)
    rows: list[ModelRow] = []
    needs: dict[str, Need] = {}
    for name, entry in config.models.items():
        row = ModelRow(name=name, model=entry.model or str(entry.profile), pinned=entry.pin)
        try:
            ready = deploy.plan_model(name, entry, hardware=hardware, warn=warn)
        except LlmhostError as exc:
            row.error = exc.message
            rows.append(row)
            continue
        cand = ready.prepared.candidate
        row.engine = ready.prepared.deployment.runtime
        row.quantization, row.context, row.concurrency = (
            cand.quantization,
            cand.context_length,
            cand.concurrency,
        )
        row.need = deploy.planned_per_device(ready)
        needs[name] = Need(name, row.need, allowed=frozenset(entry.devices) if entry.devices else None)
        rows.append(row)
    residents: list[Resident] = []
    order = sorted((r for r in rows if r.name in needs), key=lambda r: not r.pinned)
    for tick, row in enumerate(order, start=1):
        decision = place(needs[row.name], devices, residents, now=float(tick), policy=config.placement)
        if not decision.fits:
            advice = (
                deploy.advice_within(
                    row.name, config.models[row.name], decision.room, hardware=hardware, warn=warn
                )
                if decision.never_fits and decision.room  # no room: its devices: pin is the problem
                else []
            )
            row.error = " ".join([f"{decision.reason}.", *advice]) if advice else decision.reason
            continue
        row.evicts = decision.evict
        row.placed_on = {decision.assignment.get(d, d): b for d, b in row.need.items()}
        residents = [r for r in residents if r.name not in decision.evict]
        residents.append(
            Resident(row.name, planned=row.placed_on, pinned=row.pinned, loaded_at=tick, last_used=tick)
        )
    together = [r.name for r in residents]
    return GatewayPlan(
        hardware=hardware or "this machine",
        placement=config.placement,
        devices=[
            DeviceRow(device=d.name, capacity_bytes=d.capacity_bytes, budget_bytes=d.budget_bytes)
            for d in devices
        ],
        models=rows,
        resident_together=together,
        all_fit=len(together) == len(rows),
    )
