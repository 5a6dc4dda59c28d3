"""`Candidate.engine_options` is the candidate's engine's own typed model (plan/options.py, issue 9)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from llmhost.plan import PlanRequest, make_plan
from llmhost.plan.models import Candidate, Plan
from llmhost.plan.options import LlamaCppOptions, MlxOptions, VllmOptions
from support.llmhost_test_specs import dense_spec, h100, llama8b_q4km_gguf, machine


def _plan(engine: str) -> Plan:
    if engine == "llamacpp":
        return make_plan(llama8b_q4km_gguf(), machine([]), PlanRequest(context=4096))
    return make_plan(dense_spec(), machine([h100()]), PlanRequest(context=8192, engine="vllm"))


def test_each_engine_plans_its_own_options_model() -> None:
    by_engine = {"llamacpp": LlamaCppOptions, "vllm": VllmOptions}
    for engine, cls in by_engine.items():
        chosen = _plan(engine).chosen_candidate
        assert chosen is not None and chosen.engine == engine
        assert type(chosen.engine_options) is cls
    vllm = _plan("vllm").chosen_candidate
    assert vllm is not None and isinstance(vllm.engine_options, VllmOptions)
    assert vllm.engine_options.gpu_memory_utilization == 0.9 and vllm.engine_options.device is None
    assert not vllm.engine_options.runs_on_cpu and not vllm.engine_options.needs_conversion


def test_the_tag_and_unset_knobs_stay_out_of_the_json() -> None:
    chosen = _plan("llamacpp").chosen_candidate
    assert chosen is not None
    dumped = json.loads(chosen.model_dump_json())["engine_options"]
    assert "engine" not in dumped and "repack" not in dumped and "needs_gguf_conversion" not in dumped
    assert dumped["n_ctx"] == chosen.engine_options.n_ctx == 4096  # type: ignore[union-attr]
    # The mapping view reads what the JSON holds, no more.
    assert chosen.engine_options["n_ctx"] == 4096 and "repack" not in chosen.engine_options
    assert chosen.engine_options.get("repack") is None
    with pytest.raises(KeyError):
        chosen.engine_options["engine"]


def _candidate_json(engine: str) -> dict:
    chosen = _plan(engine).chosen_candidate
    assert chosen is not None
    return json.loads(chosen.model_dump_json())


def test_a_plan_file_with_an_unknown_or_misspelt_knob_is_refused() -> None:
    data = _candidate_json("vllm")
    data["engine_options"]["gpu_memory_utilisation"] = 0.5
    with pytest.raises(ValidationError, match="gpu_memory_utilisation"):
        Candidate.model_validate(data)


def test_a_knob_of_another_engine_is_refused() -> None:
    data = _candidate_json("vllm")
    data["engine_options"]["n_gpu_layers"] = 99  # llama.cpp's
    with pytest.raises(ValidationError, match="n_gpu_layers"):
        Candidate.model_validate(data)
    data = _candidate_json("llamacpp")
    with pytest.raises(ValidationError, match="engine_options are llamacpp's, the candidate is vllm's"):
        Candidate.model_validate({**data, "engine": "vllm", "engine_options": LlamaCppOptions()})


@pytest.mark.parametrize(
    ("knob", "value"),
    [("gpu_memory_utilization", 1.2), ("gpu_memory_utilization", 0), ("max_num_seqs", 0),
     ("tensor_parallel_size", -1), ("device", "tpu"), ("enable_prefix_caching", "maybe")],
)  # fmt: skip
def test_out_of_range_knobs_are_refused(knob: str, value: object) -> None:
    data = _candidate_json("vllm")
    data["engine_options"][knob] = value
    with pytest.raises(ValidationError, match=knob):
        Candidate.model_validate(data)


def test_profiles_and_options_share_one_memory_share_rule() -> None:
    from llmhost.errors import ProfileError
    from llmhost.profiles import parse_profile

    with pytest.raises(ProfileError, match="gpu_memory_utilization"):
        parse_profile("gpu_memory_utilization: 1.5\n", source="p.yaml")
    with pytest.raises(ValidationError):
        VllmOptions(gpu_memory_utilization=1.5)
    assert VllmOptions(gpu_memory_utilization=1.0).gpu_memory_utilization == 1.0


def test_a_hand_written_cpu_kv_space_keeps_its_fraction_and_a_planned_one_stays_whole() -> None:
    assert VllmOptions(cpu_kv_cache_gib=2.2).model_dump() == {"cpu_kv_cache_gib": 2.2}
    assert json.dumps(VllmOptions(cpu_kv_cache_gib=4).model_dump(mode="json")) == '{"cpu_kv_cache_gib": 4}'


def test_conversion_and_cpu_placement_are_read_the_same_way_for_every_engine() -> None:
    assert LlamaCppOptions(needs_gguf_conversion=True).needs_conversion
    assert MlxOptions(needs_mlx_conversion=True).needs_conversion
    assert not VllmOptions().needs_conversion and not LlamaCppOptions().needs_conversion
    assert VllmOptions(device="cpu").runs_on_cpu and MlxOptions(device="cpu").runs_on_cpu
    assert not MlxOptions(device="metal").runs_on_cpu and not VllmOptions().runs_on_cpu
    assert LlamaCppOptions(n_gpu_layers=0).runs_on_cpu and not LlamaCppOptions(n_gpu_layers=33).runs_on_cpu
