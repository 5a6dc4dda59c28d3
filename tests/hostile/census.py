"""The bad-input census: one harness, cases contributed per area by `test_census_*.py`.

A case is a command line (with `{tmp}` standing for a fresh directory the case's `make` fills) and
the exit code `llmhost --help`'s table promises for it. Running a case checks what issue 13 asks of
every user mistake:

- the documented exit code, never 1 ("internal error" means a bug in llmhost);
- stderr is one clean line: `error: <what is wrong>` and a next step, no traceback, no Rich markup
  leaking, no terminal control characters;
- nothing left behind: no new file in the case's directory beyond what `make` put there (unless the
  case says which may appear), no new file under the state dir, no child process still running.

Cases run in-process through `llmhost.cli.main` (fast: about 150 cases in seconds), each under a
per-test timeout (pytest-timeout), so a hang fails its case instead of the run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from llmhost.errors import ExitCode

# A next step: the hint names a command or option, or tells the user what to check / pass / use.
_NEXT_STEP = re.compile(
    r"(--[a-z]|llmhost |\bcheck\b|\bpass\b|\buse\b|\bpick\b|\bgive\b|\bremove\b|\bfix\b|\bset\b|"
    r"\bre-?download\b|\bchoose\b|\bpoint\b|\brun\b|\btry\b|\bmake\b|\bsee\b|\bdelete\b|\bmove\b|"
    r"\bstart\b|\bstop\b|\binstall\b|\bfree\b|\bshorten\b|\brename\b|\bask\b|\bwait\b|\bfinish\b)",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab and newline aside


@dataclass(frozen=True)
class BadInput:
    """One distinct bad input. `id` is unique across the whole census."""

    id: str
    argv: list[str]
    exit_code: int
    make: Callable[[Path], None] | None = None  # builds the case's files under tmp
    may_create: tuple[str, ...] = ()  # names (relative to tmp) the command may leave, e.g. a log
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def ids(cases: list[BadInput]) -> list[str]:
    return [c.id for c in cases]


def _listing(root: Path) -> set[str]:
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_case(
    case: BadInput,
    tmp: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """Run one census case and assert the contract above; returns the error line."""
    from llmhost.cli import main

    state = tmp / "_state"
    monkeypatch.setenv("LLMHOST_STATE_DIR", str(state))
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    work = tmp / "case"
    work.mkdir()
    if case.make is not None:
        case.make(work)
    before = _listing(work)
    argv = [a.replace("{tmp}", str(work)) for a in case.argv]
    if case.stdin is not None:
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(case.stdin))
    capsys.readouterr()
    rc = main(argv)
    _out, err = capsys.readouterr()

    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == case.exit_code, f"exit {rc}, expected {case.exit_code}; stderr: {err!r}"
    assert rc != ExitCode.INTERNAL
    assert "Traceback" not in err and "internal error" not in err, err
    error_lines = [line for line in lines if line.startswith("error:")]
    assert len(error_lines) == 1, f"expected one 'error:' line, got: {err!r}"
    assert lines[-1] == error_lines[0], f"the error must be the last line: {err!r}"
    line = error_lines[0]
    assert not _CONTROL.search(line), f"control characters in {line!r}"
    assert _NEXT_STEP.search(line.removeprefix("error:")), f"no next step in {line!r}"

    after = _listing(work)
    new = {p for p in after - before if not any(p == m or p.startswith(m + "/") for m in case.may_create)}
    assert not new, f"left behind: {sorted(new)}"
    leftover_state = [p for p in _listing(state) if not p.endswith((".lock",)) and Path(state, p).is_file()]
    assert not leftover_state, f"state left behind: {leftover_state}"
    children = [p for p in psutil.Process(os.getpid()).children(recursive=True) if p.is_running()]
    assert not [c for c in children if c.status() != psutil.STATUS_ZOMBIE], f"left running: {children}"
    return line
