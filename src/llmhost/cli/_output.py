"""Rendering shared by every command: one output object, three modes.

Data goes to stdout (JSON is the pydantic model's own serialisation, nothing hand-assembled);
progress, warnings and errors go to stderr. `NO_COLOR` is honoured by Rich itself. The two consoles
(`stdout`, `stderr`) are made on first use: `plan --json` prints through neither and loads no Rich.

Text that llmhost did not write itself goes through `literal` / `printable` (`llmhost.text`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmhost.text import literal, printable

if TYPE_CHECKING:
    from rich.console import Console

    stdout: Console
    stderr: Console

__all__ = ["literal", "printable"]  # re-exported: the CLI's one import for rendering


def __getattr__(name: str) -> Any:
    """`stdout` and `stderr`, the Rich consoles, made on first use (a test may replace either)."""
    if name not in ("stdout", "stderr"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    console = Console(stderr=name == "stderr", soft_wrap=False)
    globals()[name] = console
    return console


def _console(name: str) -> Console:
    found = globals().get(name)
    return found if found is not None else __getattr__(name)  # type: ignore[no-any-return]


def to_json(data: Any) -> str:
    from pydantic import BaseModel, TypeAdapter

    if isinstance(data, BaseModel):
        return data.model_dump_json(indent=2)
    return TypeAdapter(type(data)).dump_json(data, indent=2).decode()


def emit(data: Any, *, as_json: bool, human: Callable[[Console], None]) -> None:
    """Print `data` as JSON (stdout, plain) or call `human` to render it with Rich."""
    if as_json:
        sys.stdout.write(to_json(data) + "\n")
        sys.stdout.flush()
        return
    human(_console("stdout"))


_interrupt = {"reported": False}


def report_interrupt(message: str) -> None:
    """A command's own words for a Ctrl-C it handled (`main` then adds no bare "interrupted.")."""
    _interrupt["reported"] = True
    warn(message)


def interrupt_reported() -> bool:
    return _interrupt["reported"]


def forget_interrupt() -> None:
    """Each `main()` call starts afresh (tests call it many times in one process)."""
    _interrupt["reported"] = False


def info(message: str) -> None:
    """A progress line; its text is literal (it quotes paths and names)."""
    _console("stderr").print(literal(message))


def warn(message: str) -> None:
    """A warning line; its text is literal (it quotes paths, names and remote errors)."""
    from rich.text import Text

    _console("stderr").print(Text.assemble(("warning:", "yellow"), " ", literal(message)))


def wide(console: Console) -> Console:
    """`console` on a terminal; for piped output (scripts, `| less`) one that does not cut tables to 80
    columns."""
    if console.is_terminal:
        return console
    from rich.console import Console

    return Console(width=250, soft_wrap=False)


def dumps_plain(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
