"""Quick fuzz of profile loading (the long run: `python scripts/fuzz.py profile`): every input that ever
failed replays clean, and a few thousand mutations of real profiles load or are refused as ProfileError."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import fuzz_profile
from .replay import corpus, generated, run_check


@pytest.mark.parametrize("path", corpus("profile"), ids=lambda p: p.name)
def test_corpus_input_is_handled(path: Path, tmp_path: Path) -> None:
    run_check(fuzz_profile, path.read_bytes(), tmp_path)


test_mutated_profiles_load_or_are_refused = pytest.mark.timeout(120)(generated(fuzz_profile, examples=3000))
