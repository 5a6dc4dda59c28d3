"""The supervisor with real processes: a small HTTP engine (fake_engine.py) for the failure modes an LLM
engine cannot be made to show on demand, and the real llama.cpp engine for a real invalid model file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from llmhost.engines.base import LaunchSpec, ServeOptions
from llmhost.engines.llamacpp import ENGINE as LLAMACPP
from llmhost.plan.models import Candidate, MemoryBreakdown
from llmhost.supervise import paths
from llmhost.supervise.process import terminate_tree
from llmhost.supervise.state import Deployment, ProcessRef, load_deployment, read_deployment
from llmhost.supervise.supervisor import Supervisor, SupervisorConfig, backoff_delay

FAKE = str(Path(__file__).with_name("fake_engine.py"))
FAST = SupervisorConfig(backoff_initial_s=0.1, backoff_max_s=0.4, max_consecutive_crashes=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deployment(
    name: str, argv: list[str], port: int, *, deadline: float = 20.0, grace: float = 3.0
) -> Deployment:
    spec = LaunchSpec(
        engine="fake",
        runtime="fake",
        argv=argv,
        base_url=f"http://127.0.0.1:{port}/v1",
        port=port,
        served_model_name="m",
        ready_deadline_s=deadline,
        stop_grace_s=grace,
    )
    return Deployment(
        name=name, model="m", served_model_name="m", engine="fake", runtime="fake", base_url=spec.base_url,
        host="127.0.0.1", port=port, launch=spec, log_dir=str(paths.deployment_dir(name)),
    )  # fmt: skip


def _fake(port: int, *opts: str) -> list[str]:
    return [sys.executable, FAKE, str(port), "m", *opts]


class _Run:
    """Run a supervisor in a thread; stop it on exit."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.result: Deployment | None = None
        self.thread = threading.Thread(target=self._go, daemon=True)

    def _go(self) -> None:
        self.result = self.sup.run()

    def __enter__(self) -> _Run:
        self.thread.start()
        return self

    def wait_state(self, state: str, timeout: float = 20.0) -> Deployment:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sup.dep.state == state:
                return self.sup.dep
            time.sleep(0.05)
        raise AssertionError(f"state {self.sup.dep.state!r}, wanted {state!r}")

    def join(self, timeout: float = 30.0) -> Deployment:
        self.thread.join(timeout)
        assert self.result is not None, "supervisor did not return"
        return self.result

    def __exit__(self, *exc: object) -> None:
        self.sup.request_stop()
        self.thread.join(30)


