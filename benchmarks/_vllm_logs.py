"""Read the memory figures out of vLLM start-up lines, across the formats vLLM has printed since 0.5.

Formats (source files in vllm-project/vllm at the versions named):
  V0 model_runner.py      "Loading model weights took 14.9888 GB"           (GiB: divided by 2**30)
                          "Loading model weights took 244.61 MB"            (0.3.x, MiB)
  V1 gpu_model_runner.py  "Model loading took 14.9889 GiB and 3.65 seconds" / "... GiB memory and ..."
  V0 worker.py (0.6.5)    "model weights take   14.96GiB", "available_kv_cache_memory    53.29GiB"
  V0 worker.py (0.7/0.8)  "model weights take 30.71GiB; non_torch_memory takes 0.30GiB; PyTorch
                           activation peak memory takes 1.26GiB; the rest of the memory reserved for
                           KV Cache is 7.71GiB."
  V0 worker.py (0.6.4)    "Memory profiling results: total_gpu_memory=23.58GiB ... kv_cache_size=3.81GiB"
  V1 gpu_worker.py        "Available KV cache memory: 58.11 GiB", "... weights memory: 14.99GiB."
  kv_cache_utils.py       "GPU KV cache size: 476,016 tokens", "Maximum concurrency for 16,384 tokens
                           per request: 29.05x", "# GPU blocks: 1478" (V0, 16-token blocks)
  start-up errors         "...max seq len (262144), (62.00 GiB KV cache is needed, which is larger than
                           the available KV cache memory (48.66 GiB). ... maximum model length is 205728"
"""

from __future__ import annotations

import re
from typing import Any

BLOCK_TOKENS = 16
_NUM = r"(-?[\d.]+)"  # vLLM prints a negative KV figure when nothing is left
_INT = r"([\d,]+)"

# (pattern, figure name, converter); a line may yield several figures.
FIGURES: list[tuple[re.Pattern[str], str, Any]] = [
    (re.compile(r"Loading model weights took " + _NUM + " GB"), "weights_gib", float),
    (re.compile(r"Loading model weights took " + _NUM + " MB"), "weights_gib", "mib"),
    (re.compile(r"Model loading took " + _NUM + " Gi?B"), "weights_gib", float),
    (re.compile(r"model weights take\s+" + _NUM + r"\s?GiB"), "weights_gib", float),
    (re.compile(r"weights memory: " + _NUM + "GiB"), "weights_gib", float),
    (re.compile(r"non_torch_memory(?: takes|=|\s+)\s*" + _NUM + "GiB"), "non_torch_gib", float),
    (re.compile(r"non-torch forward increase memory: " + _NUM + "GiB"), "non_torch_gib", float),
    (
        re.compile(r"PyTorch activation peak memory(?: takes)?\s+" + _NUM + "GiB"),
        "activation_peak_gib",
        float,
    ),
    (re.compile(r"torch peak memory increase: " + _NUM + "GiB"), "activation_peak_gib", float),
    (re.compile(r"Available KV cache memory: " + _NUM + " GiB"), "available_kv_gib", float),
    (re.compile(r"available_kv_cache_memory\s+" + _NUM + "GiB"), "available_kv_gib", float),
    (re.compile(r"reserved for KV Cache is " + _NUM + "GiB"), "available_kv_gib", float),
    (re.compile(r"kv_cache_size=" + _NUM + "GiB"), "available_kv_gib", float),
    (re.compile(r"GPU KV cache size: " + _INT + " tokens"), "kv_tokens", "int"),
    (re.compile(r"(?:GPU|CUDA|cuda) blocks: (\d+)"), "kv_tokens", "blocks"),
    (
        re.compile(r"Maximum concurrency for [\d,]+ tokens per request: " + _NUM + "x"),
        "max_concurrency",
        float,
    ),
    (re.compile(r"Estimated CUDA graph memory: " + _NUM + " GiB"), "cuda_graph_estimate_gib", float),
    (re.compile(r"total_gpu_memory\s*[(=]?\s*" + _NUM + "GiB"), "total_gib", float),
    (re.compile(r"total_memory=" + _NUM + "GiB"), "total_gib", float),
    (re.compile(r"gpu_memory_utilization\s*[(=]?\s*" + _NUM), "gpu_memory_utilization", float),
    (re.compile(r"\(" + _NUM + " GiB KV cache is needed"), "kv_needed_gib", float),
    (
        re.compile(r"larger than the available KV cache memory \(" + _NUM + r" GiB\)"),
        "available_kv_gib",
        float,
    ),
    (re.compile(r"estimated maximum model length is (\d+)"), "estimated_max_model_len", "int"),
    (re.compile(r"can be stored in KV cache \((\d+)\)"), "kv_tokens", "int"),
    (re.compile(r"max_num_batched_tokens=(\d+)"), "max_num_batched_tokens", "int"),
    (re.compile(r"requested memory: " + _NUM + "GiB"), "requested_gib", float),
    (re.compile(r"Requested memory: [\d.]+ \(util\), " + _NUM + " GiB"), "requested_gib", float),
    (re.compile(r"can use\s+" + _NUM + "GiB"), "requested_gib", float),
    (re.compile(r"gpu_memory_utilization \([\d.]+\) = " + _NUM + "GiB"), "requested_gib", float),
    (re.compile(r"Free memory after profiling: " + _NUM + " GiB"), "free_after_profiling_gib", float),
    (re.compile(r"'max_model_len': (\d+)"), "max_model_len", "int"),
    (re.compile(r"Memory profiling takes " + _NUM + " seconds"), "profiling_seconds", float),
]


def _convert(raw: str, how: Any) -> Any:
    if how == "int":
        return int(raw.replace(",", ""))
    if how == "blocks":
        return int(raw) * BLOCK_TOKENS
    if how == "mib":  # vLLM 0.3's "MB" is MiB (divided by 2**20)
        return float(raw) / 1024
    return how(raw)


def parse_line(line: str) -> dict[str, Any]:
    """Every figure `line` states (empty when it states none)."""
    found: dict[str, Any] = {}
    for pattern, name, how in FIGURES:
        if name in found:
            continue
        if m := pattern.search(line):
            found[name] = _convert(m.group(1), how)
    return found


def parse_lines(lines: list[str]) -> dict[str, Any]:
    """The figures of a start-up log; a later line wins (the last rank to report)."""
    out: dict[str, Any] = {}
    for line in lines:
        out.update(parse_line(line))
    return out
