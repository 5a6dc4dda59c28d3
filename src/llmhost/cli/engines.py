"""`llmhost engines` (what can run here) and `llmhost engines install NAME`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from llmhost.cli._options import JsonOpt
from llmhost.cli._output import emit, info, literal, wide

if TYPE_CHECKING:
    from rich.console import Console


def _list(as_json: bool) -> None:
    from llmhost.app.engines import engine_statuses
    from llmhost.hardware import detect

    statuses = engine_statuses(detect())

    def human(console: Console) -> None:
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for col in ("ENGINE", "RUNTIME", "INSTALLED", "USABLE", "VERSION", "WHERE / WHY NOT"):
            table.add_column(col)
        for s in statuses:
            where = s.location or ""
            if s.reason:
                where = f"{where}  {s.reason}".strip()
            # Versions, paths and reasons quote the engines' own output: literal text.
            table.add_row(
                literal(s.name),
                literal(s.runtime),
                "yes" if s.installed else "no",
                "yes" if s.usable else "no",
                literal(s.version or "-"),
                literal(where),
            )
        wide(console).print(table)

    emit(statuses, as_json=as_json, human=human)


InstallNameArg = Annotated[
    str,
    typer.Argument(help="llama-server (built from source, cached), vllm or mlx (each its own virtualenv)."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rebuild even if a cached build exists.")]


def engines(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List every engine runtime: installed or not, version, where, and why it cannot run here."""
    if ctx.invoked_subcommand is None:
        _list(as_json)


def install(name: InstallNameArg, force: ForceOpt = False) -> None:
    """Install an engine.

    `llama-server` is built from the llama.cpp sources in the llama-cpp-python sdist (CUDA/Metal when
    the machine has them; cached by source hash and flags); `vllm` and `mlx` (MLX LM: mlx-metal on
    Apple Silicon, mlx-cpu on Linux) each get their own virtualenv, keyed by the pinned versions.
    """
    from llmhost.app.engines import install_engine

    typer.echo(install_engine(name, force=force, log=info))


def register(app: typer.Typer) -> None:
    """Register this module's commands on the app."""
    engines_app = typer.Typer(
        name="engines",
        help="List engine runtimes (installed? version? where? why not usable?) and install them.",
        no_args_is_help=False,
        rich_markup_mode=None,
    )
    engines_app.callback(invoke_without_command=True)(engines)
    engines_app.command("install")(install)
    app.add_typer(engines_app)
