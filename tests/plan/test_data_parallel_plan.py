"""`plan` / `serve` with vLLM data and expert parallelism (--data-parallel-size, --enable-expert-parallel).

The model and machine are those of vllm-project/recipes#12: Qwen3-Coder-480B-A35B-Instruct-FP8 (its
config.json facts as recorded in benchmarks/data) on 8 x H20-3e, `vllm serve ... -dp=8
--enable-expert-parallel`, vLLM 0.10.1. vLLM refused it with "To serve at least one request with the
models's max seq len (262144), (62.00 GiB KV cache is needed, which is larger than the available KV
cache memory (48.66 GiB)": the plan must refuse it for that cause, and say what length fits.
"""

from __future__ import annotations

import json
from pathlib import Path

import _vllm_heldout as heldout  # benchmarks/, on sys.path through pyproject's pytest pythonpath
import pytest
from _accuracy_compare import vllm_spec

from llmhost.engines.base import ServeOptions
from llmhost.engines.vllm_argv import READY_BASE_S, READY_PER_GIB_S, build_argv, ready_deadline_s
from llmhost.errors import UsageError
from llmhost.hardware.catalog import hardware_from_spec
from llmhost.models.spec import ModelSpec
from llmhost.plan import Candidate, PlanRequest, make_plan
from llmhost.plan.reasons import ReasonCode

GiB = 1024**3
MODEL = "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8"


def _spec() -> ModelSpec:
    _, configs = heldout.load_records()
    return vllm_spec(MODEL, json.dumps(configs[MODEL], sort_keys=True))


def _plan(**request: object) -> Candidate:
    asked = {
        "engine": "vllm",
        "vllm_version": "0.10.1",
        "data_parallel_size": 8,
        "enable_expert_parallel": True,
    }
    plan = make_plan(_spec(), hardware_from_spec("h20-3e:8"), PlanRequest(**{**asked, **request}))
    (candidate,) = [c for c in plan.candidates if c.engine == "vllm"]
    return candidate


def test_the_recipes12_launch_is_refused_for_vllms_reason() -> None:
    c = _plan(context=262144)
    assert not c.fits
    (refusal,) = [r for r in c.reasons_detail if r.code == ReasonCode.VLLM_MAX_LEN_EXCEEDS_KV]
    assert refusal.fields["request_bytes"] / GiB == pytest.approx(
        62.00, abs=0.005
    )  # "62.00 GiB ... is needed"
    # vLLM's own estimate was 205728 tokens; the plan's pool is 11% smaller, so is its length.
    assert 160_000 < c.max_context < 205_728
    assert len(c.per_device) == 8 and c.engine_options["data_parallel_size"] == 8


def test_a_length_that_fits_is_planned_with_every_replica() -> None:
    c = _plan(context=131072, concurrency=8)
    assert c.fits
    # One 131072-token request per replica's pool, eight replicas.
    assert c.max_concurrency == 8
    assert any(
        r.code == ReasonCode.DATA_PARALLEL and r.fields["experts"] == "whole" for r in c.reasons_detail
    )
    argv = build_argv("python3", c, ServeOptions(name="m", served_model_name="m", port=8000))
    assert argv[argv.index("--data-parallel-size") + 1] == "8"
    assert "--enable-expert-parallel" in argv and "--tensor-parallel-size" not in argv
    # Each replica loads its own 67.50 GiB at once: the readiness deadline is sized for one GPU's share.
    assert ready_deadline_s(c) == pytest.approx(READY_BASE_S + READY_PER_GIB_S * 67.50, abs=1.0)


def test_without_expert_parallelism_every_expert_is_sliced() -> None:
    c = _plan(context=131072, enable_expert_parallel=False)
    assert "enable_expert_parallel" not in c.engine_options
    assert any(
        r.code == ReasonCode.DATA_PARALLEL and r.fields["experts"] == "sliced" for r in c.reasons_detail
    )
    argv = build_argv("python3", c, ServeOptions(name="m", served_model_name="m", port=8000))
    assert "--enable-expert-parallel" not in argv


def test_more_ranks_than_gpus_is_a_one_line_usage_error() -> None:
    with pytest.raises(UsageError, match="needs 16 GPUs"):
        _plan(context=8192, tensor_parallel_size=2)


def test_data_parallel_across_nodes_is_refused_in_one_line() -> None:
    with pytest.raises(UsageError, match="one node only"):
        _plan(context=8192, nodes=2)


def test_the_cli_takes_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmhost.cli import main

    _, configs = heldout.load_records()
    config = {k: v for k, v in configs[MODEL].items() if k != "about"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = ["plan", str(tmp_path / "config.json"), "--hardware", "h20-3e:8", "--engine", "vllm"]
    args += ["--vllm-version", "0.10.1", "--context", "131072", "--dp", "8", "--enable-expert-parallel"]
    assert main([*args, "--json"]) == 0
    chosen = json.loads(capsys.readouterr().out)
    options = chosen["candidates"][chosen["chosen"]]["engine_options"]
    assert options["data_parallel_size"] == 8 and options["enable_expert_parallel"] is True


def test_serve_dry_run_launches_vllm_with_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmhost.cli import main

    _, configs = heldout.load_records()
    config = {k: v for k, v in configs[MODEL].items() if k != "about"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = ["serve", str(tmp_path / "config.json"), "--hardware", "h20-3e:8", "--engine", "vllm"]
    args += ["--vllm-version", "0.10.1", "--context", "131072", "--dp", "8", "--enable-expert-parallel"]
    assert main([*args, "--dry-run", "--json"]) == 0
    command = json.loads(capsys.readouterr().out)["command"]
    assert "--data-parallel-size 8 --enable-expert-parallel --data-parallel-rpc-port" in command


def test_too_many_replicas_on_the_cli_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmhost.cli import main

    _, configs = heldout.load_records()
    (tmp_path / "config.json").write_text(
        json.dumps({k: v for k, v in configs[MODEL].items() if k != "about"})
    )
    args = ["plan", str(tmp_path / "config.json"), "--hardware", "h20-3e:8", "--engine", "vllm", "--dp", "16"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "needs 16 GPUs" in err and "Traceback" not in err
