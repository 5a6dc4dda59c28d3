"""Candidates over several nodes of one type: tensor parallel inside a node, pipeline parallel across.

The layout vLLM documents for multi-node serving: TP = the GPUs of a node (its all-reduce needs NVLink),
PP = the number of nodes (a stage boundary sends one token's hidden state over the network, which a
slow link tolerates). Per-rank memory is `vllm_gpu_candidate`'s: each stage holds ceil(layers / PP)
layers (the first the embeddings, the last the output head) and their KV cache, split by TP.
"""

from __future__ import annotations

from llmhost.engine_ids import LLAMACPP
from llmhost.errors import UsageError
from llmhost.hardware.models import GPU, Hardware
from llmhost.models.spec import ModelSpec
from llmhost.plan.common import Target
from llmhost.plan.hardware_view import vllm_gpus
from llmhost.plan.models import Candidate, PlanRequest
from llmhost.plan.reasons import Reason, ReasonCode
from llmhost.plan.vllm_candidates import tp_sizes, vllm_gpu_candidate, vllm_quants


def check_nodes(request: PlanRequest, hardware: Hardware) -> None:
    if request.nodes < 1:
        raise UsageError("--nodes must be at least 1.", hint="Pass --nodes 1 or more.")
    if request.nodes > 1 and not vllm_gpus(hardware):
        raise UsageError(
            f"--nodes {request.nodes} plans vLLM over GPU nodes; this node type has no NVIDIA/AMD GPUs.",
            hint="Give a GPU node type, e.g. --hardware h100-80gb:8 --nodes 2.",
        )
    if request.nodes > 1 and request.engine == LLAMACPP:
        raise UsageError(
            "--nodes plans vLLM (tensor x pipeline parallel); llama.cpp serves from one node.",
            hint="Drop --engine llamacpp, or drop --nodes.",
        )


def _cluster(gpus: list[GPU], nodes: int) -> list[GPU]:
    """Every rank's GPU, node by node: the node's GPUs repeated, indexed globally."""
    out = []
    for node in range(nodes):
        for g in gpus:
            out.append(g.model_copy(update={"index": node * len(gpus) + g.index}))
    return out


def multinode_candidates(
    spec: ModelSpec, hardware: Hardware, request: PlanRequest, target: Target, quant: str | None
) -> list[Candidate]:
    """One candidate per quantization: TP = the largest size that divides the heads and fits a node
    (or --tp), PP = --nodes."""
    nodes = request.nodes
    gpus = sorted(vllm_gpus(hardware), key=lambda g: g.index)
    sizes = tp_sizes(spec, len(gpus), request)
    if not sizes:
        return []
    tp = max(sizes)
    if spec.attention.num_layers < nodes:
        return []  # a stage needs at least one layer
    cluster = _cluster(gpus, nodes)
    per_node = len(gpus)
    out: list[Candidate] = []
    for q in vllm_quants(spec, gpus):
        if quant is not None and q != quant:
            continue
        c = vllm_gpu_candidate(spec, hardware, request, target, q, tp, cluster, pp=nodes)
        if c is None:
            continue
        hop = spec.hidden_size * 2  # one token's hidden state in 16-bit, per stage boundary
        reasons = [r for r in c.reasons_detail if r.code != ReasonCode.PIPELINE_PARALLEL]
        stage = -(-spec.attention.num_layers // nodes)
        reasons.append(
            Reason.of(ReasonCode.MULTINODE_LAYOUT, nodes=nodes, tp=tp, stage_layers=stage, hop_bytes=hop)
        )
        reasons.append(Reason.of(ReasonCode.MULTINODE_DECODE_ESTIMATE))
        per_device = [
            d.model_copy(update={"device": f"node{i // per_node}/{d.device.split(':')[0]}:{i % per_node}"})
            for i, d in enumerate(c.per_device)
        ]
        out.append(c.model_copy(update={"nodes": nodes, "per_device": per_device, "reasons_detail": reasons}))
    return out


def prefer_one_node(candidates: list[Candidate]) -> list[Candidate]:
    """When a single-node candidate fits, it comes before every multi-node one (no network hop, no
    cluster to run), and the multi-node ones say why they were not chosen."""
    from llmhost.plan.ranking import launchable

    single = next((c for c in candidates if c.nodes == 1 and c.fits and launchable(c)), None)
    if single is None:
        return candidates
    note = Reason.of(
        ReasonCode.ONE_NODE_PREFERRED,
        engine=single.engine,
        quantization=single.quantization,
        tp=single.tensor_parallel_size,
    )
    ordered = sorted(candidates, key=lambda c: c.nodes > 1)  # stable: the ranking holds within each
    nodes = max(c.nodes for c in candidates)
    out = []
    for c in ordered:
        if c.nodes > 1:
            c = c.model_copy(update={"reasons_detail": [*c.reasons_detail, note]})
        elif c is single and nodes > 1:
            suffices = Reason.of(ReasonCode.ONE_NODE_SUFFICES, nodes=nodes)
            c = c.model_copy(update={"reasons_detail": [*c.reasons_detail, suffices]})
        out.append(c)
    return out