def test_backoff_doubles_from_2s_to_5min() -> None:
    cfg = SupervisorConfig()
    assert [backoff_delay(n, cfg) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert backoff_delay(20, cfg) == 300


def test_ready_requires_the_served_name_then_stop_leaves_nothing(state_dir: Path) -> None:
    port = _free_port()
    dep = _deployment("sv-ready", _fake(port, "--load", "0.5"), port)
    with _Run(Supervisor(dep, engine=None)) as run:
        ready = run.wait_state("ready")
        assert ready.engine_process is not None and ready.ready_at is not None
        assert ready.ready_at - (ready.started_at or 0) >= 0.5
        pid = ready.engine_process.pid
        run.sup.request_stop()
        final = run.join()
    assert final.state == "stopped"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert read_deployment("sv-ready").state == "stopped"  # type: ignore[union-attr]
    log = paths.engine_log("sv-ready").read_text()
    assert f"listening on {port}" in log


def test_child_that_left_the_process_group_is_stopped_too(state_dir: Path) -> None:
    port = _free_port()
    dep = _deployment("sv-child", _fake(port, "--escaping-child"), port)
    with _Run(Supervisor(dep, engine=None)) as run:
        run.wait_state("ready")
        time.sleep(1.3)  # descendants are tracked once a second
        tracked = run.sup.dep.descendants
        assert tracked, "the escaping child was not tracked"
        child = tracked[0].process()
        assert child is not None and os.getpgid(child.pid) != run.sup.dep.engine_process.pid  # type: ignore[union-attr]
        run.sup.request_stop()
        run.join()
    assert tracked[0].process() is None


def test_engine_ignoring_sigterm_is_killed_after_the_grace_period(state_dir: Path) -> None:
    port = _free_port()
    dep = _deployment("sv-term", _fake(port, "--ignore-term"), port, grace=1.0)
    with _Run(Supervisor(dep, engine=None)) as run:
        ref = run.wait_state("ready").engine_process
        assert ref is not None and ref.alive()
        started = time.monotonic()
        run.sup.request_stop()
        final = run.join()
        took = time.monotonic() - started
    assert final.state == "stopped"
    assert 1.0 <= took < 8.0
    assert not ref.alive()


_COUNT_TERMS = """
import signal, sys, time
log = sys.argv[1]
def on_term(signum, frame):
    with open(log, "a") as fh:
        fh.write("TERM\\n")
signal.signal(signal.SIGTERM, on_term)
open(log + ".ready", "w").close()
while "TERM" not in open(log).read():
    time.sleep(0.01)
time.sleep(0.5)  # a duplicate SIGTERM sent with the first would land here
"""


def test_stop_sends_one_sigterm_so_the_engine_shuts_down_gracefully(tmp_path: Path) -> None:
    log = tmp_path / "signals.log"
    log.write_text("")
    proc = subprocess.Popen([sys.executable, "-c", _COUNT_TERMS, str(log)], start_new_session=True)
    deadline = time.monotonic() + 10
    while not Path(f"{log}.ready").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    left = terminate_tree(proc.pid, grace_s=5.0, popen=proc)
    assert left == [] and proc.returncode == 0
    assert log.read_text().count("TERM") == 1


def test_crash_loop_gives_up_with_a_clear_message(state_dir: Path) -> None:
    port = _free_port()
    dep = _deployment("sv-loop", _fake(port, "--crash-after", "0.3"), port)
    with _Run(Supervisor(dep, engine=None, config=FAST)) as run:
        final = run.join(60)
    assert final.state == "failed"
    assert final.restarts == FAST.max_consecutive_crashes
    assert "Crash loop" in (final.failure or "")
    assert "exited with code 3" in paths.supervisor_log("sv-loop").read_text()


def test_exit_before_ready_fails_at_once_with_the_log_tail(state_dir: Path) -> None:
    port = _free_port()
    dep = _deployment("sv-early", _fake(port, "--fail", "something went badly wrong"), port)
    with _Run(Supervisor(dep, engine=None, config=FAST)) as run:
        final = run.join()
    assert final.state == "failed" and final.restarts == 0
    assert "before it became ready" in (final.failure or "")
    assert "something went badly wrong" in (final.failure or "")


def test_out_of_memory_is_not_retried_with_the_same_flags(state_dir: Path) -> None:
    port = _free_port()
    oom = "ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 99999999999"
    dep = _deployment("sv-oom", _fake(port, "--crash-after", "0.5", "--crash-message", oom), port)
    with _Run(Supervisor(dep, engine=LLAMACPP, config=FAST)) as run:
        run.wait_state("ready")
        final = run.join()
    assert final.state == "failed" and final.failure_cause == "out_of_memory"
    assert final.restarts == 0
    assert "--context" in (final.failure or "")


def test_a_sigkill_from_the_oom_killer_is_not_retried_but_a_users_is(state_dir: Path) -> None:
    """The kernel's OOM killer leaves no line in the engine's log, only its oom_kill counter (faked here:
    the real OOM killer is not something to provoke): that SIGKILL is out of memory, not a crash."""
    import dataclasses
    import signal

    for oom, name in ((True, "sv-oomkill"), (False, "sv-userkill")):
        kills = [0]
        config = dataclasses.replace(FAST, oom_kill_counter=lambda: kills[0])
        port = _free_port()
        dep = _deployment(name, _fake(port), port)
        with _Run(Supervisor(dep, engine=LLAMACPP, config=config)) as run:
            engine = run.wait_state("ready").engine_process
            assert engine is not None
            kills[0] += 1 if oom else 0
            os.kill(engine.pid, signal.SIGKILL)
            if oom:
                final = run.join()
            else:
                deadline = time.monotonic() + 20  # restarted and ready again (the backoff is 0.1 s)
                while not (run.sup.dep.restarts == 1 and run.sup.dep.state == "ready"):
                    assert time.monotonic() < deadline, run.sup.dep.state
                    time.sleep(0.02)
                run.sup.request_stop()
                final = run.join()
        if oom:
            assert final.state == "failed" and final.failure_cause == "out_of_memory", final.failure
            assert final.restarts == 0 and "out-of-memory killer" in (final.failure or "")
        else:
            assert final.state == "stopped" and final.restarts == 1


def test_port_in_use_is_reported_before_launch(state_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        dep = _deployment("sv-port", _fake(port), port)
        with _Run(Supervisor(dep, engine=None)) as run:
            final = run.join(20)
    assert final.state == "failed" and final.failure_cause == "port_in_use"
    assert final.engine_process is None


def test_a_server_that_takes_the_port_while_the_engine_loads_is_not_taken_for_it(state_dir: Path) -> None:
    """Another server (another user's, another state dir's) binds the port during the engine's load and
    answers the readiness probe with the right model name: the deployment must fail as 'port in use',
    naming that server, instead of calling the other server ready."""
    port = _free_port()
    dep = _deployment("sv-stolen", _fake(port, "--load", "5"), port)
    with _Run(Supervisor(dep, engine=None)) as run:
        run.wait_state("starting")
        intruder = subprocess.Popen(_fake(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            final = run.join(30)
        finally:
            intruder.kill()
            intruder.wait()
    assert final.state == "failed" and final.failure_cause == "port_in_use", final.failure
    assert f"PID {intruder.pid}" in (final.failure or "")
    assert final.ready_at is None


def test_readiness_deadline(state_dir: Path) -> None:
    port = _free_port()
    dep = _deployment("sv-slow", _fake(port, "--load", "30"), port, deadline=1.0)
    with _Run(Supervisor(dep, engine=None)) as run:
        final = run.join(30)
    assert final.state == "failed" and "did not become ready within 1s" in (final.failure or "")
    assert final.engine_process is not None and final.engine_process.process() is None


def test_load_deployment_marks_a_dead_supervisor(state_dir: Path) -> None:
    port = _free_port()
    dep = _deployment("sv-dead", _fake(port), port)
    gone = psutil.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    from llmhost.supervise.state import write_deployment

    write_deployment(
        dep.model_copy(update={"state": "ready", "supervisor": ProcessRef(pid=os.getpid(), create_time=1.0)})
    )
    # Our own PID with another create time = a reused PID: never trusted.
    assert load_deployment("sv-dead").state == "dead"
    write_deployment(dep.model_copy(update={"state": "ready", "supervisor": ProcessRef.of(os.getpid())}))
    assert load_deployment("sv-dead").state == "ready"
    assert (paths.state_file("sv-dead").stat().st_mode & 0o777) == 0o600


@pytest.mark.engine
def test_real_engine_on_an_invalid_model_file_is_classified_and_not_restarted(
    state_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("llama_cpp")
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"GGUF" + b"\x00" * 64)  # GGUF magic, garbage after it
    mem = MemoryBreakdown(weights_bytes=1, kv_cache_bytes=1, compute_bytes=1, overhead_bytes=1, total_bytes=4)
    cand = Candidate(
        engine="llamacpp", quantization="F16", kv_cache_dtype="f16", context_length=256, concurrency=1,
        fits=True, memory=mem, kv_bytes_per_token=1, max_context=256, max_concurrency=1,
        decode_tokens_per_s=None, model_source=str(bogus), gguf_file=str(bogus),
    )  # fmt: skip
    port = _free_port()
    spec = LLAMACPP.build_launch(
        cand, ServeOptions(name="sv-bad", served_model_name="bad", port=port, runtime="llama-cpp-python")
    )
    dep = Deployment(
        name="sv-bad", model=str(bogus), served_model_name="bad", engine="llamacpp", runtime=spec.runtime,
        base_url=spec.base_url, host="127.0.0.1", port=port, launch=spec,
        log_dir=str(paths.deployment_dir("sv-bad")),
    )  # fmt: skip
    with _Run(Supervisor(dep, engine=LLAMACPP)) as run:
        final = run.join(60)
    assert final.state == "failed"
    assert final.failure_cause == "model_invalid", final.failure
    assert final.restarts == 0


def test_early_spawned_engine_is_recorded_so_it_can_never_be_orphaned(state_dir: Path) -> None:
    """The detached entry point spawns the engine before its heavy imports; the state file names the
    engine at once, so a supervisor that dies right then still leaves nothing running after cleanup."""
    from llmhost.supervise.__main__ import _early_spawn
    from llmhost.supervise.control import cleanup
    from llmhost.supervise.state import write_deployment

    port = _free_port()
    write_deployment(_deployment("sv-early-spawn", _fake(port), port))
    popen = _early_spawn("sv-early-spawn")
    assert popen is not None
    try:
        recorded = read_deployment("sv-early-spawn")
        assert recorded is not None and recorded.engine_process is not None
        assert recorded.engine_process.pid == popen.pid and recorded.engine_process.alive()
        assert (paths.state_file("sv-early-spawn").stat().st_mode & 0o777) == 0o600
        cleanup(recorded)  # what `ps`/the launcher do when the supervisor is gone
        popen.wait(10)
        assert not recorded.engine_process.alive()
        assert read_deployment("sv-early-spawn") is None
    finally:
        if popen.poll() is None:
            popen.kill()


def test_stop_before_the_first_attempt_still_stops_an_early_spawned_engine(state_dir: Path) -> None:
    from llmhost.supervise.__main__ import _early_spawn
    from llmhost.supervise.state import write_deployment

    port = _free_port()
    dep = _deployment("sv-early-stop", _fake(port), port)
    write_deployment(dep)
    popen = _early_spawn("sv-early-stop")
    assert popen is not None
    sup = Supervisor(read_deployment("sv-early-stop"), engine=None, early_process=popen)  # type: ignore[arg-type]
    sup.request_stop()  # e.g. SIGTERM arrived while the supervisor was still importing
    final = sup.run()
    assert final.state == "stopped"
    assert popen.poll() is not None


def test_detached_supervisors_and_stop_all(state_dir: Path) -> None:
    """Two detached deployments of the small HTTP engine, listed by `ps`, then `llmhost stop --all`."""
    from llmhost.app.deployments import list_deployments
    from llmhost.supervise.control import claim_name, launch_detached
    from support.serve_helpers import llmhost

    started = []
    for name in ("sv-all-a", "sv-all-b"):
        port = _free_port()
        dep = _deployment(name, _fake(port), port).model_copy(update={"detached": True})
        claim_name(dep)
        final = launch_detached(dep, api_key=None)
        assert final.state == "ready", final.failure
        started.append(final)
    listed = {d.name: d for d in list_deployments()}
    assert set(listed) == {"sv-all-a", "sv-all-b"}
    assert all(d.supervisor_pid and d.engine_pid and d.uptime_s is not None for d in listed.values())
    out = llmhost("stop", "--all", "--json", env={"LLMHOST_STATE_DIR": str(state_dir)})
    assert out.returncode == 0, out.stderr
    assert sorted(d["name"] for d in json.loads(out.stdout)) == ["sv-all-a", "sv-all-b"]
    for dep in started:
        assert dep.supervisor is not None and not dep.supervisor.alive()
        assert dep.engine_process is not None and not dep.engine_process.alive()
    assert list_deployments() == []


def test_second_stop_request_skips_the_grace_period(state_dir: Path) -> None:
    port = _free_port()
    dep = _deployment("sv-hurry", _fake(port, "--ignore-term"), port, grace=20.0)
    with _Run(Supervisor(dep, engine=None)) as run:
        run.wait_state("ready")
        began = time.monotonic()
        run.sup.request_stop()
        time.sleep(0.5)
        run.sup.request_stop()  # the second Ctrl-C
        final = run.join()
    assert final.state == "stopped"
    assert time.monotonic() - began < 5.0  # not the 20 s grace period


def test_ready_deployment_whose_engine_died_is_not_reported_ready(state_dir: Path) -> None:
    port = _free_port()
    dep = _deployment("sv-engine-gone", _fake(port), port)
    gone = psutil.Popen([sys.executable, "-c", "pass"])
    engine_ref = ProcessRef.of(gone.pid)
    gone.wait()
    from llmhost.supervise.state import write_deployment

    me = ProcessRef.of(os.getpid())  # a live "supervisor"
    ready = {"state": "ready", "supervisor": me}
    write_deployment(dep.model_copy(update={**ready, "engine_process": engine_ref}))
    assert load_deployment("sv-engine-gone").state == "restarting"
    alive = ProcessRef.of(os.getpid())
    write_deployment(dep.model_copy(update={**ready, "engine_process": alive}))
    assert load_deployment("sv-engine-gone").state == "ready"


def test_serve_reclaims_the_port_of_an_engine_whose_supervisor_died(state_dir: Path) -> None:
    """A SIGKILLed supervisor leaves its engine holding the port; the next `serve` on that port stops it
    (and says so) instead of refusing the port, which only `ps`/`stop` would have cleaned."""
    from llmhost.supervise.control import claim_name, launch_detached
    from support.serve_helpers import llmhost

    port = _free_port()
    dep = _deployment("sv-orphan", _fake(port), port).model_copy(update={"detached": True})
    claim_name(dep)
    final = launch_detached(dep, api_key=None)
    assert final.state == "ready", final.failure
    assert final.supervisor is not None and final.engine_process is not None
    os.kill(final.supervisor.pid, 9)
    deadline = time.monotonic() + 10
    while final.supervisor.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert final.engine_process.alive()  # the orphan still holds the port
    env = {"LLMHOST_STATE_DIR": str(state_dir)}
    out = llmhost("serve", "/no/such/model.gguf", "--port", str(port), "--detach", env=env)
    assert "whose supervisor had died" in out.stderr and "sv-orphan" in out.stderr, out.stderr
    assert not final.engine_process.alive()
    assert read_deployment("sv-orphan") is None


def test_stop_all_skips_a_corrupt_state_file(state_dir: Path) -> None:
    from support.serve_helpers import llmhost

    folder = paths.deployment_dir("sv-corrupt")
    folder.mkdir(parents=True)
    (folder / "deployment.json").write_text("{not json")
    env = {"LLMHOST_STATE_DIR": str(state_dir)}
    out = llmhost("stop", "--all", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    assert llmhost("stop", "sv-corrupt", env=env).returncode == 5  # by name it is still "no such deployment"


def test_ps_says_why_a_deployment_is_dead(state_dir: Path) -> None:
    # A "dead" row alone leaves the user guessing whether the engine still runs and what to do.
    from llmhost.supervise.state import write_deployment
    from support.serve_helpers import llmhost

    port = _free_port()
    dep = _deployment("sv-gone", _fake(port), port)
    reused = ProcessRef(pid=os.getpid(), create_time=1.0)  # our PID, another create time: not its supervisor
    write_deployment(dep.model_copy(update={"state": "ready", "supervisor": reused}))
    out = llmhost("ps", env={"LLMHOST_STATE_DIR": str(state_dir)})
    assert out.returncode == 0, out.stderr
    assert "dead" in out.stdout
    assert f"sv-gone: its supervisor (PID {os.getpid()}) is gone" in out.stdout, out.stdout
    assert read_deployment("sv-gone") is None


def test_ps_shows_a_served_name_with_brackets_as_it_is(state_dir: Path) -> None:
    # Names come from file names ("model [Q4].gguf"): Rich must not read "[q4]" as markup and drop it.
    from llmhost.supervise.state import write_deployment
    from support.serve_helpers import llmhost

    port = _free_port()
    dep = _deployment("sv-brackets", _fake(port), port)
    me = ProcessRef.of(os.getpid())  # a live "supervisor", so ps keeps the deployment
    write_deployment(
        dep.model_copy(update={"served_model_name": "m [q4]", "state": "ready", "supervisor": me})
    )
    out = llmhost("ps", env={"LLMHOST_STATE_DIR": str(state_dir)})
    assert out.returncode == 0, out.stderr
    assert "m [q4]" in out.stdout, out.stdout


def test_serve_refuses_a_port_a_loading_deployment_holds(state_dir: Path, tiny_gguf: Path) -> None:
    # vLLM binds its port only after loading (minutes): `serve B --port P` meanwhile took P, and A then
    # failed with "port in use". Without --port, such ports were already skipped.
    from llmhost.supervise.state import write_deployment
    from support.serve_helpers import llmhost

    port = _free_port()
    dep = _deployment("sv-loading", _fake(port), port)
    me = ProcessRef.of(os.getpid())  # a live supervisor whose engine has not bound its port yet
    write_deployment(dep.model_copy(update={"state": "starting", "supervisor": me}))
    env = {"LLMHOST_STATE_DIR": str(state_dir)}
    try:
        out = llmhost(
            "serve", str(tiny_gguf), "--port", str(port), "--detach", "--name", "sv-second", env=env
        )
        assert out.returncode == 2, out.stderr
        assert f"Port {port}" in out.stderr and "sv-loading" in out.stderr, out.stderr
    finally:
        llmhost("stop", "sv-second", env=env)


def test_a_failed_attempts_supervisor_cannot_overwrite_the_retry(state_dir: Path) -> None:
    """Seen in CI: serve's port retry re-claimed the name while the failed attempt's supervisor was still
    killing its slow engine; that supervisor's last save overwrote the new claim, serve took the state for
    its second attempt's and started a third, and one vLLM was left running for good. launch_detached
    now returns a failure only once its supervisor has exited."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from llmhost.supervise.control import claim_name, launch_detached

    class Thief(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"data": [{"id": "m"}]}' if self.path == "/v1/models" else b"{}"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = _free_port()
    # The engine loads for 4 s and ignores SIGTERM, so its supervisor is still stopping it (grace 3 s)
    # after it has recorded the failure: the window the late save used to land in.
    dep = _deployment("sv-retry", _fake(port, "--load", "4", "--ignore-term"), port, grace=3.0)
    dep = dep.model_copy(update={"detached": True})
    claim_name(dep)
    thief: list[ThreadingHTTPServer] = []

    def take_the_port() -> None:  # once the engine runs, as another program would in that window
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            current = read_deployment("sv-retry")
            if current is not None and current.engine_process is not None:
                ThreadingHTTPServer.allow_reuse_address = True
                server = ThreadingHTTPServer(("127.0.0.1", port), Thief)
                thief.append(server)
                server.serve_forever()
                return
            time.sleep(0.02)

    threading.Thread(target=take_the_port, daemon=True).start()
    try:
        final = launch_detached(dep, api_key=None)
        assert final.state == "failed" and final.failure_cause == "port_in_use", final.failure
        assert final.supervisor is not None and not final.supervisor.alive(), "returned before it exited"
        retry = _deployment("sv-retry", _fake(port), port).model_copy(update={"detached": True})
        claim_name(retry)
        time.sleep(4.0)  # longer than the old supervisor's grace period: a late save would be here by now
        current = read_deployment("sv-retry")
        assert current is not None and current.supervisor is None and current.state == "starting"
    finally:
        for server in thief:
            server.shutdown()
            server.server_close()
