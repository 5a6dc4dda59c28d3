"""Generate docs/cli.md from `--help` (run by cog: `make docs`; `make docs-check` in CI)."""

from __future__ import annotations

import os

import typer
from typer.testing import CliRunner

from llmhost.cli import app


def _command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]

    def walk(cmd: object, prefix: list[str]) -> None:
        # Click's own listing: the root group loads each command's module when asked for it.
        list_commands = getattr(cmd, "list_commands", None)
        if list_commands is None:
            return
        ctx = typer.Context(cmd)  # type: ignore[arg-type]
        for name in sorted(list_commands(ctx)):
            sub = cmd.get_command(ctx, name)  # type: ignore[attr-defined]
            if sub is None or getattr(sub, "hidden", False):
                continue
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


def generate() -> str:
    os.environ["NO_COLOR"] = "1"
    os.environ["COLUMNS"] = "100"
    runner = CliRunner()
    out: list[str] = []
    for path in _command_paths():
        title = " ".join(["llmhost", *path])
        result = runner.invoke(
            app, [*path, "--help"], env={"NO_COLOR": "1"}, terminal_width=100, max_content_width=100
        )
        out.append(f"## `{title}`\n\n```\n{result.output.rstrip()}\n```\n")
    return "\n".join(out)
