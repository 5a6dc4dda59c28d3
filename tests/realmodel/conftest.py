"""Real-model tests: Gemma 3 270M (base, Q4_K_M), installed through `llmhost demo-model --real`.

The model is installed once into the llmhost cache (~/.cache/llmhost unless LLMHOST_CACHE_DIR says
otherwise) by the same code path users run, and reused by every later session; the serve helpers next
to the serve tests are shared."""

from __future__ import annotations

import json

import pytest

from support.serve_helpers import llmhost


@pytest.fixture(scope="session")
def gemma() -> dict:
    """`demo-model --real --json`: the path, size and sha256 of the installed Gemma GGUF."""
    proc = llmhost("demo-model", "--real", "--json", timeout=900)
    assert proc.returncode == 0, f"demo-model --real failed ({proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout)
