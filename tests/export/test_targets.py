"""Every target's output checked by the target's own validator, on real plans."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from llmhost.export import ExportSource, render
from llmhost.export.common import container, vllm_engine_kwargs
from llmhost.export.kubernetes import llmisvc_vllm_args

from .conftest import crd_validator

KSERVE_SCHEMA = Path(__file__).parent.parent / "fixtures" / "kserve" / "inferenceservice-v1beta1.schema.json"
LLMISVC_SCHEMA = KSERVE_SCHEMA.with_name("llminferenceservice-v1alpha1.schema.json")
K8S_VERSION = "1.33"

# The console script beside this interpreter (make test runs .venv/bin/python; .venv/bin is not on PATH).
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    """The Compose spec's own JSON schema (check-jsonschema's vendored copy) on a written file."""
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def _write(tmp_path: Path, target: str, src: ExportSource, **kw: Any) -> Path:
    (file,) = render(target, [src], **kw)
    path = tmp_path / file.filename
    path.write_text(file.text)
    return path


@pytest.mark.parametrize("plan", ["demo-cpu", "8b-h100", "70b-2xh100"])
def test_compose_validates_against_the_compose_spec(
    plans: dict[str, ExportSource], plan: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, "compose", plans[plan])
    done = check_compose(path)
    assert done.returncode == 0, done.stdout + done.stderr
    service = next(iter(yaml.safe_load(path.read_text())["services"].values()))
    c = plans[plan].candidate
    gpus = c.tensor_parallel_size if plan != "demo-cpu" else 0
    if gpus:
        assert service["image"].startswith("vllm/vllm-openai:v")
        assert service["deploy"]["resources"]["reservations"]["devices"][0]["count"] == gpus
        assert service["shm_size"] == ("16gb" if gpus > 1 else "2gb")
        # vLLM's `vllm serve` entrypoint: the model first, then the plan's flags, unchanged.
        assert service["command"][0] == c.model_source
        assert service["command"][service["command"].index("--max-model-len") + 1] == str(c.context_length)
    else:
        assert service["image"] == "ghcr.io/ggml-org/llama.cpp:server"
        assert "deploy" not in service
        # The local GGUF is mounted read-only at the path the command names.
        model = service["command"][service["command"].index("-m") + 1]
        assert any(v.endswith(":/models:ro") for v in service["volumes"])
        assert model == f"/models/{Path(plans[plan].launch.model_path or '').name}"
    assert service["ports"] == [f"127.0.0.1:{plans[plan].port}:8000"]
    assert service["healthcheck"]["start_period"] == f"{int(plans[plan].launch.ready_deadline_s)}s"


def test_compose_validator_catches_a_bad_file(plans: dict[str, ExportSource], tmp_path: Path) -> None:
    """The negative control: the same validator refuses a misspelt key (so a pass above means something)."""
    path = _write(tmp_path, "compose", plans["8b-h100"])
    path.write_text(path.read_text().replace("shm_size:", "shm_sise:"))
    done = check_compose(path)
    assert done.returncode != 0


@pytest.mark.parametrize("plan", ["demo-cpu", "8b-h100", "70b-2xh100"])
def test_kubernetes_manifests_validate_strictly(
    plans: dict[str, ExportSource], plan: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, "kubernetes", plans[plan])
    docs = list(yaml.safe_load_all(path.read_text()))
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "Deployment", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    pod = docs[1]["spec"]["template"]["spec"]
    engine = pod["containers"][0]
    src = plans[plan]
    startup = engine["startupProbe"]
    # The startup probe waits at least as long as `serve` would for this model to load.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= src.launch.ready_deadline_s
    assert startup["httpGet"]["path"] == src.launch.health_path
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    gpus = src.candidate.tensor_parallel_size if plan != "demo-cpu" else 0
    if gpus:
        assert engine["resources"]["limits"]["nvidia.com/gpu"] == gpus
    else:
        assert "nvidia.com/gpu" not in engine["resources"].get("limits", {})
        # A CPU plan's memory is the pod's: at least what the plan needs.
        request_gib = int(engine["resources"]["requests"]["memory"].removesuffix("Gi"))
        assert request_gib * 1024**3 >= src.candidate.memory.total_bytes


def test_kubernetes_validator_catches_a_bad_manifest(plans: dict[str, ExportSource], tmp_path: Path) -> None:
    doc = list(yaml.safe_load_all(_write(tmp_path, "kubernetes", plans["8b-h100"]).read_text()))[1]
    doc["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["periodSecond"] = 10
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("plan", ["8b-h100", "70b-2xh100"])
def test_kserve_inferenceservice_validates_against_the_crd_schema(
    plans: dict[str, ExportSource], plan: str, tmp_path: Path
) -> None:
    schema = crd_validator(KSERVE_SCHEMA)
    doc = yaml.safe_load(_write(tmp_path, "kserve", plans[plan]).read_text())
    schema.validate(doc)
    model = doc["spec"]["predictor"]["model"]
    c = plans[plan].candidate
    assert model["modelFormat"]["name"] == "huggingface"
    assert f"--model_id={c.model_source}" in model["args"]
    assert f"--max-model-len={c.context_length}" in model["args"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == str(c.tensor_parallel_size)
    if c.tensor_parallel_size > 1:
        assert f"--tensor-parallel-size={c.tensor_parallel_size}" in model["args"]
    # The negative control: a misspelt field fails the same schema.
    model["resource"] = model.pop("resources")
    with pytest.raises(jsonschema.ValidationError):
        schema.validate(doc)


@pytest.mark.parametrize("plan", ["8b-h100", "70b-2xh100"])
def test_kserve_llminferenceservice_validates_against_the_crd_schema(
    plans: dict[str, ExportSource], plan: str, tmp_path: Path
) -> None:
    schema = crd_validator(LLMISVC_SCHEMA)
    src = plans[plan]
    text = _write(tmp_path, "kserve-llm", src).read_text()
    doc = yaml.safe_load(text)
    schema.validate(doc)
    assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1alpha1", "LLMInferenceService")
    c = src.candidate
    spec = doc["spec"]
    assert spec["model"] == {"uri": f"hf://{c.model_source}", "name": src.served_model_name}
    assert spec["replicas"] == 1
    assert spec["parallelism"] == {"tensor": c.tensor_parallel_size}
    (main,) = spec["template"]["containers"]
    assert main["name"] == "main"  # the container KServe's config template merges into
    assert main["resources"]["limits"]["nvidia.com/gpu"] == str(c.tensor_parallel_size)
    env = {e["name"]: e for e in main["env"]}
    extra = env["VLLM_ADDITIONAL_ARGS"]["value"].split()
    assert f"--max-model-len={c.context_length}" in extra
    assert any(a.startswith("--gpu-memory-utilization=") for a in extra)
    assert any(a.startswith("--max-num-seqs=") for a in extra)
    # TP travels as spec.parallelism.tensor (the template adds the flag): not twice.
    assert not any(a.startswith("--tensor-parallel-size") for a in extra)
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "hf-token"
    assert "value" not in env["HF_TOKEN"]
    # The negative controls: a misspelt field, and a field of the wrong type, fail the same schema.
    main["resource"] = main.pop("resources")
    with pytest.raises(jsonschema.ValidationError):
        schema.validate(doc)
    main["resources"] = main.pop("resource")
    schema.validate(doc)
    spec["parallelism"]["tensor"] = "2"
    with pytest.raises(jsonschema.ValidationError):
        schema.validate(doc)


def test_llminferenceservice_never_holds_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys in the environment (as `serve` reads them) are referenced by Secret, never written."""
    from .conftest import LLAMA_8B, source

    monkeypatch.setenv("LLMHOST_API_KEY", "sk-llmisvc-secret-1")
    monkeypatch.setenv("HF_TOKEN", "hf_llmisvc_secret_2")
    src = source(LLAMA_8B, auth=True, host="0.0.0.0", hardware="h100-80gb",
                 hub_id="meta-llama/Llama-3.1-8B-Instruct")  # fmt: skip
    text = render("kserve-llm", [src])[0].text
    assert "sk-llmisvc-secret-1" not in text and "hf_llmisvc_secret_2" not in text
    assert "secretKeyRef" in text


