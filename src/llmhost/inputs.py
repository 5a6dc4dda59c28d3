"""Checks on what a user hands llmhost: free text (an option's value, a profile's string) and files
(a profile, a prompt dataset, a saved result), one rule in one place.

A value that cannot name anything (empty, whitespace, a control character such as NUL or a newline,
longer than any path) is refused naming where it came from, instead of being read as "not given" or
failing deep inside a command (`--host ''` bound every interface; `--name ''` took the default).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from llmhost.errors import UsageError

# PATH_MAX on Linux: no path, host, key, tag or URL a user types is longer.
MAX_TEXT_CHARS = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_text(what: str, value: str, *, help_command: str = "llmhost") -> str:
    """`value` unchanged, or a UsageError naming `what` (an option, or a profile's key)."""
    if not value.strip():
        raise UsageError(
            f"{what} is empty ({value!r}).",
            hint=f"Give {what} a value, or leave it out (see `{help_command} --help`).",
        )
    if len(value) > MAX_TEXT_CHARS:
        raise UsageError(
            f"{what} is {len(value)} characters long, more than the {MAX_TEXT_CHARS} allowed.",
            hint=f"Pass a shorter {what}.",
        )
    if _CONTROL.search(value):
        shown = repr(value if len(value) <= 80 else value[:80] + "...")
        raise UsageError(
            f"{what} {shown} contains a control character (NUL, newline, tab or escape).",
            hint=f"Pass {what} without it.",
        )
    return value


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def describe_mode(mode: int) -> str:
    """What a file that is not a regular one is: "a FIFO (named pipe)", "a directory", ..."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class NotRegularFile(OSError):
    """`open_regular` found a directory, FIFO, socket or device; `mode` says which (`describe_mode`)."""

    def __init__(self, path: os.PathLike[str] | str, mode: int) -> None:
        super().__init__(f"{path} is {describe_mode(mode)}")
        self.mode = mode


def open_regular(path: os.PathLike[str] | str) -> int:
    """A blocking read-only descriptor of the regular file `path`; the one way llmhost opens a file
    someone else made (a model's file, a profile, a dataset).

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer (a FIFO given as
    config.json hung `inspect`); the type is then checked on the open descriptor, so nothing can swap
    the file between the check and the read. Raises `NotRegularFile`, or the OSError of the open
    (ENOENT, ENAMETOOLONG, ENOTDIR, EACCES, ELOOP) or ValueError (a NUL in the path): callers translate
    them into their own error, naming what the file was for.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_file(
    path: Path,
    *,
    what: str,
    limit: int,
    error: type[UsageError] = UsageError,
    missing: tuple[str, str] | None = None,
) -> bytes:
    """The bytes of the user's file `path` (`what` names it: "profile", "--dataset"), refusing what
    is no regular file before reading (a FIFO would block forever, /dev/zero never end) and anything
    over `limit` bytes. Every failure is an `error` naming the file; nothing here blocks."""
    check_path = f"Check the path given as the {what}."
    try:
        fd = open_regular(path)
    except NotRegularFile as exc:
        kind = describe_mode(exc.mode)
        raise error(
            f"The {what} {path} is {kind}, not a file.", hint=f"Pass a regular file as the {what}."
        ) from None
    except FileNotFoundError:
        if missing is not None:  # the caller's own words (message, hint), e.g. listing shipped profiles
            raise error(missing[0], hint=missing[1]) from None
        raise error(f"cannot read the {what} {path}: no such file.", hint=check_path) from None
    except OSError as exc:  # ENAMETOOLONG, ENOTDIR (a path through a file), EACCES, ELOOP
        raise error(f"cannot read the {what} {path}: {exc.strerror}.", hint=check_path) from exc
    except ValueError as exc:  # an embedded NUL byte
        raise error(f"The {what} path {str(path)!r} is not a valid path.", hint=check_path) from exc

    def too_large() -> UsageError:
        return error(
            f"The {what} {path} is larger than {_size(limit)}, more than any real one.",
            hint=f"Check that the {what} given is the right file.",
        )

    try:
        # A file that says it is too large is refused before reading it (a sparse 3 GiB file took
        # seconds and a GiB of memory); the bounded read still catches one that grows, or /proc's
        # files whose size reads 0.
        if os.fstat(fd).st_size > limit:
            raise too_large()
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:  # EIO from /proc/self/mem, EISDIR on some file systems
        raise error(f"cannot read the {what} {path}: {exc.strerror}.", hint=check_path) from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise too_large()
    return data


def decode_utf8(data: bytes, *, source: str, error: type[UsageError] = UsageError) -> str:
    """`data` as text, or an `error` naming the line and offset of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(
            f"{source}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}).",
            hint="Check that the file is the text file meant, not a binary one.",
        ) from exc


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, min(limit - size, 1 << 20))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _size(n: int) -> str:
    from llmhost.units import format_bytes

    return format_bytes(n, "g")
