"""A real vLLM start that fails is classified and answered with settings that would work, not re-raised.

A profile asks vLLM's CPU build for a 2,000,000-token context (`--max-model-len`, allowed past the
model's 2,048 positions by `VLLM_ALLOW_LONG_MAX_MODEL_LEN`) with a 1 GiB KV pool, which holds about
1,048,576 tokens of the tiny model. vLLM refuses at start-up ("… KV cache is needed, which is larger than
the available KV cache memory … the estimated maximum model length is N"); `llmhost serve --detach` must
exit with the engine-failure code, name the cause, and say which `--context` fits, and leave nothing
running.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from llmhost.engines import vllm_env
from llmhost.errors import ExitCode
from llmhost.supervise.process import next_free_port
from llmhost.tiny_hf import tiny_llama_checkpoint
from support.ci import IN_CI

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROFILE = """\
description: a KV pool far too small for the context (provokes vLLM's start-up check)
engine: vllm
context: 2048
env:
  VLLM_CPU_KVCACHE_SPACE: "1"
  VLLM_ALLOW_LONG_MAX_MODEL_LEN: "1"
extra_args: ["--max-model-len", "2000000"]
"""


def test_kv_cache_too_small_is_classified_and_answered(tmp_path: Path) -> None:
    if vllm_env.find_runtime(device="cpu") is None:
        message = "vLLM CPU engine env missing: run `make vllm-engine` (llmhost engines install vllm)."
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    profile = tmp_path / "too-small.yaml"
    profile.write_text(PROFILE)
    model = str(tiny_llama_checkpoint())
    port = next_free_port("127.0.0.1", start=18800)
    argv = ["serve", model, "--profile", str(profile), "--detach", "--name", "vllm-too-small"]
    done = subprocess.run(
        [sys.executable, "-m", "llmhost", *argv, "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "250"},  # one message line per line, however the terminal wraps
    )
    assert done.returncode == ExitCode.ENGINE_FAILED, done.stdout + done.stderr
    message = done.stderr
    assert "tokens of KV cache" in message, message  # the kv_cache_too_small answer, not a bare traceback
    # vLLM's own estimate of what fits (about 1,048,576 tokens), as an llmhost flag rounded to 256.
    fix = re.search(r"--context (\d+)", message)
    assert fix is not None, message
    assert 1_000_000 <= int(fix.group(1)) <= 1_048_576 and int(fix.group(1)) % 256 == 0
    supervisor_log = subprocess.run(
        [sys.executable, "-m", "llmhost", "logs", "vllm-too-small", "--supervisor"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "restarting" not in supervisor_log  # the same flags would fail again: no restart loop
    # Nothing that serves this model on this port (other test sessions may serve the same tiny model).
    left = [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if model in " ".join(p.info["cmdline"] or [])
        and f"--port {port}" in " ".join(p.info["cmdline"] or [])
        and p.info["status"] != psutil.STATUS_ZOMBIE
    ]
    assert left == []
