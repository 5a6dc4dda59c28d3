"""Engine output to rotated log files, with secrets redacted; tail and follow for `llmhost logs`."""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

MAX_LOG_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3
STARTUP_CAPTURE_BYTES = 512 * 1024


class RotatingLog:
    """Append-only log file rotated at `max_bytes` into `.1` ... `.N` (like logging's RotatingFileHandler)."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_LOG_BYTES, backups: int = LOG_BACKUPS) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fh: IO[bytes] = self._open()

    def _open(self) -> IO[bytes]:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "ab", buffering=0)

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._fh.tell() + len(data) > self.max_bytes and self._fh.tell() > 0:
                self._rotate()
            self._fh.write(data)

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fh = self._open()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


class OutputPump:
    """Reads an engine's stdout/stderr pipe: writes it to the log (secrets redacted), keeps the last
    lines for failure classification and the first bytes for start-up parsing."""

    def __init__(
        self, stream: IO[bytes], log: RotatingLog, *, secrets: list[str], tail_lines: int = 80
    ) -> None:
        self._stream = stream
        self._log = log
        self._secrets = [s.encode() for s in secrets if s]
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._startup = bytearray()
        self._thread = threading.Thread(target=self._run, name="engine-log", daemon=True)
        self._thread.start()

    def _redact(self, data: bytes) -> bytes:
        for secret in self._secrets:
            data = data.replace(secret, b"***")
        return data

    def _run(self) -> None:
        for raw in iter(self._stream.readline, b""):
            line = self._redact(raw)
            self._log.write(line)
            if len(self._startup) < STARTUP_CAPTURE_BYTES:
                self._startup.extend(line)
            self.tail.append(line.decode("utf-8", errors="replace").rstrip("\n"))
        self._stream.close()

    def join(self, timeout: float = 2.0) -> None:
        self._thread.join(timeout)

    def startup_text(self) -> str:
        return bytes(self._startup).decode("utf-8", errors="replace")

    def tail_text(self, lines: int = 80) -> str:
        return "\n".join(list(self.tail)[-lines:])


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of the log at `path`, continuing into its rotated predecessors (`.1`, `.2`...)
    when the current file is shorter (reads backwards in blocks; fine for large logs)."""
    out = _tail_one(path, lines)
    n = 1
    while len(out) < lines and (older := path.with_name(f"{path.name}.{n}")).exists():
        out = _tail_one(older, lines - len(out)) + out
        n += 1
    return out


def _tail_one(path: Path, lines: int) -> list[str]:
    if not path.exists():
        return []
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block = 64 * 1024
        data = b""
        pos = size
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    text = data.decode("utf-8", errors="replace").splitlines()
    return text[-lines:] if lines > 0 else []


def follow(path: Path, *, poll_s: float = 0.25, stop: threading.Event | None = None) -> Iterator[str]:
    """Yield lines appended to `path`, reopening it after rotation (new inode or truncation)."""
    fh: IO[bytes] | None = None
    inode = None
    buffer = b""
    try:
        while stop is None or not stop.is_set():
            if fh is None:
                try:
                    fh = path.open("rb")
                    inode = os.fstat(fh.fileno()).st_ino
                    fh.seek(0, os.SEEK_END)
                except FileNotFoundError:
                    time.sleep(poll_s)
                    continue
            chunk = fh.read()
            if chunk:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", errors="replace")
                continue
            try:
                st = path.stat()
                if st.st_ino != inode or st.st_size < fh.tell():
                    fh.close()
                    fh = path.open("rb")
                    inode = os.fstat(fh.fileno()).st_ino
                    continue
            except FileNotFoundError:
                pass
            time.sleep(poll_s)
    finally:
        if fh is not None:
            fh.close()


def watch_until_gone(
    path: Path, done: threading.Event, *, poll_s: float = 0.25, linger_s: float = 1.0
) -> None:
    """Set `done` once `path` has stopped existing (checked from a daemon thread).

    `linger_s` leaves `follow` time to print the last lines written while the deployment stopped.
    """

    def watch() -> None:
        while not done.is_set():
            if not path.exists():
                time.sleep(linger_s)
                done.set()
                return
            time.sleep(poll_s)

    threading.Thread(target=watch, name="llmhost-logs-watch", daemon=True).start()