@pytest.mark.slow  # vLLM imported in its engine virtualenv: half a minute (make test runs it)
def test_llminferenceservice_command_parses_with_vllms_own_parser(
    plans: dict[str, ExportSource], vllm_parse: Callable[[list[list[str]], list[dict[str, Any]]], list[str]]
) -> None:
    """The `vllm serve` argv KServe's config template builds (model dir, served name, port, TP from
    spec.parallelism, then VLLM_ADDITIONAL_ARGS word-split), checked by the installed vLLM."""
    argvs = []
    for src in (plans["8b-h100"], plans["70b-2xh100"]):
        doc = yaml.safe_load(render("kserve-llm", [src])[0].text)
        env = {e["name"]: e.get("value") for e in doc["spec"]["template"]["containers"][0]["env"]}
        argvs.append(
            ["/mnt/models", "--served-model-name", doc["spec"]["model"]["name"], "--port", "8000",
             "--tensor-parallel-size", str(doc["spec"]["parallelism"]["tensor"]),
             *str(env["VLLM_ADDITIONAL_ARGS"]).split()]
        )  # fmt: skip
    assert llmisvc_vllm_args(plans["8b-h100"]) == argvs[0][7:]
    bad = [*argvs[0], "--max-num-seqz=4"]
    parsed = vllm_parse([*argvs, bad], [])
    assert parsed[0:2] == ["", ""], parsed
    assert "--max-num-seqz" in parsed[2], parsed  # the negative control fails


