"""Byte sizes as people read them: the one formatter every command prints sizes with.

Each command keeps its own precision (a plan's `0.41 GiB` is not `ps`'s `0.4 GiB`: the CLI's output is
a contract), so the precision is an argument here, not a second copy of this function.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024**2
GIB = 1024**3

_UNIT_BYTES = {"GiB": GIB, "MiB": MIB, "KiB": KIB, "B": 1}


def format_bytes(
    n: int | float | None, *specs: str, units: tuple[str, ...] = ("GiB", "MiB"), none: str = "-"
) -> str:
    """`n` in the largest of `units` (largest first) it reaches in absolute value, else the last one;
    `specs[i]` is the format spec for `units[i]` (the last spec repeats). Bytes print as an integer."""
    if n is None:
        return none
    if not units or not specs:
        raise ValueError("format_bytes needs at least one unit and one format spec")
    for i, unit in enumerate(units):
        size = _UNIT_BYTES[unit]
        if abs(n) >= size or i == len(units) - 1:
            if unit == "B":
                return f"{int(n)} B"
            return f"{n / size:{specs[min(i, len(specs) - 1)]}} {unit}"
    raise AssertionError("unreachable: the last unit always matches")
