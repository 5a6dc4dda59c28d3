"""The quick GGUF fuzz run of `make test`: every input that ever failed (corpus/gguf/) replayed, then a
few thousand mutated seeds (Hypothesis picks the seed and the mutator's random stream, derandomized so
CI sees the same cases every run). The long run is `python scripts/fuzz.py gguf` (100,000 cases)."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import fuzz_gguf
from .replay import corpus, generated, run_check


def test_the_seeds_are_accepted(tmp_path: Path) -> None:
    seeds = fuzz_gguf.seeds(tmp_path / "seeds")
    assert len(seeds) == 5 and all(len(s) < 40_000 for s in seeds)
    for data in seeds:
        fuzz_gguf.check(data, tmp_path)  # a seed that is refused would make the fuzzer test nothing


@pytest.mark.parametrize("path", corpus("gguf"), ids=lambda p: p.name)
def test_every_input_that_ever_failed(path: Path, tmp_path: Path) -> None:
    run_check(fuzz_gguf, path.read_bytes(), tmp_path)


test_quick_fuzz = pytest.mark.timeout(120)(generated(fuzz_gguf, examples=2000))
