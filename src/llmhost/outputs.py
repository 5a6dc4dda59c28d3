"""Files llmhost writes because a user asked for them (`demo-model -o`, `bench -o/--csv/--plot`).

Each is written whole or not at all: into a temporary file in the target's own directory, renamed over
the target once complete, so a full disk, a write error or a kill leaves no partial file. Every
OSError becomes a `UsageError` naming the option, the path and what the OS said.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from llmhost.atomic import write_atomic
from llmhost.errors import UsageError

_HINT = "Pass a path in an existing, writable directory with free space."


def _failed(option: str, path: Path, exc: OSError, *, doing: str = "write") -> UsageError:
    return UsageError(f"{option} {path}: cannot {doing} it: {exc.strerror or exc}.", hint=_HINT)


def check_directory_target(option: str, path: Path) -> Path:
    """`path` is a directory, or can become one: no file or dangling link is in the way."""
    try:
        if path.is_symlink() and not path.exists():
            raise UsageError(
                f"{option} {path} is a dangling symbolic link.", hint="Remove it, or pass another path."
            )
        if path.exists() and not path.is_dir():
            raise UsageError(f"{option} {path} is a file, not a directory.", hint="Pass a directory.")
    except OSError as exc:  # ENAMETOOLONG, ENOTDIR (a path through a file), ELOOP
        raise _failed(option, path, exc, doing="use") from exc
    return path


def check_file_target(option: str, path: Path) -> Path:
    """`path` can be written as a file: its directory exists and is writable, and no directory or
    dangling link is in its place. Checked before a long run, so a typo in `-o` fails in a second,
    not after the run (the write itself still reports what the OS says then)."""
    parent = path.parent
    try:
        if path.is_symlink() and not path.exists():
            raise UsageError(
                f"{option} {path} is a dangling symbolic link.", hint="Remove it, or pass another path."
            )
        if path.is_dir():
            raise UsageError(f"{option} {path} is a directory.", hint="Pass a file name inside it.")
        if not parent.is_dir():
            raise UsageError(f"{option} {path}: the directory {parent} does not exist.", hint=_HINT)
    except OSError as exc:  # ENAMETOOLONG, ENOTDIR (a path through a file), ELOOP
        raise _failed(option, path, exc, doing="use") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the directory {parent} is not writable.", hint=_HINT)
    return path


def make_directory(option: str, path: Path) -> list[Path]:
    """Create `path` and its missing parents; the ones created, outermost first (to undo on failure)."""
    missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_directories(missing)
        raise _failed(option, path, exc, doing="create") from exc
    return missing


def remove_directories(created: list[Path]) -> None:
    """Undo `make_directory`: remove what it created, innermost first, if still empty."""
    for directory in reversed(created):
        with contextlib.suppress(OSError):  # not empty (someone wrote into it) or already gone: keep
            directory.rmdir()


def write_atomically(option: str, path: Path, write: Callable[[Path], object], *, mode: int = 0o644) -> Path:
    """`atomic.write_atomic` with `write(tmp)`; an OSError is reported as a UsageError naming `option`."""
    try:
        return write_atomic(path, write, mode=mode)
    except OSError as exc:
        raise _failed(option, path, exc) from exc
