"""Quick run of the `sse` fuzz target (scripts/fuzz.py runs the long one): every input that ever failed,
then a few thousand mutations of the seeds, through bench's client and checks."""

from __future__ import annotations

import random
from pathlib import Path

import fuzz_sse
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

CORPUS = Path(__file__).parent / "corpus" / "sse"
SEEDS = fuzz_sse.seeds(Path("."))


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*")), ids=lambda p: p.name)
def test_every_input_that_ever_failed_passes(path: Path, tmp_path: Path) -> None:
    fuzz_sse.check(path.read_bytes(), tmp_path)


@settings(max_examples=2000, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, len(SEEDS) - 1), rng=st.randoms(use_true_random=False))
def test_mutated_streams_only_fail_requests(
    seed: int, rng: random.Random, tmp_path_factory: pytest.TempPathFactory
) -> None:
    fuzz_sse.check(fuzz_sse.mutate(SEEDS[seed], rng), Path("."))
