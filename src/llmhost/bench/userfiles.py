"""Reading the files a user hands to `bench` (a --dataset, results to compare): bounded, regular only.

A FIFO or a device given as a file would block `read()` forever (opened non-blocking, it is refused
before any read); a huge or sparse file would be read whole into memory (refused by its size first).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from llmhost.errors import UsageError

GIB = 2**30


def read_regular_file(path: Path, *, what: str, limit: int, hint: str) -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes; UsageError naming `what` otherwise."""
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer; a regular file reads as usual.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}.", hint="Check the path.") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
        raise UsageError(f"{what} {path} is {kind}.", hint=hint)
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(limit + 1)  # +1: a file that grew past the limit since it was opened
        except OSError as exc:
            raise UsageError(f"cannot read {what} {path}: {exc.strerror}.", hint="Check the path.") from exc
    if len(data) > limit:
        raise UsageError(
            f"{what} {path} is larger than {limit / GIB:g} GiB, far more than llmhost writes or reads.",
            hint=hint,
        )
    return data
