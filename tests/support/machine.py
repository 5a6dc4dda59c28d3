"""What the test machine has that decides how a real-engine test runs or why it skips: the native
llama-server build and an AMX CPU. Each is found once per process and cached, so every test that asks
gets the same answer (and `/proc/cpuinfo` is read once, by llmhost's own hardware probe).
"""

from __future__ import annotations

import functools

import pytest

NO_LLAMA_SERVER = "native llama-server is not built: run `llmhost engines install llama-server`"


@functools.cache
def amx_cpu() -> bool:
    """This CPU has AMX units, decided exactly as the planner decides (`plan.llamacpp_candidates.amx_host`
    on `hardware.detect()`): there llmhost runs llama.cpp with --no-repack and plans for it."""
    from llmhost.hardware import detect
    from llmhost.plan.llamacpp_candidates import amx_host

    return amx_host(detect())


@functools.cache
def llama_server_built() -> bool:
    """`llmhost engines install llama-server` has built the native binary."""
    from llmhost.engines.llamacpp import find_llama_server

    return find_llama_server() is not None


def native_llama_server_marks() -> list[pytest.MarkDecorator]:
    """`pytestmark` of a module whose every test starts the native llama-server: marked `engine` and
    `llama_server` (so `make test-fast` leaves it out), skipped with the reason where it is not built."""
    return [
        pytest.mark.engine,
        pytest.mark.llama_server,
        pytest.mark.skipif(not llama_server_built(), reason=NO_LLAMA_SERVER),
    ]
