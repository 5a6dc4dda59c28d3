"""A data-parallel vLLM plan (--dp 4 --enable-expert-parallel on 4x H100) through every export target:
the files pass the targets' own validators, carry the DP flags, and ask for TP x PP x DP GPUs; the
targets that cannot express DP refuse it in one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from llmhost.errors import UsageError
from llmhost.export import ExportSource, render
from llmhost.export.common import vllm_engine_kwargs

from .conftest import CONFIGS, source, strict
from .test_targets import K8S_VERSION, KSERVE_SCHEMA, LLMISVC_SCHEMA, check_compose

QWEN3_MOE = CONFIGS / "Qwen--Qwen3-30B-A3B.json"
DP = 4


@pytest.fixture(scope="module")
def dp_plan() -> ExportSource:
    return source(QWEN3_MOE, hardware="h100-80gb:4", data_parallel_size=DP, enable_expert_parallel=True,
                  hub_id="Qwen/Qwen3-30B-A3B")  # fmt: skip


def _dp_flags(args: list[str]) -> None:
    assert args[args.index("--data-parallel-size") + 1] == str(DP)
    assert "--enable-expert-parallel" in args
    assert "--data-parallel-rpc-port" in args


def _write(tmp_path: Path, target: str, src: ExportSource) -> Path:
    (file,) = render(target, [src])
    path = tmp_path / file.filename
    path.write_text(file.text)
    return path


def test_the_plan_is_dp4_with_ep_on_one_gpu_each(dp_plan: ExportSource) -> None:
    c = dp_plan.candidate
    assert (c.tensor_parallel_size, c.pipeline_parallel_size, c.nodes) == (1, 1, 1)
    _dp_flags(dp_plan.launch.argv)


def test_compose_reserves_tp_x_dp_gpus(dp_plan: ExportSource, tmp_path: Path) -> None:
    path = _write(tmp_path, "compose", dp_plan)
    done = check_compose(path)
    assert done.returncode == 0, done.stdout + done.stderr
    service = next(iter(yaml.safe_load(path.read_text())["services"].values()))
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["count"] == DP
    assert service["shm_size"] == "16gb"  # four ranks share tensors through /dev/shm
    _dp_flags(service["command"])
    assert "DP 4 x TP 1" in path.read_text().splitlines()[2]


def test_kubernetes_requests_tp_x_dp_gpus(dp_plan: ExportSource, tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all(_write(tmp_path, "kubernetes", dp_plan).read_text()))
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    engine = docs[1]["spec"]["template"]["spec"]["containers"][0]
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == DP
    assert engine["resources"]["requests"]["nvidia.com/gpu"] == DP
    _dp_flags(engine["args"])


def test_kserve_requests_tp_x_dp_gpus(dp_plan: ExportSource, tmp_path: Path) -> None:
    doc = yaml.safe_load(_write(tmp_path, "kserve", dp_plan).read_text())
    jsonschema.validate(doc, strict(json.loads(KSERVE_SCHEMA.read_text())))
    model = doc["spec"]["predictor"]["model"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == str(DP)
    assert f"--data-parallel-size={DP}" in model["args"] and "--enable-expert-parallel" in model["args"]


def test_kserve_llm_requests_tp_x_dp_gpus(dp_plan: ExportSource, tmp_path: Path) -> None:
    doc = yaml.safe_load(_write(tmp_path, "kserve-llm", dp_plan).read_text())
    jsonschema.validate(doc, strict(json.loads(LLMISVC_SCHEMA.read_text())))
    (main,) = doc["spec"]["template"]["containers"]
    assert main["resources"]["requests"]["nvidia.com/gpu"] == str(DP)
    extra = next(e["value"] for e in main["env"] if e["name"] == "VLLM_ADDITIONAL_ARGS").split()
    assert f"--data-parallel-size={DP}" in extra and "--enable-expert-parallel" in extra
    assert doc["spec"]["parallelism"] == {"tensor": 1}


def test_systemd_runs_serve_with_the_dp_flags(dp_plan: ExportSource) -> None:
    text = render("systemd", [dp_plan])[0].text
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    # The node re-plans with `llmhost serve`: the replicas and the expert split are pinned on it.
    assert "--data-parallel-size 4 --enable-expert-parallel" in exec_start


@pytest.mark.parametrize("target", ["ray-serve", "vllm-cluster"])
def test_targets_without_data_parallelism_refuse(dp_plan: ExportSource, target: str) -> None:
    with pytest.raises(UsageError, match="data-parallel replicas"):
        render(target, [dp_plan])


@pytest.mark.slow  # vLLM imported in its engine virtualenv: half a minute (make test runs it)
def test_the_dp_command_parses_with_vllms_own_parser(
    dp_plan: ExportSource,
    vllm_parse: Callable[[list[list[str]], list[dict[str, Any]]], list[str]],
) -> None:
    argv = dp_plan.launch.argv
    serve_args = [dp_plan.candidate.model_source, *argv[argv.index("--model") + 2 :]]
    assert vllm_parse([serve_args], [vllm_engine_kwargs(dp_plan)]) == ["", ""]
