"""llama-cpp-python's server runs one request at a time: its llama.cpp candidates must plan one slot.

`llmhost ps` after `make demo` showed "KV cache planned 8.0 MiB / 8192 tokens, actual 4.0 MiB / 4096":
the plan gave llama-cpp-python the two slots asked for, while it allocates one sequence of n_ctx.
The real check (planned == actual on a served llama-cpp-python) is in tests/serve/test_serve_llamacpp.py.
"""

from __future__ import annotations

from pathlib import Path

from llmhost.hardware import detect
from llmhost.models import resolve
from llmhost.plan import make_plan
from llmhost.plan.models import Candidate, PlanRequest
from llmhost.plan.reasons import ReasonCode


def _llamacpp(tiny_gguf: Path, runtime: str, concurrency: int) -> list[Candidate]:
    request = PlanRequest(engine="llamacpp", context=2048, concurrency=concurrency, llamacpp_runtime=runtime)  # type: ignore[arg-type]
    plan = make_plan(resolve(str(tiny_gguf)), detect(), request)
    found = [c for c in plan.candidates if c.engine == "llamacpp"]
    assert found
    return found


def test_llama_cpp_python_plans_one_request_at_a_time(tiny_gguf: Path) -> None:
    python = _llamacpp(tiny_gguf, "llama-cpp-python", 4)
    server = _llamacpp(tiny_gguf, "llama-server", 4)
    for one, many in zip(python, server, strict=True):
        assert (one.concurrency, one.engine_options["n_parallel"], one.max_concurrency) == (1, 1, 1)
        assert one.engine_options["n_ctx"] == one.context_length == 2048  # the whole context per request
        assert any("one request at a time" in r and "asked: 4" in r for r in one.reasons)
        assert ReasonCode.LLAMA_CPP_PYTHON_ONE_REQUEST in one.reason_codes
        # The native server keeps the 4 slots asked for, and its KV cache is 4 times as large.
        assert many.concurrency == 4 and many.engine_options["n_parallel"] == 4
        assert many.max_concurrency > 1
        assert many.memory.kv_cache_bytes == 4 * one.memory.kv_cache_bytes
        assert not any("one request at a time" in r for r in many.reasons)
        assert ReasonCode.LLAMA_CPP_PYTHON_ONE_REQUEST not in many.reason_codes


def test_no_asked_concurrency_in_the_reason_when_one_was_asked(tiny_gguf: Path) -> None:
    [*_, one] = _llamacpp(tiny_gguf, "llama-cpp-python", 1)
    assert one.concurrency == 1
    assert any("one request at a time" in r and "asked" not in r for r in one.reasons)
    (why,) = [r for r in one.reasons_detail if r.code == ReasonCode.LLAMA_CPP_PYTHON_ONE_REQUEST]
    assert why.fields == {"asked": 1}
