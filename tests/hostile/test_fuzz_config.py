"""Quick fuzz of target `config` (see fuzz_config.py): every saved failing input, then generated cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import fuzz_config
from .replay import corpus, generated, run_check


@pytest.mark.parametrize("path", corpus("config"), ids=lambda p: p.name)
def test_corpus_input_is_handled(path: Path, tmp_path: Path) -> None:
    run_check(fuzz_config, path.read_bytes(), tmp_path)


test_generated_cases_are_handled = pytest.mark.timeout(120)(generated(fuzz_config, examples=1000))
