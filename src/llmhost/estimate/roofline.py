"""Bandwidth-bound single-stream decode speed: bytes read per token / memory bandwidth.

Each decoded token reads every weight it uses once (MoE: only the routed experts plus the shared
weights; the token-embedding table contributes one row, so it is left out unless it doubles as the
output head) and the whole KV cache of the sequence so far. This is an upper bound: on an H100 the
measured llama.cpp speed was 80% of it for an 8B F16 model (167.6 vs 209 tok/s) and 37% for Q4_K_M
(267.7 vs 725 tok/s), where dequantization rather than memory bounds the kernel.
"""

from __future__ import annotations

from llmhost.hardware.models import Hardware
from llmhost.models.spec import ModelSpec


def active_weight_fraction(spec: ModelSpec) -> float:
    """Share of the non-embedding weights one token reads (1.0 for dense models)."""
    if spec.moe is None or spec.parameters <= 0:
        return 1.0
    body = spec.parameters - spec.embedding_parameters
    active = spec.active_parameters - spec.embedding_parameters
    if body <= 0 or active <= 0:
        return 1.0
    return min(active / body, 1.0)


def weights_read_bytes(spec: ModelSpec, weights_bytes: int, embedding_bytes: int, tied: bool) -> int:
    """Weight bytes read per decoded token."""
    body = weights_bytes - (0 if tied else embedding_bytes)
    return round(body * active_weight_fraction(spec))


def device_bandwidth(hardware: Hardware, device: str) -> float | None:
    if device.startswith("cpu"):
        return hardware.cpu.memory_bandwidth_bytes_per_s
    try:
        index = int(device.split(":")[1])
    except (IndexError, ValueError):
        index = 0
    for gpu in hardware.gpus:
        if gpu.index == index:
            return gpu.memory_bandwidth_bytes_per_s
    return hardware.gpus[0].memory_bandwidth_bytes_per_s if hardware.gpus else None


def seconds_per_token(reads: list[tuple[int, float | None]], *, parallel: bool) -> float | None:
    """Time of one token given (bytes, bandwidth) per device; devices run in parallel under TP."""
    times: list[float] = []
    for nbytes, bandwidth in reads:
        if nbytes <= 0:
            continue
        if not bandwidth:
            return None
        times.append(nbytes / bandwidth)
    if not times:
        return None
    return max(times) if parallel else sum(times)


def decode_roofline(spec: ModelSpec, hardware: Hardware, context_tokens: int) -> float | None:
    """Upper-bound single-stream decode tokens/s at `context_tokens` of context (None: bandwidth unknown),
    the checkpoint taken as it is, whole on the first GPU (or in RAM without one). A planned
    `Candidate`'s own placement is `plan.speed.candidate_decode_roofline`."""
    tied = spec.tied_embeddings or spec.output_bytes == 0
    read = weights_read_bytes(spec, spec.weights_bytes, spec.embedding_bytes, tied)
    from llmhost.estimate.kv import kv_bytes_per_token

    kv = kv_bytes_per_token(spec, "bf16") * max(context_tokens, 0)
    device = "cuda:0" if hardware.gpus else "cpu"
    sec = seconds_per_token([(read + kv, device_bandwidth(hardware, device))], parallel=False)
    return None if sec is None else 1.0 / sec
