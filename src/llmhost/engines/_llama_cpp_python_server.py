"""Child entry point: llama-cpp-python's OpenAI server with llama.cpp's extra CPU buffer types off.

Run as `python -m llmhost.engines._llama_cpp_python_server --no-repack ARGS...`, where ARGS are
`llama_cpp.server`'s own. Why it exists: on a CPU with AMX units llama.cpp (as vendored by
llama-cpp-python 0.3.36) segfaults loading Gemma 3 Q4_K_M while it moves weights into its AMX /
repack buffer types. The native llama-server has a switch for that (`--no-repack`, which clears
`llama_model_params.use_extra_bufts`); llama-cpp-python's server has none. This wrapper sets the same
field: the server builds its model parameters from `llama_cpp.llama_model_default_params()` and then
overrides only the fields it knows, so a default with `use_extra_bufts = False` reaches the model load.
Everything else (argument parsing, the HTTP server, its logging) is llama-cpp-python's own.
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

NO_REPACK = "--no-repack"


def disable_extra_buffer_types(llama_cpp: Any) -> None:
    """Make every model llama-cpp-python loads from now on skip llama.cpp's extra buffer types."""
    default_params = llama_cpp.llama_model_default_params

    def without_extra_bufts() -> Any:
        params = default_params()
        params.use_extra_bufts = False
        return params

    llama_cpp.llama_model_default_params = without_extra_bufts


def main(argv: list[str]) -> None:
    if NO_REPACK in argv:
        argv = [a for a in argv if a != NO_REPACK]
        import llama_cpp.llama_cpp as bindings

        disable_extra_buffer_types(bindings)
    sys.argv = ["llama_cpp.server", *argv]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
