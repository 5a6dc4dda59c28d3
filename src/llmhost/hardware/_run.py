"""The one place hardware probes run external commands: list argv, no shell, a timeout, no raise."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence

Runner = Callable[[Sequence[str]], "str | None"]

_TIMEOUT_S = 10.0


def run_command(argv: Sequence[str]) -> str | None:
    """Run `argv` and return its stdout, or None when the tool is missing, fails silently or hangs.

    Detection must never fail because an optional tool is absent, so every failure is `None` and
    the caller records a note saying what could not be read.
    """
    if shutil.which(argv[0]) is None:
        return None
    try:
        completed = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    # `sysctl a b c` exits 1 when one key is unknown (older macOS) yet prints the others: keep them.
    if completed.returncode != 0 and not completed.stdout.strip():
        return None
    return completed.stdout
