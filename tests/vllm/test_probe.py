"""The completion probe against a real local HTTP server that can be healthy, stuck, failing or busy."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmhost.engines.base import LaunchSpec
from llmhost.supervise.probe import CompletionProbe


class Engine:
    """What the fake engine does: `mode` is healthy | stuck | error | busy."""

    def __init__(self) -> None:
        self.mode = "healthy"
        self.tokens = 0
        self.completions = 0
        self.auth_headers: list[str | None] = []


@pytest.fixture
def engine() -> Iterator[tuple[Engine, int]]:
    state = Engine()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: bytes) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the probe gave up waiting (a timeout is what these tests provoke)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, b"")  # /health says fine whatever the engine does: the point of the probe
            elif self.path == "/metrics":
                if state.mode == "busy":
                    state.tokens += 100
                self._send(200, f'vllm:generation_tokens_total{{model_name="m"}} {state.tokens}\n'.encode())
            else:
                self._send(404, b"")

        def do_POST(self) -> None:
            state.completions += 1
            state.auth_headers.append(self.headers.get("Authorization"))
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            assert body["max_tokens"] == 1 and body["model"] == "served"
            if state.mode in ("stuck", "busy"):
                time.sleep(1.0)
            if state.mode == "error":
                self._send(500, b'{"error": "EngineDeadError"}')
                return
            self._send(200, b'{"choices": [{"text": "x"}]}')

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _spec(port: int, interval: float | None = 0.05) -> LaunchSpec:
    return LaunchSpec(
        engine="vllm",
        runtime="vllm-cpu",
        argv=["python"],
        base_url=f"http://127.0.0.1:{port}/v1",
        port=port,
        served_model_name="served",
        metrics_path="/metrics",
        completion_probe_interval_s=interval,
        completion_probe_timeout_s=0.3,
        completion_probe_failures=2,
    )


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_off_when_the_spec_asks_for_none(engine: tuple[Engine, int]) -> None:
    _, port = engine
    assert CompletionProbe.for_launch(_spec(port, interval=None), None) is None
    assert CompletionProbe.for_launch(_spec(port, interval=0), None) is None


def test_healthy_engine_is_never_wedged(engine: tuple[Engine, int]) -> None:
    state, port = engine
    probe = CompletionProbe.for_launch(_spec(port), "k3y")
    assert probe is not None
    try:
        assert _wait(lambda: state.completions >= 5)
        assert not probe.wedged and probe.consecutive_failures == 0
        assert set(state.auth_headers) == {"Bearer k3y"}
    finally:
        probe.stop()


def test_stuck_engine_with_healthy_health_is_wedged(engine: tuple[Engine, int]) -> None:
    state, port = engine
    state.mode = "stuck"
    probe = CompletionProbe.for_launch(_spec(port), None)
    assert probe is not None
    try:
        assert _wait(lambda: probe.wedged)
        assert "no answer to a 1-token completion" in probe.reason and "2 probes in a row" in probe.reason
    finally:
        probe.stop()


def test_server_errors_count_and_recovery_resets(engine: tuple[Engine, int]) -> None:
    state, port = engine
    state.mode = "error"
    probe = CompletionProbe(_spec(port), None, interval_s=60, timeout_s=0.3, failures=3)
    try:
        assert probe.check_once() == "1-token completion answered 500"
        state.mode = "healthy"
        assert probe.check_once() is None
    finally:
        probe.stop()


def test_busy_engine_that_still_generates_is_not_wedged(engine: tuple[Engine, int]) -> None:
    state, port = engine
    probe = CompletionProbe(_spec(port), None, interval_s=60, timeout_s=0.3, failures=2)
    try:
        assert probe.check_once() is None  # healthy: remembers the token counter
        state.mode = "busy"  # every probe times out, but tokens keep flowing
        assert probe.check_once() is None
        assert probe.check_once() is None
        state.mode = "stuck"  # timeouts and no new tokens: a real failure
        assert probe.check_once() is not None
    finally:
        probe.stop()


def test_refused_connection_is_a_failure() -> None:
    probe = CompletionProbe(_spec(1), None, interval_s=60, timeout_s=0.3, failures=2)
    try:
        assert probe.check_once() is not None
    finally:
        probe.stop()
