"""`llmhost engines` (what can run here) and `llmhost engines install NAME`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from llmhost.cli._options import JsonOpt
from llmhost.cli._output import emit, info, literal, wide
from llmhost.engines.base import EngineStatus
from llmhost.errors import EngineError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

INSTALLABLE = ("llama-server", "vllm", "mlx")


def all_statuses() -> list[EngineStatus]:
    """Every runtime of every registered engine (an engine module that fails to import is reported)."""
    from llmhost.engines.registry import ENGINE_MODULES, get_engine
    from llmhost.hardware import detect

    hardware = detect()
    out: list[EngineStatus] = []
    for name in ENGINE_MODULES:
        try:
            engine = get_engine(name)
        except ImportError as exc:
            out.append(
                EngineStatus(
                    name=name, runtime=name, installed=False, usable=False, reason=f"not available: {exc}"
                )
            )
            continue
        out.extend(engine.status(hardware))
    return out


def _list(as_json: bool) -> None:
    statuses = all_statuses()

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


def register(app: typer.Typer) -> None:
    """Register this module's commands on the app."""
    engines_app = typer.Typer(
        name="engines",
        help="List engine runtimes (installed? version? where? why not usable?) and install them.",
        no_args_is_help=False,
        rich_markup_mode=None,
    )

    @engines_app.callback(invoke_without_command=True)
    def engines(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        """List every engine runtime: installed or not, version, where, and why it cannot run here."""
        if ctx.invoked_subcommand is None:
            _list(as_json)

    @engines_app.command("install")
    def install(
        name: Annotated[
            str,
            typer.Argument(
                help="llama-server (built from source, cached), vllm or mlx (each its own virtualenv)."
            ),
        ],
        force: Annotated[
            bool, typer.Option("--force", help="Rebuild even if a cached build exists.")
        ] = False,
    ) -> None:
        """Install an engine.

        `llama-server` is built from the llama.cpp sources in the llama-cpp-python sdist (CUDA/Metal when
        the machine has them; cached by source hash and flags); `vllm` and `mlx` (MLX LM: mlx-metal on
        Apple Silicon, mlx-cpu on Linux) each get their own virtualenv, keyed by the pinned versions.
        """
        if name == "llama-server":
            from llmhost.engines.llamacpp_build import build_llama_server
            from llmhost.hardware import detect

            hardware = detect()
            path = build_llama_server(
                has_nvidia=hardware.has_nvidia, is_apple=hardware.is_apple_silicon, force=force, log=info
            )
            typer.echo(str(path))
            return
        if name == "vllm":
            try:
                from llmhost.engines import vllm_env
            except ImportError as exc:
                raise EngineError(
                    f"The vLLM installer is not available in this llmhost ({exc}).",
                    hint="Update llmhost, or install vLLM yourself and put `vllm` on PATH.",
                ) from exc
            install_fn = getattr(vllm_env, "install", None)
            if install_fn is None:
                raise EngineError(
                    "llmhost.engines.vllm_env has no install() function.", hint="Update llmhost."
                )
            result = install_fn(force=force)
            location = getattr(result, "location", None)
            typer.echo(str(location if location is not None else result))
            return
        if name == "mlx":
            from llmhost.engines import mlx_env

            typer.echo(str(mlx_env.install(force=force).location))
            return
        raise UsageError(
            f"Unknown engine {name!r} to install.", hint=f"Choose one of: {', '.join(INSTALLABLE)}."
        )

    app.add_typer(engines_app)
