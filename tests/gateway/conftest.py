"""Three tiny real GGUFs of different sizes (llmhost.demo_model's generator), made once per session."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from llmhost.demo_model import DEMO_SHAPE, ensure_model

# (layers, width): about 1.3 MB, 7 MB and 23 MB of F16 weights.
SHAPES = {"small": (2, 128), "mid": (4, 256), "big": (6, 384)}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("gateway-models")
    return {
        name: ensure_model(replace(DEMO_SHAPE, n_layer=n, n_embd=w, n_ff=3 * w, name=f"gw-{name}"), directory)
        for name, (n, w) in SHAPES.items()
    }
