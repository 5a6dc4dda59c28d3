"""The quick GGUF fuzz run of `make test`: every input that ever failed (corpus/gguf/) replayed, then a
few thousand mutated seeds (Hypothesis picks the seed and the mutator's random stream, derandomized so
CI sees the same cases every run). The long run is `python scripts/fuzz.py gguf` (100,000 cases)."""

from __future__ import annotations

import random
from pathlib import Path

import fuzz_gguf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmhost.errors import ExitCode, LlmhostError

CORPUS = sorted((Path(__file__).parent / "corpus" / "gguf").glob("*.bin"))
QUICK_CASES = 2000


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return fuzz_gguf.seeds(tmp_path_factory.mktemp("seeds"))


def _check(data: bytes, workdir: Path) -> None:
    """Return, or refuse with exit 2: anything else (another exception, another exit code) fails."""
    try:
        fuzz_gguf.check(data, workdir)
    except LlmhostError as exc:
        assert exc.exit_code == ExitCode.BAD_INPUT, exc


def test_the_seeds_are_accepted(seeds: list[bytes], tmp_path: Path) -> None:
    assert len(seeds) == 5 and all(len(s) < 40_000 for s in seeds)
    for data in seeds:
        fuzz_gguf.check(data, tmp_path)  # a seed that is refused would make the fuzzer test nothing


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_every_input_that_ever_failed(path: Path, tmp_path: Path) -> None:
    _check(path.read_bytes(), tmp_path)


@pytest.mark.timeout(120)
def test_quick_fuzz(seeds: list[bytes], tmp_path: Path) -> None:
    @settings(
        max_examples=QUICK_CASES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(st.integers(0, len(seeds) - 1), st.integers(0, 2**64 - 1))
    def one(seed: int, stream: int) -> None:
        _check(fuzz_gguf.mutate(seeds[seed], random.Random(stream)), tmp_path)

    one()
