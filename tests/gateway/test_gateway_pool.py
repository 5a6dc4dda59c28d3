"""The pool's fixes that need real engines (llama.cpp on the generated GGUFs), real processes, signals
and HTTP, and the real `openai` client; nothing between gateway and engine is faked.

- A model whose load waits for memory (blocked by a pinned model) does not hold the load lock: another
  model's load goes on meanwhile and its request is answered while the first still waits.
- A request sent right after the engine was SIGKILLed (no byte came back) waits for the supervisor's
  restart and is resent once: the client gets a 200 (the access log marks it resent).
- Streams to an engine that keeps its connection (uvicorn) reuse it; none is left open to llama-server."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from support.gateway_helpers import access_log, events, gateway_running, planned_needs
from support.serve_helpers import llmhost

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp")

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _chat(url: str, model: str, n: int = 4) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": n}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=180)


def test_a_load_waiting_for_memory_does_not_hold_up_another_models_load(tiny_models, tmp_path: Path):
    state = tmp_path / "state"
    body = (
        "models:\n"
        f"  mid: {{model: {tiny_models['mid']}, context: 512, pin: true}}\n"
        f"  small: {{model: {tiny_models['small']}, context: 512}}\n"
        f"  big: {{model: {tiny_models['big']}, context: 512}}\n"
    )
    config = tmp_path / "gw.yaml"
    config.write_text(body)
    need = {name: n["cpu"] for name, n in planned_needs(config, state).items()}
    # small fits beside the pinned mid, big does not: big waits (mid is pinned, never evicted) until the
    # queue timeout (20 s), while small's load must go on (with the lock held, small would wait those
    # 20 s too, and answer 503 at its own deadline).
    assert need["big"] > need["small"]
    budget = need["mid"] + need["small"] + (need["big"] - need["small"]) // 2
    config.write_text(body + f"memory_budget: {{cpu: {budget}}}\nmin_residence: 0s\nqueue_timeout: 20s\n")
    with gateway_running(config, state) as gw:
        gw.wait_state("mid", "loaded")
        big: dict[str, httpx.Response] = {}
        waiting = threading.Thread(target=lambda: big.update(reply=_chat(gw.url, "big")))
        waiting.start()
        try:
            gw.wait_state("big", "loading")  # its load holds the lock, then waits for memory
            small = _chat(gw.url, "small")
            assert small.status_code == 200, small.text
            assert waiting.is_alive() and "reply" not in big  # answered while big still waits
            assert gw.models()["big"]["state"] == "loading"
        finally:
            waiting.join(120)
    assert big["reply"].status_code == 503 and big["reply"].headers["Retry-After"], big["reply"].text
    seen = [(e["event"], e.get("model")) for e in events(state)]
    assert ("loaded", "small") in seen and ("loaded", "big") not in seen


def test_a_request_sent_right_after_the_engine_was_killed_is_resent_once_and_answered(
    tiny_models, tmp_path: Path
):
    state = tmp_path / "state"
    config = tmp_path / "gw.yaml"
    config.write_text(f"models:\n  small: {{model: {tiny_models['small']}, context: 512, pin: true}}\n")
    env = {"LLMHOST_STATE_DIR": str(state)}
    with gateway_running(config, state) as gw:
        gw.wait_state("small", "loaded")
        (dep,) = json.loads(llmhost("ps", "--json", env=env).stdout)
        assert dep["restarts"] == 0
        # Past the gateway's re-check interval (1 s) since the load, this request has the gateway re-read
        # the engine's state (ready); the next, sent within that interval, goes straight to the engine,
        # which is gone by then: no answer, a wait for the supervisor's restart, one resend.
        time.sleep(1.2)
        assert _chat(gw.url, "small", n=1).status_code == 200
        os.kill(dep["engine_pid"], signal.SIGKILL)
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=180)
        reply = client.chat.completions.create(
            model="small", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.usage.completion_tokens > 0 and reply.model == "small"
        last = access_log(state)[-1]
        assert last["status"] == 200 and last.get("resent") is True, last
        (after,) = json.loads(llmhost("ps", "--json", env=env).stdout)
        assert after["restarts"] == 1 and after["engine_pid"] != dep["engine_pid"]
        assert gw.metric("llmhost_gateway_loads_total", model="small") == 1  # restarted, not reloaded


def _upstream_ports(gateway_pid: int, engine_port: int) -> list[int]:
    """The local ports of the gateway's open connections to the engine, half a second after the last
    answer ended (the client sees the end of a stream before the gateway closes its upstream side; idle
    pooled connections are dropped only after 3 s)."""
    import psutil

    time.sleep(0.5)
    return sorted(
        c.laddr.port
        for c in psutil.Process(gateway_pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == engine_port and c.status == psutil.CONN_ESTABLISHED
    )


def _stream(url: str, model: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as reply:
        assert reply.status_code == 200, reply.read()
        return "".join(reply.iter_text())


def test_streams_reuse_the_engine_connection_only_where_the_engine_keeps_it(tiny_models, tmp_path: Path):
    """llama-cpp-python (uvicorn, like vLLM) keeps its connection after a streamed answer: the gateway
    sends the next stream on it, no connection opened per request. llama-server closes it after every
    stream: the gateway holds no connection to it afterwards (none resent either)."""
    state = tmp_path / "state"
    config = tmp_path / "gw.yaml"
    config.write_text(
        "models:\n"
        f"  py: {{model: {tiny_models['small']}, context: 512, pin: true, engine: llama-cpp-python}}\n"
        f"  native: {{model: {tiny_models['small']}, context: 512, pin: true}}\n"
    )
    env = {"LLMHOST_STATE_DIR": str(state)}
    with gateway_running(config, state) as gw:
        gw.wait_state("py", "loaded")
        gw.wait_state("native", "loaded")
        deps = {d["name"]: d for d in json.loads(llmhost("ps", "--json", env=env).stdout)}
        assert gw.proc is not None
        py = deps["gw-py"]
        assert py["runtime"] == "llama-cpp-python"
        # Connections the gateway already holds (its readiness checks) are not the relay's.
        before = set(_upstream_ports(gw.proc.pid, py["port"]))
        assert "[DONE]" in _stream(gw.url, "py")
        first = set(_upstream_ports(gw.proc.pid, py["port"])) - before
        assert len(first) == 1  # the stream's connection, kept in the gateway's pool
        assert "[DONE]" in _stream(gw.url, "py")
        assert set(_upstream_ports(gw.proc.pid, py["port"])) - before == first  # the same one again
        native = deps["gw-native"]
        if native["runtime"] == "llama-server":
            before = set(_upstream_ports(gw.proc.pid, native["port"]))
            assert "[DONE]" in _stream(gw.url, "native")
            assert set(_upstream_ports(gw.proc.pid, native["port"])) <= before  # closed after the stream
        records = access_log(state)
        assert not any(r.get("resent") for r in records)
