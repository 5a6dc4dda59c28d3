"""`Candidate.engine_options` became one typed model per engine (issue 9); `plan --json` must not change.

`data/engine_options_pinned.json` was recorded by `tests/support/engine_option_scenarios.py` while the
options were a dict: every candidate's `engine_options` object of about fifty plans (vLLM on GPUs and on
the CPU, llama.cpp on GPUs, the CPU and an AMX CPU, MLX LM on Metal and the CPU), as JSON text, so the key
order, an int that must not become a float and a knob that must stay left out are all pinned.
"""

from __future__ import annotations

import json

import pytest

from support.engine_option_scenarios import PINNED, engine_options_json, scenarios

PINS: dict[str, list[str]] = json.loads(PINNED.read_text(encoding="utf-8"))


def test_every_scenario_is_pinned() -> None:
    assert set(PINS) == set(scenarios())


def test_the_pins_cover_every_engine_and_its_optional_knobs() -> None:
    keys = {k for texts in PINS.values() for text in texts for k in json.loads(text)}
    # vLLM GPU and CPU, llama.cpp (AMX and conversion), MLX LM (quantized checkpoint and conversion)
    for key in (
        "gpu_memory_utilization",
        "cpu_kv_cache_gib",
        "quantize_online",
        "repack",
        "needs_gguf_conversion",
        "n_gpu_layers",
        "q_bits",
        "needs_mlx_conversion",
        "device",
    ):
        assert key in keys, key  # fmt: skip
    assert sum(len(texts) for texts in PINS.values()) >= 100


@pytest.mark.parametrize("name", sorted(PINS))
def test_engine_options_read_as_before(name: str) -> None:
    assert engine_options_json(scenarios()[name]()) == PINS[name]


@pytest.mark.parametrize("name", sorted(PINS))
def test_a_plan_read_back_keeps_its_engine_options(name: str) -> None:
    from llmhost.plan.models import Plan

    plan = scenarios()[name]()
    again = Plan.model_validate_json(plan.model_dump_json())
    assert engine_options_json(again) == PINS[name]
    assert again == plan
