"""The `engine_options` of every candidate `plan --json` prints, pinned before they became typed (issue 9).

`tests/plan/test_engine_options_pinned.py` compares each candidate's `engine_options` object, as the JSON
text `plan --json` writes (key order, ints vs floats, knobs left out), with `data/engine_options_pinned.json`,
recorded from the planner while `Candidate.engine_options` was still a dict. Re-record only when a knob is
meant to change:

    PYTHONPATH=src:tests python tests/support/engine_option_scenarios.py
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from llmhost.plan import PlanRequest, make_plan
from llmhost.plan.models import Plan
from support.llmhost_test_specs import dense_spec, llama8b_q4km_gguf, machine
from support.reason_scenarios import scenarios as reason_scenarios

PINNED = Path(__file__).parents[1] / "plan" / "data" / "engine_options_pinned.json"


def _amx_machine(ram_gib: float = 64):  # type: ignore[no-untyped-def]
    """A Sapphire Rapids-like host: llama.cpp plans without its CPU repack buffer (repack=false)."""
    base = machine([], ram_gib=ram_gib)
    flags = [*base.cpu.isa_flags, "amx_tile", "amx_bf16", "amx_int8", "amx"]
    return base.model_copy(update={"cpu": base.cpu.model_copy(update={"isa_flags": flags})})


def scenarios() -> dict[str, Callable[[], Plan]]:
    """The reason scenarios (every engine, device and knob the planner sets) plus an AMX host."""
    out = dict(reason_scenarios())
    out["amx-llamacpp-cpu"] = lambda: make_plan(
        llama8b_q4km_gguf(), _amx_machine(), PlanRequest(context=4096)
    )
    out["amx-needs-gguf"] = lambda: make_plan(
        dense_spec(), _amx_machine(), PlanRequest(context=4096, engine="llamacpp")
    )
    return out


def engine_options_json(plan: Plan) -> list[str]:
    """Each candidate's `engine_options` as `plan --json` writes it (its text, not only its values)."""
    document = json.loads(plan.model_dump_json(indent=2))
    return [json.dumps(c["engine_options"]) for c in document["candidates"]]


def main() -> None:
    recorded = {name: engine_options_json(build()) for name, build in scenarios().items()}
    PINNED.parent.mkdir(exist_ok=True)
    PINNED.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {PINNED} ({len(recorded)} plans)", file=sys.stderr)


if __name__ == "__main__":
    main()
