"""The vLLM KV layout against a recorded real vLLM 0.32 CPU start (tests/vllm/logs/cpu_startup_ok.log).

That start served `llmhost.tiny_hf`'s checkpoint with VLLM_CPU_KVCACHE_SPACE=1 and printed
"CPU KV cache size: 1,048,576 tokens": 1 GiB divided by what one token takes in its cache.
"""

from __future__ import annotations

import re
from pathlib import Path

from llmhost.estimate import VllmSettings, kv_bytes_per_token, vllm_cpu_memory, weights_layout
from llmhost.models import resolve
from llmhost.tiny_hf import tiny_llama_checkpoint

LOG = Path(__file__).resolve().parents[1] / "vllm" / "logs" / "cpu_startup_ok.log"
GiB = 1024**3


def test_kv_tokens_match_the_recorded_vllm_cpu_start() -> None:
    text = LOG.read_text()
    space = re.search(r"Explicitly set \((?P<gib>[\d.]+)/[\d.]+\) GiB for KV cache", text)
    tokens = re.search(r"CPU KV cache size: (?P<n>[\d,]+) tokens", text)
    assert space and tokens
    spec = resolve(str(tiny_llama_checkpoint()))
    per_token = kv_bytes_per_token(spec, "bf16", engine="vllm")
    pool = int(float(space["gib"]) * GiB)
    assert pool // per_token == int(tokens["n"].replace(",", ""))
    # The planner's CPU model puts exactly that pool in RAM and one 1024-token request in it.
    settings = VllmSettings(gpu_memory_utilization=1.0, max_num_seqs=4, max_num_batched_tokens=4096)
    mem = vllm_cpu_memory(spec, weights_layout(spec, "bf16"), settings, pool)
    assert mem.kv_cache_bytes == pool and mem.request_bytes(1024) == 1024 * per_token
