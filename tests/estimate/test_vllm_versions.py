"""vLLM's memory accounting per release range, and its GPU-dependent defaults, on recorded start-ups.

Every expected figure is one vLLM printed in a real start-up log (benchmarks/data/vllm_startup_logs*.json,
lines quoted in the records' raw_lines): the tests fail if the estimator's version ranges, defaults or
failure checks drift from what vLLM did.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import _vllm_heldout as heldout  # benchmarks/, on sys.path through pyproject's pytest pythonpath
import pytest
from _accuracy_compare import vllm_spec

from llmhost import estimate as est
from llmhost.errors import UsageError
from llmhost.estimate import vllm_versions as vv
from llmhost.estimate.vllm import start_failure, vllm_total_bytes

GiB = 1024**3
RECORDS, CONFIGS = heldout.load_records()
BY_ID = {r["id"]: r for r in RECORDS}
ROWS = {r["id"]: r for r in heldout.score()}


def _lines(record_id: str) -> str:
    return "\n".join(BY_ID[record_id]["raw_lines"])


def _memory(record_id: str, **changes: Any) -> est.VllmMemory:
    """The estimator's budget for a record, as the scorer sets it up (optionally changed)."""
    record = BY_ID[record_id]
    spec = vllm_spec(record["model"], json.dumps(CONFIGS[record["model"]], sort_keys=True))
    flags = record["flags"] or {}
    p = ROWS[record_id]["predicted"]
    settings = est.VllmSettings(
        gpu_memory_utilization=flags.get("gpu_memory_utilization") or 0.9,
        max_num_seqs=p["max_num_seqs"],
        max_num_batched_tokens=p["max_num_batched_tokens"],
        tensor_parallel_size=flags.get("tensor_parallel_size") or 1,
        accounting=p["accounting"],
    )
    settings = dataclasses.replace(settings, **changes)
    total, _ = heldout.vllm_seen_total(record)
    assert total is not None
    layout = est.weights_layout(spec, heldout._quantization(record, est.own_quantization(spec)))
    return est.vllm_gpu_memory(spec, layout, settings, total)


@pytest.mark.parametrize(
    ("version", "generation", "expected"),
    [
        ("0.6.5.dev (PR #10511)", None, "v0"),
        ("0.8.x (V0 engine)", "v0", "v0"),
        ("0.7.1.dev", "v1", "v1-early"),
        ("0.10.1.1", None, "v1-early"),
        ("0.11.0", None, "v1-early"),
        ("0.19.0", None, "v1"),
        ("0.20.0", None, "v1-graphs"),
        ("v0.34.0", None, "v1-graphs"),
    ],
)
def test_version_ranges(version: str, generation: vv.EngineGeneration | None, expected: str) -> None:
    assert vv.accounting(vv.parse_version(version), generation) == expected


def test_a_bad_version_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        vv.parse_version("latest")


