"""Recorded engine measurements and the benchmark helpers that score llmhost's estimates on them.

The data and the scoring live in `benchmarks/` (`_accuracy_compare.py`, `_llamacpp_logs.py`,
`_vllm_logs.py`): the benchmarks print and publish the tables, these tests assert the targets on the
same numbers without running an engine.
"""

from __future__ import annotations

from typing import Any

import _accuracy_compare as acc  # benchmarks/, on sys.path through pyproject's pytest pythonpath
import pytest


@pytest.fixture(scope="session")
def llamacpp_data() -> dict[str, Any]:
    return acc.load(acc.LLAMACPP_DATA)


@pytest.fixture(scope="session")
def vllm_data() -> dict[str, Any]:
    return acc.load(acc.VLLM_DATA)


@pytest.fixture(scope="session")
def llamacpp_specs() -> dict[str, Any]:
    return acc.load_spec_snapshot()
