"""One real `llmhost serve ollama:NAME --detach`: llama-server loads the Ollama blob in place and answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from llmhost.engines.llamacpp import find_llama_server

from .test_ollama import make_store, model_blob

pytestmark = [pytest.mark.engine, pytest.mark.llama_server]


KEY = "ollama-key-0123456789"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "LLMHOST_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "llmhost", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**full, "NO_COLOR": "1", "COLUMNS": "200", **env},
        check=False,
    )


def test_serve_an_ollama_model_in_place(tmp_path: Path, tiny_gguf: Path) -> None:
    if find_llama_server() is None:
        pytest.skip("native llama-server is not built: run `llmhost engines install llama-server`")
    root = tmp_path / "ollama-models"
    manifest = make_store(root, tiny_gguf)
    env = {"OLLAMA_MODELS": str(root), "LLMHOST_API_KEY": KEY}
    proc = _cli(
        "serve", "ollama:tiny", "--detach", "--name", "ollama-e2e", "--engine", "llama-server",
        "--context", "512", "--json", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stderr}\n{proc.stdout}"
    try:
        dep = json.loads(proc.stdout)
        argv = dep["launch"]["argv"]
        assert argv[argv.index("-m") + 1] == str(model_blob(manifest).resolve())  # the blob, not a copy
        reply = httpx.post(
            f"{dep['base_url']}/completions",
            json={"model": dep["served_model_name"], "prompt": "Hello", "max_tokens": 4},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] > 0
    finally:
        stopped = _cli("stop", "ollama-e2e", env=env)
    assert stopped.returncode == 0, stopped.stderr
