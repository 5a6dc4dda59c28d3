"""Start-up figures and failure causes read from real vLLM logs.

`logs/cpu_*.log` were recorded from vLLM 0.32.0's CPU build on this kind of machine (the tiny checkpoint
from `llmhost.tiny_hf`; request routes trimmed, home paths shortened). `logs/gpu_*.log` are lines quoted
from public GPU logs (sources in logs/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmhost.engines.base import StartupReport
from llmhost.engines.vllm import ENGINE, GIB, RunSettings, classify_failure, parse_startup, suggest_fix

LOGS = Path(__file__).parent / "logs"
GPU_V1_LMCACHE = (LOGS / "gpu_v1_lmcache_1739.log").read_text()
GPU_V1_TP2 = (LOGS / "gpu_v1_tp2_snakemake_316.log").read_text()
GPU_V0_TOO_SMALL = (LOGS / "gpu_v0_kv_too_small_vllm_10517.log").read_text()


def test_cpu_startup_figures() -> None:
    report = parse_startup((LOGS / "cpu_startup_ok.log").read_text())
    assert report.kv_cache_tokens == 1_048_576
    assert report.max_concurrency == pytest.approx(1024.0)
    assert report.raw["max_model_len"] == "1024"
    assert report.raw["kv_cache_device"] == "CPU"
    # "Explicitly set (1.0/12.09) GiB for KV cache": VLLM_CPU_KVCACHE_SPACE=1
    assert report.kv_cache_bytes == GIB
    assert report.raw["cpu_kv_cache"] == "explicitly"
    assert report.raw["vllm_version"] == "0.32.0"
    assert float(report.raw["engine_init_s"]) > 1
    assert report.weights_bytes is None  # the CPU build does not log weight memory


def test_gpu_v1_figures() -> None:
    report = ENGINE.parse_startup(GPU_V1_LMCACHE)
    assert report.kv_cache_tokens == 42_656
    assert report.max_concurrency == pytest.approx(1.30)
    assert report.kv_cache_bytes == round(6.51 * GIB)
    assert report.raw["kv_cache_device"] == "GPU"


def test_gpu_tensor_parallel_weights_are_per_rank() -> None:
    report = parse_startup(GPU_V1_TP2)
    assert report.weights_bytes == round(11.4384 * GIB)
    assert report.raw["model_loading_s"] == "5.338305"  # rank 0's line


def test_gpu_v0_figures() -> None:
    report = parse_startup(GPU_V0_TOO_SMALL)
    assert report.weights_bytes == round(14.9888 * GIB)
    assert report.kv_cache_bytes == round(2.89 * GIB)
    assert report.kv_cache_tokens == 1478 * 16
    assert report.max_concurrency == pytest.approx(0.82)


def test_empty_log_reports_nothing() -> None:
    report = parse_startup("INFO starting\n")
    assert report.kv_cache_tokens is None and report.weights_bytes is None and report.max_concurrency is None


@pytest.mark.parametrize(
    ("log", "cause"),
    [
        ("cpu_port_in_use.log", "port_in_use"),
        ("cpu_model_invalid.log", "model_invalid"),
        ("cpu_bad_argument.log", "bad_argument"),
        ("cpu_kv_cache_too_small.log", "kv_cache_too_small"),
    ],
)
def test_real_cpu_failures_are_classified(log: str, cause: str) -> None:
    assert ENGINE.classify_failure((LOGS / log).read_text()) == cause


def test_healthy_log_is_not_a_failure() -> None:
    assert classify_failure((LOGS / "cpu_startup_ok.log").read_text()) is None


def test_v0_kv_message_is_classified_and_answered_with_a_context(make_gpu_candidate) -> None:
    cause = classify_failure(GPU_V0_TOO_SMALL)
    assert cause == "kv_cache_too_small"
    fix = suggest_fix(cause, make_gpu_candidate(context_length=29000), GPU_V0_TOO_SMALL)
    assert fix is not None and "--context 23552" in fix  # 23,648 tokens rounded down to 256


def test_real_kv_too_small_is_answered_with_vllms_estimate(make_cpu_candidate) -> None:
    tail = (LOGS / "cpu_kv_cache_too_small.log").read_text()
    fix = suggest_fix("kv_cache_too_small", make_cpu_candidate("/m", context_length=2048), tail)
    assert fix is not None and "--context 256" in fix  # vLLM estimated 384 tokens for 400,000 bytes


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.", "out_of_memory"),
        (
            "ValueError: Free memory on device cuda:0 (20.1/79.19 GiB) on startup is less than desired GPU "
            "memory utilization (0.9, 71.27 GiB). Decrease GPU memory utilization or reduce GPU memory used "
            "by other processes.",
            "out_of_memory",
        ),
        (
            "ImportError: libcudart.so.12: cannot open shared object file: No such file or directory",
            "missing_library",
        ),
        (
            "ValueError: Total number of attention heads (40) must be divisible by tensor parallel size (3).",
            "bad_argument",
        ),
    ],
)
def test_vllm_032_messages(line: str, cause: str) -> None:
    # As vLLM 0.32 formats them (vllm/v1/worker/utils.py, config/parallel.py) or as torch raises them.
    assert classify_failure(line) == cause


def test_other_processes_holding_memory_get_a_lower_share(make_gpu_candidate) -> None:
    tail = (
        "ValueError: Free memory on device cuda:0 (20.1/79.19 GiB) on startup is less than desired GPU "
        "memory utilization (0.9, 71.27 GiB)."
    )
    fix = suggest_fix("out_of_memory", make_gpu_candidate(), tail)
    assert fix is not None and "--gpu-memory-utilization 0.2" in fix and "TOTAL" in fix


def test_generic_oom_names_smaller_settings(make_gpu_candidate) -> None:
    fix = suggest_fix("out_of_memory", make_gpu_candidate(), "torch.OutOfMemoryError: CUDA out of memory.")
    assert fix is not None and "--concurrency 4" in fix and "tensor parallel 4" in fix


def test_supervisor_hook_reads_settings_back_from_the_launch_spec(make_cpu_candidate) -> None:
    from llmhost.engines.base import ServeOptions

    candidate = make_cpu_candidate("/m", context_length=2048)
    launch = ENGINE.build_launch(candidate, ServeOptions(name="d", served_model_name="tiny", port=8300))
    planned = StartupReport(kv_cache_bytes=2048 * 4 * 1024, kv_cache_tokens=2048 * 4)
    run = RunSettings.of_launch(launch, planned)
    assert (run.context_length, run.max_num_seqs, run.kv_bytes_per_token) == (2048, 4, 1024)
    tail = (LOGS / "cpu_kv_cache_too_small.log").read_text()
    fix = ENGINE.suggest_fix("kv_cache_too_small", tail, launch, planned)
    assert fix is not None and "--context 256" in fix


def test_trust_remote_code_hint() -> None:
    tail = (
        "ValueError: Loading foo requires you to execute the configuration file in that repo on your machine."
    )
    assert classify_failure(tail) == "bad_argument"
    run = RunSettings(context_length=4096, max_num_seqs=1, tensor_parallel_size=1, kv_bytes_per_token=0)
    fix = suggest_fix("bad_argument", run, tail)
    assert fix is not None and "--trust-remote-code" in fix


# Public start-up logs collected for the estimator's accuracy work (records' raw_lines are verbatim).
PUBLIC = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "vllm_startup_logs.json"
FIELDS = {
    "weights_gib": ("weights_bytes", GIB),
    "available_kv_gib": ("kv_cache_bytes", GIB),
    "kv_tokens": ("kv_cache_tokens", 1),
    "max_concurrency": ("max_concurrency", 1),
}


def _public_cases() -> list[tuple[str, str, str, float]]:
    data = json.loads(PUBLIC.read_text())
    cases = []
    for record in data["records"]:
        text = "\n".join(record.get("raw_lines") or [])
        for key, want in record["printed"].items():
            if key in FIELDS and want is not None and text:
                cases.append((record["id"], text, key, float(want)))
    for i, extra in enumerate(data["extra_lines"]):
        for key, want in extra["figures"].items():
            if key in FIELDS and want is not None:
                cases.append((f"extra-{i}", extra["line"], key, float(want)))
    return cases


def test_public_startup_logs_parse_to_the_printed_figures() -> None:
    cases = _public_cases()
    assert len(cases) >= 30
    wrong = []
    for case_id, text, key, want in cases:
        field, unit = FIELDS[key]
        got = getattr(parse_startup(text), field)
        if got is None or abs(got / unit - want) > 1e-3 * max(1.0, abs(want)):
            wrong.append((case_id, key, want, None if got is None else got / unit))
    assert wrong == []
