"""Rendering shared by every command: one output object, three modes.

Data goes to stdout (JSON is the pydantic model's own serialisation, nothing hand-assembled);
progress, warnings and errors go to stderr. `NO_COLOR` is honoured by Rich itself.

Text that llmhost did not write itself (a model's metadata, a path, a served name, a server's answer,
an engine's log line) is shown through `literal` or `printable`: Rich parses `[...]` in a plain str
as markup (a model named `[/bold]` crashed `inspect` with MarkupError) and `:name:` as an emoji, and
a terminal obeys the control characters in it (ESC starts a sequence that can clear the screen or
retitle the window). `--json` needs neither: JSON escapes control characters itself.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter
from rich.console import Console
from rich.text import Text

stdout = Console(soft_wrap=False)
stderr = Console(stderr=True, soft_wrap=False)


# C0 controls but tab and newline (layout), DEL, and the C1 controls (U+0080-U+009F: a terminal may
# read U+009B as ESC [). Unicode category Cc is exactly this set.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """`text` with each control character shown as its escape (ESC -> `\\x1b`); tab and newline kept."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def literal(text: object, style: str = "") -> Text:
    """Untrusted text for Rich: never parsed as markup or emoji, control characters escaped."""
    return Text(printable(text), style=style)


def to_json(data: BaseModel | Sequence[BaseModel] | Any) -> str:
    if isinstance(data, BaseModel):
        return data.model_dump_json(indent=2)
    return TypeAdapter(type(data)).dump_json(data, indent=2).decode()


def emit(data: Any, *, as_json: bool, human: Callable[[Console], None]) -> None:
    """Print `data` as JSON (stdout, plain) or call `human` to render it with Rich."""
    if as_json:
        sys.stdout.write(to_json(data) + "\n")
        sys.stdout.flush()
        return
    human(stdout)


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
    stderr.print(literal(message))


def warn(message: str) -> None:
    """A warning line; its text is literal (it quotes paths, names and remote errors)."""
    stderr.print(Text.assemble(("warning:", "yellow"), " ", literal(message)))


def wide(console: Console) -> Console:
    """`console` on a terminal; for piped output (scripts, `| less`) one that does not cut tables to 80
    columns."""
    return console if console.is_terminal else Console(width=250, soft_wrap=False)


def dumps_plain(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
