"""Where a model goes and whom it evicts (pure: data in, a decision out; no processes, no clock).

Free memory on a device is what the gateway may still use there:

    free = min(capacity - others' use, budget) - sum over residents of max(planned, measured)

where `others' use` is what processes that are not llmhost's residents hold (the device's used memory
less the residents' measured use) and `budget` the models file's `memory_budget` for that device. A
model's need per device comes from the planner (`Candidate.per_device`). A GPU need is placed on any
allowed GPU (`devices:` pins the set): `pack` picks the fullest GPU it still fits on (keeping whole GPUs
free for big models), `spread` the emptiest one. A need over k GPUs (tensor parallel) takes k of them.

When it does not fit, residents are evicted least recently used first, skipping pinned models,
deployments started by hand, models with requests in flight and models loaded less than
`min_residence` ago; then any eviction that turned out not to be needed is taken back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Policy = Literal["pack", "spread"]


@dataclass(frozen=True)
class Device:
    name: str  # "cpu", "cuda:0"
    capacity_bytes: int
    used_bytes: int = 0  # what the device reports in use now, residents included
    budget_bytes: int | None = None  # the models file's memory_budget for it

    @property
    def is_gpu(self) -> bool:
        return self.name != "cpu"


@dataclass(frozen=True)
class Resident:
    name: str
    planned: Mapping[str, int]  # device -> bytes the plan said
    measured: Mapping[str, int] = field(default_factory=dict)  # device -> bytes seen (RSS, NVML)
    pinned: bool = False
    manual: bool = False  # started by hand with `serve --detach`: routable, never evicted
    in_flight: int = 0
    loaded_at: float = 0.0
    last_used: float = 0.0

    def use(self, device: str) -> int:
        return max(self.planned.get(device, 0), self.measured.get(device, 0))

    @property
    def devices(self) -> set[str]:
        return set(self.planned) | set(self.measured)


@dataclass(frozen=True)
class Need:
    name: str
    per_device: Mapping[str, int]  # as planned: "cpu" and "cuda:0".."cuda:k-1" (the k GPUs it spans)
    allowed: frozenset[str] | None = None  # `devices:` pin; None = any


@dataclass(frozen=True)
class Decision:
    fits: bool
    assignment: dict[str, str] = field(default_factory=dict)  # planned device -> actual device
    evict: list[str] = field(default_factory=list)
    never_fits: bool = False  # not even on the empty machine
    blocked_by: list[str] = field(default_factory=list)  # residents that would have to go, but may not
    reason: str = ""
    room: dict[str, int] = field(default_factory=dict)  # never_fits: what each device has with nothing loaded

    @property
    def gpus(self) -> list[str]:
        return sorted(d for d in self.assignment.values() if d != "cpu")


def others_use(device: Device, residents: Iterable[Resident]) -> int:
    """What processes that are not residents hold on `device`."""
    measured = sum(r.measured.get(device.name, 0) for r in residents)
    return max(0, device.used_bytes - measured)


def free_bytes(device: Device, residents: Iterable[Resident], others: int) -> int:
    residents = list(residents)
    ceiling = device.capacity_bytes - others
    if device.budget_bytes is not None:
        ceiling = min(ceiling, device.budget_bytes)
    return ceiling - sum(r.use(device.name) for r in residents)


def _assign(
    need: Need, devices: Mapping[str, Device], free: Mapping[str, int], policy: Policy
) -> dict[str, str] | None:
    """planned device -> actual device where every part fits `free`, or None."""
    assignment: dict[str, str] = {}
    for planned, nbytes in need.per_device.items():
        if planned == "cpu":
            if free.get("cpu", 0) < nbytes:
                return None
            assignment["cpu"] = "cpu"
    gpu_parts = sorted(((b, d) for d, b in need.per_device.items() if d != "cpu"), reverse=True)
    taken: set[str] = set()
    for nbytes, planned in gpu_parts:
        options = [
            name
            for name, dev in devices.items()
            if dev.is_gpu
            and name not in taken
            and (need.allowed is None or name in need.allowed)
            and free.get(name, 0) >= nbytes
        ]
        if not options:
            return None
        # pack: the GPU with the least room left that still fits; spread: the most. Ties: lowest index.
        if policy == "pack":
            choice = min(options, key=lambda n: (free[n] - nbytes, n))
        else:
            choice = min(options, key=lambda n: (-(free[n] - nbytes), n))
        assignment[planned] = choice
        taken.add(choice)
    return assignment


def _free_map(
    devices: Mapping[str, Device], residents: list[Resident], others: Mapping[str, int]
) -> dict[str, int]:
    return {name: free_bytes(dev, residents, others[name]) for name, dev in devices.items()}


def evictable(resident: Resident, *, now: float, min_residence: float) -> str | None:
    """Why `resident` may not be evicted now, or None when it may."""
    if resident.manual:
        return "started by hand"
    if resident.pinned:
        return "pinned"
    if resident.in_flight:
        return f"{resident.in_flight} request(s) in flight"
    if now - resident.loaded_at < min_residence:
        return "loaded too recently"
    return None


def place(
    need: Need,
    devices: Iterable[Device],
    residents: Iterable[Resident],
    *,
    now: float,
    policy: Policy = "pack",
    min_residence: float = 0.0,
) -> Decision:
    """Where `need` fits now, and which residents must go first (see the module docstring)."""
    devs = {d.name: d for d in devices}
    current = [r for r in residents if r.name != need.name]
    # Others' use is fixed by what is measured now; evicting a resident frees its own use only.
    others = {name: others_use(dev, current) for name, dev in devs.items()}
    unpinnable = _pin_conflict(need, devs)
    if unpinnable:  # no memory to advise on (`room` stays empty): the pin itself is the problem
        return Decision(fits=False, never_fits=True, reason=unpinnable)
    empty = _assign(need, devs, _free_map(devs, [], others), policy)
    if empty is None:
        room = {n: free_bytes(d, [], others[n]) for n, d in devs.items()}
        return Decision(
            fits=False,
            never_fits=True,
            room=room,
            reason=f"{need.name} needs {_describe(need.per_device)}, more than {_describe(room)} "
            "even with nothing else loaded",
        )
    assignment = _assign(need, devs, _free_map(devs, current, others), policy)
    if assignment is not None:
        return Decision(fits=True, assignment=assignment)
    order = sorted(current, key=lambda r: (r.last_used, r.loaded_at, r.name))
    candidates = [r for r in order if evictable(r, now=now, min_residence=min_residence) is None]
    kept = list(current)
    evicted: list[Resident] = []
    for victim in candidates:
        kept.remove(victim)
        evicted.append(victim)
        assignment = _assign(need, devs, _free_map(devs, kept, others), policy)
        if assignment is not None:
            break
    if assignment is None:
        blockers = [
            f"{r.name} ({evictable(r, now=now, min_residence=min_residence)})"
            for r in order
            if evictable(r, now=now, min_residence=min_residence) is not None
        ]
        return Decision(
            fits=False,
            blocked_by=blockers,
            reason=f"{need.name} fits only once {', '.join(blockers) or 'others'} unload",
        )
    # Take back evictions that were not needed (most recently used first: they are the ones to keep).
    for victim in reversed(list(evicted)):
        trial = [*kept, victim]
        again = _assign(need, devs, _free_map(devs, trial, others), policy)
        if again is not None:
            kept, assignment = trial, again
            evicted.remove(victim)
    return Decision(fits=True, assignment=assignment, evict=[r.name for r in evicted])


def unknown_budget_devices(budget: Mapping[str, int], devices: Iterable[Device]) -> str:
    """A warning when `memory_budget` names devices that are not among `devices` ("" when none)."""
    have = {d.name for d in devices}
    unknown = sorted(set(budget) - have)
    if not unknown:
        return ""
    return (
        f"memory_budget names {', '.join(unknown)}, which this machine does not have "
        f"({', '.join(sorted(have))}); ignored"
    )


def _pin_conflict(need: Need, devs: Mapping[str, Device]) -> str:
    """Why `need`'s `devices:` pin cannot be honoured on these devices at all ("" when it can)."""
    if need.allowed is None:
        return ""
    have = ", ".join(sorted(devs))
    pin = ", ".join(sorted(need.allowed))
    unknown = sorted(need.allowed - set(devs))
    if unknown:
        return f"{need.name} has devices: {pin}, but this machine has no {', '.join(unknown)} ({have})"
    gpu_parts = [d for d in need.per_device if d != "cpu"]
    usable = [n for n, d in devs.items() if d.is_gpu and n in need.allowed]
    if len(usable) < len(gpu_parts):
        spans = f"{len(gpu_parts)} GPU{'s' if len(gpu_parts) > 1 else ''}"
        return (
            f"{need.name} is planned on {spans}, more than its devices: {pin} allow; "
            "list as many GPUs in devices: (the planner places a model on a GPU machine's GPUs)"
        )
    return ""


def _describe(per_device: Mapping[str, int]) -> str:
    from llmhost.units import format_bytes

    parts = [
        f"{format_bytes(max(b, 0), '.2f', units=('GiB', 'MiB', 'KiB', 'B'))} on {d}"
        for d, b in sorted(per_device.items())
    ]
    return ", ".join(parts) or "nothing"
