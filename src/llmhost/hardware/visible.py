"""`CUDA_VISIBLE_DEVICES`: which devices an engine started from this environment will see, in order.

CUDA's rules (CUDA C Programming Guide, "CUDA Environment Variables"): a comma-separated list of
indices or UUIDs (`GPU-...`, a unique prefix is enough; `MIG-...` for MIG instances); devices are
renumbered 0..n-1 in list order; the list stops at the first entry that matches no device; an empty
value hides every GPU; unset shows all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    """What the selection needs to know of a device: its driver index and UUID."""

    index: int
    uuid: str | None


@dataclass(frozen=True)
class Selection:
    chosen: list[int]  # positions into the `devices` list, in the order the engine will number them
    notes: list[str]


def select_visible(value: str | None, devices: Sequence[Device]) -> Selection:
    """Apply a CUDA_VISIBLE_DEVICES value to `devices`; never raises."""
    if value is None:
        return Selection(chosen=list(range(len(devices))), notes=[])
    entries = [e.strip() for e in value.split(",")]
    if value.strip() == "":
        return Selection(chosen=[], notes=["CUDA_VISIBLE_DEVICES is empty: engines will see no NVIDIA GPU."])
    chosen: list[int] = []
    notes: list[str] = []
    for entry in entries:
        position = _match(entry, devices)
        if position is None:
            notes.append(
                f"CUDA_VISIBLE_DEVICES entry {entry!r} matches no device; CUDA ignores it and every "
                "entry after it."
            )
            break
        if position in chosen:
            notes.append(f"CUDA_VISIBLE_DEVICES lists {entry!r} twice; CUDA stops there.")
            break
        chosen.append(position)
    return Selection(chosen=chosen, notes=notes)


def _match(entry: str, devices: Sequence[Device]) -> int | None:
    if entry.isdigit():
        wanted = int(entry)
        return next((pos for pos, d in enumerate(devices) if d.index == wanted), None)
    lowered = entry.lower()
    if lowered.startswith(("gpu-", "mig-")):
        hits = [pos for pos, d in enumerate(devices) if d.uuid and d.uuid.lower().startswith(lowered)]
        return hits[0] if len(hits) == 1 else None  # an ambiguous prefix matches nothing
    return None
