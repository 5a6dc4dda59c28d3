"""The `llmhost` command line: thin commands over the library.

Each command module (`hw`, `plan`, `serve`, `engines`, `bench`) registers its commands on the one
Typer app with a `register(app)` function. Errors are rendered once, in `main()`.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from llmhost.errors import EXIT_CODE_HELP, ExitCode, LlmhostError

app = typer.Typer(
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


def _register_commands() -> None:
    from llmhost.cli import bench, engines, export, gateway, hw, inspect, plan, serve

    for module in (hw, inspect, plan, serve, engines, bench, export, gateway):
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: run the app, render errors once, return the exit code."""
    from llmhost.cli import _output
    from llmhost.cli._output import stderr

    _output.forget_interrupt()
    try:
        result = app(args=argv, standalone_mode=False, prog_name="llmhost")
    except LlmhostError as exc:
        if _state["debug"]:
            stderr.print_exception()
        # A message that quotes log lines ends with one of them: the hint then goes on its own line,
        # not glued onto it.
        text = f"{exc.message}\n{exc.hint}" if exc.hint and "\n" in exc.message else str(exc)
        _print_error("error:", text)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        stderr.print("aborted.")
        return ExitCode.INTERRUPTED
    except KeyboardInterrupt:
        stderr.print("interrupted.")
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
        stderr.print("interrupted.")
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
