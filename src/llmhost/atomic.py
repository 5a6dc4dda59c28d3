"""Whole-or-nothing file writes: the one implementation every writer of llmhost uses.

A temporary file is created in the target's own directory (so the rename is atomic on one filesystem),
mode 0600 from creation (a state file is never world-readable, even briefly), written, given its final
mode, then renamed over the target. On any failure the temporary file is removed, so a full disk, a
write error or a kill between write and rename leaves the old file (or none), never a partial one.

- `write_atomic` raises the OSError: callers translate it where they know what the file is for
  (`outputs.write_atomically` makes it a `UsageError` naming the option).
- `write_atomic_quietly` is for caches and memos, where a failed write only costs redoing the work
  next time: it returns False instead of raising.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

Content = bytes | str | Callable[[Path], object]


def write_atomic(path: Path, content: Content, *, mode: int = 0o644, make_parents: bool = False) -> Path:
    """Replace `path` with `content` (bytes, text as UTF-8, or a function that writes a given path)."""
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    with temporary_beside(path) as tmp:
        if callable(content):
            content(tmp)
        else:
            tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        tmp.chmod(mode)
        tmp.replace(path)
    return path


def write_atomic_quietly(path: Path, content: Content, *, mode: int = 0o644) -> bool:
    """`write_atomic` with missing parents created; False (and nothing left behind) if the OS refuses."""
    try:
        write_atomic(path, content, mode=mode, make_parents=True)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def temporary_beside(path: Path) -> Iterator[Path]:
    """An empty temporary file (0600) in `path`'s directory with `path`'s suffix (matplotlib picks the
    format from it), removed on exit unless it was renamed."""
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