def test_gpu_dependent_defaults_are_the_ones_vllm_printed() -> None:
    h100 = int(79.19 * GiB)
    # v0.19.0 on an H100: "Defaulting max_num_batched_tokens to 8192", "Defaulting max_num_seqs to 1024".
    d = vv.scheduler_defaults(vv.parse_version("0.19.0"), h100, "NVIDIA H100 80GB HBM3", 8192)
    assert (d.max_num_seqs, d.max_num_batched_tokens) == (1024, 8192)
    scout = "llmd-meta-llama-llama-4-scout--h100-80gb--tp4pp1dp1--8192"
    assert "Defaulting max_num_batched_tokens to 8192" in _lines(scout)
    assert "Defaulting max_num_seqs to 1024" in _lines(scout)
    # v0.10.1.1 on an A100 80GB (the A100 exception):
    # "Chunked prefill is enabled with max_num_batched_tokens=2048".
    a100 = vllm_total_bytes(80 * GiB)
    d = vv.scheduler_defaults(vv.parse_version("0.10.1.1"), a100, "NVIDIA A100 80GB", 16384)
    assert (d.max_num_seqs, d.max_num_batched_tokens) == (256, 2048)
    assert "max_num_batched_tokens=2048" in _lines("dennislee-vllm-7b-1gpua10080gb-0.5gram")
    # V0 without chunked prefill profiles max(max_model_len, 2048) tokens: the RTX 3090 at 20k printed a
    # torch peak that only a 20000-token batch explains (peak_torch_memory=17.06GiB over 14.99 of weights).
    d = vv.scheduler_defaults(vv.parse_version("0.6.3"), int(23.58 * GiB), "NVIDIA GeForce RTX 3090", 20000)
    assert (d.max_num_seqs, d.max_num_batched_tokens) == (256, 20000)
    assert vv.scheduler_defaults(vv.parse_version("0.6.3"), h100, "x", 40000).max_num_batched_tokens == 512
    # From 0.28 a GPU of 160 GiB or more gets 16384 batched tokens; A100s never get the large default.
    assert (
        vv.scheduler_defaults(
            vv.parse_version("0.28.0"), 179 * GiB, "NVIDIA B200", 8192
        ).max_num_batched_tokens
        == 16384
    )
    assert (
        vv.scheduler_defaults(
            vv.parse_version("0.19.0"), 179 * GiB, "NVIDIA B200", 8192
        ).max_num_batched_tokens
        == 8192
    )


def test_late_v1_pool_matches_v019() -> None:
    """v0.19.0, Llama-3.1-8B, H100, 0.95: "Available KV cache memory: 58.11 GiB"; graphs not subtracted."""
    mem = _memory("llmd-llama31-8b-tp1-16k")
    assert mem.accounting == "v1" and not mem.cudagraphs_in_budget
    assert mem.requested_bytes / GiB == pytest.approx(75.23, abs=0.01)  # "worker requested memory: 75.23GiB"
    assert mem.kv_cache_bytes / GiB == pytest.approx(58.11, rel=0.01)


def test_from_v020_the_graph_estimate_comes_out_of_the_pool() -> None:
    """The same start-up under 0.20+: the pool loses the graph estimate v0.19 printed but did not subtract
    ("Estimated CUDA graph memory: 0.84 GiB total")."""
    v019 = _memory("llmd-llama31-8b-tp1-16k")
    v021 = _memory("llmd-llama31-8b-tp1-16k", accounting="v1-graphs")
    assert "Estimated CUDA graph memory: 0.84 GiB total" in _lines("llmd-llama31-8b-tp1-16k")
    assert v021.cudagraph_bytes / GiB == pytest.approx(0.84, abs=0.03)
    assert v019.kv_cache_bytes - v021.kv_cache_bytes == v021.cudagraph_bytes


def test_early_v1_pools_on_a100() -> None:
    """v0.10.1.1 on an A100 80GB (total not printed: the catalog's, less the driver's reservation)."""
    assert ROWS["dennislee-vllm-7b-1gpua10080gb-0.5gram"]["predicted"]["accounting"] == "v1-early"
    for record_id, printed in (
        ("dennislee-vllm-7b-1gpua10080gb-0.5gram", 24.83),
        ("dennislee-vllm-7b-2gpua10080gb-0.5gram-same-node", 31.83),
        ("dennislee-vllm-120b-4gpua10080gb-0.8gram-diff-nodes", 45.32),
    ):
        assert f"Available KV cache memory: {printed} GiB" in _lines(record_id)
        assert _memory(record_id).kv_cache_bytes / GiB == pytest.approx(printed, rel=0.03), record_id


def test_early_v1_moe_peak_leaves_gpt_oss_120b_no_kv_on_one_h100() -> None:
    """v0.10.1: "Available KV cache memory: -2.14 GiB" for gpt-oss-120b on one H100; under 0.19's
    accounting the same model would start."""
    mem = _memory("vllm-23278-gpt-oss-120b-h100")
    assert "Available KV cache memory: -2.14 GiB" in _lines("vllm-23278-gpt-oss-120b-h100")
    assert mem.kv_cache_bytes < 0
    assert _memory("vllm-23278-gpt-oss-120b-h100", accounting="v1").kv_cache_bytes > 0


