"""Quick run of the `sse` fuzz target (scripts/fuzz.py runs the long one): every input that ever failed,
then a few thousand mutations of the seeds, through bench's client and checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import fuzz_sse
from .replay import corpus, generated, run_check


@pytest.mark.parametrize("path", corpus("sse"), ids=lambda p: p.name)
def test_every_input_that_ever_failed_passes(path: Path, tmp_path: Path) -> None:
    run_check(fuzz_sse, path.read_bytes(), tmp_path)


test_mutated_streams_only_fail_requests = pytest.mark.timeout(120)(generated(fuzz_sse, examples=2000))
