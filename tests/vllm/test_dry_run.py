"""`llmhost serve <hf-repo> --engine vllm --dry-run --hardware h100-80gb:2` prints a tensor-parallel command.

The repo is Llama-3.1-70B-Instruct's real config.json and tensor table served by the resolve tests' fake
Hub (a real HTTP server; safetensors headers only, the 141 GB of weights are virtual zeros). The CLI
runs as a subprocess, as a user would run it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.hubserver import FakeHub
from support.model_makers import hub_safetensors_repo

TESTS = Path(__file__).resolve().parents[1]

REPO = "meta-llama/Llama-3.1-70B-Instruct"


@pytest.fixture(scope="module")
def hub_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    config = json.loads(
        (TESTS / "fixtures" / "configs" / "meta-llama--Llama-3.1-70B-Instruct.json").read_text()
    )
    hub = FakeHub().start()
    hub.add_repo(REPO, hub_safetensors_repo(config, shards=30, total_size=False))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "VLLM_PORT")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path_factory.mktemp("hf_home")))
    try:
        yield env
    finally:
        hub.stop()


def _serve_dry_run(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "llmhost", "serve", REPO, "--engine", "vllm", "--dry-run"]
    argv += ["--hardware", "h100-80gb:2", *extra]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def _flag(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {shlex.join(argv)}"
    return argv[argv.index(name) + 1]


def test_70b_on_two_h100s_prints_a_tensor_parallel_command(hub_env: dict[str, str]) -> None:
    # vLLM 0.19 counts its CUDA graphs outside the KV budget, so bf16 at TP 2 keeps a KV cache; from 0.20
    # (the newest modelled is the default) the graphs come out of it first and fp8 is chosen instead.
    done = _serve_dry_run(hub_env, "--json", "--vllm-version", "0.19.0")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    argv = shlex.split(data["command"])
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert _flag(argv, "--model") == REPO
    assert _flag(argv, "--tensor-parallel-size") == "2"  # 141 GB of bf16 weights need both GPUs
    assert _flag(argv, "--dtype") == "bfloat16"
    utilization = float(_flag(argv, "--gpu-memory-utilization"))
    assert 0.5 < utilization <= 0.95
    context = int(_flag(argv, "--max-model-len"))
    # The KV cache left beside 70.5 GB of weights per GPU holds tens of thousands of tokens, not 128k.
    assert 4096 <= context < 131072 and context == data["candidate"]["context_length"]
    assert int(_flag(argv, "--max-num-seqs")) >= 1
    assert "--quantization" not in argv and "--api-key" not in argv and "--trust-remote-code" not in argv
    # A GPU plan never gets the CPU build's KV space, and its internal ports are its own.
    assert "VLLM_CPU_KVCACHE_SPACE" not in data["env"] and "VLLM_PORT" in data["env"]
    assert data["candidate"]["per_device"][0]["device"] == "cuda:0"


def test_human_dry_run_prints_the_command_and_starts_nothing(hub_env: dict[str, str]) -> None:
    done = _serve_dry_run(hub_env, "--name", "dry70b")
    assert done.returncode == 0, done.stderr
    assert "--tensor-parallel-size 2" in done.stdout
    assert "vllm.entrypoints.openai.api_server" in done.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "llmhost", "ps", "--json"],
        env=hub_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0 and "dry70b" not in listed.stdout
