"""The real vLLM start-up records (issue 11) are what they claim to be, and cover what the issue needs.

Two files, one schema: `benchmarks/data/vllm_startup_logs.json` (the first 37 records, unchanged) and
`benchmarks/data/vllm_startup_logs_more.json` (the newer ones, with outcome / failure / split fields).
No estimator runs here: these checks guard the data a later fit and its validation stand on.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

DATA_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "data"
OLD = json.loads((DATA_DIR / "vllm_startup_logs.json").read_text())
MORE = json.loads((DATA_DIR / "vllm_startup_logs_more.json").read_text())
README = (DATA_DIR / "README.md").read_text()

BUDGET_CLASSES = {
    "no_kv_memory",
    "max_len_exceeds_kv",
    "weights_exceed_budget",
    "utilization_exceeds_free",
}
# Failures seen after vLLM had sized the KV pool: the budget missed something it later needed.
LATE_CLASSES = {"sampler_warmup_oom", "cuda_oom_after_kv"}

# The first file has no outcome field (it is left as it was); its failed start-ups, by id.
OLD_FAILED = {
    "vllm-10517-llama31-8b-3090-29k": "max_len_exceeds_kv",
    "vllm-recipes12-qwen3-coder-480b-fp8-h20-dp8-u090": "max_len_exceeds_kv",
    "vllm-recipes12-qwen3-coder-480b-fp8-h20-dp8-u095": "max_len_exceeds_kv",
}

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _numbers(lines: list[str]) -> set[float]:
    # Every number a line shows, "1,075,312" read as 1075312, so a figure is found however vLLM printed it.
    found: set[float] = set()
    for line in lines:
        for token in NUMBER.findall(line):
            found.add(float(token.replace(",", "")))
    return found


def _printed(record: dict[str, Any]) -> dict[str, float]:
    items = record["printed"].items()
    return {k: v for k, v in items if isinstance(v, int | float) and not isinstance(v, bool)}


# The split rule of benchmarks/data/README.md, applied here again so a record cannot drift to the other half.
FORKS = {"jgchn/llm-d-planner": "llm-d-incubation/llm-d-planner"}


def source_group(url: str) -> str:
    u = urlparse(url)
    parts = [p for p in u.path.split("/") if p]
    if u.netloc == "github.com" and len(parts) >= 2:
        repo = FORKS.get(f"{parts[0]}/{parts[1]}", f"{parts[0]}/{parts[1]}")
        if len(parts) >= 4 and parts[2] in ("issues", "pull", "discussions"):
            return f"{repo}#{parts[3]}"
        return repo
    return u.netloc + u.path


def split_of(record: dict[str, Any]) -> str:
    key = source_group(record["source"]["url"]) + "|" + record["model"].lower()
    return "calibration" if int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 2 == 0 else "validation"


def _version(record: dict[str, Any]) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", record["vllm_version"])
    assert match, record["vllm_version"]
    return int(match.group(1)), int(match.group(2))


ALL = OLD["records"] + MORE["records"]
NEW_IDS = [r["id"] for r in MORE["records"]]


def test_ids_are_unique_across_both_files() -> None:
    ids = [r["id"] for r in ALL]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("record", MORE["records"], ids=NEW_IDS)
def test_new_record_is_complete_and_verbatim(record: dict[str, Any]) -> None:
    assert record["source"]["url"].startswith("https://")
    assert record["raw_lines"] and all(isinstance(x, str) and x.strip() for x in record["raw_lines"])
    assert record["vllm_version"] and record["version_basis"].split(" ")[0] in {"stated", "inferred:"}
    assert record["engine"] in {"V0", "V1"}
    assert "name" in record["gpu"] and "total_gib" in record["gpu"]
    assert record["split"] == split_of(record)
    shown = _numbers(record["raw_lines"])
    for key, value in _printed(record).items():
        assert float(value) in shown, f"{key}={value} is not in any raw line"
    if record["gpu"]["total_gib"] is not None:
        assert record["gpu"]["total_gib"] in shown, "total memory must be the one vLLM printed"
    if record["outcome"] == "failed":
        failure = record["failure"]
        assert failure["class"] in BUDGET_CLASSES | LATE_CLASSES
        assert failure["message"]
        if failure["message_complete"]:
            # vLLM's own words: their start must be in a raw line (a traceback may split the rest).
            assert any(failure["message"][:30] in line for line in record["raw_lines"])
    else:
        assert record["outcome"] == "started" and record["failure"] is None
        figures = ("available_kv_gib", "kv_tokens", "weights_gib")
        assert any(record["printed"][key] is not None for key in figures)


@pytest.mark.parametrize("record", OLD["records"], ids=[r["id"] for r in OLD["records"]])
def test_old_record_figures_are_in_its_lines(record: dict[str, Any]) -> None:
    # Records built from a sweep's CSV carry no lines; they name the CSV instead.
    if not record["raw_lines"]:
        assert record["source"]["figures_from"].startswith("https://")
        return
    shown = _numbers(record["raw_lines"])
    for key, value in _printed(record).items():
        # Two V0 records give kv_tokens as the printed block count x 16 (their notes say so).
        derived = key == "kv_tokens" and "blocks x 16" in record.get("note", "") and value / 16 in shown
        assert float(value) in shown or derived, f"{key}={value} is not in any raw line"


def test_every_model_has_a_sourced_config() -> None:
    for data in (OLD, MORE):
        assert {r["model"] for r in data["records"]} <= set(data["configs"])
    for model, config in MORE["configs"].items():
        assert config["about"], model
        text = config.get("text_config", config)
        assert text["num_hidden_layers"] > 0 and text["num_attention_heads"] > 0, model


def test_old_failures_are_failures() -> None:
    by_id = {r["id"]: r for r in OLD["records"]}
    for record_id in OLD_FAILED:
        assert any("larger than" in line for line in by_id[record_id]["raw_lines"]), record_id


def _is_moe_or_quantized(record: dict[str, Any], configs: dict[str, Any]) -> bool:
    config = configs[record["model"]]
    text = config.get("text_config", config)
    moe = any(k in text for k in ("num_experts", "num_local_experts", "n_routed_experts"))
    quant_name = re.search(r"fp8|awq|gptq|w4a16|w8a8|int4|mxfp4", record["model"], re.IGNORECASE)
    return bool(moe or record["flags"].get("quantization") or quant_name or "quantization_config" in config)


def test_coverage_the_issue_asks_for() -> None:
    assert len(ALL) >= 80
    versions = [_version(r) for r in ALL]
    assert min(versions) <= (0, 5) and max(versions) >= (0, 19)
    engines = [r["engine"] for r in MORE["records"]]
    old_v0 = [r for r in OLD["records"] if "V0" in r["vllm_version"] or _version(r) <= (0, 6)]
    assert engines.count("V0") + len(old_v0) >= 8 and engines.count("V1") >= 20
    moe_or_quant = [r for r in OLD["records"] if _is_moe_or_quantized(r, OLD["configs"])]
    moe_or_quant += [r for r in MORE["records"] if _is_moe_or_quantized(r, MORE["configs"])]
    assert len(moe_or_quant) >= 20
    tp = [r for r in ALL if (r["flags"].get("tensor_parallel_size") or 1) > 1]
    assert len(tp) >= 10
    failed = [r for r in MORE["records"] if r["outcome"] == "failed"]
    assert len(failed) + len(OLD_FAILED) >= 12
    budget = [r for r in failed if r["failure"]["class"] in BUDGET_CLASSES]
    assert len(budget) + len(OLD_FAILED) >= 12


def test_readme_lists_the_old_records_by_their_half() -> None:
    # The old file has no split field: the README names each old id under its half.
    for record in OLD["records"]:
        half = split_of(record)
        assert f"`{record['id']}` ({half})" in README, record["id"]


def _first(lines: list[str], pattern: str) -> float | None:
    for line in lines:
        match = re.search(pattern, line)
        if match:
            return float(match.group(1))
    return None


def test_budget_arithmetic_is_the_documented_formula() -> None:
    # docs/vllm-memory-by-version.md: V1 0.9-0.19 pool = requested - non-KV (the CUDA-graph estimate
    # is printed but not subtracted at 0.19); V0 from 0.6.5 = total x util - weights - non-torch - peak.
    checked_v1 = checked_v0 = 0
    for record in ALL:
        lines = record["raw_lines"]
        requested = _first(lines, r"Requested memory: [\d.]+ \(util\), ([\d.]+) GiB")
        non_kv = _first(lines, r"Total non KV cache memory: ([\d.]+)GiB")
        if requested is not None and non_kv is not None:
            assert abs(requested - non_kv - record["printed"]["available_kv_gib"]) <= 0.011, record["id"]
            checked_v1 += 1
        usable = _first(lines, r"gpu_memory_utilization \([\d.]+\) = ([\d.]+)GiB")
        if usable is None:
            usable = _first(lines, r"the current vLLM instance can use\s+([\d.]+)GiB")
        if usable is not None and record["printed"]["available_kv_gib"] is not None:
            p = record["printed"]
            parts = p["weights_gib"], p["non_torch_gib"], p["activation_peak_gib"]
            if None not in parts:
                weights = _first(lines, r"model weights take\s+([\d.]+)GiB") or p["weights_gib"]
                expected = usable - weights - p["non_torch_gib"] - p["activation_peak_gib"]
                assert abs(expected - p["available_kv_gib"]) <= 0.02, record["id"]
                checked_v0 += 1
    assert checked_v1 >= 25 and checked_v0 >= 2
