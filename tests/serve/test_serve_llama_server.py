"""The same key paths against the native `llama-server` built by `make llama-server`
(`llmhost engines install llama-server`): skipped, with the reason, only when the binary is not built."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from support.machine import native_llama_server_marks
from support.serve_helpers import alive, deployment, group_alive, llmhost, serve_detached

openai = pytest.importorskip("openai")

pytestmark = native_llama_server_marks()

KEY = "native-key-0123456789"


def _client(base_url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def native(tiny_gguf: Path):
    dep = serve_detached(
        tiny_gguf, "e2e-native", "--engine", "llama-server", "--concurrency", "4", "--context", "1024",
        env={"LLMHOST_API_KEY": KEY},
    )  # fmt: skip
    yield dep
    llmhost("stop", "e2e-native")


def test_launch_flags_and_health(native: dict) -> None:
    argv = native["launch"]["argv"]
    assert Path(argv[0]).name == "llama-server"
    assert argv[argv.index("-np") + 1] == "4" and argv[argv.index("-c") + 1] == str(4 * 1024)
    assert KEY not in " ".join(argv)
    root = native["base_url"].removesuffix("/v1")
    assert httpx.get(f"{root}/health", timeout=10).json()["status"] == "ok"  # public, no key needed
    assert native["actual"]["kv_cache_tokens"] >= 4 * 1024  # parsed from llama-server's own log


def test_openai_client_paths_and_key(native: dict) -> None:
    model = native["served_model_name"]
    client = _client(native["base_url"])
    assert model in [m.id for m in client.models.list().data]
    comp = client.completions.create(model=model, prompt="Hello", max_tokens=8)
    assert comp.usage.completion_tokens > 0
    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    assert chat.choices[0].message.role == "assistant"
    chunks = list(
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "go"}], max_tokens=8, stream=True
        )
    )
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason in ("length", "stop", None)
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    with pytest.raises(openai.AuthenticationError):
        _client(native["base_url"], "wrong").completions.create(model=model, prompt="x", max_tokens=1)


def test_parallel_slots_serve_concurrent_streams(native: dict) -> None:
    model = native["served_model_name"]
    client = _client(native["base_url"])

    def one(i: int) -> str | None:
        finish = None
        for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"n{i}"}], max_tokens=16, stream=True
        ):
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        return finish

    with ThreadPoolExecutor(8) as pool:
        finishes = list(pool.map(one, range(8)))
    assert all(f in ("length", "stop") for f in finishes), finishes


def test_metrics_reach_ps(native: dict) -> None:
    _client(native["base_url"]).completions.create(
        model=native["served_model_name"], prompt="m", max_tokens=4
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        dep = deployment("e2e-native")
        if dep and dep["tokens_generated"]:
            break
        time.sleep(0.5)
    assert dep and dep["tokens_generated"] > 0, dep


def test_sigkill_restart_and_clean_stop(tiny_gguf: Path) -> None:
    dep = serve_detached(tiny_gguf, "e2e-native-crash", "--engine", "llama-server")
    old = dep["engine_process"]["pid"]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 60
    current = None
    while time.monotonic() < deadline:
        current = deployment("e2e-native-crash")
        if current and current["state"] == "ready" and current["engine_pid"] != old:
            break
        time.sleep(0.2)
    try:
        assert current and current["state"] == "ready" and current["restarts"] == 1, current
        reply = _client(current["base_url"], "none").completions.create(
            model=current["served_model_name"], prompt="x", max_tokens=2
        )
        assert reply.usage.completion_tokens > 0
        # "exited with code -9" left the user to decode it: name the signal (and who sends SIGKILL).
        events = llmhost("logs", "e2e-native-crash", "--supervisor").stdout
        assert "was killed by SIGKILL" in events and "code -9" not in events, events
    finally:
        out = llmhost("stop", "e2e-native-crash")
    assert out.returncode == 0
    assert group_alive(current["engine_pid"]) == [] and not alive(current["supervisor_pid"])
