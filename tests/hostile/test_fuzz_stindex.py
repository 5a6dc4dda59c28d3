"""Quick fuzz of target `stindex` (see fuzz_stindex.py): every saved failing input, then generated cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import fuzz_stindex
from .replay import corpus, generated, run_check


@pytest.mark.parametrize("path", corpus("stindex"), ids=lambda p: p.name)
def test_corpus_input_is_handled(path: Path, tmp_path: Path) -> None:
    run_check(fuzz_stindex, path.read_bytes(), tmp_path)


test_generated_cases_are_handled = pytest.mark.timeout(120)(generated(fuzz_stindex, examples=2000))
