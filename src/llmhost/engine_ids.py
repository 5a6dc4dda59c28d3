"""The engines' ids, in one place: what `--engine`, profiles, plans and state files name an engine by.

Every module outside `llmhost.engines` names an engine through these constants and types, never by a
string of its own; `tests/test_engine_names.py` scans `src/llmhost` for stray literals so the eight lists
this replaced cannot grow back. Only `engines/`, `estimate/` and `plan/` take an id to compare with (the
same test checks it); the other stages ask the engine (`llmhost.engines.base.Engine`). An engine's code
lives in `llmhost.engines` (`engines/registry.py` imports it lazily by id); the knobs it launches with in
`llmhost.plan.options`.

Ids are plain strings (a plan's JSON, a state file and a profile hold them as they are); each is spelled
once as a type (`Llamacpp`, for a field that holds that id only) and once as a value (`LLAMACPP`), and
`tests/test_engine_names.py` checks the two agree.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Llamacpp = Literal["llamacpp"]
Vllm = Literal["vllm"]
Mlx = Literal["mlx"]
# A field that holds any engine's id.
EngineName = Literal[Llamacpp, Vllm, Mlx]

LLAMACPP: Final = "llamacpp"
VLLM: Final = "vllm"
MLX: Final = "mlx"
ENGINE_IDS: Final[tuple[EngineName, ...]] = get_args(EngineName)

# The engines' names in prose.
TITLES: Final[dict[str, str]] = {VLLM: "vLLM", LLAMACPP: "llama.cpp", MLX: "MLX LM"}

# Runtimes (`LaunchSpec.runtime`, `--engine` spellings) named outside their engine's module (the plan
# sizes llama.cpp per runtime): llama.cpp's two, and vLLM's (GPU) build, which is named as its engine is.
LlamaCppRuntime = Literal["llama-server", "llama-cpp-python"]
LLAMA_SERVER: Final = "llama-server"
LLAMA_CPP_PYTHON: Final = "llama-cpp-python"
VLLM_RUNTIME: Final = VLLM


def title(engine: str) -> str:
    """An engine's name in prose ("llama.cpp", "vLLM", "MLX LM"); an unknown id as it is."""
    return TITLES.get(engine, engine)
