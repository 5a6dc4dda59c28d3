"""Kubernetes manifests (PVC, Deployment, Service) and a KServe InferenceService for the same plan.

The API key and Hub token are Secret references only: the header says how to create the Secret.
Probes are llmhost's readiness rule (the engine's health endpoint): a startup probe as long as
`serve`'s ready deadline for this model, then readiness and liveness on the same endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmhost.export.common import (
    CONTAINER_PORT,
    MODELS_DIR,
    check_node,
    container,
    dump_yaml,
    dump_yaml_all,
    gib_ceil,
    header,
    ranks,
    secret_env_names,
    startup_failure_threshold,
    traits,
    vllm_engine_kwargs,
)
from llmhost.export.models import ExportFile, ExportSource

STARTUP_PERIOD_S = 10


def _secret_name(source: ExportSource) -> str:
    return f"{source.name}-keys"


def _env(source: ExportSource, extra: dict[str, str], *, api_key: bool = True) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(extra.items())]
    for name in secret_env_names(source) if api_key else []:
        env.append(
            {"name": name, "valueFrom": {"secretKeyRef": {"name": _secret_name(source), "key": "api-key"}}}
        )
    # Optional: only gated models need it.
    env.append(
        {
            "name": "HF_TOKEN",
            "valueFrom": {
                "secretKeyRef": {"name": _secret_name(source), "key": "hf-token", "optional": True}
            },
        }
    )
    return env


def _shm_volume(source: ExportSource) -> dict[str, Any]:
    # vLLM and NCCL share tensors through /dev/shm; a container's default is 64 MB. Memory-backed, so
    # it counts against the pod's memory: sized for what tensor parallelism needs, not the model.
    size = "16Gi" if ranks(source) > 1 else "2Gi"
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size}}


def _resources(source: ExportSource, gpus: int) -> dict[str, Any]:
    c = source.candidate
    if gpus:
        return {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}}
    # A CPU plan's memory is the pod's memory: request what the plan needs, allow 20% above it.
    need = gib_ceil(c.memory.total_bytes, slack=1.0)
    cpu = max(1, source.hardware.cpu.physical_cores or 1)
    return {
        "requests": {"memory": f"{need}Gi", "cpu": str(cpu)},
        "limits": {"memory": f"{gib_ceil(c.memory.total_bytes, slack=1.2)}Gi"},
    }


def _probes(source: ExportSource) -> dict[str, Any]:
    get = {"path": source.launch.health_path, "port": "http"}
    return {
        "startupProbe": {
            "httpGet": get,
            "periodSeconds": STARTUP_PERIOD_S,
            "failureThreshold": startup_failure_threshold(source, STARTUP_PERIOD_S),
        },
        "readinessProbe": {"httpGet": get, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {"httpGet": get, "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 3},
    }


def _pvc_size(source: ExportSource) -> str:
    # The weights plus room for the tokenizer, a second revision and the download's temp file.
    return f"{gib_ceil(source.candidate.memory.weights_bytes, slack=1.3) + 1}Gi"


def render_kubernetes(source: ExportSource) -> list[ExportFile]:
    """One node: PVC + Deployment + Service. Several: PVC + LeaderWorkerSet (one group of pods, one
    pod per node) + Service on the leader."""
    box = container(source, "kubernetes")
    nodes = source.candidate.nodes
    labels = {"app.kubernetes.io/name": source.name, "app.kubernetes.io/managed-by": "llmhost"}
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"{source.name}-models", "labels": labels},
        # Every node's pod reads the same weights: a multi-node plan needs a ReadWriteMany volume.
        "spec": {
            "accessModes": ["ReadWriteMany" if nodes > 1 else "ReadWriteOnce"],
            "resources": {"requests": {"storage": _pvc_size(source)}},
        },
    }
    # On Kubernetes the model lives on the PVC: a Hub model is downloaded into it (HF_HOME), a local
    # file is copied there once (see the header).
    env = {**box.env, "HF_HOME": f"{MODELS_DIR}/huggingface"}
    per_pod_gpus = source.candidate.tensor_parallel_size if nodes > 1 else box.gpus

    def engine(args: list[str], *, serves: bool) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "name": "engine",
            "image": box.image,
            "args": args,
            "env": _env(source, env) if serves else _env(source, env, api_key=False),
            "resources": _resources(source, per_pod_gpus),
            "volumeMounts": [
                {"name": "models", "mountPath": MODELS_DIR},
                {"name": "dshm", "mountPath": "/dev/shm"},
            ],
        }
        if serves:  # a headless worker has no HTTP server to probe
            spec["ports"] = [{"name": "http", "containerPort": CONTAINER_PORT}]
            spec.update(_probes(source))
        return spec

    volumes = [
        {"name": "models", "persistentVolumeClaim": {"claimName": f"{source.name}-models"}},
        _shm_volume(source),
    ]
    selector = {"app.kubernetes.io/name": source.name}
    if nodes == 1:
        workload: dict[str, Any] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": source.name, "labels": labels},
            "spec": {
                "replicas": 1,
                # GPUs are whole: a rolling update would need a second set for the new pod. Replace instead.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [engine(list(box.args), serves=True)], "volumes": volumes},
                },
            },
        }
    else:
        workload = _leader_worker_set(source, labels, engine, volumes, list(box.args))
        selector = {**selector, "role": "leader"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": source.name, "labels": labels},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": source.port, "targetPort": "http"}],
        },
    }
    notes = [_secret_note(source)]
    if nodes > 1:
        notes.append(
            "# Needs the LeaderWorkerSet controller (kubernetes-sigs/lws) and a ReadWriteMany storage class."
        )
    if box.model_mount is not None:
        local, inside = box.model_mount
        notes.append(
            f"# The model is read from the {source.name}-models volume: copy {local} to {inside} in it."
        )
    text = header(source, "kubernetes") + "\n".join(notes) + "\n" + dump_yaml_all([pvc, workload, service])
    return [ExportFile(filename=f"{source.name}.k8s.yaml", text=text)]


def _leader_worker_set(
    source: ExportSource,
    labels: dict[str, str],
    engine: Callable[..., dict[str, Any]],
    volumes: list[dict[str, Any]],
    args: list[str],
) -> dict[str, Any]:
    """vLLM's multiprocessing multi-node mode in one LeaderWorkerSet group: the leader (rank 0) serves
    the API, each worker runs its stage headless. LWS injects LWS_LEADER_ADDRESS and LWS_WORKER_INDEX
    into every pod; Kubernetes expands `$(VAR)` in args from the container's environment."""
    from llmhost.export.vllm_cluster import MASTER_PORT

    nodes = source.candidate.nodes
    common = [
        "--nnodes",
        str(nodes),
        "--master-addr",
        "$(LWS_LEADER_ADDRESS)",
        "--master-port",
        str(MASTER_PORT),
    ]
    leader = engine([*args, *common, "--node-rank", "0"], serves=True)
    worker = engine([*args, *common, "--node-rank", "$(LWS_WORKER_INDEX)", "--headless"], serves=False)
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": source.name, "labels": labels},
        "spec": {
            "replicas": 1,
            "leaderWorkerTemplate": {
                "size": nodes,
                # One rank lost is the whole model lost: restart the group together.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {
                    "metadata": {"labels": {**labels, "role": "leader"}},
                    "spec": {"containers": [leader], "volumes": volumes},
                },
                "workerTemplate": {
                    "metadata": {"labels": {**labels, "role": "worker"}},
                    "spec": {"containers": [worker], "volumes": volumes},
                },
            },
        },
    }


