"""The gateway with real engines (llama.cpp: llama-server when built, else llama-cpp-python), real
processes, real HTTP and the real `openai` client; nothing between the gateway and the engines is faked.

One gateway for the module, its tests in order: pinned load at start, the error answers, load on demand
with LRU eviction that waits for an in-flight stream, TTL unload, queue overflow and load deadline,
an engine SIGKILL mid-stream, then the gateway SIGKILLed and restarted (re-adoption, no duplicate)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from support.gateway_helpers import GatewayProc, access_log, events, stop_everything
from support.serve_helpers import alive, llmhost

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp")

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ALICE, BOB = "alice-key-0123456789", "bob-key-0123456789"


@pytest.fixture(scope="module")
def setup(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gateway-a")
    state = root / "state"
    keys = root / "keys.yaml"
    keys.write_text(f"alice: {ALICE}\nbob: {BOB}\n")
    os.chmod(keys, 0o600)
    models = {
        "small": f"{{model: {tiny_models['small']}, context: 512, pin: true, aliases: [gpt-4o-mini]}}",
        "mid": f"{{model: {tiny_models['mid']}, context: 2048}}",
        "big": f"{{model: {tiny_models['big']}, context: 512, ttl: 3s}}",
        "slow": f"{{model: {tiny_models['small']}, context: 512, queue: 1, queue_timeout: 0.3s}}",
    }
    body = "models:\n" + "".join(f"  {k}: {v}\n" for k, v in models.items())
    config = root / "gw.yaml"
    config.write_text(body)
    plan = llmhost(
        "gateway", "plan", "--config", str(config), "--json", env={"LLMHOST_STATE_DIR": str(state)}
    )
    assert plan.returncode == 0, plan.stderr
    need = {m["name"]: m["need"]["cpu"] for m in json.loads(plan.stdout)["models"]}
    # Pinned small + either of mid/big fits; all three do not.
    budget = need["small"] + max(need["mid"], need["big"]) + min(need["mid"], need["big"]) // 2
    config.write_text(
        body
        + f"memory_budget: {{cpu: {budget}}}\nmin_residence: 0s\nkeys_file: {keys}\nmax_body_bytes: 64KiB\n"
    )
    gw = GatewayProc(config, state, key=ALICE).start()
    try:
        yield gw, need
    finally:
        gw.stop()
        left = stop_everything(state)
        assert not left, f"the gateway left deployments running: {left}"


def client(gw: GatewayProc, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0, timeout=180)


def chat(c: openai.OpenAI, model: str, n: int = 8) -> openai.types.chat.ChatCompletion:
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=n)


def test_a_pinned_model_loads_at_start(setup):
    gw, _ = setup
    card = gw.wait_state("small", "loaded")
    assert card["pinned"] and card["deployment"] == "gw-small" and card["aliases"] == ["gpt-4o-mini"]
    assert gw.models()["mid"]["state"] == "unloaded"


def test_every_answer_carries_the_name_asked_for_an_alias_rewritten_even_in_a_stream(setup):
    gw, _ = setup
    # The engine serves the model under the models file's name: nothing to rewrite for it...
    ps = json.loads(llmhost("ps", "--json", env={"LLMHOST_STATE_DIR": str(gw.state)}).stdout)
    assert {d["name"]: d["served_model_name"] for d in ps} == {"gw-small": "small"}
    c = client(gw)
    for name in ("small", "gpt-4o-mini"):  # ...and an alias is rewritten chunk by chunk
        chunks = list(
            c.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=24, stream=True
            )
        )
        assert len(chunks) > 3 and {chunk.model for chunk in chunks} == {name}
        assert chat(c, name).model == name


def test_errors_are_clear_and_the_gateway_stays_up(setup):
    gw, _ = setup
    url = f"{gw.url}/v1/chat/completions"
    bad_key = httpx.post(url, json={"model": "small"}, headers={"Authorization": "Bearer nope-nope-nope"})
    assert bad_key.status_code == 401 and bad_key.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{gw.url}/v1/models").status_code == 401  # no key at all
    bad_json = httpx.post(url, content=b"{not json", headers=gw.headers)
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "bad_json"
    huge = httpx.post(url, content=b'{"model": "small", "x": "' + b"a" * 100_000 + b'"}', headers=gw.headers)
    assert huge.status_code == 413 and "larger than 65536 bytes" in huge.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError) as missing:
        chat(client(gw), "no-such-model")
    message = missing.value.body["message"]
    assert all(name in message for name in ("small", "mid", "big", "slow", "gpt-4o-mini")), message
    emb = httpx.post(f"{gw.url}/v1/embeddings", json={"model": "small", "input": "x"}, headers=gw.headers)
    assert emb.status_code == 400 and emb.json()["error"]["code"] == "embeddings_unsupported"
    # The second key works too, and each request is logged with its key's name (never the key).
    assert chat(client(gw, BOB), "gpt-4o-mini").usage.completion_tokens > 0
    assert httpx.get(f"{gw.url}/health").json() == {"status": "ok"}
    logged = access_log(gw.state)
    assert {"key": "bob", "model": "small", "status": 200}.items() <= logged[-1].items()
    assert logged[-1]["ttft_s"] > 0 and logged[-1]["id"]
    assert not any(k in (gw.state / "gateway" / "access.log").read_text() for k in (ALICE, BOB))


def test_load_on_demand_evicts_the_lru_idle_model_never_an_in_flight_stream(setup):
    gw, need = setup
    c = client(gw)
    assert chat(c, "mid").choices[0].message.role == "assistant"  # loads mid beside the pinned small
    assert gw.models()["mid"]["state"] == "loaded"
    first_chunk = threading.Event()
    stream_result: dict[str, object] = {}

    def long_stream() -> None:
        chunks = 0
        finish = None
        for chunk in c.chat.completions.create(
            model="mid", messages=[{"role": "user", "content": "go"}], max_tokens=1500, stream=True
        ):
            chunks += 1
            first_chunk.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        stream_result.update(chunks=chunks, finish=finish, ended=time.time())

    streamer = threading.Thread(target=long_stream)
    streamer.start()
    assert first_chunk.wait(120)
    # big fits only once mid goes; small is pinned, mid streams: big waits for the stream to end.
    reply = c.chat.completions.create(model="big", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    streamer.join(120)
    assert reply.usage.completion_tokens > 0
    assert stream_result["finish"] in ("length", "stop") and stream_result["chunks"] > 10, stream_result
    cards = gw.models()
    assert (cards["small"]["state"], cards["mid"]["state"], cards["big"]["state"]) == (
        "loaded",
        "unloaded",
        "loaded",
    )
    evicted = [e for e in events(gw.state) if e["event"] == "unloaded" and e["model"] == "mid"]
    assert evicted and evicted[0]["reason"] == "evicted" and evicted[0]["ts"] >= stream_result["ended"] - 1.0
    assert gw.metric("llmhost_gateway_unloads_total", model="mid", reason="evicted") == 1
    assert gw.metric("llmhost_gateway_unloads_total", model="small") == 0
    # The memory the gateway reserved covers what the engine itself allocated (its start-up log).
    ps = {
        d["name"]: d
        for d in json.loads(llmhost("ps", "--json", env={"LLMHOST_STATE_DIR": str(gw.state)}).stdout)
    }
    actual = ps["gw-big"]["actual"]
    engine_bytes = actual["weights_bytes"] + actual["kv_cache_bytes"] + (actual["compute_bytes"] or 0)
    assert need["big"] >= engine_bytes > 0
    assert cards["big"]["memory"]["cpu"]["planned"] == need["big"]
    assert cards["big"]["memory"]["cpu"]["measured"] > 0  # the engine's RSS, read by the gateway


def test_an_idle_model_unloads_after_its_ttl_a_pinned_one_stays(setup):
    gw, _ = setup
    gw.wait_state("big", "unloaded", timeout=60)  # ttl: 3s
    assert [e["reason"] for e in events(gw.state) if e["event"] == "unloaded" and e["model"] == "big"] == [
        "ttl"
    ]
    assert gw.models()["small"]["state"] == "loaded"


def test_queue_overflow_and_load_deadline_answer_503_with_retry_after(setup):
    gw, _ = setup
    url = f"{gw.url}/v1/chat/completions"
    body = {"model": "slow", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    with ThreadPoolExecutor(3) as pool:
        replies = list(
            pool.map(lambda _: httpx.post(url, json=body, headers=gw.headers, timeout=60), range(3))
        )
    assert [r.status_code for r in replies] == [503, 503, 503]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in replies)
    messages = sorted(r.json()["error"]["message"] for r in replies)
    assert (
        sum("already wait" in m for m in messages) == 2 and sum("not loaded yet" in m for m in messages) == 1
    )
    gw.wait_state("slow", "loaded")  # the one load went on
    assert httpx.post(url, json=body, headers=gw.headers, timeout=60).status_code == 200
    assert gw.metric("llmhost_gateway_loads_total", model="slow") == 1


def test_an_engine_killed_mid_stream_is_a_clean_error_then_recovers(setup):
    gw, _ = setup
    c = client(gw)
    ps = {
        d["name"]: d
        for d in json.loads(llmhost("ps", "--json", env={"LLMHOST_STATE_DIR": str(gw.state)}).stdout)
    }
    engine_pid = ps["gw-small"]["engine_pid"]
    assert gw.models()["small"]["state"] == "loaded" and engine_pid
    stream = c.chat.completions.create(
        model="small", messages=[{"role": "user", "content": "go"}], max_tokens=480, stream=True
    )
    with pytest.raises(openai.APIError, match=r"failed mid-stream|did not answer|Connection|closed"):
        for i, _chunk in enumerate(stream):
            if i == 0:
                os.kill(engine_pid, signal.SIGKILL)
    # The supervisor restarts it; the gateway waits for it to be ready again.
    assert chat(c, "small").usage.completion_tokens > 0
    assert httpx.get(f"{gw.url}/health").status_code == 200


def test_a_killed_gateway_restarts_and_re_adopts_without_a_second_engine(setup):
    gw, _ = setup
    env = {"LLMHOST_STATE_DIR": str(gw.state)}
    before = {d["name"]: d for d in json.loads(llmhost("ps", "--json", env=env).stdout)}
    assert "gw-small" in before and before["gw-small"]["restarts"] == 1  # the SIGKILL above
    gw.stop(signal.SIGKILL)
    gw.start()
    card = gw.wait_state("small", "loaded", timeout=30)
    assert card["deployment"] == "gw-small"
    assert chat(client(gw), "small").usage.completion_tokens > 0
    after = {d["name"]: d for d in json.loads(llmhost("ps", "--json", env=env).stdout)}
    assert after["gw-small"]["engine_pid"] == before["gw-small"]["engine_pid"]  # adopted, not relaunched
    assert gw.metric("llmhost_gateway_loads_total", model="small") == 0
    assert any(e["event"] == "adopted" and e["model"] == "small" for e in events(gw.state))
    # SIGTERM: drain, then stop everything the gateway started; nothing is left behind.
    assert gw.stop() == 0
    assert json.loads(llmhost("ps", "--json", env=env).stdout) == []
    assert not any(alive(d["engine_pid"]) for d in after.values() if d["engine_pid"])
