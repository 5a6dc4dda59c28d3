"""The census covers at least 150 distinct bad inputs, across every command, with unique ids."""

from __future__ import annotations

import importlib
from pathlib import Path

HERE = Path(__file__).parent
COMMANDS = {
    "inspect",
    "plan",
    "serve",
    "bench",
    "stop",
    "hw",
    "demo-model",
    "ps",
    "logs",
    "doctor",
    "engines",
}


def _all_cases():
    cases = []
    for path in sorted(HERE.glob("test_census_*.py")):
        if path.name == Path(__file__).name:
            continue
        # By package name: the census modules import census.py relatively (tests/hostile is a package).
        module = importlib.import_module(f"{__package__}.{path.stem}")
        cases.extend(module.CASES)
    return cases


def test_census_has_150_distinct_cases_across_every_command():
    cases = _all_cases()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert len({(*tuple(c.argv), c.id) for c in cases}) >= 150, len(cases)
    covered = {c.argv[0] for c in cases}
    assert covered >= COMMANDS, sorted(COMMANDS - covered)
