"""Apple unified memory: how much of it Metal lets the GPU wire (the planner's budget on a Mac).

Shared by the live probe (`hardware.apple`, from sysctl) and the catalog's what-if Macs
(`hardware.catalog`), so neither imports the other.
"""

from __future__ import annotations

from llmhost.units import GIB, MIB

# Above this much RAM macOS lets Metal use 3/4 of it, at or below 2/3 (docs/hardware.md).
_THREE_QUARTERS_ABOVE_BYTES = 32 * GIB
_PAGE_BYTES = 16 * 1024


def metal_working_set_bytes(
    ram_bytes: int, wired_limit_mb: int | None, *, legacy_wired_limit_bytes: int | None = None
) -> tuple[int, str]:
    """Memory the GPU may wire (Metal's `recommendedMaxWorkingSetSize`) and the rule that gave it.

    `iogpu.wired_limit_mb` > 0 (macOS 14+, `sudo sysctl iogpu.wired_limit_mb=N`) replaces the
    default; macOS 13 spelled it `debug.iogpu.wired_limit`, in bytes.
    """
    if wired_limit_mb:
        return wired_limit_mb * MIB, f"iogpu.wired_limit_mb={wired_limit_mb}"
    if legacy_wired_limit_bytes:
        return legacy_wired_limit_bytes, f"debug.iogpu.wired_limit={legacy_wired_limit_bytes}"
    if ram_bytes > _THREE_QUARTERS_ABOVE_BYTES:
        share, rule = (3, 4), "macOS default: 3/4 of RAM above 32 GiB"
    else:
        share, rule = (2, 3), "macOS default: 2/3 of RAM up to 32 GiB"
    # Metal reports the share rounded up to a 16 KiB page: 32 GiB -> 21845.34 MiB, as llama.cpp logs.
    raw = -(-ram_bytes * share[0] // share[1])
    return -(-raw // _PAGE_BYTES) * _PAGE_BYTES, rule
