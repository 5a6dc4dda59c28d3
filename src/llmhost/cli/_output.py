"""Rendering shared by every command: one output object, three modes.

Data goes to stdout (JSON is the pydantic model's own serialisation, nothing hand-assembled);
progress, warnings and errors go to stderr. `NO_COLOR` is honoured by Rich itself.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter
from rich.console import Console

stdout = Console(soft_wrap=False)
stderr = Console(stderr=True, soft_wrap=False)


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
    stderr.print(message, highlight=False)


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def dumps_plain(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
