"""Issue 11's targets on the VALIDATION half (V1 records), from llmhost's own predicted KV pool.

The constants were fitted on the calibration half only (estimate/overheads.py); this checks that they
still equal what the calibration fit gives, so a refit cannot quietly use the validation half.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import _vllm_heldout as heldout
import pytest

from llmhost.estimate import overheads as oh

ROWS = heldout.score()
VALIDATION = [r for r in ROWS if r["split"] == "validation" and r["generation"] == "v1"]
KV_ERRORS = [abs(r["error"]["available_kv_gib"]) for r in VALIDATION if "available_kv_gib" in r["error"]]
# Validation records the estimator gets wrong today, with their figures (known_misses.json, written by
# `python benchmarks/vllm_validation.py --write-known-misses`): strict xfails, so a fix shows as XPASS.
KNOWN = json.loads((Path(__file__).parent / "known_misses.json").read_text()).get("vllm_heldout", {})


def _failed_starts() -> list[object]:
    rows = [r for r in VALIDATION if r["actual"] != "started"]
    return [
        pytest.param(r, id=r["id"], marks=pytest.mark.xfail(strict=True, reason=KNOWN[r["id"]]))
        if r["id"] in KNOWN
        else pytest.param(r, id=r["id"])
        for r in rows
    ]


def test_enough_validation_records_are_scored() -> None:
    assert len(KV_ERRORS) >= 15


def test_kv_pool_median_within_4_percent() -> None:
    assert statistics.median(KV_ERRORS) <= heldout.KV_MEDIAN_TARGET


def test_kv_pool_90_percent_within_10_percent() -> None:
    assert sum(e <= heldout.KV_WITHIN for e in KV_ERRORS) / len(KV_ERRORS) >= heldout.KV_WITHIN_SHARE


def test_kv_pool_none_worse_than_25_percent() -> None:
    assert max(KV_ERRORS) <= heldout.KV_WORST


@pytest.mark.parametrize("row", _failed_starts())
def test_failed_starts_predicted_with_their_cause(row: dict[str, object]) -> None:
    if row["verdict_ok"] is None:
        pytest.skip(f"not predictable: {row['actual']} on a GPU with no known total")
    assert row["verdict_ok"], row["predicted"]


def test_no_successful_start_predicted_to_fail() -> None:
    assert [r["id"] for r in VALIDATION if r["actual"] == "started" and r["verdict_ok"] is False] == []


def test_constants_are_the_calibration_fit() -> None:
    fits = heldout.fit_early_v1(ROWS)
    moe = statistics.median(f for _, f in fits["moe_activation_factor"])
    assert oh.VLLM_EARLY_V1_MOE_ACTIVATION_FACTOR == pytest.approx(moe, abs=0.01)
    assert oh.VLLM_EARLY_V1_CUDAGRAPH_FACTOR == pytest.approx(fits["cudagraph_factor"][0][1], abs=0.01)
    mxfp4 = heldout.fit_mxfp4_loaded_factor("calibration")
    assert len(mxfp4) >= 4
    assert oh.VLLM_MXFP4_LOADED_FACTOR == pytest.approx(statistics.median(f for _, f in mxfp4), abs=0.01)
    reserved = heldout.reserved_fit(ROWS)["calibration"]["median_gib"]
    assert oh.VLLM_TORCH_RESERVED_BYTES / 1024**3 == pytest.approx(reserved, abs=0.01)


def test_known_misses_are_exactly_todays() -> None:
    # The list is what the benchmark writes from today's rows: no stale entry hides a fixed record.
    assert heldout.known_misses(ROWS) == KNOWN


def test_the_0_8_graph_evidence_docs_accuracy_gives_for_vllm_17462() -> None:
    """Why no vLLM 0.8.x CUDA-graph term is fitted (docs/accuracy.md, vllm#17462): the only 0.8.x V1
    record of the calibration half with a known GPU started, so it bounds the per-layer graph cost from
    above only; the three calibration failures of this range (vllm#17822, vllm#15676, vllm#18446) name
    no GPU, so they bound nothing; the bound from below comes from the two validation failures, which
    must not be fitted on."""
    records = {r["id"]: r for r in heldout.load_records()[0]}
    rows = {r["id"]: r for r in ROWS}
    v08 = [
        i
        for i, rec in records.items()
        if rec["vllm_version"].startswith("0.8") and rows[i]["generation"] == "v1"
    ]
    assert sorted((rows[i]["split"], rows[i]["actual"], rows[i]["verdict_ok"] is not None) for i in v08) == [
        ("calibration", "cuda_oom_after_kv", False),
        ("calibration", "cuda_oom_after_kv", False),
        ("calibration", "cuda_oom_after_kv", False),
        ("calibration", "started", True),
        ("validation", "cuda_oom_after_kv", True),
        ("validation", "cuda_oom_after_kv", True),
    ]
    mib = 1024**2
    base = oh.VLLM_CUDAGRAPH_BASE_BYTES * oh.VLLM_EARLY_V1_CUDAGRAPH_FACTOR / mib  # 766 MiB
    l40s = rows["vllm-pr17122-llama31-8b-l40s"]["predicted"]  # Llama-3.1-8B, 32 layers, TP 1: started
    l20 = rows["vllm-17462-qwen3-32b-l20-tp2-v1"]["predicted"]  # Qwen3-32B, 64 layers, TP 2: OOM
    assert l40s["headroom_gib"] == pytest.approx(3.94, abs=0.005)
    assert l20["headroom_gib"] == pytest.approx(3.95, abs=0.005)
    upper = (l40s["headroom_gib"] * 1024 - base) / 32
    lower = (l20["headroom_gib"] * 1024 - base) / 64
    assert (round(lower), round(upper)) == (51, 102)  # MiB per layer that would explain both
    # What the early-V1 graph model charges per layer (calibration fit), below that window:
    assert oh.VLLM_CUDAGRAPH_PER_LAYER_BYTES * oh.VLLM_EARLY_V1_CUDAGRAPH_FACTOR / mib == pytest.approx(32.1)
    # 0.10.1.1 printed 0.50 GiB for a whole 28-layer 7B capture (validation): at most 18 MiB a layer.
    printed = "Graph capturing finished in 3 secs, took 0.50 GiB"
    assert any(printed in line for line in records["dennislee-vllm-7b-1gpua10080gb-0.5gram"]["raw_lines"])
    assert 0.50 * 1024 / 28 < 18.3