def test_ray_serve_config_carries_the_plan(plans: dict[str, ExportSource], tmp_path: Path) -> None:
    src = plans["70b-2xh100"]
    doc = yaml.safe_load(_write(tmp_path, "ray-serve", src, max_replicas=3).read_text())
    (app,) = doc["applications"]
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    (cfg,) = app["args"]["llm_configs"]
    assert cfg["model_loading_config"] == {
        "model_id": src.served_model_name,
        "model_source": "meta-llama/Llama-3.1-70B-Instruct",
    }
    assert cfg["accelerator_type"] == "H100"
    assert cfg["deployment_config"]["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3}
    kwargs = cfg["engine_kwargs"]
    assert kwargs["tensor_parallel_size"] == 2
    assert kwargs["max_model_len"] == src.candidate.context_length
    assert kwargs["gpu_memory_utilization"] == pytest.approx(0.9)


@pytest.mark.slow  # vLLM imported in its engine virtualenv: half a minute (make test runs it)
def test_vllm_flags_parse_with_vllms_own_parser(
    plans: dict[str, ExportSource], vllm_parse: Callable[[list[list[str]], list[dict[str, Any]]], list[str]]
) -> None:
    """The container commands (compose/Kubernetes) and the Ray Serve / KServe engine kwargs, checked by
    the installed vLLM: a flag renamed in a new vLLM fails here, not on a cluster."""
    gpu = [plans["8b-h100"], plans["70b-2xh100"]]
    argvs = [container(s, "compose").args for s in gpu]
    kwargs = [vllm_engine_kwargs(s) for s in gpu]
    bad = [*argvs[0], "--tensor-paralel-size", "2"]
    parsed = vllm_parse([*argvs, bad], [*kwargs, {"max_model_length": 1}])
    assert parsed[0:2] == ["", ""], parsed  # the two argvs
    assert parsed[3:5] == ["", ""], parsed  # the two kwargs dicts
    assert "--tensor-paralel-size" in parsed[2]  # the negative controls fail
    assert "max_model_length" in parsed[5]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("scope", ["user", "system"])
def test_systemd_unit_verifies(plans: dict[str, ExportSource], scope: str, tmp_path: Path) -> None:
    path = _write(
        tmp_path, "systemd", plans["demo-cpu"], scope=scope, home=str(tmp_path), writable=[str(tmp_path)]
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    # verify exits 0 on unknown keys and bad values too; it reports them naming the file.
    assert done.returncode == 0 and path.name not in done.stderr, done.stderr
    text = path.read_text()
    for line in ("Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"):
        assert line in text.splitlines()
    assert f"ReadWritePaths=-{tmp_path}" in text
    # The negative control.
    path.write_text(text.replace("Restart=on-failure", "Restart=sometimes"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert "restart" in done.stderr.lower()
