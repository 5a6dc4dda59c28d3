"""vLLM's start-up log read into a `StartupReport`: weights, KV pool and tokens, activation peak, CUDA
graphs, versions, timings, in every wording from V0 to 0.32 (newest first; the first pattern that
matches wins). Recorded wordings: benchmarks/data/vllm_startup_logs.json."""

from __future__ import annotations

import re

from llmhost.engines.base import StartupReport
from llmhost.engines.vllm_argv import GIB

# Start-up lines, newest wording first (vLLM 0.32 sources named; older V1 and V0 wordings after them,
# as quoted in public logs: benchmarks/data/vllm_startup_logs.json). The first pattern that matches wins.
_NUM = r"(?P<n>-?[\d.]+)"  # negative: V0 logged the shortfall ("reserved for KV Cache is -1.05GiB")
_WEIGHTS = [  # (pattern, unit): vLLM's "GB" is GiB (it divides by 2**30); "MB" is MiB
    (re.compile(rf"Model loading took {_NUM} ?(?P<unit>GiB|GB)"), GIB),  # v1/worker/gpu_model_runner.py
    (re.compile(rf"weights memory: {_NUM} ?GiB"), GIB),  # v1/worker/gpu_worker.py (debug summary)
    (re.compile(rf"model weights take\s+{_NUM} ?GiB"), GIB),  # V0 memory profiling summary
    (re.compile(rf"Loading model weights took {_NUM} ?GB"), GIB),  # V0
    (re.compile(rf"Loading model weights took {_NUM} ?MB"), 1024**2),  # early V0
]
_KV_BYTES = [
    re.compile(rf"Available KV cache memory: {_NUM} ?GiB"),  # v1/worker/gpu_worker.py
    re.compile(rf"(?:Explicitly|Auto) set \({_NUM}/[\d.]+\) GiB for KV cache"),  # v1/worker/cpu_worker.py
    re.compile(rf"available_kv_cache_memory\s+{_NUM} ?GiB"),  # V0 table
    re.compile(rf"reserved for KV Cache is {_NUM} ?GiB"),  # V0 summary
    re.compile(rf"kv_cache_size={_NUM} ?GiB"),  # V0 "Memory profiling results"
    re.compile(rf"larger than the available KV cache memory \({_NUM} GiB\)"),  # the start-up error
]
_KV_TOKENS = [
    re.compile(r"(?P<device>[A-Z]+)(?: \+ host)? KV cache size: (?P<n>[\d,]+) tokens"),  # kv_cache_utils.py
    re.compile(r"(?P<device>GPU|CUDA|cuda|CPU) blocks: (?P<blocks>\d+)"),  # older: blocks of 16 tokens
    re.compile(r"stored in KV cache \((?P<n>\d+)\)"),  # V0 start-up error
]
OLD_BLOCK_TOKENS = 16
_CONCURRENCY = re.compile(r"Maximum concurrency for (?P<len>[\d,]+) tokens per request: (?P<x>[\d.]+)x")
_ACTIVATION = [
    re.compile(rf"activation peak memory(?: takes)?\s+{_NUM} ?GiB"),
    re.compile(rf"torch peak memory increase: {_NUM} ?GiB"),
]
_GRAPHS = [
    re.compile(
        rf"Graph capturing finished in [\d.]+ secs?, took {_NUM} GiB"
    ),  # v1/worker/gpu_model_runner.py
    re.compile(rf"Estimated CUDA graph memory: {_NUM} ?GiB"),
]
_VERSION = re.compile(r"(?:version|vLLM engine \(v)\s*(?P<v>\d+\.\d+\.\d+[\w.+-]*)")
_ENGINE_INIT = re.compile(r"init engine \(profile, create kv cache, warmup model\) took (?P<s>[\d.]+) ?s")
_LOADING_S = re.compile(r"Model loading took [\d.]+ ?(?:GiB|GB)(?: memory)? and (?P<s>[\d.]+) ?s")
_CPU_KV = re.compile(r"(?P<how>Explicitly|Auto) set \([\d.]+/(?P<total>[\d.]+)\) GiB for KV cache")


def _first(patterns: list[re.Pattern[str]], text: str) -> re.Match[str] | None:
    for pattern in patterns:
        if m := pattern.search(text):
            return m
    return None


def parse_startup(log_text: str) -> StartupReport:
    """Figures vLLM prints while starting: KV tokens, concurrency, weights, KV and graph memory.

    With tensor parallelism every rank logs its own figures; the first one (rank 0) is kept, so byte
    figures are per device.
    """
    raw: dict[str, str] = {}
    report = StartupReport()
    for pattern, unit in _WEIGHTS:
        if m := pattern.search(log_text):
            report.weights_bytes = round(float(m["n"]) * unit)
            break
    if m := _first(_KV_BYTES, log_text):
        report.kv_cache_bytes = round(float(m["n"]) * GIB)
    if m := _first(_KV_TOKENS, log_text):
        if "blocks" in m.groupdict() and m["blocks"] is not None:
            report.kv_cache_tokens = int(m["blocks"]) * OLD_BLOCK_TOKENS
            raw["gpu_blocks"] = m["blocks"]
        else:
            report.kv_cache_tokens = int(m["n"].replace(",", ""))
        if m.groupdict().get("device"):
            raw["kv_cache_device"] = m["device"].upper()
    if m := _CONCURRENCY.search(log_text):
        report.max_concurrency = float(m["x"])
        raw["max_model_len"] = m["len"].replace(",", "")
    activation, graphs = _first(_ACTIVATION, log_text), _first(_GRAPHS, log_text)
    if activation or graphs:
        report.compute_bytes = sum(round(float(m["n"]) * GIB) for m in (activation, graphs) if m)
        if graphs:
            raw["cuda_graphs_gib"] = graphs["n"]
    if m := _CPU_KV.search(log_text):
        raw["cpu_kv_cache"] = m["how"].lower()
        raw["node_memory_gib"] = m["total"]
    if m := _LOADING_S.search(log_text):
        raw["model_loading_s"] = m["s"]
    if m := _VERSION.search(log_text):
        raw["vllm_version"] = m["v"]
    if m := _ENGINE_INIT.search(log_text):
        raw["engine_init_s"] = m["s"]
    report.raw = raw
    return report


# Failure signatures, most specific first. Each is (cause, regex) over the last lines of the log.
