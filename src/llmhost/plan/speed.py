"""A planned candidate's decode roofline, from its own placement (the planner's speed figure, re-derived
at any context): per device, the weight bytes it reads per token (`DeviceMemory.decode_read_bytes`)
and its share of the KV cache; tensor-parallel ranks read in parallel, llama.cpp's layer split reads
device after device."""

from __future__ import annotations

from llmhost.engine_ids import VLLM
from llmhost.estimate.roofline import device_bandwidth, seconds_per_token
from llmhost.hardware.models import Hardware
from llmhost.plan.models import Candidate


def candidate_decode_roofline(target: Candidate, hardware: Hardware, context_tokens: int) -> float | None:
    """Upper-bound single-stream decode tokens/s of `target` at `context_tokens` (None: bandwidth unknown)."""
    kv_total = target.memory.kv_cache_bytes
    reads: list[tuple[int, float | None]] = []
    for dev in target.per_device:
        weights = dev.decode_read_bytes if dev.decode_read_bytes is not None else dev.breakdown.weights_bytes
        share = dev.breakdown.kv_cache_bytes / kv_total if kv_total > 0 else 0.0
        if target.engine == VLLM and target.tensor_parallel_size > 1:
            share = 1.0 / target.tensor_parallel_size
        kv = round(target.kv_bytes_per_token * max(context_tokens, 0) * share)
        reads.append((weights + kv, device_bandwidth(hardware, dev.device)))
    parallel = target.engine == VLLM and target.tensor_parallel_size > 1
    sec = seconds_per_token(reads, parallel=parallel)
    return None if sec is None else 1.0 / sec
