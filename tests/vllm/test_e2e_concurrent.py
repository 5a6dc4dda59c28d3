"""Two real vLLM deployments started at the same time on one machine both come up and serve.

The shell exports `VLLM_PORT` (as a Kubernetes service named `vllm` does), which would make both
instances scan the same internal port range at the same moment. llmhost drops the inherited value and
gives each deployment its own. A profile shrinks the CPU KV pool to 1 GiB each (its `env` wins over
the plan), which also shows the planned-versus-actual difference it causes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from llmhost.engines import vllm_env
from llmhost.supervise.process import next_free_port
from llmhost.tiny_hf import tiny_llama_checkpoint
from support.ci import IN_CI

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROFILE = """\
description: tiny vLLM CPU deployment with a 1 GiB KV pool
engine: vllm
context: 1024
concurrency: 2
env:
  VLLM_CPU_KVCACHE_SPACE: "1"
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["VLLM_PORT"] = "40000"  # inherited from the shell: must not reach either engine
    env.pop("LLMHOST_API_KEY", None)
    return env


def _llmhost(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmhost", *args], env=_env(), capture_output=True, text=True, timeout=timeout
    )


def test_two_deployments_start_side_by_side(tmp_path: Path) -> None:
    if vllm_env.find_runtime(device="cpu") is None:
        message = "vLLM CPU engine env missing: run `make vllm-engine` (llmhost engines install vllm)."
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    profile = tmp_path / "small.yaml"
    profile.write_text(PROFILE)
    model = str(tiny_llama_checkpoint())
    first = next_free_port("127.0.0.1", start=18700)
    ports = [first, next_free_port("127.0.0.1", start=first + 1)]
    names = ["vllm-side-a", "vllm-side-b"]

    def serve(name: str, port: int) -> subprocess.Popen[str]:
        argv = ["serve", model, "--profile", str(profile), "--detach", "--name", name, "--port", str(port)]
        return subprocess.Popen(
            [sys.executable, "-m", "llmhost", *argv],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    launches = [serve(name, port) for name, port in zip(names, ports, strict=True)]
    try:
        for launch in launches:
            out, err = launch.communicate(timeout=900)
            assert launch.returncode == 0, f"{out}\n{err}"
        listed = {d["name"]: d for d in json.loads(_llmhost("ps", "--json").stdout)}
        internal = {listed[n]["launch"]["env"]["VLLM_PORT"] for n in names}
        assert len(internal) == 2 and "40000" not in internal
        for name in names:
            dep = listed[name]
            assert dep["state"] == "ready"
            engine = psutil.Process(dep["engine_pid"])
            assert engine.environ()["VLLM_PORT"] == dep["launch"]["env"]["VLLM_PORT"]
            reply = httpx.post(
                f"{dep['base_url']}/completions",
                json={"model": dep["served_model_name"], "prompt": "hi", "max_tokens": 2},
                timeout=120,
            )
            assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 2
            # The profile's 1 GiB pool, not the plan's: planned and actual differ, and ps shows both.
            assert dep["actual"]["kv_cache_bytes"] == 1024**3
    finally:
        for launch in launches:
            if launch.poll() is None:
                launch.kill()
        stopped = [_llmhost("stop", name, timeout=180) for name in names]
    assert all(s.returncode == 0 for s in stopped), [s.stderr for s in stopped]
    # Nothing that serves this model on these ports (other test sessions may serve the same tiny model).
    left = [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if model in " ".join(p.info["cmdline"] or [])
        and any(f"--port {port}" in " ".join(p.info["cmdline"] or []) for port in ports)
        and p.info["status"] != psutil.STATUS_ZOMBIE
    ]
    assert left == []
