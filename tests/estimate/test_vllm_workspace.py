"""The fused-MoE shared workspace (estimate/vllm_workspace.py) against real vLLM 0.19 start-up logs.

Each record below printed its torch peak ("torch peak memory increase") and KV pool; the configs are the
ones recorded with the logs (benchmarks/data/vllm_startup_logs*.json, with their sources). The term is
derived from vLLM's code, not fitted; the assertions use the calibration half, and the one validation
record (Qwen1.5-MoE) is checked the same way, as reported in docs/accuracy.md.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from llmhost.estimate import VllmSettings, activation_peak_bytes, vllm_gpu_memory, weights_layout
from llmhost.estimate.vllm_workspace import moe_quant_workspace_bytes
from llmhost.models import resolve
from llmhost.models.spec import ModelSpec

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data"
GiB = 1024**3


@cache
def _records() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for name in ("vllm_startup_logs.json", "vllm_startup_logs_more.json"):
        data = json.loads((DATA / name).read_text())
        for record in data["records"]:
            if record["model"] in data["configs"]:
                out[record["id"]] = (record, data["configs"][record["model"]])
    return out


def _spec(config: dict[str, Any], tmp: Path) -> ModelSpec:
    path = tmp / "config.json"
    path.write_text(json.dumps(config))
    return resolve(str(path))


def _settings(record: dict[str, Any]) -> VllmSettings:
    flags = record["flags"]
    return VllmSettings(
        gpu_memory_utilization=flags["gpu_memory_utilization"],
        max_num_seqs=flags["max_num_seqs"],
        max_num_batched_tokens=flags["max_num_batched_tokens"],
        tensor_parallel_size=flags["tensor_parallel_size"],
    )


# (record, torch peak vLLM printed in GiB): MoE models on one H100, vLLM 0.19, 8192 tokens, 1024 seqs.
MOE_PEAKS = [
    ("llmd-qwen3-30b-a3b", 2.68),
    ("llmd-deepseek-v2-lite", 1.93),
    ("llmd-meta-llama-llama-4-scout--h100-80gb--tp4pp1dp1--8192", 3.19),
    ("llmd-mixtral-8x7b-tp2", 1.21),
    ("llmd-qwen-qwen1-5-moe-a2-7b--h100-80gb--tp1pp1dp1--8192", 2.47),
]


@pytest.mark.parametrize(("record_id", "printed"), MOE_PEAKS)
def test_moe_torch_peak_with_the_shared_workspace(record_id: str, printed: float, tmp_path: Path) -> None:
    record, config = _records()[record_id]
    assert record["printed"]["activation_peak_gib"] == printed
    spec = _spec(config, tmp_path)
    settings = _settings(record)
    held = moe_quant_workspace_bytes(
        spec, "bf16", settings.tensor_parallel_size, 8192, record["vllm_version"]
    )
    with_term = activation_peak_bytes(spec, settings, held_bytes=held) / GiB
    without = activation_peak_bytes(spec, settings) / GiB
    assert abs(with_term - printed) <= 0.08
    assert abs(with_term - printed) < abs(without - printed) or abs(without - printed) <= 0.08


def test_qwen3_30b_workspace_is_vllms_three_shared_buffers(tmp_path: Path) -> None:
    # M = 8192 tokens, topk 8, N = 2 x 768, K = 2048 (Qwen3-30B-A3B config.json), bf16:
    # workspace13 M*8*2048 + workspace2 M*8*2048 + fused_out M*2048 elements.
    _, config = _records()["llmd-qwen3-30b-a3b"]
    spec = _spec(config, tmp_path)
    expected = (8192 * 8 * 2048 + 8192 * 8 * 2048 + 8192 * 2048) * 2
    assert moe_quant_workspace_bytes(spec, "bf16", 1, 8192, "0.19.0") == expected
    # TP shards the expert width, not the hidden size: at TP 4 both buffers stay K-wide.
    assert moe_quant_workspace_bytes(spec, "bf16", 4, 8192, "0.19.0") == expected
    # Fewer batched tokens, smaller buffers; one chunk never exceeds VLLM_FUSED_MOE_CHUNK_SIZE tokens.
    assert moe_quant_workspace_bytes(spec, "bf16", 1, 2048, "0.19.0") == expected // 4
    assert moe_quant_workspace_bytes(spec, "bf16", 1, 65536, None) == expected * 4


def test_qwen3_30b_kv_pool_within_one_percent(tmp_path: Path) -> None:
    record, config = _records()["llmd-qwen3-30b-a3b"]
    spec = _spec(config, tmp_path)
    total = int(record["gpu"]["total_gib"] * GiB)
    memory = vllm_gpu_memory(spec, weights_layout(spec, "bf16"), _settings(record), total)
    printed = record["printed"]["available_kv_gib"]
    assert printed == 15.41
    assert abs(memory.kv_cache_bytes / GiB - printed) / printed < 0.01  # 15.90 (+3.2%) without the term


def test_no_shared_workspace_for_mxfp4_dense_or_old_releases(tmp_path: Path) -> None:
    gpt_oss, config = _records()["llmd-openai-gpt-oss-20b--h100-80gb--tp1pp1dp1--8192-failed"]
    spec = _spec(config, tmp_path)
    assert moe_quant_workspace_bytes(spec, "mxfp4", 1, 8192, "0.19.0") == 0
    # gpt-oss-20b printed 2.87 GiB: the sampler alone (201088 x 1024 logits), at TP 1 and TP 2.
    peak = activation_peak_bytes(spec, _settings(gpt_oss)) / GiB
    assert abs(peak - gpt_oss["printed"]["activation_peak_gib"]) <= 0.08
    _, qwen = _records()["llmd-qwen3-30b-a3b"]
    moe = _spec(qwen, tmp_path)
    assert moe_quant_workspace_bytes(moe, "bf16", 1, 8192, "0.10.1.1") == 0
    assert moe_quant_workspace_bytes(moe, "fp8", 1, 8192, "v0.12.0") > 0
    _, llama = _records()["llmd-llama31-8b-tp1-16k"]
    assert moe_quant_workspace_bytes(_spec(llama, tmp_path), "bf16", 1, 8192, None) == 0
