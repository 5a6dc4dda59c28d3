"""The gateway's HTTP surface where no engine has to run: a real gateway process (no model loaded)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from support.gateway_helpers import GatewayProc, access_log, events, stop_everything
from support.serve_helpers import llmhost


def test_a_model_is_retrieved_by_name_or_alias_as_openai_clients_do(tiny_models: dict[str, Path], tmp_path):
    # `client.models.retrieve(name)` is GET /v1/models/{name}: it was a 404 "Not Found" for every model.
    config = tmp_path / "gw.yaml"
    config.write_text(f"models:\n  chat: {{model: {tiny_models['small']}, aliases: [gpt-4o-mini]}}\n")
    gw = GatewayProc(config, tmp_path / "state").start()
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        card = client.models.retrieve("chat")
        assert card.id == "chat" and card.object == "model" and card.owned_by == "llmhost"
        assert card.model_extra and card.model_extra["llmhost"]["state"] == "unloaded"  # nothing loaded
        assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"  # the name asked for
        with pytest.raises(openai.NotFoundError) as err:
            client.models.retrieve("nope")
        assert err.value.code == "model_not_found" and "chat" in err.value.message
        reply = httpx.get(f"{gw.url}/v1/models/nope", timeout=10)
        assert reply.status_code == 404 and reply.json()["error"]["code"] == "model_not_found"
        assert gw.models()["chat"]["state"] == "unloaded"  # a lookup loads nothing
    finally:
        gw.stop()


@pytest.mark.parametrize("detach", [False, True])
def test_a_port_in_use_or_out_of_range_is_one_line_and_exit_2_detached_or_not(tmp_path, detach):
    # Detached, both were found by the background process only: exit 4 and
    # "The gateway exited with code 2: error: Port ..." (and the hint offered serve's "next free port").
    config = tmp_path / "gw.yaml"
    config.write_text("models: {}\n")
    env = {"LLMHOST_STATE_DIR": str(tmp_path / "state")}
    flags = ["--detach"] if detach else []
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = llmhost("gateway", "--config", str(config), "--port", str(port), *flags, env=env, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    (line,) = proc.stderr.strip().splitlines()
    assert f"Port {port} on 127.0.0.1 is already in use" in line and "exited" not in line, line
    assert "next free port" not in line, line  # the gateway listens where it is told (default 7411)
    proc = llmhost("gateway", "--config", str(config), "--port", "0", *flags, env=env, timeout=60)
    assert proc.returncode == 2 and "Port 0 is out of range" in proc.stderr, (proc.returncode, proc.stderr)
    assert "exited" not in proc.stderr
    assert llmhost("gateway", "status", env=env).stdout.startswith("gateway: not running")


def test_gateway_stop_after_a_sigkill_stops_the_models_it_left(tiny_models: dict[str, Path], tmp_path):
    # SIGKILL leaves the gw-* deployments for a restart to re-adopt; `gateway stop` said "No gateway is
    # running" (exit 5) and left them running, with nothing in `gateway` to stop them.
    config = tmp_path / "gw.yaml"
    config.write_text(f"models:\n  chat: {{model: {tiny_models['small']}, context: 256, pin: true}}\n")
    state = tmp_path / "state"
    env = {"LLMHOST_STATE_DIR": str(state)}
    gw = GatewayProc(config, state).start()
    try:
        gw.wait_state("chat", "loaded")
    finally:
        gw.stop(signal.SIGKILL)
    try:
        assert [d["name"] for d in json.loads(llmhost("ps", "--json", env=env).stdout)] == ["gw-chat"]
        proc = llmhost("gateway", "stop", env=env)
        assert proc.returncode == 0 and "gw-chat" in proc.stderr, (proc.returncode, proc.stderr)
        assert json.loads(llmhost("ps", "--json", env=env).stdout) == []
        again = llmhost("gateway", "stop", env=env)
        assert again.returncode == 5 and "No gateway is running" in again.stderr  # nothing left: as before
    finally:
        stop_everything(state)


def test_a_pinned_model_that_fails_to_load_at_start_is_said_in_the_gateways_output(tmp_path):
    # A pinned load has no client to answer: its failure was only in events.log and /v1/models; the
    # gateway's own output (the terminal, or gateway.log when detached) said nothing.
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"\x00" * 4096)
    config = tmp_path / "gw.yaml"
    config.write_text(f"models:\n  broken: {{model: {bad}, pin: true}}\n")
    gw = GatewayProc(config, tmp_path / "state").start()
    try:
        card = gw.wait_state("broken", "failed", timeout=30)
        assert "not a valid GGUF" in card["failure"], card
    finally:
        gw.stop()
    lines = [x for x in gw.log.read_text().splitlines() if "broken" in x]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "not a valid GGUF" in lines[0], lines


def test_a_restarted_gateway_relaunches_a_model_whose_entry_changed_instead_of_adopting_it(
    tiny_models: dict[str, Path], tmp_path
):
    # It re-adopted the engine running with the old settings (here `-c 256` after context: 512 was
    # written), and a pinned model kept them for good. Serving settings only (aliases, ttl) still adopt.
    config = tmp_path / "gw.yaml"
    state = tmp_path / "state"
    entry = f"model: {tiny_models['small']}, pin: true"

    def engine_pid_and_context() -> tuple[int, str]:
        (dep,) = json.loads(llmhost("ps", "--json", env={"LLMHOST_STATE_DIR": str(state)}).stdout)
        argv = dep["launch"]["argv"]
        return dep["engine_process"]["pid"], argv[argv.index("-c") + 1]

    def run(text: str) -> None:
        config.write_text(text)
        gw = GatewayProc(config, state).start()
        try:
            gw.wait_state("chat", "loaded")
        finally:
            gw.stop(signal.SIGKILL)

    try:
        run(f"models:\n  chat: {{{entry}, context: 256}}\n")
        first = engine_pid_and_context()
        assert first[1] == "256"
        run(f"models:\n  chat: {{{entry}, context: 256, aliases: [gpt-4o-mini], ttl: 1h}}\n")
        assert engine_pid_and_context() == first  # adopted: no relaunch for a serving setting
        run(f"models:\n  chat: {{{entry}, context: 512}}\n")
        pid, context = engine_pid_and_context()
        assert context == "512" and pid != first[0]
        assert any(e.get("reason") == "models file changed" for e in events(state))
    finally:
        stop_everything(state)


def test_streamed_answers_count_their_tokens_not_their_sse_events(tiny_models: dict[str, Path], tmp_path):
    # The access log's `tokens` (and llmhost_gateway_tokens) was the number of SSE data events less one:
    # a 4-token chat stream counted 6 (the role and finish chunks), /v1/messages counted 8.
    config = tmp_path / "gw.yaml"
    config.write_text(f"models:\n  chat: {{model: {tiny_models['small']}, context: 256}}\n")
    state = tmp_path / "state"
    gw = GatewayProc(config, state).start()
    body: dict[str, object] = {"model": "chat", "stream": True, "max_tokens": 4, "ignore_eos": True}
    hi = [{"role": "user", "content": "hi"}]
    try:
        seen = []
        for path, extra in [
            ("/v1/chat/completions", {"messages": hi}),
            ("/v1/chat/completions", {"messages": hi, "stream_options": {"include_usage": True}}),
            ("/v1/completions", {"prompt": "hi"}),
            ("/v1/messages", {"messages": hi}),
        ]:
            with httpx.stream("POST", gw.url + path, json={**body, **extra}, timeout=60) as reply:
                assert reply.status_code == 200
                text = "".join(reply.iter_text())
            # With no usage event (a chat stream by default) the count is the chunks with content text.
            seen.append(text.count('"content":"') if '"usage"' not in text else 4)
        # The access log's line is written once the answer has ended, which the client may see first.
        deadline = time.monotonic() + 30
        while len(counted := [e["tokens"] for e in access_log(state) if e.get("status") == 200]) < len(seen):
            assert time.monotonic() < deadline, counted
            time.sleep(0.05)
        # (a gibberish token that is part of a UTF-8 character comes out with the next: at most 4 chunks)
        assert counted == seen and counted[1:] == [4, 4, 4] and counted[0] <= 4, (counted, seen)
        assert gw.metric("llmhost_gateway_tokens_total", model="chat", kind="completion") == sum(seen)
    finally:
        gw.stop()
        stop_everything(state)


def test_serve_refuses_a_name_the_gateway_owns(tiny_models: dict[str, Path], tmp_path):
    # `serve --detach --name gw-mine` was accepted: the gateway took it for its own, did not route it
    # (404 for "gw-mine" and "mine") and stopped it at its next start ("not configured").
    env = {"LLMHOST_STATE_DIR": str(tmp_path / "state")}
    proc = llmhost("serve", str(tiny_models["small"]), "--name", "gw-mine", "--dry-run", env=env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    (line,) = proc.stderr.strip().splitlines()
    assert "gw-" in line and "gateway" in line and "--name" in line, line
    # The default name comes from the file name: these test models are gw-small-*.gguf.
    proc = llmhost("serve", str(tiny_models["small"]), "--dry-run", env=env)
    assert proc.returncode == 2 and "--name" in proc.stderr, (proc.returncode, proc.stderr)
    ok = llmhost("serve", str(tiny_models["small"]), "--name", "mine", "--dry-run", env=env)
    assert ok.returncode == 0, ok.stderr


def test_two_gateways_started_at_once_on_one_state_dir_leave_one_running(tmp_path):
    # The "already running" check read gateway.json, which a gateway writes once it listens: two started
    # together both passed it and both ran (`gateway stop` then stopped one; the other kept running).
    config = tmp_path / "gw.yaml"
    config.write_text("models: {}\n")
    state = tmp_path / "state"
    gateways = [GatewayProc(config, state), GatewayProc(config, state)]
    env = {k: v for k, v in os.environ.items() if k != "LLMHOST_API_KEY"}
    env["LLMHOST_STATE_DIR"] = str(state)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "llmhost.gateway", "--config", str(config), "--port", str(gw.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for gw in gateways
    ]
    try:
        deadline = time.monotonic() + 60
        exited: list[int] = []
        while time.monotonic() < deadline:
            exited = [i for i, p in enumerate(procs) if p.poll() is not None]
            up = [i for i, gw in enumerate(gateways) if i not in exited and _healthy(gw.url)]
            if len(exited) + len(up) == 2:
                break
            time.sleep(0.1)
        assert len(exited) == 1, f"{len(exited)} of the two gateways exited"
        (loser,) = exited
        assert procs[loser].returncode == 2
        assert "already running" in (procs[loser].stderr.read() if procs[loser].stderr else "")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _keyed_gateway(tmp_path: Path) -> tuple[GatewayProc, Path]:
    """A started gateway with no models and a keys file (alice's key), and that file."""
    keys = tmp_path / "keys.yaml"
    keys.write_text("alice: alice-key-0123456\n")
    keys.chmod(0o600)
    config = tmp_path / "gw.yaml"
    config.write_text(f"keys_file: {keys}\nmodels: {{}}\n")
    return GatewayProc(config, tmp_path / "state", key="alice-key-0123456").start(), keys


def test_a_refused_key_is_in_the_access_log_without_the_key(tmp_path):
    # 401s were counted in /metrics only: the access log, where an operator looks, had no line for them.
    gw, _ = _keyed_gateway(tmp_path)
    state = gw.state
    try:
        wrong = {"Authorization": "Bearer guessed-key-999999"}
        assert httpx.get(f"{gw.url}/v1/models", headers=wrong, timeout=10).status_code == 401
        assert httpx.get(f"{gw.url}/v1/models", headers=gw.headers, timeout=10).status_code == 200
    finally:
        gw.stop()
    (refused,) = [e for e in access_log(state) if e["status"] == 401]
    assert refused["path"] == "/v1/models" and refused["id"] and "key" not in refused
    assert "guessed-key" not in (state / "gateway" / "access.log").read_text()


def test_an_unusable_keys_file_is_explained_in_the_gateways_output_not_to_clients(tmp_path):
    # The 500 carried the keys file's message, path included, to any client, key or not.
    gw, keys = _keyed_gateway(tmp_path)
    try:
        keys.chmod(0o644)
        for _ in range(3):
            reply = httpx.get(f"{gw.url}/v1/models", timeout=10)
            assert reply.status_code == 500 and reply.json()["error"]["code"] == "keys_file"
            assert str(tmp_path) not in reply.text and "keys.yaml" not in reply.text
        keys.chmod(0o600)
        assert httpx.get(f"{gw.url}/v1/models", headers=gw.headers, timeout=10).status_code == 200
    finally:
        gw.stop()
    said = [line for line in gw.log.read_text().splitlines() if "readable by others" in line]
    assert len(said) == 1 and str(keys) in said[0], said  # once while it lasted, with the path
