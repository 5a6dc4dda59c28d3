"""The log-line parsers read every recorded raw line, and the recorded figures are what the lines say."""

from __future__ import annotations

from typing import Any

import _llamacpp_logs as llog
import _vllm_logs as vlog
import pytest
from _accuracy_compare import HERE


def test_every_llamacpp_raw_line_is_parsed(llamacpp_data: dict[str, Any]) -> None:
    cases = [c for c in llamacpp_data["cases"] if "raw_lines" in c]
    assert len(cases) >= 100
    for case in cases:
        for line in case["raw_lines"]:
            parsed = llog.parse_lines([line])
            figures = (
                parsed["model_buffers"]
                or parsed["output_buffers"]
                or parsed["compute_buffers"]
                or parsed["kv_buffers"]
                or parsed["kv_caches"]
                or parsed["context"]
            )
            assert figures or line.startswith(llog.CONTEXT_PREFIXES), (case["id"], line)
            if llog.is_memory_line(line):
                assert figures, (case["id"], line)


def test_llamacpp_lines_reproduce_the_recorded_figures(llamacpp_data: dict[str, Any]) -> None:
    for case in llamacpp_data["cases"]:
        if "measured_mib" not in case:
            assert case["error"], case["id"]
            continue
        assert llog.parse_lines(case["raw_lines"]) == case["measured_mib"], case["id"]


def test_llamacpp_kv_lines_agree_with_each_other(llamacpp_data: dict[str, Any]) -> None:
    """K + V = the cache's size, and the KV buffers hold exactly the caches (one per cache)."""
    for case in (c for c in llamacpp_data["cases"] if "measured_mib" in c):
        m = case["measured_mib"]
        assert len(m["kv_buffers"]) == len(m["kv_caches"]) in (1, 2), case["id"]
        for buf, cache in zip(m["kv_buffers"], m["kv_caches"], strict=True):
            # three figures, each rounded to 0.01 MiB
            assert cache["k_mib"] + cache["v_mib"] == pytest.approx(cache["mib"], abs=3 * llog.RESOLUTION_MIB)
            assert buf["mib"] == pytest.approx(cache["mib"], abs=2 * llog.RESOLUTION_MIB)
            settings = case["settings"]
            assert (cache["k_type"], cache["v_type"]) == (settings["type_k"], settings["type_v"])


def test_llamacpp_parser_reads_a_cuda_style_log() -> None:
    """Buffer names other than CPU (CUDA0, CUDA_Host) and padded numbers parse the same way."""
    lines = [
        "load_tensors:        CUDA0 model buffer size =  4403.49 MiB",
        "load_tensors:   CPU_Mapped model buffer size =   281.81 MiB",
        "llama_context:  CUDA_Host  output buffer size =     0.58 MiB",
        "llama_kv_cache:      CUDA0 KV buffer size =  1024.00 MiB",
        "llama_kv_cache: size = 1024.00 MiB (  8192 cells,  32 layers,  4/4 seqs), K (f16):  512.00 MiB, "
        "V (f16):  512.00 MiB",
        "sched_reserve:      CUDA0 compute buffer size =   560.00 MiB",
        "sched_reserve:  CUDA_Host compute buffer size =    24.01 MiB",
    ]
    parsed = llog.parse_lines(lines)
    assert parsed["model_buffers"] == {"CUDA0": 4403.49, "CPU_Mapped": 281.81}
    assert parsed["compute_buffers"] == {"CUDA0": 560.0, "CUDA_Host": 24.01}
    assert parsed["kv_caches"][0]["cells"] == 8192 and parsed["kv_caches"][0]["streams"] == 4
    assert llog.totals_mib(parsed)["total"] == pytest.approx(4403.49 + 281.81 + 0.58 + 1024 + 584.01)


def _vllm_records(vllm_data: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in vllm_data["records"] if r["raw_lines"]]


def test_every_vllm_raw_line_states_a_figure(vllm_data: dict[str, Any]) -> None:
    records = _vllm_records(vllm_data)
    assert len(records) >= 10
    lines = [line for r in records for line in r["raw_lines"]]
    for line in lines:
        assert vlog.parse_line(line), line
    # The flat file for other parsers (one verbatim line per line) holds these and the extra lines.
    extra = [item["line"] for item in vllm_data["extra_lines"]]
    assert (HERE / "data" / "vllm_startup_lines.txt").read_text().splitlines() == lines + extra


def test_vllm_lines_reproduce_the_recorded_figures(vllm_data: dict[str, Any]) -> None:
    for record in _vllm_records(vllm_data):
        parsed = vlog.parse_lines(record["raw_lines"])
        printed = {k: v for k, v in record["printed"].items() if v is not None}
        for key, value in printed.items():
            assert parsed.get(key) == value, (record["id"], key)


def test_vllm_parser_reads_lines_of_other_versions(vllm_data: dict[str, Any]) -> None:
    """Verbatim lines from other threads (vLLM 0.3 to 0.24 formats, negative KV, start-up errors)."""
    extra = vllm_data["extra_lines"]
    assert len(extra) >= 20
    for item in extra:
        parsed = vlog.parse_line(item["line"])
        assert parsed.keys() == item["figures"].keys(), item["line"]
        for key, value in item["figures"].items():
            assert parsed[key] == pytest.approx(value), (item["line"], key)
