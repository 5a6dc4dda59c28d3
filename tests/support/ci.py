"""Whether the tests run in CI (`CI=true`, as `.ci/run` is called): there a missing engine or tool is a
failure, on a developer machine a skip."""

from __future__ import annotations

import os

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_vllm_cpu() -> None:
    """Skip (fail in CI) where the vLLM CPU engine env is missing."""
    import pytest

    from llmhost.engines import vllm_env

    if vllm_env.find_runtime(device="cpu") is not None:
        return
    message = "vLLM CPU engine env missing: run `make vllm-engine` (llmhost engines install vllm)."
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
