"""The vLLM command for each node of a multi-node plan, both ways vLLM runs across nodes.

- multiprocessing (`mp`): every node runs `vllm serve` with `--nnodes --node-rank --master-addr
  --master-port`; the workers add `--headless` (no API server), node 0 serves the API.
- Ray (`ray`): `ray start --head` on node 0, `ray start --address` on the others, then one
  `vllm serve ... --distributed-executor-backend ray` on the head.

Flags are the ones `serve` builds for this plan (TP inside a node, PP across nodes); tests parse every
generated argv with vLLM's own parser. Scripts take the head's address and the network interface from
the environment, so one file serves every node of its role.
"""

from __future__ import annotations

import shlex

from llmhost.engines.vllm_argv import SERVE_COMMAND
from llmhost.errors import UsageError
from llmhost.export.common import check_node, header, refuse_data_parallel, traits
from llmhost.export.models import ExportFile, ExportSource

MASTER_PORT = 29500  # torch.distributed's customary rendezvous port
RAY_PORT = 6379  # Ray's default GCS port
HEAD = "${LLMHOST_HEAD_ADDR:?set LLMHOST_HEAD_ADDR to node 0's address on the inter-node network}"
IFACE = "${LLMHOST_NET_IFACE:?set LLMHOST_NET_IFACE to the inter-node network interface, e.g. eth0}"


def serve_argv(source: ExportSource) -> list[str]:
    """`vllm serve MODEL ...`: the plan's engine flags, with the model positional (the vllm CLI)."""
    argv = list(source.launch.argv)
    at = argv.index("--model")
    return [*SERVE_COMMAND, source.candidate.model_source, *argv[at + 2 :]]


def mp_argv(source: ExportSource, rank: int, head: str = "$LLMHOST_HEAD_ADDR") -> list[str]:
    nodes = source.candidate.nodes
    extra = ["--nnodes", str(nodes), "--node-rank", str(rank), "--master-addr", head]
    extra += ["--master-port", str(MASTER_PORT)]
    return [*serve_argv(source), *extra, *(["--headless"] if rank > 0 else [])]


def ray_argv(source: ExportSource) -> list[str]:
    return [*serve_argv(source), "--distributed-executor-backend", "ray"]


def _env_lines(source: ExportSource, *, api: bool) -> list[str]:
    # NCCL and Gloo pick the first interface they find; on a multi-homed node that is often the
    # wrong (slow or unrouted) one, and the job hangs at the first collective. Name it.
    lines = [
        f'LLMHOST_NET_IFACE="{IFACE}"',
        'export NCCL_SOCKET_IFNAME="$LLMHOST_NET_IFACE" GLOO_SOCKET_IFNAME="$LLMHOST_NET_IFACE"',
        # The address vLLM advertises to the other nodes: this node's, on that interface.
        'export VLLM_HOST_IP="${VLLM_HOST_IP:-$(ip -4 -o addr show dev "$LLMHOST_NET_IFACE" '
        "| awk '{print $4}' | cut -d/ -f1)}\"",
    ]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(source.launch.env.items())]
    if api and source.auth:
        for name in sorted(source.launch.secret_env):
            # The key from the environment the script runs in, never written here.
            lines.append(f'export {name}="${{{source.api_key_env}:?set {source.api_key_env} (the API key)}}"')
    return lines


def _script(source: ExportSource, title: str, body: list[str]) -> str:
    return "\n".join(
        ["#!/bin/sh", header(source, "vllm-cluster").rstrip("\n"), f"# {title}", "set -eu", *body, ""]
    )


def render_vllm_cluster(source: ExportSource) -> list[ExportFile]:
    check_node(source, "vllm-cluster", containers=False)
    refuse_data_parallel(source, "vllm-cluster", "its Ray placement group holds one engine's TP x PP ranks")
    c = source.candidate
    if not traits(source).ray_cluster or c.nodes < 2:
        raise UsageError(
            "`llmhost export vllm-cluster` writes a multi-node vLLM plan; this plan runs "
            f"{source.launch.runtime} on one node.",
            hint="Plan over nodes: --engine vllm --hardware NAME:GPUS --nodes N.",
        )
    head = f'LLMHOST_HEAD_ADDR="{HEAD}"'
    files = []
    for rank in range(c.nodes):
        role = "serves the API" if rank == 0 else "runs its stage headless"
        body = [
            head,
            *_env_lines(source, api=rank == 0),
            "export VLLM_HOST_IP=\"${VLLM_HOST_IP:-$(hostname -I | cut -d' ' -f1)}\"",
        ]
        body.append(
            "exec "
            + shlex.join(mp_argv(source, rank)).replace("'$LLMHOST_HEAD_ADDR'", '"$LLMHOST_HEAD_ADDR"')
        )
        files.append(
            ExportFile(
                filename=f"{source.name}.mp-node{rank}.sh",
                text=_script(source, f"multiprocessing, node {rank} of {c.nodes}: {role}", body),
                mode=0o755,
            )
        )
    head_body = [head, *_env_lines(source, api=True), f"ray start --head --port {RAY_PORT}"]
    gpus = c.tensor_parallel_size * c.pipeline_parallel_size
    head_body.append(
        f"# Start ray-worker.sh on the other nodes: vLLM waits until its placement group gets {gpus} GPUs "
        f"(`ray status` shows {c.nodes} nodes)."
    )
    head_body.append("exec " + shlex.join(ray_argv(source)))
    worker_body = [
        head,
        *_env_lines(source, api=False),
        f'exec ray start --address "$LLMHOST_HEAD_ADDR:{RAY_PORT}" --block',
    ]
    files.append(
        ExportFile(
            filename=f"{source.name}.ray-head.sh", text=_script(source, "Ray: node 0", head_body), mode=0o755
        )
    )
    files.append(
        ExportFile(
            filename=f"{source.name}.ray-worker.sh",
            text=_script(source, f"Ray: every other node (1..{c.nodes - 1})", worker_body),
            mode=0o755,
        )
    )
    return files
