"""A Compose file running the engine in its official image, with the flags `serve` would pass."""

from __future__ import annotations

import posixpath
from typing import Any

from llmhost.export.common import (
    CONTAINER_PORT,
    HF_CACHE_IN_IMAGE,
    container,
    dump_yaml,
    header,
    ranks,
    traits,
)
from llmhost.export.models import ExportFile, ExportSource

# vLLM moves tensors between its processes through shared memory (PyTorch); Docker's 64 MB default
# /dev/shm stalls tensor parallelism (vLLM's Docker guide: --ipc=host or --shm-size).
SHM_TP = "16gb"
SHM_SINGLE = "2gb"


def render_compose(source: ExportSource) -> list[ExportFile]:
    box = container(source, "compose")
    service: dict[str, Any] = {
        "image": box.image,
        "command": box.args,
        "restart": "unless-stopped",
        # Published on the address `serve` would bind: loopback stays loopback.
        "ports": [f"{source.host}:{source.port}:{CONTAINER_PORT}"],
        "volumes": [f"${{HF_HOME:-~/.cache/huggingface}}:{HF_CACHE_IN_IMAGE}"],
        # Keys come from the env file, never from this file: VLLM_API_KEY / LLAMA_API_KEY and HF_TOKEN.
        "env_file": [{"path": f"{source.name}.env", "required": source.auth}],
        # llmhost's readiness rule: the engine's health endpoint answers 200 once the model is loaded.
        "healthcheck": {
            "test": ["CMD", *box.probe],
            "interval": "10s",
            "timeout": "5s",
            "retries": 3,
            "start_period": f"{int(source.launch.ready_deadline_s)}s",
        },
    }
    if box.env:
        service["environment"] = dict(sorted(box.env.items()))
    if box.model_mount is not None:
        # The model's folder, read-only, at the path the command names.
        local, inside = box.model_mount
        service["volumes"].append(f"{posixpath.dirname(local.rstrip('/'))}:{posixpath.dirname(inside)}:ro")
    if traits(source).large_shm:
        service["shm_size"] = SHM_TP if ranks(source) > 1 else SHM_SINGLE
    if box.gpus:
        service["deploy"] = {
            "resources": {
                "reservations": {
                    "devices": [{"driver": "nvidia", "count": box.gpus, "capabilities": ["gpu"]}]
                }
            }
        }
    doc = {"name": f"llmhost-{source.name}", "services": {source.name: service}}
    notes = [
        f"# Start: docker compose -f {source.name}.compose.yaml up -d; the engine is ready when",
        "# `docker compose ps` shows it healthy.",
    ]
    if source.auth:
        names = " and ".join(sorted(source.launch.secret_env))
        notes.append(f"# Put {names}=<key> in {source.name}.env (mode 0600) next to this file.")
    text = header(source, "compose") + "\n".join(notes) + "\n" + dump_yaml(doc)
    return [ExportFile(filename=f"{source.name}.compose.yaml", text=text)]
