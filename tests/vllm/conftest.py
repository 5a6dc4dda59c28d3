"""Fixtures for the vLLM engine tests: plan candidates built directly from the `Candidate` contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from llmhost.plan.models import Candidate, DeviceMemory, MemoryBreakdown

GIB = 1024**3


def breakdown(weights: int, kv: int) -> MemoryBreakdown:
    return MemoryBreakdown(
        weights_bytes=weights,
        kv_cache_bytes=kv,
        compute_bytes=GIB,
        overhead_bytes=GIB // 2,
        total_bytes=weights + kv + GIB + GIB // 2,
    )


def gpu_candidate(**overrides: Any) -> Candidate:
    """Llama-3.1-70B in bf16 over two 80 GB GPUs, as the planner would describe it."""
    weights = 141 * 10**9
    per_rank = weights // 2
    fields: dict[str, Any] = {
        "engine": "vllm",
        "quantization": "bf16",
        "kv_cache_dtype": "bf16",
        "context_length": 32768,
        "concurrency": 8,
        "tensor_parallel_size": 2,
        "fits": True,
        "memory": breakdown(weights, 2 * 10 * GIB),
        "per_device": [
            DeviceMemory(device=f"cuda:{i}", breakdown=breakdown(per_rank, 10 * GIB), capacity_bytes=72 * GIB)
            for i in range(2)
        ],
        "kv_bytes_per_token": 327680,
        "max_context": 131072,
        "max_concurrency": 12,
        "decode_tokens_per_s": 25.0,
        "model_source": "meta-llama/Llama-3.1-70B-Instruct",
        "engine_options": {
            "gpu_memory_utilization": 0.9,
            "max_num_seqs": 8,
            "max_num_batched_tokens": 8192,
            "enable_prefix_caching": True,
        },
    }
    fields.update(overrides)
    return Candidate(**fields)


def cpu_candidate(model_source: str, **overrides: Any) -> Candidate:
    """The tiny checkpoint on vLLM's CPU build."""
    weights = 2_900_000
    fields: dict[str, Any] = {
        "engine": "vllm",
        "quantization": "bf16",
        "kv_cache_dtype": "bf16",
        "context_length": 1024,
        "concurrency": 4,
        "fits": True,
        "memory": breakdown(weights, GIB),
        "per_device": [DeviceMemory(device="cpu", breakdown=breakdown(weights, GIB), capacity_bytes=8 * GIB)],
        "kv_bytes_per_token": 1024,
        "max_context": 2048,
        "max_concurrency": 64,
        "decode_tokens_per_s": None,
        "model_source": model_source,
        "engine_options": {"max_num_seqs": 4, "cpu_kv_cache_gib": 1},
    }
    fields.update(overrides)
    return Candidate(**fields)


@pytest.fixture
def make_gpu_candidate() -> Callable[..., Candidate]:
    return gpu_candidate


@pytest.fixture
def make_cpu_candidate() -> Callable[..., Candidate]:
    return cpu_candidate
