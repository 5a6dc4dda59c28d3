"""Untrusted text, made safe to show: one rule for every output (the CLI, bench's report and tables).

Text that llmhost did not write itself (a model's metadata, a path, a served name, a server's answer,
an engine's log line) is shown through `literal` or `printable`: Rich parses `[...]` in a plain str
as markup (a model named `[/bold]` crashed `inspect` with MarkupError) and `:name:` as an emoji, and
a terminal obeys the control characters in it (ESC starts a sequence that can clear the screen or
retitle the window). `--json` needs neither: JSON escapes control characters itself.

A ground-floor module (it imports only Rich, and that on first use: `plan --json` loads none of it),
so `bench` renders its tables without importing `cli`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

# C0 controls but tab and newline (layout), DEL, and the C1 controls (U+0080-U+009F: a terminal may
# read U+009B as ESC [). Unicode category Cc is exactly this set.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """`text` with each control character shown as its escape (ESC -> `\\x1b`); tab and newline kept."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def literal(text: object, style: str = "") -> Text:
    """Untrusted text for Rich: never parsed as markup or emoji, control characters escaped."""
    from rich.text import Text

    return Text(printable(text), style=style)
