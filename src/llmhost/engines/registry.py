"""Engine modules by name, imported lazily so heavy engine code never loads at CLI start-up."""

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
