"""The one byte formatter, at each precision the commands print with (their output is a contract)."""

from __future__ import annotations

import pytest

from llmhost.units import GIB, MIB, format_bytes


@pytest.mark.parametrize(
    ("n", "specs", "units", "text"),
    [
        (int(1.5 * GIB), (".2f", ".0f"), ("GiB", "MiB"), "1.50 GiB"),  # plan
        (300 * MIB, (".2f", ".0f"), ("GiB", "MiB"), "300 MiB"),
        (-2 * GIB, (".2f", ".0f"), ("GiB", "MiB"), "-2.00 GiB"),  # plan: a negative headroom
        (512 * 1024, (".1f",), ("GiB", "MiB", "KiB", "B"), "512.0 KiB"),  # ps
        (12, (".1f",), ("GiB", "MiB", "KiB", "B"), "12 B"),
        (2 * MIB // 10, (".2f", ".1f"), ("GiB", "MiB"), "0.2 MiB"),  # inspect: under a MiB stays in MiB
        (GIB // 2, (".1f",), ("GiB",), "0.5 GiB"),  # hw: always GiB
        (3 * GIB, ("g",), ("GiB", "MiB"), "3 GiB"),  # input caps
        (64 * MIB, ("g",), ("GiB", "MiB"), "64 MiB"),
    ],
)
def test_format_bytes(n, specs, units, text):
    assert format_bytes(n, *specs, units=units) == text


def test_missing_value_and_bad_call():
    assert format_bytes(None, ".1f") == "-"
    with pytest.raises(ValueError):
        format_bytes(1, units=("GiB",))