def _secret_note(source: ExportSource) -> str:
    keys = "--from-literal=api-key=<key> " if source.auth else ""
    return (
        f"# Secrets by reference only: kubectl create secret generic {_secret_name(source)} "
        f"{keys}--from-literal=hf-token=<token, for gated models>"
    )


def _check_kserve(source: ExportSource, target: str) -> None:
    """What both KServe targets refuse: a plan that is not vLLM on GPUs, or a local model path."""
    from llmhost.errors import UsageError

    check_node(source, target, containers=True)
    if not traits(source).kserve or not source.hardware.gpus:
        raise UsageError(
            f"`llmhost export {target}` writes KServe's vLLM runtime; this plan runs "
            f"{source.launch.runtime}{'' if source.hardware.gpus else ' on the CPU'}.",
            hint="Plan vLLM on a GPU node: --engine vllm --hardware NAME (or export `kubernetes`).",
        )
    if source.candidate.model_source.startswith("/"):
        raise UsageError(
            "KServe loads a Hub repo by id; this plan loads a local path.",
            hint="Export a Hub model (org/name), or use `llmhost export kubernetes` for a local one.",
        )


def _hf_token_env(source: ExportSource) -> dict[str, Any]:
    # Optional: only gated models need it; the value stays in the Secret.
    ref = {"name": _secret_name(source), "key": "hf-token", "optional": True}
    return {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}}


