"""The serve and bench use cases as library calls (`llmhost.app.serving`, `llmhost.app.bench`), without the
CLI: what the commands build from their options, the checks they make, and (marked `engine`) a real
llama.cpp server served in the foreground and detached, then benchmarked by name."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmhost.app.bench import BenchCommand, BenchInterrupted, bench_config, run_bench_command
from llmhost.app.serving import PreparedServe, ServeCommand, ServeEvents, prepare_serve, run_serve
from llmhost.errors import NotFoundError, UsageError


def _profile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "profile.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- serve ---------------------------------------------------------------------------------------------
def test_the_command_refuses_unknown_fields_and_hides_the_key() -> None:
    with pytest.raises(ValidationError):
        ServeCommand.model_validate({"model": "m.gguf", "prot": 8000})
    cmd = ServeCommand(model="m.gguf", api_key="secret-key-123")
    assert "secret-key-123" not in repr(cmd) and "api_key" not in cmd.model_dump()


def test_options_win_over_the_profile(tmp_path: Path, tiny_gguf: Path, state_dir: Path) -> None:
    profile = _profile(tmp_path, f"model: {tiny_gguf}\ncontext: 512\nconcurrency: 2\nport: 18123\n")
    warnings: list[str] = []
    ready = prepare_serve(
        ServeCommand(profile=profile, context=256, name="from-cli", dry_run=True), warn=warnings.append
    )
    assert ready.request.model == str(tiny_gguf)
    assert ready.request.context == 256 and ready.request.concurrency == 2  # option, then profile
    dep = ready.prepared.deployment
    assert dep.name == "from-cli" and dep.port == 18123  # only the profile gave a port
    assert ready.prepared.candidate.context_length == 256 and ready.prepared.candidate.concurrency == 2
    assert str(tiny_gguf) in ready.prepared.command
    assert ready.dry_run and warnings == []
    assert not ready.unauthenticated_remote  # loopback


def test_a_profile_chat_template_pins_the_runtime_it_was_spelled_for(
    tmp_path: Path, tiny_gguf: Path, state_dir: Path
) -> None:
    profile = _profile(tmp_path, f"model: {tiny_gguf}\nchat_template: chatml\n")
    ready = prepare_serve(ServeCommand(profile=profile, dry_run=True), warn=lambda _: None)
    runtime = ready.prepared.deployment.runtime
    assert ready.request.engine == runtime in ("llama-server", "llama-cpp-python")
    flag = "--chat-template" if runtime == "llama-server" else "--chat_format"
    assert ready.request.extra_args[-2:] == [flag, "chatml"]
    assert ready.templated and not ready.lacks_chat_template
    assert f"{flag} chatml" in ready.prepared.command


def test_bad_commands_fail_before_anything_is_planned(tmp_path: Path, state_dir: Path) -> None:
    with pytest.raises(UsageError, match="No model given"):
        prepare_serve(ServeCommand(profile=_profile(tmp_path, "context: 512\n")), warn=lambda _: None)
    with pytest.raises(UsageError, match="only be combined with --dry-run"):
        prepare_serve(ServeCommand(model="missing.gguf", hardware="h100-80gb"), warn=lambda _: None)


def test_a_dry_run_plan_starts_nothing(tiny_gguf: Path, state_dir: Path) -> None:
    ready = prepare_serve(ServeCommand(model=str(tiny_gguf), dry_run=True), warn=lambda _: None)
    with pytest.raises(ValueError, match="dry run"):
        run_serve(ready, detach=True)
    assert not list(state_dir.rglob("*.json"))  # no deployment was claimed


@pytest.mark.engine
def test_foreground_serve_retries_a_stolen_port_and_stops_on_sigterm(
    tiny_gguf: Path, state_dir: Path
) -> None:
    from llmhost.supervise.state import read_deployment

    ready = prepare_serve(ServeCommand(model=str(tiny_gguf), context=256), warn=lambda _: None)
    taken = ready.prepared.deployment.port
    retried: list[int] = []
    states: list[str] = []
    watched: list[int] = []

    def on_update(dep: object) -> None:
        state = str(getattr(dep, "state", ""))
        states.append(state)
        if state == "ready" and states.count("ready") == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # what `kill PID` does to `llmhost serve`

    def watching(dep: object) -> PreparedServeWatch:
        watched.append(int(getattr(dep, "port", 0)))
        return PreparedServeWatch()

    before = signal.getsignal(signal.SIGTERM)
    # Another program takes the port serve picked before the engine binds it.
    with socket.socket() as thief:
        thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port left in TIME_WAIT is free
        thief.bind(("127.0.0.1", taken))
        thief.listen()
        final = run_serve(
            ready,
            detach=False,
            events=ServeEvents(on_update=on_update, on_port_retry=retried.append, watching=watching),
        )
    assert retried == [taken]
    assert watched[0] == taken and watched[-1] == final.port != taken
    assert final.state == "stopped" and "ready" in states
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    assert read_deployment(final.name) is None  # nothing outlives a foreground serve


class PreparedServeWatch:
    """A do-nothing context manager: `ServeEvents.watching` for a test with no screen."""

    def __enter__(self) -> PreparedServeWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


# -- bench ---------------------------------------------------------------------------------------------
def test_bench_defaults_and_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMHOST_API_KEY", "from-env-key")
    cfg = bench_config(
        BenchCommand(base_url="http://127.0.0.1:9/v1/", model="m", input_tokens="16:32", seed=7),
        warn=lambda _: None,
    )
    assert cfg.target.base_url == "http://127.0.0.1:9/v1" and cfg.target.api_key_used
    assert cfg.api_key == "from-env-key"
    wl = cfg.workload
    assert (wl.num_requests, wl.concurrency, wl.input_tokens, wl.output_tokens) == (
        50,
        1,
        (16, 32),
        (128, 128),
    )
    assert cfg.synthetic is not None and cfg.file_workload is None
    # An open loop (--rate) has no concurrency cap unless one is given.
    cfg = bench_config(BenchCommand(base_url="http://h:1/v1", model="m", rate=5.0), warn=lambda _: None)
    assert cfg.workload.concurrency is None and cfg.workload.rate == 5.0
    assert "from-env-key" not in repr(BenchCommand(model="m", api_key="from-env-key"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"deployment": "x", "base_url": "http://h:1/v1"}, "not both"),
        ({"model": "m"}, "say what to benchmark"),
        ({"base_url": "ftp://h/v1", "model": "m"}, "not an http"),
        ({"base_url": "http://h:0/v1", "model": "m"}, "port 0"),
        ({"base_url": "http://h:1/v1", "model": "m", "sweep": True, "rate": 2.0}, "--sweep sets"),
        ({"base_url": "http://h:1/v1", "model": "m", "burstiness": 0.5}, "--burstiness"),
        ({"base_url": "http://h:1/v1", "model": "m", "timeout": float("nan")}, "--timeout nan"),
        ({"base_url": "http://h:1/v1", "model": "m", "sweep": True, "sweep_max": 0}, "--sweep-max 0"),
    ],
)
def test_bench_refuses_bad_commands(fields: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        bench_config(BenchCommand.model_validate(fields), warn=lambda _: None)


def test_bench_an_unknown_deployment(state_dir: Path) -> None:
    with pytest.raises(NotFoundError):
        bench_config(BenchCommand(deployment="nothing-here"), warn=lambda _: None)


def test_ctrl_c_before_the_load_is_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmhost.bench import runner

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_blocking", interrupted)
    with pytest.raises(BenchInterrupted):
        run_bench_command(BenchCommand(base_url="http://127.0.0.1:9/v1", model="m"), warn=lambda _: None)


@pytest.mark.engine
def test_serve_detached_then_bench_it_by_name(tiny_gguf: Path, state_dir: Path) -> None:
    from llmhost.supervise.control import stop_deployment

    ready: PreparedServe = prepare_serve(
        ServeCommand(model=str(tiny_gguf), context=256, concurrency=2, name="app-bench"), warn=lambda _: None
    )
    dep = run_serve(ready, detach=True)
    try:
        assert dep.state == "ready" and dep.name == "app-bench"
        opened: list[object] = []

        class Sink(PreparedServeWatch):
            def __enter__(self) -> Sink:
                opened.append(self)
                return self

            def __getattr__(self, name: str) -> object:  # every ProgressSink call is accepted
                return lambda *args, **kwargs: None

        result = run_bench_command(
            BenchCommand(deployment="app-bench", num_requests=2, warmup=0, output_tokens="4", seed=1),
            progress=Sink,
            warn=lambda _: None,
        )
    finally:
        stop_deployment("app-bench")
    assert len(opened) == 1
    assert result.target.deployment == "app-bench" and result.target.base_url == dep.base_url
    assert result.target.server_slots == 2  # read from the engine's argv
    assert result.summary.completed == 2 and result.summary.failed == 0 and not result.incomplete
