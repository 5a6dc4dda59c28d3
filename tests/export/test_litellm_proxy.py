"""The real LiteLLM proxy, on the config `llmhost export litellm` writes, in front of a real llama-server
deployment: a chat completes through it with the `openai` client, the key read from the environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmhost.cache import cache_dir
from llmhost.engines.llamacpp import find_llama_server
from llmhost.supervise.process import next_free_port
from support.ci import IN_CI

# LiteLLM's proxy pins versions of rich, huggingface_hub... that llmhost's own environment must not
# take: it lives in a virtualenv of its own (`LLMHOST_LITELLM`, or the cache dir's tools/litellm).
LITELLM_VENV = cache_dir() / "tools" / "litellm"
INSTALL = "make test-tools"


def _litellm() -> str | None:
    found = os.environ.get("LLMHOST_LITELLM") or str(LITELLM_VENV / "bin" / "litellm")
    return found if Path(found).is_file() else shutil.which("litellm")


pytestmark = [
    pytest.mark.engine,
    pytest.mark.llama_server,
    pytest.mark.slow,
    pytest.mark.skipif(find_llama_server() is None, reason="needs llama-server (`make llama-server`)"),
    # In CI the proxy must be there (`make test-tools`): a missing one fails below instead of skipping.
    pytest.mark.skipif(
        _litellm() is None and not IN_CI, reason=f"LiteLLM's proxy is not installed: {INSTALL}"
    ),
]

KEY = "llmhost-test-key-0123456789"
MASTER = "sk-litellm-master-test"


def _llmhost(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmhost", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )


@pytest.fixture
def deployment(tiny_gguf: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = {**os.environ, "LLMHOST_API_KEY": KEY, "NO_COLOR": "1"}
    name = "lite-upstream"
    # The key reaches serve through LLMHOST_API_KEY, as a user would pass it.
    done = _llmhost("serve", str(tiny_gguf), "--detach", "--name", name, "--engine", "llama-server",
                    "--json", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    try:
        yield name, env
    finally:
        _llmhost("stop", name, env=env)


def test_chat_through_the_real_litellm_proxy(deployment: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    from openai import OpenAI

    name, env = deployment
    done = _llmhost("export", "litellm", name, "--auth", "-o", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "litellm.yaml"
    assert KEY not in config.read_text() and "os.environ/LLMHOST_API_KEY" in config.read_text()
    port = next_free_port("127.0.0.1")
    litellm = _litellm()
    assert litellm is not None, f"CI needs LiteLLM's proxy: `make test-tools` ({INSTALL})"
    log = (tmp_path / "litellm.log").open("w")
    proxy = subprocess.Popen(
        [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        # The proxy resolves os.environ/LLMHOST_API_KEY from here; clients use its own master key.
        env={**env, "LITELLM_MASTER_KEY": MASTER, "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proxy.poll() is None, (tmp_path / "litellm.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("LiteLLM proxy did not come up: " + (tmp_path / "litellm.log").read_text()[-3000:])
        served = json.loads(_llmhost("ps", "--json", env=env).stdout)[0]["served_model_name"]
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=MASTER)
        reply = client.chat.completions.create(
            model=served, messages=[{"role": "user", "content": "Hello"}], max_tokens=8
        )
        assert reply.choices[0].message.content is not None
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        # The proxy really forwarded with the deployment's key: a wrong key upstream is refused there.
        direct = httpx.post(
            json.loads(_llmhost("ps", "--json", env=env).stdout)[0]["base_url"] + "/chat/completions",
            json={"model": served, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
            headers={"Authorization": "Bearer wrong-key-000"},
            timeout=30,
        )
        assert direct.status_code == 401
    finally:
        os.killpg(proxy.pid, 15)
        proxy.wait(timeout=30)
        log.close()
