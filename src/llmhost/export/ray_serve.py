"""A Ray Serve LLM application config (`serve deploy FILE`): one `LLMConfig` with the plan's vLLM knobs."""

from __future__ import annotations

from typing import Any

from llmhost.errors import UsageError
from llmhost.export.common import (
    check_node,
    dump_yaml,
    header,
    refuse_data_parallel,
    traits,
    vllm_engine_kwargs,
)
from llmhost.export.models import ExportFile, ExportSource

# Ray's accelerator_type values (ray.util.accelerators) for the catalog's GPUs, by catalog id prefix.
# Longest prefix first: "a100-80gb" must not match as "a100".
_RAY_ACCELERATORS = (
    ("h200", "H200"),
    ("h100", "H100"),
    ("a100-80gb", "A100-80G"),
    ("a100-pcie-80gb", "A100-80G"),
    ("a100-40gb", "A100-40G"),
    ("a100-pcie-40gb", "A100-40G"),
    ("l40s", "L40S"),
    ("a10g", "A10G"),
    ("l4-", "L4"),
    ("t4-", "T4"),
    ("v100", "V100"),
)


def accelerator_type(source: ExportSource) -> str | None:
    for gpu in source.hardware.gpus:
        ident = (gpu.catalog_id or gpu.name).lower()
        for prefix, ray_name in _RAY_ACCELERATORS:
            if ident.startswith(prefix):
                return ray_name
    return None


def render_ray_serve(source: ExportSource, *, max_replicas: int = 1) -> list[ExportFile]:
    check_node(source, "ray-serve", containers=False)
    c = source.candidate
    if not traits(source).ray_serve or not source.hardware.gpus:
        raise UsageError(
            f"Ray Serve LLM runs vLLM on GPUs; this plan runs {source.launch.runtime}"
            f"{'' if source.hardware.gpus else ' on the CPU'}.",
            hint="Plan vLLM on a GPU node: --engine vllm --hardware NAME.",
        )
    # build_openai_app runs one vLLM engine per replica on a TP x PP placement group; data-parallel ranks
    # need Ray Serve LLM's separate DP deployment, which this file does not describe.
    refuse_data_parallel(source, "ray-serve", "Ray Serve LLM's build_openai_app places one TP x PP engine")
    kwargs = vllm_engine_kwargs(source)
    llm_config: dict[str, Any] = {
        "model_loading_config": {"model_id": source.served_model_name, "model_source": c.model_source},
        "engine_kwargs": kwargs,
        "deployment_config": {"autoscaling_config": {"min_replicas": 1, "max_replicas": max_replicas}},
    }
    if c.nodes > 1:
        # One GPU bundle per rank, packed but allowed to span nodes: a stage per node (PP), TP inside.
        ranks = c.tensor_parallel_size * c.pipeline_parallel_size
        llm_config["placement_group_config"] = {"bundles": [{"GPU": 1}] * ranks, "strategy": "PACK"}
    accel = accelerator_type(source)
    if accel is not None:
        llm_config["accelerator_type"] = accel
    if source.launch.env:
        # The same engine environment `serve` sets (e.g. vLLM's engine-ready timeout for a slow load).
        llm_config["runtime_env"] = {"env_vars": dict(sorted(source.launch.env.items()))}
    app = {
        "applications": [
            {
                "name": source.name,
                "route_prefix": "/",
                "import_path": "ray.serve.llm:build_openai_app",
                "args": {"llm_configs": [llm_config]},
            }
        ]
    }
    notes = "# Deploy on a running Ray cluster: serve deploy " + f"{source.name}.ray-serve.yaml\n"
    if accel is None:
        notes += "# No Ray accelerator_type matches this GPU: Ray schedules the replicas on any GPU node.\n"
    text = header(source, "ray-serve") + notes + dump_yaml(app)
    return [ExportFile(filename=f"{source.name}.ray-serve.yaml", text=text)]
