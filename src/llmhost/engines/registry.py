"""Engine modules by name, imported lazily so heavy engine code never loads at CLI start-up; and the
questions about every engine at once (what `--engine` and `engines install` accept)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from llmhost.engine_ids import ENGINE_IDS

if TYPE_CHECKING:
    from llmhost.engines.base import Engine

ENGINE_MODULES: dict[str, str] = {engine: f"llmhost.engines.{engine}" for engine in ENGINE_IDS}


def get_engine(name: str) -> Engine:
    """Return the engine object (module attribute `ENGINE`) for `name`."""
    from llmhost.errors import UsageError

    try:
        module_name = ENGINE_MODULES[name]
    except KeyError:
        raise UsageError(
            f"Unknown engine {name!r}.", hint=f"Choose one of: {', '.join(sorted(ENGINE_MODULES))}."
        ) from None
    module = importlib.import_module(module_name)
    engine: Engine = module.ENGINE
    return engine


def engine_aliases() -> dict[str, tuple[str, str | None]]:
    """Every `--engine` spelling -> (engine, the runtime it forces or None), engine by engine."""
    return {
        spelling: (name, runtime)
        for name in ENGINE_MODULES
        for spelling, runtime in get_engine(name).aliases.items()
    }


def engine_flag(engine: str, runtime: str) -> str:
    """What `--engine` takes to choose this engine and runtime again: the spelling that forces the
    runtime (llama.cpp's `llama-server`), else the engine's id (one runtime per machine: vLLM, MLX LM)."""
    return runtime if get_engine(engine).aliases.get(runtime) == runtime else engine


def installable() -> dict[str, str]:
    """Every name `llmhost engines install` takes -> the engine that installs it, engine by engine."""
    return {thing: name for name in ENGINE_MODULES for thing in get_engine(name).installable}
