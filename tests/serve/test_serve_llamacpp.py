"""End to end: `llmhost serve` the tiny generated GGUF with the real llama.cpp runtimes, talk to it with the
real `openai` client, break it (SIGKILL, bad files, taken ports, a killed supervisor) and stop it.

Deployments are started once per module where tests only read from them; fault tests start their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from support.serve_helpers import alive, deployment, group_alive, llmhost, serve_detached

pytestmark = [pytest.mark.engine]

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'llmhost[llamacpp]')")

KEY = "test-key-0123456789"


def _client(base_url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)


RESTART_TIMEOUT_S = 180.0


def _wait_for(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


@pytest.fixture(scope="module")
def served(tiny_gguf: Path):
    """One llama-cpp-python deployment with an API key, shared by the read-only tests."""
    # --concurrency 2 as `make demo` asks: llama-cpp-python serves one at a time, the plan must say so.
    dep = serve_detached(
        tiny_gguf,
        "e2e-lcp",
        "--engine",
        "llama-cpp-python",
        "--concurrency",
        "2",
        env={"LLMHOST_API_KEY": KEY},
    )
    yield dep
    llmhost("stop", "e2e-lcp")


def test_serve_contract_and_ps(served: dict) -> None:
    assert served["state"] == "ready"
    assert served["base_url"].endswith("/v1")
    assert served["auth"] is True
    listed = deployment("e2e-lcp")
    assert listed is not None
    for key in ("name", "model", "engine", "base_url", "state", "supervisor_pid", "engine_pid", "restarts"):
        assert key in listed
    assert (
        listed["state"] == "ready"
        and listed["engine"] == "llamacpp"
        and listed["runtime"] == "llama-cpp-python"
    )
    assert alive(listed["supervisor_pid"]) and alive(listed["engine_pid"])
    assert listed["memory_bytes"] > 10_000_000
    assert listed["actual"]["kv_cache_tokens"] > 0  # parsed from the engine's start-up log
    # One sequence of n_ctx, planned as llama-cpp-python allocates it (it was planned as 2 slots: 2x).
    planned, actual = listed["planned"], listed["actual"]
    assert planned["kv_cache_tokens"] == actual["kv_cache_tokens"]
    assert planned["kv_cache_bytes"] == actual["kv_cache_bytes"]


def test_key_is_never_in_argv_state_or_logs(served: dict) -> None:
    import psutil

    listed = deployment("e2e-lcp")
    for pid in (listed["supervisor_pid"], listed["engine_pid"]):
        assert KEY not in " ".join(psutil.Process(pid).cmdline())
    state_dir = Path(os.environ["LLMHOST_STATE_DIR"]) / "deployments" / "e2e-lcp"
    for file in state_dir.iterdir():
        assert KEY not in file.read_text(errors="replace"), file
        assert file.stat().st_mode & 0o077 == 0, f"{file} is readable by others"
    assert state_dir.stat().st_mode & 0o077 == 0


def test_models_completion_chat_and_streaming(served: dict) -> None:
    client = _client(served["base_url"], KEY)
    ids = [m.id for m in client.models.list().data]
    assert served["served_model_name"] in ids
    model = served["served_model_name"]

    comp = client.completions.create(model=model, prompt="Hello", max_tokens=8, temperature=0)
    assert comp.usage.completion_tokens > 0 and comp.choices[0].finish_reason in ("length", "stop")

    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.prompt_tokens > 3  # the ChatML template was applied

    chunks = list(
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Count"}], max_tokens=12, stream=True
        )
    )
    assert len(chunks) >= 2
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_api_key_rejected_and_accepted(served: dict) -> None:
    model = served["served_model_name"]
    with pytest.raises(openai.AuthenticationError):
        _client(served["base_url"], "wrong-key").models.list()
    with pytest.raises(openai.AuthenticationError):
        _client(served["base_url"], "wrong-key").completions.create(model=model, prompt="x", max_tokens=1)
    assert _client(served["base_url"], KEY).models.list().data


def test_eight_concurrent_streaming_clients_all_complete(served: dict) -> None:
    client = _client(served["base_url"], KEY)
    model = served["served_model_name"]

    def one(i: int) -> tuple[int, str | None]:
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"client {i}"}],
            max_tokens=16,
            stream=True,
        )
        pieces, finish = 0, None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces += 1
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        return pieces, finish

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    # With interrupt_requests left at its default, later requests would cancel earlier streams mid-way.
    assert all(finish in ("length", "stop") for _, finish in results), results
    assert sum(1 for pieces, finish in results if finish == "length" and pieces > 0) >= 6, results


def test_logs_show_engine_output(served: dict) -> None:
    out = llmhost("logs", "e2e-lcp", "-n", "400")
    assert out.returncode == 0
    assert "llama" in out.stdout.lower()
    assert KEY not in out.stdout
    sup = llmhost("logs", "e2e-lcp", "--supervisor")
    assert "ready after" in sup.stdout


def test_sigkill_engine_is_restarted_and_serves_again(tiny_gguf: Path) -> None:
    dep = serve_detached(tiny_gguf, "e2e-crash", "--engine", "llama-cpp-python")
    try:
        old_pid = dep["engine_process"]["pid"]
        os.kill(old_pid, signal.SIGKILL)
        restarted = _wait_for(
            lambda: (
                (d := deployment("e2e-crash")) and d["state"] == "ready" and d["engine_pid"] != old_pid and d
            ),
            # 2 s backoff + a fresh Python engine's start-up; on a loaded 2-core CI box that start alone
            # took over 60 s once. The bound is a hang detector, not a speed claim.
            timeout=RESTART_TIMEOUT_S,
        )
        assert restarted, (deployment("e2e-crash"), llmhost("logs", "e2e-crash", "--supervisor").stdout)
        assert restarted["restarts"] == 1
        assert not alive(old_pid)
        reply = _client(restarted["base_url"]).completions.create(
            model=restarted["served_model_name"], prompt="again", max_tokens=4
        )
        assert reply.usage.completion_tokens > 0
        sup = llmhost("logs", "e2e-crash", "--supervisor").stdout
        assert "restarting in 2s" in sup
    finally:
        llmhost("stop", "e2e-crash")


def test_stop_leaves_no_process_and_frees_the_port(tiny_gguf: Path) -> None:
    dep = serve_detached(tiny_gguf, "e2e-stop", "--engine", "llama-cpp-python")
    engine_pid = dep["engine_process"]["pid"]
    supervisor_pid = dep["supervisor"]["pid"]
    assert group_alive(engine_pid)
    out = llmhost("stop", "e2e-stop")
    assert out.returncode == 0, out.stderr
    # `stop` returns only once everything has exited: check immediately, no waiting.
    assert group_alive(engine_pid) == []
    assert not alive(engine_pid) and not alive(supervisor_pid)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", dep["port"]))
    assert deployment("e2e-stop") is None
    again = llmhost("stop", "e2e-stop")
    assert again.returncode == 5 and "No deployment named" in again.stderr


def test_ps_after_supervisor_sigkill_reports_dead_and_cleans_up(tiny_gguf: Path) -> None:
    dep = serve_detached(tiny_gguf, "e2e-orphan", "--engine", "llama-cpp-python")
    engine_pid = dep["engine_process"]["pid"]
    os.kill(dep["supervisor"]["pid"], signal.SIGKILL)
    _wait_for(lambda: not alive(dep["supervisor"]["pid"]), 30)
    first = deployment("e2e-orphan")
    assert first is not None and first["state"] == "dead"
    # The orphaned engine is not trusted to keep running unsupervised: it is stopped, the state removed.
    assert _wait_for(lambda: not group_alive(engine_pid), 30) is not None
    assert deployment("e2e-orphan") is None


def test_port_taken_is_a_clear_error_and_no_port_picks_a_free_one(tiny_gguf: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        out = llmhost("serve", str(tiny_gguf), "--detach", "--name", "e2e-port", "--port", str(port))
        assert out.returncode == 2, out.stderr
        assert f"Port {port} on 127.0.0.1 is already in use" in out.stderr
        assert "Traceback" not in out.stderr
        assert deployment("e2e-port") is None
    # Without --port: the next free port, skipping ports other programs or deployments hold. 8000 is held
    # by a listening socket (SO_REUSEADDR, as servers bind: a TIME_WAIT left by an earlier test on 8000
    # does not stop it, and serve's own check, which also sets it, then sees the port taken). Where
    # another program already listens on 8000, serve must skip it all the same.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", 8000))
            sock.listen()
        dep = serve_detached(tiny_gguf, "e2e-port", "--engine", "llama-cpp-python")
        try:
            assert dep["port"] != 8000
            assert httpx.get(dep["base_url"] + "/models", timeout=10).status_code == 200
        finally:
            llmhost("stop", "e2e-port")


@pytest.mark.llama_server
def test_a_picked_port_taken_during_start_up_moves_to_the_next_free_one(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    # Without --port, the port llmhost picked can be taken by another program before the engine binds it.
    # serve must pick another port, not fail. The engine here is the real llama-server behind a wrapper
    # that waits a second first, so the test can take the port in that window.
    import threading

    from llmhost.engines.llamacpp_build import find_cached_binary
    from llmhost.supervise import paths

    real = find_cached_binary()
    if real is None:
        pytest.skip("native llama-server not built (make llama-server)")
    slow = tmp_path / "slow-llama-server"
    slow.write_text(f'#!/bin/sh\nsleep 1\nexec "{real}" "$@"\n')
    slow.chmod(0o755)
    stolen: list[socket.socket] = []

    def steal() -> None:
        state = paths.state_file("e2e-steal")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                port = json.loads(state.read_text())["port"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.01)
                continue
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind (and llmhost checks)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            stolen.append(sock)
            return

    thief = threading.Thread(target=steal, daemon=True)
    thief.start()
    out = llmhost("serve", str(tiny_gguf), "--detach", "--name", "e2e-steal", "--engine-bin", str(slow),
                  "--json")  # fmt: skip
    thief.join(5)
    try:
        assert out.returncode == 0, out.stderr
        assert stolen, "the test never took the port"
        taken = stolen[0].getsockname()[1]
        dep = json.loads(out.stdout)
        assert dep["port"] != taken and f"port {taken} was taken" in out.stderr
        assert httpx.get(dep["base_url"] + "/models", timeout=10).status_code == 200
    finally:
        llmhost("stop", "e2e-steal")
        for sock in stolen:
            sock.close()


def test_non_gguf_model_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"this is not a gguf file at all" * 100)
    out = llmhost("serve", str(bogus), "--detach", "--name", "e2e-bogus")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert deployment("e2e-bogus") is None


def test_non_loopback_bind_requires_a_key(tiny_gguf: Path) -> None:
    out = llmhost(
        "serve", str(tiny_gguf), "--detach", "--name", "e2e-public", "--host", "0.0.0.0",
        "--engine", "llama-cpp-python", "--json",
    )  # fmt: skip
    try:
        assert out.returncode == 0, out.stderr
        assert "API key (shown once" in out.stderr
        key = out.stderr.split("store it now):", 1)[1].split()[0]
        dep = json.loads(out.stdout)
        assert dep["auth"] is True and key not in out.stdout
        base = f"http://127.0.0.1:{dep['port']}/v1"
        assert httpx.get(base + "/models", timeout=10).status_code == 401
        ok = httpx.get(base + "/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert ok.status_code == 200
    finally:
        llmhost("stop", "e2e-public")
    # Explicitly waiving auth is allowed, and then no key is asked for.
    dry = llmhost("serve", str(tiny_gguf), "--host", "0.0.0.0", "--insecure-no-auth", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["deployment"]["auth"] is False


def test_foreground_serve_stops_cleanly_on_ctrl_c(tiny_gguf: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LLMHOST_API_KEY"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmhost",
            "serve",
            str(tiny_gguf),
            "--name",
            "e2e-fg",
            "--engine",
            "llama-cpp-python",
            "--json",  # the deployment is printed once it is ready, and serving goes on
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "NO_COLOR": "1"},
    )
    try:
        ready = _wait_for(
            lambda: (d := deployment("e2e-fg")) and d["state"] == "ready" and d, timeout=RESTART_TIMEOUT_S
        )
        assert ready, "foreground deployment never became ready"
        assert ready["detached"] is False and ready["supervisor_pid"] == proc.pid
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "ready" in err and "/chat/completions" in err and "stopped e2e-fg" in err
    printed = json.loads(out)  # one document: the deployment when it became ready
    assert printed["name"] == "e2e-fg" and printed["state"] == "ready" and printed["base_url"].endswith("/v1")
    assert group_alive(ready["engine_pid"]) == []
    assert deployment("e2e-fg") is None


def test_engine_rejecting_the_model_is_exit_4_with_the_cause_and_no_retry(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    # A GGUF that llmhost reads as a model (header, tensor table and data all sound) but llama.cpp
    # refuses: the llama architecture's required `output_norm.weight` is renamed (same length).
    data = tiny_gguf.read_bytes()
    assert data.count(b"output_norm.weight") == 1
    renamed = tmp_path / "renamed.gguf"
    renamed.write_bytes(data.replace(b"output_norm.weight", b"outpux_norm.weight"))
    out = llmhost("serve", str(renamed), "--detach", "--name", "e2e-trunc", "--engine", "llama-cpp-python")
    err = out.stderr.replace("\n", " ")
    assert out.returncode == 4, out.stderr
    assert "before it became ready" in err and "Not a valid model file" in err
    assert "'output_norm.weight' not found" in err  # the engine's own words, picked out of the log
    assert "Traceback (most recent call last)" not in err
    # The hint is its own line, not glued onto the last line of the quoted engine log.
    assert out.stderr.rstrip().splitlines()[-1] == "Full logs: `llmhost logs e2e-trunc`.", out.stderr
    assert deployment("e2e-trunc") is None
    sup = llmhost("logs", "e2e-trunc", "--supervisor").stdout
    assert sup.count("engine started") == 1  # no restart loop


def test_a_truncated_gguf_is_refused_before_any_engine_starts(tiny_gguf: Path, tmp_path: Path) -> None:
    # The header still parses, but the tensor data is cut short: llmhost names it (it used to be planned,
    # launched, and reported by the engine as "not within the file bounds").
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[:1_500_000])
    out = llmhost("serve", str(truncated), "--detach", "--name", "e2e-cut", "--engine", "llama-cpp-python")
    assert out.returncode == 2, out.stderr
    assert "truncated download?" in out.stderr and out.stderr.count("error:") == 1
    assert deployment("e2e-cut") is None


def test_foreground_engine_output_with_brackets_is_printed_not_parsed_as_markup(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    # llama-server logs the chat template's example at start-up: "[INST] Hello [/INST]" for Mistral-style
    # models. Quoted in a foreground event (the exit's last lines), Rich read it as markup and the
    # supervisor died with "internal error: MarkupError".
    engine = tmp_path / "fake-llama-server"
    engine.write_text(
        '#!/bin/sh\necho "example_format: [INST] Hello [/INST] Hi"\necho "error: it failed"\nexit 1\n'
    )
    engine.chmod(0o755)
    out = llmhost("serve", str(tiny_gguf), "--engine-bin", str(engine), "--name", "e2e-markup", timeout=60)
    assert out.returncode == 4, out.stderr
    assert "internal error" not in out.stderr and "[INST] Hello [/INST] Hi" in out.stderr, out.stderr
    assert deployment("e2e-markup") is None


DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def _demo_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "LLMHOST_API_KEY"}


def test_demo_leaves_a_deployment_it_did_not_start_alone(tiny_gguf: Path) -> None:
    # A second `make demo` failed on the taken name, then its cleanup stopped the other demo's server.
    other = serve_detached(tiny_gguf, "llmhost-demo")
    try:
        out = subprocess.run(
            [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=120, env=_demo_env()
        )
        assert out.returncode != 0 and "already running" in out.stderr, out.stderr
        still = deployment("llmhost-demo")
        assert still is not None and still["supervisor_pid"] == other["supervisor"]["pid"], out.stdout
    finally:
        llmhost("stop", "llmhost-demo")


def test_demo_stops_its_server_when_its_output_pipe_closes(tiny_gguf: Path) -> None:
    # `make demo | head`: the first print after the pipe closed raised BrokenPipeError, and so did the
    # "$ llmhost stop" line in the cleanup, before the stop ran: the server was left running.
    proc = subprocess.Popen(
        [sys.executable, str(DEMO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_demo_env(),
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if line.startswith("serving "):
                break
        proc.stdout.close()
        proc.wait(timeout=120)
        assert deployment("llmhost-demo") is None
    finally:
        llmhost("stop", "llmhost-demo")  # never leave a server behind when the assertion fails
