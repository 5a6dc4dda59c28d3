"""The one boundary search, against a linear scan of the same predicate."""

from __future__ import annotations

import pytest

from llmhost.bisection import last_true


@pytest.mark.parametrize("boundary", [0, 1, 7, 16, 100, 255, 256, 999])
def test_exact_boundary_with_step_one(boundary):
    probes = []

    def fits(n):
        probes.append(n)
        return n <= boundary

    assert last_true(fits, 0, 1000) == boundary
    assert len(probes) <= 11  # log2(1000) probes, not a scan


@pytest.mark.parametrize("boundary", [16, 17, 31, 32, 500, 4095])
def test_aligned_steps_give_the_largest_true_multiple(boundary):
    probes = []

    def fits(n):
        probes.append(n)
        return n <= boundary

    found = last_true(fits, 16, 4096, step=16, aligned=True)
    assert found == max(16, boundary // 16 * 16)
    assert all(p % 16 == 0 for p in probes)


def test_unaligned_steps_stop_within_a_step_of_the_boundary():
    found = last_true(lambda n: n <= 3000, 16, 8192, step=256)
    assert found <= 3000 < found + 256