def render_kserve(source: ExportSource) -> list[ExportFile]:
    """An InferenceService on KServe's Hugging Face runtime (vLLM backend), with the plan's vLLM flags."""
    _check_kserve(source, "kserve")
    c = source.candidate
    # KServe's runtime takes vLLM's engine flags after its own (--model_name, --model_id).
    kwargs = vllm_engine_kwargs(source)
    args = [f"--model_name={source.served_model_name}", f"--model_id={c.model_source}"]
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        args.append(flag if value is True else f"{flag}={value}")
    gpus = ranks(source)  # TP x PP x DP: every data-parallel replica's ranks in the one pod
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": source.name, "labels": {"app.kubernetes.io/managed-by": "llmhost"}},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "model": {
                    "modelFormat": {"name": "huggingface"},
                    "args": args,
                    "env": [_hf_token_env(source)],
                    "resources": {
                        "limits": {"nvidia.com/gpu": str(gpus)},
                        "requests": {"nvidia.com/gpu": str(gpus)},
                    },
                },
            }
        },
    }
    note = (
        "# Clients authenticate at the cluster's ingress (KServe's runtime has no API key of its own);\n"
        f"# the Hub token: kubectl create secret generic {_secret_name(source)} "
        "--from-literal=hf-token=<token>"
    )
    text = header(source, "kserve") + note + "\n" + dump_yaml(isvc)
    return [ExportFile(filename=f"{source.name}.kserve.yaml", text=text)]


# The flags KServe's LLMInferenceService config template (kserve-config-llm-template) already passes to
# `vllm serve /mnt/models`: the served name (from spec.model.name), the port, and
# `--tensor-parallel-size` from spec.parallelism.tensor. Passing them again would duplicate them.
LLMISVC_OWN_FLAGS = {"tensor_parallel_size"}


def llmisvc_vllm_args(source: ExportSource) -> list[str]:
    """The plan's vLLM engine flags for the VLLM_ADDITIONAL_ARGS variable that KServe's template
    appends to its `vllm serve` command (space-separated; the template word-splits it)."""
    args: list[str] = []
    for key, value in vllm_engine_kwargs(source).items():
        if key in LLMISVC_OWN_FLAGS:
            continue
        flag = "--" + key.replace("_", "-")
        args.append(flag if value is True else f"{flag}={value}")
    return args


def render_kserve_llm(source: ExportSource) -> list[ExportFile]:
    """A KServe LLMInferenceService (serving.kserve.io/v1alpha1) for a one-node vLLM plan: the model by
    hf:// URI, the plan's TP as spec.parallelism.tensor, its other vLLM flags in VLLM_ADDITIONAL_ARGS on
    the `main` container (the image and command come from KServe's LLMInferenceServiceConfig)."""
    from llmhost.errors import UsageError

    c = source.candidate
    if c.nodes > 1:
        # The CRD has a worker pod and parallelism.pipeline, but KServe's shipped multi-node configs
        # (config-llm-worker-data-parallel) run data/expert parallelism and never read `pipeline`:
        # this plan's TP-per-node x PP-across-nodes layout would be written as something else.
        raise UsageError(
            f"This plan pipelines across {c.nodes} nodes; KServe's LLMInferenceService spreads a model "
            "over nodes by data/expert parallelism only.",
            hint="Export kubernetes (a LeaderWorkerSet) or vllm-cluster, or plan one node (--nodes 1).",
        )
    _check_kserve(source, "kserve-llm")
    args = llmisvc_vllm_args(source)
    if any(any(ch.isspace() for ch in a) for a in args):
        # The template word-splits VLLM_ADDITIONAL_ARGS: a value with a space would become two words.
        raise UsageError(
            "A vLLM flag of this plan has a space in its value; KServe splits VLLM_ADDITIONAL_ARGS there.",
            hint="Use `llmhost export kserve` (an argv list) or `kubernetes` for this plan.",
        )
    env: list[dict[str, Any]] = [_hf_token_env(source)]
    if args:
        env.append({"name": "VLLM_ADDITIONAL_ARGS", "value": " ".join(args)})
    gpus = str(ranks(source))
    llmisvc = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LLMInferenceService",
        "metadata": {"name": source.name, "labels": {"app.kubernetes.io/managed-by": "llmhost"}},
        "spec": {
            "model": {"uri": f"hf://{c.model_source}", "name": source.served_model_name},
            "replicas": 1,
            "parallelism": {"tensor": c.tensor_parallel_size},
            "template": {
                "containers": [
                    {
                        # `main` is the container KServe's config template merges into.
                        "name": "main",
                        "env": env,
                        "resources": {
                            "limits": {"nvidia.com/gpu": gpus},
                            "requests": {"nvidia.com/gpu": gpus},
                        },
                    }
                ]
            },
        },
    }
    from llmhost.engines.vllm_env import VLLM_VERSION

    note = (
        f"# Flags generated for vLLM {VLLM_VERSION}; the image is the one named by KServe's\n"
        "# LLMInferenceServiceConfig. Clients authenticate at the cluster's gateway (no API key in\n"
        "# the pod); add spec.router for a route.\n"
        f"# The Hub token: kubectl create secret generic {_secret_name(source)} "
        "--from-literal=hf-token=<token>"
    )
    text = header(source, "kserve-llm") + note + "\n" + dump_yaml(llmisvc)
    return [ExportFile(filename=f"{source.name}.llmisvc.yaml", text=text)]
