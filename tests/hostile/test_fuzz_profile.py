"""Quick fuzz of profile loading (the long run: `python scripts/fuzz.py profile`): every input that ever
failed replays clean, and a few thousand mutations of real profiles load or are refused as ProfileError."""

from __future__ import annotations

import random
from pathlib import Path

import fuzz_profile
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmhost.errors import ExitCode, LlmhostError

CORPUS = Path(__file__).with_name("corpus") / "profile"


def _check(data: bytes, workdir: Path) -> None:
    try:
        fuzz_profile.check(data, workdir)
    except LlmhostError as exc:
        assert exc.exit_code == ExitCode.BAD_INPUT, exc


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*")) if CORPUS.is_dir() else [], ids=lambda p: p.name)
def test_corpus_replays_clean(path: Path, tmp_path: Path) -> None:
    _check(path.read_bytes(), tmp_path)


@pytest.mark.timeout(120)
@settings(
    max_examples=3000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_mutated_profiles_load_or_are_refused(tmp_path: Path, case: int) -> None:
    seeds = fuzz_profile.seeds(tmp_path)
    rng = random.Random(case)
    _check(fuzz_profile.mutate(seeds[case % len(seeds)], rng), tmp_path)
