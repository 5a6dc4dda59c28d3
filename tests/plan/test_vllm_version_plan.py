"""Plans for the vLLM release the user runs: version, GPU-dependent defaults, the knobs, start failures."""

from __future__ import annotations

import json

import pytest

from llmhost.errors import HardwareError, UsageError
from llmhost.estimate import vllm_versions as vv
from llmhost.hardware.catalog import hardware_from_spec
from llmhost.hardware.models import GPUProcess
from llmhost.plan import Candidate, PlanRequest, make_plan
from support.llmhost_test_specs import GiB, dense_spec, gpu, h100, machine


def _vllm(plan_candidates: list[Candidate], quant: str = "bf16", tp: int = 1) -> Candidate:
    return next(
        c
        for c in plan_candidates
        if c.engine == "vllm" and c.quantization == quant and c.tensor_parallel_size == tp
        and c.engine_options.get("device") != "cpu"
    )  # fmt: skip


def test_the_plan_says_which_vllm_it_planned_for() -> None:
    default = make_plan(dense_spec(), machine([h100()]), PlanRequest(context=8192, engine="vllm"))
    assert (default.vllm_version, default.vllm_version_source) == (vv.NEWEST_MODELLED, "newest modelled")
    old = make_plan(
        dense_spec(), machine([h100()]), PlanRequest(context=8192, engine="vllm", vllm_version="0.19.0")
    )
    assert (old.vllm_version, old.vllm_version_source) == ("0.19.0", "--vllm-version")
    # 0.20+ takes the CUDA-graph estimate out of the pool; 0.19 captured the graphs after it.
    new_c, old_c = _vllm(default.candidates), _vllm(old.candidates)
    graphs = new_c.per_device[0].breakdown.compute_bytes - old_c.per_device[0].breakdown.compute_bytes
    assert graphs == 0  # the same activation and graph terms...
    assert old_c.memory.kv_cache_bytes > new_c.memory.kv_cache_bytes  # ...but only 0.20+ budgets the graphs
    cpu_only = make_plan(dense_spec(), machine([]), PlanRequest(context=8192))
    assert cpu_only.vllm_version is None


def test_gpu_dependent_defaults_reach_the_engine_options() -> None:
    """vLLM's own defaults per GPU and release (docs/vllm-memory-by-version.md section 2)."""
    cases = [
        (h100(), "0.19.0", (1024, 8192)),
        (gpu("NVIDIA A100 80GB", 80, cc="8.0"), "0.19.0", (256, 2048)),  # the A100 exception
        (gpu("NVIDIA GeForce RTX 4090", 24), "0.19.0", (256, 2048)),
        (gpu("NVIDIA B200", 179, cc="10.0"), "0.28.0", (1024, 16384)),
        (gpu("NVIDIA B200", 179, cc="10.0"), "0.19.0", (1024, 8192)),
    ]
    for device, version, expected in cases:
        plan = make_plan(
            dense_spec(), machine([device]), PlanRequest(context=4096, engine="vllm", vllm_version=version)
        )
        options = _vllm(plan.candidates).engine_options
        assert (options["max_num_seqs"], options["max_num_batched_tokens"]) == expected, (
            device.name,
            version,
        )


def test_max_num_seqs_and_batched_tokens_any_value_from_one() -> None:
    request = PlanRequest(context=4096, engine="vllm", max_num_seqs=1, max_num_batched_tokens=1)
    c = _vllm(make_plan(dense_spec(), machine([h100()]), request).candidates)
    assert (c.engine_options["max_num_seqs"], c.engine_options["max_num_batched_tokens"]) == (1, 1)
    assert c.max_concurrency == 1  # vLLM schedules one sequence at a time, whatever the KV cache holds
    # A smaller token budget shrinks the profiled activation peak: more KV cache.
    big = _vllm(
        make_plan(dense_spec(), machine([h100()]), PlanRequest(context=4096, engine="vllm")).candidates
    )
    assert c.memory.kv_cache_bytes > big.memory.kv_cache_bytes
    # Asked for more sequences than max_num_seqs lets run: does not fit, and says why.
    few = PlanRequest(context=4096, concurrency=8, engine="vllm", max_num_seqs=4)
    c = _vllm(make_plan(dense_spec(), machine([h100()]), few).candidates)
    assert not c.fits and any("max_num_seqs 4" in r for r in c.reasons)
    for bad in (
        PlanRequest(engine="vllm", max_num_seqs=0),
        PlanRequest(engine="vllm", max_num_batched_tokens=0),
        PlanRequest(engine="vllm", max_num_seqs=64, max_num_batched_tokens=32),  # vLLM refuses tokens < seqs
        PlanRequest(engine="vllm", vllm_version="latest"),
    ):
        with pytest.raises(UsageError):
            make_plan(dense_spec(), machine([h100()]), bad)


