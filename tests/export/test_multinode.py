"""Plans over several nodes (TP inside a node, PP across) and the vLLM commands for each node."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmhost.cli import main
from llmhost.errors import ExitCode
from llmhost.export import ExportSource, render
from llmhost.export.common import vllm_engine_kwargs
from llmhost.export.vllm_cluster import mp_argv, ray_argv

from .conftest import LLAMA_8B, source

LLAMA_405B = Path(__file__).parent / "data" / "meta-llama--Llama-3.1-405B-Instruct.json"
NODE = "h100-80gb:8"
GIB = 1024**3


def _plan(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = main(["plan", *args, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    plan: dict[str, Any] = json.loads(out)
    return plan


@pytest.fixture(scope="module")
def cluster() -> ExportSource:
    """Llama 3.1 405B in bf16 on 2 nodes x 8 H100: too big for one node in bf16 (756 GiB of weights)."""
    return source(LLAMA_405B, hardware=NODE, nodes=2, quant="bf16", host="0.0.0.0",
                  hub_id="meta-llama/Llama-3.1-405B-Instruct")  # fmt: skip


def test_405b_bf16_spans_two_nodes_with_per_rank_memory(capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(capsys, str(LLAMA_405B), "--hardware", NODE, "--nodes", "2", "--quant", "bf16")
    assert plan["nodes"] == 2
    chosen = plan["candidates"][plan["chosen"]]
    assert (chosen["engine"], chosen["tensor_parallel_size"], chosen["pipeline_parallel_size"]) == (
        "vllm",
        8,
        2,
    )
    assert chosen["nodes"] == 2 and chosen["fits"]
    ranks = chosen["per_device"]
    assert [d["device"] for d in ranks] == [f"node{n}/cuda:{g}" for n in range(2) for g in range(8)]
    weights = plan["model"]["weights_bytes"]
    for d in ranks:
        # Each rank holds its stage's layer range (63 of 126 layers) split 8 ways, plus its share of
        # the embeddings or output head: about 1/16 of the weights, never less.
        assert weights / 16 <= d["breakdown"]["weights_bytes"] <= weights / 16 * 1.05
        assert d["breakdown"]["total_bytes"] <= d["capacity_bytes"]
        assert d["breakdown"]["kv_cache_bytes"] > 0
    assert any("pipeline parallel 2 across nodes" in r for r in chosen["reasons"])
    assert any("network latency between nodes" in r for r in chosen["reasons"])
    codes = [r["code"] for r in chosen["reasons_detail"]]
    assert "multinode_layout" in codes and "multinode_decode_estimate" in codes
    assert "pipeline_parallel" not in codes  # the one-node PP sentence gives way to the multi-node one
    (layout,) = [r["fields"] for r in chosen["reasons_detail"] if r["code"] == "multinode_layout"]
    assert layout == {"nodes": 2, "tp": 8, "stage_layers": 63, "hop_bytes": 16384 * 2}
    # One node cannot hold bf16 405B: no single-node bf16 candidate fits.
    assert not any(c["fits"] for c in plan["candidates"] if c["nodes"] == 1 and c["engine"] == "vllm")


def test_one_node_is_preferred_when_it_suffices(capsys: pytest.CaptureFixture[str]) -> None:
    """405B in fp8 fits one 8x H100 node: that wins over both 2-node layouts, and says so."""
    plan = _plan(capsys, str(LLAMA_405B), "--hardware", NODE, "--nodes", "2")
    chosen = plan["candidates"][plan["chosen"]]
    assert chosen["nodes"] == 1 and chosen["quantization"] == "fp8"
    assert any("one node suffices" in r for r in chosen["reasons"])
    assert "one_node_suffices" in [r["code"] for r in chosen["reasons_detail"]]
    multi = [i for i, c in enumerate(plan["candidates"]) if c["nodes"] > 1]
    for i in multi:
        assert "one_node_preferred" in [r["code"] for r in plan["candidates"][i]["reasons_detail"]]
    single_fits = [i for i, c in enumerate(plan["candidates"]) if c["nodes"] == 1 and c["fits"]]
    assert multi and max(single_fits) < min(multi)
    for i in multi:
        assert "one_node_preferred" in [r["code"] for r in plan["candidates"][i]["reasons_detail"]]
    small = _plan(capsys, str(LLAMA_8B), "--hardware", NODE, "--nodes", "2")
    assert small["candidates"][small["chosen"]]["nodes"] == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--nodes", "0"], "--nodes must be at least 1"),
        (["--nodes", "2", "--hardware", "m2-max"], "no NVIDIA/AMD GPUs"),  # Apple: no vLLM GPU build
        (["--nodes", "2", "--hardware", NODE, "--engine", "llamacpp"], "llama.cpp serves from one node"),
    ],
)
def test_bad_node_requests_are_one_line_errors(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["plan", str(LLAMA_8B), *args])
    err = capsys.readouterr().err
    assert code == ExitCode.BAD_INPUT
    assert needle in err and len(err.strip().splitlines()) == 1


def test_cluster_scripts_per_node(cluster: ExportSource, tmp_path: Path) -> None:
    files = {f.filename.removeprefix(f"{cluster.name}."): f for f in render("vllm-cluster", [cluster])}
    assert sorted(files) == ["mp-node0.sh", "mp-node1.sh", "ray-head.sh", "ray-worker.sh"]
    for name, f in files.items():
        path = tmp_path / name
        path.write_text(f.text)
        done = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert "NCCL_SOCKET_IFNAME" in f.text and f.mode == 0o755
    assert "--headless" in files["mp-node1.sh"].text and "--headless" not in files["mp-node0.sh"].text
    # The key: from the head's environment (off loopback it is required), never a value.
    assert 'VLLM_API_KEY="${LLMHOST_API_KEY:?' in files["mp-node0.sh"].text
    assert "VLLM_API_KEY" not in files["mp-node1.sh"].text
    assert "ray start --head" in files["ray-head.sh"].text
    assert 'ray start --address "$LLMHOST_HEAD_ADDR:6379"' in files["ray-worker.sh"].text


def test_multinode_plan_is_refused_by_single_node_targets(cluster: ExportSource) -> None:
    from llmhost.errors import UsageError

    for target in ("systemd", "compose", "kserve"):
        with pytest.raises(UsageError, match="spans 2 nodes"):
            render(target, [cluster], writable=[])
    # The LLMInferenceService CRD has worker/parallelism fields, but KServe's configs spread a model
    # over nodes by data parallelism only: a PP-across-nodes plan is refused, not rewritten.
    with pytest.raises(UsageError, match="pipelines across 2 nodes"):
        render("kserve-llm", [cluster], writable=[])


def _lws(cluster: ExportSource) -> list[dict[str, Any]]:
    (file,) = render("kubernetes", [cluster])
    return list(yaml.safe_load_all(file.text))


def test_kubernetes_leader_worker_set_validates(cluster: ExportSource) -> None:
    """The LeaderWorkerSet against its CRD schema (strict), its two pod templates and the PVC and
    Service against the Kubernetes schemas; one pod per node, the leader serves, workers run headless."""
    import jsonschema
    import kubernetes_validate

    from .conftest import crd_validator

    pvc, lws, service = _lws(cluster)
    schema = crd_validator(
        Path(__file__).parent.parent / "fixtures" / "lws" / "leaderworkerset-v1.schema.json"
    )
    schema.validate(lws)
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2 and template["restartPolicy"] == "RecreateGroupOnPodRestart"
    for role in ("leaderTemplate", "workerTemplate"):
        pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role.lower()},
               "template": template[role]}  # fmt: skip
        kubernetes_validate.validate(pod, "1.33", strict=True)
        (engine,) = template[role]["spec"]["containers"]
        assert engine["resources"]["limits"]["nvidia.com/gpu"] == 8  # one node's GPUs per pod
    for doc in (pvc, service):
        kubernetes_validate.validate(doc, "1.33", strict=True)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert service["spec"]["selector"]["role"] == "leader"
    worker = template["workerTemplate"]["spec"]["containers"][0]
    assert "--headless" in worker["args"] and "startupProbe" not in worker
    assert worker["args"][worker["args"].index("--node-rank") + 1] == "$(LWS_WORKER_INDEX)"
    # Negative control: the strict CRD schema refuses a misspelt field.
    template["sise"] = template.pop("size")
    with pytest.raises(jsonschema.ValidationError):
        schema.validate(lws)


def test_ray_serve_config_for_two_nodes(cluster: ExportSource) -> None:
    (file,) = render("ray-serve", [cluster])
    cfg = yaml.safe_load(file.text)["applications"][0]["args"]["llm_configs"][0]
    assert cfg["engine_kwargs"]["tensor_parallel_size"] == 8
    assert cfg["engine_kwargs"]["pipeline_parallel_size"] == 2
    assert cfg["placement_group_config"] == {"bundles": [{"GPU": 1}] * 16, "strategy": "PACK"}


@pytest.mark.slow  # vLLM imported in its engine virtualenv: half a minute (make test runs it)
def test_every_node_command_parses_with_vllms_parser(
    cluster: ExportSource,
    vllm_parse: Callable[[list[list[str]], list[dict[str, Any]]], list[str]],
) -> None:
    """Node 0 and node 1 (multiprocessing: --nnodes/--node-rank/--master-addr/--headless), the Ray
    head command and the LeaderWorkerSet's leader and worker, parsed by the installed vLLM's
    `vllm serve` parser; the Ray Serve engine kwargs against its AsyncEngineArgs."""
    argvs = [mp_argv(cluster, rank, head="10.0.0.1")[2:] for rank in range(2)] + [ray_argv(cluster)[2:]]
    # The LeaderWorkerSet's leader and worker args, with the variables LWS injects expanded.
    _, lws, _ = _lws(cluster)
    for role in ("leaderTemplate", "workerTemplate"):
        args = lws["spec"]["leaderWorkerTemplate"][role]["spec"]["containers"][0]["args"]
        expand = {"$(LWS_LEADER_ADDRESS)": "10.0.0.1", "$(LWS_WORKER_INDEX)": "1"}
        argvs.append([expand.get(a, a) for a in args])
    assert vllm_parse(argvs, [vllm_engine_kwargs(cluster)]) == [""] * 6
