"""`llmhost.inputs.read_regular_file`: the size limit on a user's file (a result, a profile, a dataset)."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmhost.inputs as inputs
from llmhost.errors import UsageError
from llmhost.inputs import read_regular_file


def test_a_file_whose_size_is_over_the_limit_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as fh:
        fh.truncate(3 * 2**30)  # a sparse 3 GiB: reading it to the limit took seconds and a GiB
    unread = lambda fd, limit: pytest.fail("read a file already too large")  # noqa: E731
    monkeypatch.setattr(inputs, "_read_at_most", unread)
    refused = r"The result file .*big\.json is larger than 1 GiB, more than any real"
    with pytest.raises(UsageError, match=refused):
        read_regular_file(big, what="result file", limit=2**30)


def test_the_limit_is_inclusive_and_a_file_under_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"x" * 100)
    assert read_regular_file(path, what="profile", limit=100) == b"x" * 100
    with pytest.raises(UsageError, match="is larger than"):
        read_regular_file(path, what="profile", limit=99)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_file_whose_size_reads_zero_is_still_bounded_by_the_read() -> None:
    proc = Path("/proc/self/status")  # a regular file whose st_size is 0 whatever it holds
    assert proc.stat().st_size == 0
    assert b"Name:" in read_regular_file(proc, what="profile", limit=1 << 20)
    with pytest.raises(UsageError, match="is larger than"):
        read_regular_file(proc, what="profile", limit=8)
