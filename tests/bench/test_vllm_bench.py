"""Bench the real vLLM (CPU build) serving the tiny llama checkpoint, by deployment name.

`llmhost serve --engine vllm --detach` starts it (about two minutes on 2 cores), `llmhost bench NAME`
finds URL, served name, API key variable and `--max-num-seqs` in the deployment state. vLLM streams
`usage`, so every request's token count must equal the requested length, and the client's figures
must agree with vLLM's own `/metrics` (TTFT not below vLLM's, TPOT within 10%, tokens equal).

Needs `make vllm-engine`; skipped without it on a developer machine, failed in CI (`CI=true`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from llmhost.bench.models import BenchResult
from support.ci import IN_CI

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

NAME = "bench-vllm-e2e"
KEY = "bench-e2e-key-not-secret"


def llmhost(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMHOST_API_KEY": KEY}
    return subprocess.run(
        [sys.executable, "-m", "llmhost", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def deployment() -> Iterator[str]:
    from llmhost.engines import vllm_env
    from llmhost.tiny_hf import tiny_llama_checkpoint

    if vllm_env.find_runtime(device="cpu") is None:
        message = "vLLM CPU engine env missing: run `make vllm-engine`."
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    done = llmhost(
        "serve", str(tiny_llama_checkpoint()), "--engine", "vllm", "--detach", "--name", NAME,
        "--context", "1024", "--concurrency", "4", timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, f"serve failed:\n{done.stdout}\n{done.stderr}"
    try:
        yield NAME
    finally:
        llmhost("stop", NAME, timeout=180)


# Timing agreement is a claim about a quiet machine. On CI's 2 cores a neighbour can starve vLLM's API
# process (not the client, so no client_bound flag) and its stream arrives late: the flag is then right
# and the run proves nothing. A real client bug (a wrong clock, TTFT folded into TPOT, a token miscount)
# disagrees on every run, so the timing claim must hold on one of TIMING_ATTEMPTS runs; every other
# assertion must hold on each of them.
TIMING_ATTEMPTS = 3


def bench_once(deployment: str) -> set[str]:
    done = llmhost(
        "bench", deployment, "-c", "4", "-n", "16", "--input-tokens", "32", "--output-tokens", "24",
        "--api", "completions", "--json", timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert KEY not in done.stdout and KEY not in done.stderr
    result = BenchResult.model_validate_json(done.stdout)
    s = result.summary
    assert s.completed == 16 and s.failed == 0
    assert all(r.output_tokens_source == "usage" and r.output_tokens == 24 for r in result.requests)
    assert s.output_tokens == 16 * 24
    assert result.target.engine == "vllm" and result.target.api_key_used
    assert result.target.server_slots == 4  # from the deployment's --max-num-seqs
    codes = {f.code for f in result.flags}
    distrust = {"length_not_honoured", "server_disagrees_ttft", "server_token_count_mismatch"}
    assert not codes & distrust
    t = result.telemetry
    assert t is not None and t.metrics_available
    generated = t.after["vllm:generation_tokens_total"] - t.before["vllm:generation_tokens_total"]
    assert generated == 16 * 24
    return codes


def test_bench_vllm_by_name_agrees_with_vllm(deployment: str) -> None:
    seen: list[set[str]] = []
    for _ in range(TIMING_ATTEMPTS):
        codes = bench_once(deployment)
        seen.append(codes)
        # A starved client says so (client_bound) and its timings are not claimed; otherwise the stream
        # must look unbuffered and agree with vLLM's own TPOT.
        if "client_bound" in codes or not codes & {"server_disagrees_tpot", "buffered_stream"}:
            return
    pytest.fail(f"every run disagreed with vLLM's timing: {seen}")
