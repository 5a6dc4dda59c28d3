"""The `llmhost` command line: thin commands over the library.

Each command module (`hw`, `plan`, `serve`, `engines`, `bench`, ...) registers its commands on a Typer
app with a `register(app)` function. The root app loads a command's module only when that command
runs (or `--help` lists it): `llmhost plan` never imports serve's, bench's or export's library stack
(`COMMANDS` names each command's module; tests/test_startup.py checks it against the modules).
Errors are rendered once, in `main()`.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from llmhost.errors import EXIT_CODE_HELP, ExitCode, LlmhostError

# Every command in `llmhost --help`'s order (Typer lists a module's commands before its groups), and
# the `llmhost.cli` module whose `register(app)` defines it.
COMMANDS: dict[str, str] = {
    "hw": "hw",
    "doctor": "hw",
    "inspect": "inspect",
    "plan": "plan",
    "serve": "serve",
    "ps": "serve",
    "logs": "serve",
    "stop": "serve",
    "demo-model": "serve",
    "bench": "bench",
    "export": "export",
    "engines": "engines",
    "gateway": "gateway",
}


@functools.cache
def module_commands(module: str) -> dict[str, Any]:
    """The Click commands `llmhost.cli.<module>.register` defines, by name (built once per process)."""
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    importlib.import_module(f"llmhost.cli.{module}").register(sub)
    command = typer.main.get_command(sub)
    # Typer makes a module's lone command a Command, several commands (or a sub-app) a Group of them.
    children = getattr(command, "commands", None)
    return dict(children) if children is not None else {command.name or module: command}


class LazyCommands(TyperGroup):
    """The root group: the commands of `COMMANDS` are loaded on first use; any command registered on
    `app` itself (tests add hidden ones) comes after them."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(name for name in super().list_commands(ctx) if name not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in COMMANDS:
            found = module_commands(COMMANDS[cmd_name]).get(cmd_name)
        return found


app = typer.Typer(
    cls=LazyCommands,
    name="llmhost",
    help="Self-hosting control plane for open-weight LLMs: hw, plan, serve, ps, logs, stop, bench.\n\n"
    + EXIT_CODE_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        from llmhost import __version__

        typer.echo(f"llmhost {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and debug logs for errors.")
    ] = False,
) -> None:
    _state["debug"] = debug or os.environ.get("LLMHOST_DEBUG") == "1"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: run the app, render errors once, return the exit code."""
    from llmhost.cli import _output

    _output.forget_interrupt()
    try:
        result = app(args=argv, standalone_mode=False, prog_name="llmhost")
    except LlmhostError as exc:
        if _state["debug"]:
            _output.stderr.print_exception()
        # A message that quotes log lines ends with one of them: the hint then goes on its own line,
        # not glued onto it.
        text = f"{exc.message}\n{exc.hint}" if exc.hint and "\n" in exc.message else str(exc)
        _print_error("error:", text)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        _output.stderr.print("aborted.")
        return ExitCode.INTERRUPTED
    except KeyboardInterrupt:
        _output.stderr.print("interrupted.")
        return ExitCode.INTERRUPTED
    except typer.TyperException as exc:  # usage errors (unknown option, bad value): public Typer API
        # One line like every other error, with the next step (Typer's own rendering is a usage block).
        _print_error("error:", _usage_line(exc))
        return ExitCode.BAD_INPUT
    except Exception as exc:
        if _state["debug"]:
            raise
        _print_error(
            "internal error:",
            f"{type(exc).__name__}: {exc}. Rerun with --debug for the traceback and report it.",
        )
        return ExitCode.INTERNAL
    # With standalone_mode=False a `typer.Exit(code)` comes back as the return value. So does Ctrl-C:
    # Typer turns KeyboardInterrupt into a silent exit 130; say so, unless the command already did.
    if result == ExitCode.INTERRUPTED and not _output.interrupt_reported():
        _output.stderr.print("interrupted.")
    return result if isinstance(result, int) else ExitCode.OK


def _print_error(label: str, text: str) -> None:
    """`label text` on stderr: the text is literal (it quotes file names, values and server answers:
    `[/x]` is no markup, an ESC in a file name is shown as `\\x1b`), the label red."""
    from rich.text import Text

    from llmhost.cli._output import literal, stderr

    # soft_wrap: the error stays one line in logs and pipes, whatever the width.
    stderr.print(Text.assemble((label, "red"), " ", literal(text)), soft_wrap=True)


def _usage_line(exc: Exception) -> str:
    """`Invalid value for '--tp': ... Try 'llmhost plan --help'.` from a Typer usage error."""
    format_message = getattr(exc, "format_message", None)
    message = " ".join(str(format_message() if callable(format_message) else exc).split())
    if message and message[-1] not in ".?!":
        message += "."
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "llmhost"
    return f"{message} Try '{command} --help'."


def run() -> None:
    sys.exit(main())
