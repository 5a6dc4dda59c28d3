"""Reasons became codes with fields (issue 9); what `plan` prints from them must not change.

`data/reasons_pinned.json` was recorded by `tests/support/reason_scenarios.py` from the planner as it was
before that change: each plan's reason and advice strings, the whole `plan --json` document of a few, and
the human view of a few. `--json` keeps every field it had and only adds `reasons_detail` / `advice_detail`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from support.reason_scenarios import FULL_JSON, HUMAN, PINNED, human, scenarios

PINS: dict[str, Any] = json.loads(PINNED.read_text(encoding="utf-8"))
ADDED = {"reasons_detail", "advice_detail"}  # the only keys the structured reasons may add


def _without_added(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_added(v) for k, v in value.items() if k not in ADDED}
    if isinstance(value, list):
        return [_without_added(v) for v in value]
    return value


def test_every_scenario_is_pinned() -> None:
    assert set(PINS) == set(scenarios())


@pytest.mark.parametrize("name", sorted(PINS))
def test_reasons_and_advice_read_as_before(name: str) -> None:
    plan = scenarios()[name]()
    pinned = PINS[name]
    assert plan.chosen == pinned["chosen"]
    assert [c.reasons for c in plan.candidates] == pinned["reasons"]
    assert plan.advice == pinned["advice"]
    dumped = plan.model_dump(mode="json")
    assert [c["reasons"] for c in dumped["candidates"]] == pinned["reasons"]
    assert dumped["advice"] == pinned["advice"]
    if name in FULL_JSON:
        assert _without_added(dumped) == pinned["json"]
    if name in HUMAN:
        assert human(plan) == pinned["human"]


def test_the_scenarios_cover_plans_with_and_without_advice() -> None:
    # The pins are only worth what they cover: reasons on chosen and other candidates, and advice.
    assert sum(1 for p in PINS.values() if p["advice"]) >= 10
    assert sum(1 for p in PINS.values() if p["chosen"] is not None) >= 10
    assert len({r for p in PINS.values() for rs in p["reasons"] for r in rs}) >= 60


def test_the_scenarios_produce_every_code_the_planner_writes() -> None:
    from llmhost.plan.reasons import ReasonCode

    seen: set[ReasonCode] = set()
    for build in scenarios().values():
        plan = build()
        seen |= {a.code for a in plan.advice_detail}
        seen |= {code for c in plan.candidates for code in c.reason_codes}
    # serve's engine fallback is written by app.serve (tests/vllm/test_fallback.py pins it).
    assert set(ReasonCode) - seen == {ReasonCode.ENGINE_FALLBACK}
