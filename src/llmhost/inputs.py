"""Checks on free text a user types (an option's value, a profile's string): one rule, one place.

A value that cannot name anything (empty, whitespace, a control character such as NUL or a newline,
longer than any path) is refused naming where it came from, instead of being read as "not given" or
failing deep inside a command (`--host ''` bound every interface; `--name ''` took the default).
"""

from __future__ import annotations

import re

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