def test_v0_pool_on_an_rtx_3090() -> None:
    """V0 (0.6.x), Llama-3.1-8B at 20000 tokens: "kv_cache_size=3.81GiB" (a 20000-token profile batch)."""
    mem = _memory("vllm-10517-llama31-8b-3090-20k")
    assert mem.accounting == "v0" and mem.max_num_batched_tokens == 20000
    assert mem.kv_cache_bytes / GiB == pytest.approx(3.81, rel=0.05)


def test_utilization_higher_than_free_memory_is_refused_as_vllm_does() -> None:
    """v0.19.0: "Free memory on device cuda:1 (60.33/79.19 GiB) on startup is less than desired GPU memory
    utilization (0.95, 75.23 GiB)"; with the GPU idle the same request starts."""
    record_id = "llmd-meta-llama-llama-4-scout--h100-80gb--tp4pp1dp1--8192-failed"
    mem = _memory(record_id)
    free = int(60.33 * GiB) + mem.context_bytes
    assert mem.requested_bytes / GiB == pytest.approx(75.23, abs=0.01)
    assert start_failure(mem, free, 8192) == "utilization_exceeds_free"
    assert est.max_gpu_memory_utilization(mem.total_bytes, free) == 0.76  # 60.33 / 79.19
    assert start_failure(mem, mem.total_bytes, 8192) is None


def test_098_on_an_idle_gpu_starts() -> None:
    """vLLM accepts any utilization whose request fits the free memory: 0.98 of an idle H100 does
    (free 78.68 of 79.19 GiB after the 0.51 GiB CUDA context, "worker init memory snapshot")."""
    assert "free_memory=78.68GiB, total_memory=79.19GiB, cuda_memory=0.51GiB" in _lines(
        "llmd-llama31-8b-tp1-16k"
    )
    mem = _memory("llmd-llama31-8b-tp1-16k", gpu_memory_utilization=0.98)
    assert start_failure(mem, mem.total_bytes, 16384) is None
    assert start_failure(mem, int(78.68 * GiB) + mem.context_bytes, 16384) is None
    assert start_failure(
        _memory("llmd-llama31-8b-tp1-16k", gpu_memory_utilization=1.0), mem.total_bytes, 16384
    ) == ("utilization_exceeds_free")


@pytest.mark.parametrize(
    ("record_id", "cause"),
    [
        ("vllm-23278-gpt-oss-120b-h100", "no_kv_memory"),  # early V1, a negative budget
        ("vllm-27508-gpt-oss-120b-h100", "no_kv_memory"),
        ("qanything-302-qwen7b-3090", "weights_exceed_budget"),  # V0 "# GPU blocks: 0": weights > 0.9 x 24 GB
        ("vllm-10517-llama31-8b-3090-29k", "max_len_exceeds_kv"),  # V0
        ("vllm-13061-r1-distill-qwen14b-2x4090-tp2", "max_len_exceeds_kv"),  # V0, TP 2
        ("qwen-16-qwen15-7b-gptq-3090", "max_len_exceeds_kv"),  # V0, GPTQ
        ("vllm-17327-qwen3-30b-a3b-a10-tp4-v085", "cuda_oom_after_kv"),  # early V1 graphs after the pool
        ("llmd-meta-llama-llama-4-scout--h100-80gb--tp4pp1dp1--8192-failed", "utilization_exceeds_free"),
    ],
)
def test_failed_starts_are_predicted_with_their_cause(record_id: str, cause: str) -> None:
    row = ROWS[record_id]
    assert row["actual"] == heldout.SAME_CAUSE.get(cause, cause)
    assert row["predicted"]["verdict"] == cause


def test_max_len_error_gives_the_longest_length_that_fits() -> None:
    """V0 on the RTX 3090 at 29000 tokens: the pool held 23648 tokens; the suggested length is below it."""
    row = ROWS["vllm-10517-llama31-8b-3090-29k"]
    suggested = row["predicted"]["estimated_max_model_len"]
    assert 0 < suggested < 29000
    assert suggested == pytest.approx(23648, rel=0.1)