def test_098_on_an_idle_gpu_is_accepted_and_a_busy_one_is_refused() -> None:
    idle = make_plan(dense_spec(), machine([h100()]), PlanRequest(context=8192, gpu_memory_utilization=0.98))
    c = _vllm(idle.candidates)
    assert c.fits and c.engine_options["gpu_memory_utilization"] == 0.98
    busy = h100(used=20 * GiB, processes=[GPUProcess(pid=7, name="python", used_memory_bytes=20 * GiB)])
    refused = make_plan(
        dense_spec(), machine([busy]), PlanRequest(context=8192, gpu_memory_utilization=0.98, engine="vllm")
    )
    c = _vllm(refused.candidates)
    assert not c.fits
    (reason,) = [r for r in c.reasons if r.startswith("[utilization_exceeds_free]")]
    assert "at most 0.74 starts" in reason  # (79.65 - 20 - 0.5 context) / 79.21 GiB


def test_no_kv_memory_says_no_max_model_len_helps() -> None:
    # Llama-3.1-8B bf16 (15 GiB of weights) on one 16 GiB card: weights + activations leave nothing.
    plan = make_plan(
        dense_spec(), machine([gpu("RTX 4080", 16)]), PlanRequest(engine="vllm", quantization="bf16")
    )
    c = _vllm(plan.candidates)
    assert not c.fits
    (reason,) = [r for r in c.reasons if r.startswith("[")]
    assert reason.startswith(("[no_kv_memory]", "[weights_exceed_budget]"))
    assert "no --max-model-len helps" in reason and "more GPUs" in reason


def test_max_len_exceeds_kv_gives_the_length_that_works() -> None:
    plan = make_plan(
        dense_spec(),
        machine([gpu("RTX 4090", 24)]),
        PlanRequest(context=131072, engine="vllm", quantization="bf16"),
    )
    c = _vllm(plan.candidates)
    (reason,) = [r for r in c.reasons if r.startswith("[max_len_exceeds_kv]")]
    assert f"`--max-model-len {c.max_context}` would work" in reason
    assert 0 < c.max_context < 131072


def test_custom_gpu_by_its_figures() -> None:
    hw = hardware_from_spec("gpu=23.6GiB,bw=936GB/s,count=2,name=My 3090,cc=8.6")
    assert [g.memory_total_bytes for g in hw.gpus] == [int(23.6 * GiB)] * 2
    assert hw.gpus[0].memory_bandwidth_bytes_per_s == 936e9 and hw.gpus[0].name == "My 3090"
    assert hardware_from_spec("gpu=80g,bw=3.35TB/s").gpus[0].memory_bandwidth_bytes_per_s == 3.35e12
    for bad in (
        "gpu=24g",
        "gpu=24g,bw=fast",
        "gpu=24g,bw=900,count=0",
        "gpu=24g,bw=900,colour=red",
        "gpu=0g,bw=900",
    ):
        with pytest.raises(HardwareError):
            hardware_from_spec(bad)
    # vLLM plans size the budget from the total vLLM sees: below the size given (the driver's reservation).
    plan = make_plan(dense_spec(), hw, PlanRequest(context=4096, engine="vllm", tensor_parallel_size=2))
    c = _vllm(plan.candidates, tp=2)
    assert c.fits
    assert c.per_device[0].capacity_bytes == int(23.6 * GiB)


def test_plan_cli_json_names_the_vllm_version(capsys: pytest.CaptureFixture[str]) -> None:
    from llmhost.cli import main

    config = "tests/fixtures/configs/meta-llama--Llama-3.1-8B-Instruct.json"
    argv = ["plan", config, "--hardware", "h100", "--engine", "vllm", "--offline"]
    assert main([*argv, "--vllm-version", "0.10.1.1", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["vllm_version"], plan["vllm_version_source"]) == ("0.10.1", "--vllm-version")
    chosen = plan["candidates"][plan["chosen"]]
    assert chosen["engine_options"]["max_num_batched_tokens"] == 8192  # an H100 at 0.10: the large default
    assert main([*argv, "--max-num-seqs", "0"]) == 2
    err = capsys.readouterr().err
    assert "--max-num-seqs 0 is out of range" in err and "Traceback" not in err
    assert main([*argv, "--hardware", "gpu=24g"]) == 2  # no bandwidth: a one-line hardware error
    assert "gives no bandwidth" in capsys.readouterr().err
