"""Engine modules by name, imported lazily so heavy engine code never loads at CLI start-up."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmhost.engines.base import Engine

ENGINE_MODULES: dict[str, str] = {
    "llamacpp": "llmhost.engines.llamacpp",
    "vllm": "llmhost.engines.vllm",
    "mlx": "llmhost.engines.mlx",
}


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
