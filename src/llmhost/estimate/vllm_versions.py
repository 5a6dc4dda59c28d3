"""Which vLLM release does what with memory: version ranges and the scheduler defaults per GPU.

Read from vLLM's own source, release by release (docs/vllm-memory-by-version.md, with the file and line
of every rule). Pure: a version string and a GPU's total memory and name in, a range or numbers out.

Ranges the estimator models (`accounting`):
- ``v0``: the V0 engine (default before 0.8; `VLLM_USE_V1=0` up to 0.10). The profile run covers a
  batch of `max_num_batched_tokens` = `max(max_model_len, 2048)` tokens unless chunked prefill is on
  (auto when `max_model_len > 32768`); CUDA graphs are captured after the pool; no free-memory check.
- ``v1-early``: V1 from 0.6.6 (opt-in) to 0.11.x. Same budget arithmetic as later V1 but measured
  larger activation peaks at large token budgets, and a smaller tensor-parallel non-torch footprint.
- ``v1``: V1 0.12 to 0.19: `available = total x util - (weights + torch peak + non-torch increase)`;
  the CUDA-graph estimate is printed but not subtracted (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0).
- ``v1-graphs``: V1 from 0.20: the CUDA-graph estimate is subtracted before the KV budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from llmhost.errors import UsageError

Accounting = Literal["v0", "v1-early", "v1", "v1-graphs"]
EngineGeneration = Literal["v0", "v1"]

# The newest vLLM release whose memory accounting was read (docs/vllm-memory-by-version.md).
NEWEST_MODELLED = "0.34.0"
OLDEST_MODELLED = "0.5.5"

GiB = 1024**3
_LARGE_GPU_BYTES = 70 * GiB
_HUGE_GPU_BYTES = 160 * GiB


@dataclass(frozen=True, order=True)
class VllmVersion:
    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


_VERSION_RE = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> VllmVersion:
    """`0.10.1.1`, `v0.19.0`, `0.6.5.dev123+g...`, `0.11.0rc1` -> VllmVersion (major, minor, patch)."""
    match = _VERSION_RE.match(text)
    if not match:
        raise UsageError(
            f"Cannot read the vLLM version {text!r}.", hint="Give it as X.Y.Z, e.g. --vllm-version 0.19.0."
        )
    return VllmVersion(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def default_generation(version: VllmVersion) -> EngineGeneration:
    """The engine a release runs without VLLM_USE_V1: V1 is the default from 0.8.0."""
    return "v1" if version >= VllmVersion(0, 8, 0) else "v0"


def accounting(version: VllmVersion, generation: EngineGeneration | None = None) -> Accounting:
    engine = generation or default_generation(version)
    if engine == "v0":
        return "v0"
    if version < VllmVersion(0, 12, 0):
        return "v1-early"
    if version < VllmVersion(0, 20, 0):
        return "v1"
    return "v1-graphs"


def v0_chunked_prefill(max_model_len: int) -> bool:
    """V0 switches chunked prefill on by itself when max_model_len > 32768 (v0.8.5.post1
    engine/arg_utils.py:1505-1526)."""
    return max_model_len > 32768


@dataclass(frozen=True)
class SchedulerDefaults:
    max_num_seqs: int
    max_num_batched_tokens: int
    rule: str  # which of vLLM's rules gave them, for the plan's reasons and the docs


def scheduler_defaults(
    version: VllmVersion,
    total_memory_bytes: int,
    gpu_name: str,
    max_model_len: int,
    generation: EngineGeneration | None = None,
) -> SchedulerDefaults:
    """`max_num_seqs` / `max_num_batched_tokens` vLLM's OpenAI server picks when neither is given.

    The rules by release (docs/vllm-memory-by-version.md section 2, engine/arg_utils.py):
    V0: 256 sequences; `max(max_model_len, 2048)` tokens, or with chunked prefill 512 (<= 0.6.3) /
    2048. V1 0.6.x: 2048 / 1024. V1 0.7: 8192 / 1024 on H100 and H200, else 2048 / 1024. V1 0.8:
    8192 / 1024 from 70 GiB, else 2048 / 256. V1 0.9-0.27: 8192 / 1024 from 70 GiB except A100, else
    2048 / 256. V1 0.28+: 16384 / 1024 from 160 GiB, 8192 / 1024 from 70 GiB except A100, else
    2048 / 256. From 0.11 `max_num_seqs` is capped at `max_num_batched_tokens`.
    """
    name = gpu_name.lower()
    engine = generation or default_generation(version)
    if engine == "v0":
        if not v0_chunked_prefill(max_model_len):
            return SchedulerDefaults(256, max(max_model_len, 2048), "V0 without chunked prefill")
        tokens = 512 if version < VllmVersion(0, 6, 4) else 2048
        return SchedulerDefaults(256, tokens, "V0 with chunked prefill (max_model_len > 32768)")
    large = total_memory_bytes >= _LARGE_GPU_BYTES
    if version < VllmVersion(0, 7, 0):
        seqs, tokens, rule = 1024, 2048, "V1 0.6"
    elif version < VllmVersion(0, 8, 0):
        big = "h100" in name or "h200" in name
        seqs, tokens, rule = 1024, 8192 if big else 2048, "V1 0.7: H100/H200" if big else "V1 0.7: other GPUs"
    elif version < VllmVersion(0, 9, 0):
        seqs, tokens = (1024, 8192) if large else (256, 2048)
        rule = "V1 0.8: >= 70 GiB" if large else "V1 0.8: < 70 GiB"
    else:
        fast = large and "a100" not in name
        if version >= VllmVersion(0, 28, 0) and total_memory_bytes >= _HUGE_GPU_BYTES:
            seqs, tokens, rule = 1024, 16384, "V1 0.28+: >= 160 GiB"
        elif fast:
            seqs, tokens, rule = 1024, 8192, ">= 70 GiB, not A100"
        else:
            seqs, tokens, rule = 256, 2048, "< 70 GiB or A100"
    if version >= VllmVersion(0, 11, 0):
        seqs = min(seqs, tokens)
    return SchedulerDefaults(seqs, tokens, rule)
