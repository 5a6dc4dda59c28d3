"""Data-parallel vLLM deployments get their own --data-parallel-rpc-port (vLLM's default is a fixed
29550 for every deployment on the machine), and profiles take the DP fields like other vLLM fields."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from llmhost.app import serve as serve_app
from llmhost.engines.vllm_argv import DP_RPC_PORT_OFFSET, DP_RPC_PORT_SPAN, dp_rpc_port_start, internal_port
from llmhost.supervise.state import Deployment, forget

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
QWEN3_MOE = CONFIGS / "Qwen--Qwen3-30B-A3B.json"


def _prepare(port: int, **extra: Any) -> serve_app.Prepared:
    request = serve_app.ServeRequest(
        model=str(QWEN3_MOE), hardware="h100-80gb:4", port=port, data_parallel_size=4,
        enable_expert_parallel=True, **extra,
    )  # fmt: skip
    return serve_app.prepare(request, dry_run=True)


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_the_rpc_port_is_in_the_deployments_own_window() -> None:
    assert dp_rpc_port_start(8000) == internal_port(8000) + DP_RPC_PORT_OFFSET
    assert DP_RPC_PORT_OFFSET + DP_RPC_PORT_SPAN == 64  # inside the 64-port internal window
    # Neighbouring API ports never share a window (and never vLLM's 29550 default).
    starts = {dp_rpc_port_start(p) for p in range(8000, 8100)}
    assert len(starts) == 100 and 29550 not in starts


def test_two_dp_deployments_get_different_rpc_ports_in_the_argv() -> None:
    one, two = _prepare(8000), _prepare(8001)
    a, b = one.deployment.launch.argv, two.deployment.launch.argv
    assert _flag(a, "--data-parallel-size") == "4" and "--enable-expert-parallel" in a
    assert _flag(a, "--data-parallel-rpc-port") == str(dp_rpc_port_start(8000))
    assert _flag(b, "--data-parallel-rpc-port") == str(dp_rpc_port_start(8001))
    # The state file records the port as the deployment's side port, which other serves then skip.
    assert one.deployment.launch.side_ports == [dp_rpc_port_start(8000)]
    # vLLM's internal ports (DP master ports among them) scan up from VLLM_PORT, per deployment too.
    assert one.deployment.launch.env["VLLM_PORT"] != two.deployment.launch.env["VLLM_PORT"]


def test_a_plan_without_dp_has_no_rpc_port() -> None:
    request = serve_app.ServeRequest(model=str(QWEN3_MOE), hardware="h100-80gb:1", port=8000)
    launch = serve_app.prepare(request, dry_run=True).deployment.launch
    assert "--data-parallel-rpc-port" not in launch.argv and "--data-parallel-size" not in launch.argv
    assert launch.side_ports == []


def test_a_live_deployments_side_ports_are_reserved(state_dir: Path) -> None:
    """`reserved_side_ports` reads them from the state files of live deployments only."""
    import os

    from llmhost.supervise import control
    from llmhost.supervise.state import ProcessRef, write_deployment

    dep = _prepare(8000).deployment
    rpc = dep.launch.side_ports[0]
    me = ProcessRef.of(os.getpid())
    write_deployment(dep.model_copy(update={"state": "starting", "supervisor": me}))
    assert control.reserved_side_ports() == {rpc}
    write_deployment(dep.model_copy(update={"state": "stopped", "supervisor": me}))
    assert control.reserved_side_ports() == set()


def test_serve_skips_a_taken_port_and_other_deployments_rpc_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmhost.supervise import control

    prepared = _prepare(8000)
    start = dp_rpc_port_start(8000)
    monkeypatch.setattr(control, "reserved_ports", lambda: set())
    monkeypatch.setattr(control, "reserved_side_ports", lambda: {start + 1})  # a loading deployment's
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            held.bind(("127.0.0.1", start))
        except OSError:
            pytest.skip(f"port {start} is taken on this machine already")
        held.listen()
        got = serve_app._side_port(prepared.candidate, "127.0.0.1", 8000, dry_run=False)
    assert got is not None and got >= start + 2
    assert got < start + DP_RPC_PORT_SPAN


def test_profiles_take_the_dp_fields(tmp_path: Path) -> None:
    from llmhost.app.serving import ServeCommand, build_request
    from llmhost.profiles import load_profile

    path = tmp_path / "moe.yaml"
    path.write_text(
        f"model: {QWEN3_MOE}\nengine: vllm\ndata_parallel_size: 4\nenable_expert_parallel: true\n"
    )
    prof = load_profile(str(path))
    assert prof.data_parallel_size == 4 and prof.enable_expert_parallel is True
    request, _ = build_request(ServeCommand(profile=str(path), hardware="h100-80gb:4"))
    assert request.data_parallel_size == 4 and request.enable_expert_parallel is True
    # The command line wins over the profile, as for every other field.
    request, _ = build_request(ServeCommand(profile=str(path), hardware="h100-80gb:4", data_parallel_size=2))
    assert request.data_parallel_size == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\ndata_parallel_size: 0\n")
    with pytest.raises(Exception, match="data_parallel_size"):
        load_profile(str(bad))


def test_a_taken_dp_rpc_port_is_replanned_even_with_a_fixed_api_port(
    monkeypatch: pytest.MonkeyPatch, state_dir: Path
) -> None:
    """The engine fails with "Address already in use" (port_in_use) when another program took the DP RPC
    port serve picked: serve plans again, keeps the --port the user gave, and picks the next free one."""
    from llmhost.app import serving
    from llmhost.supervise import control

    request = serve_app.ServeRequest(
        model=str(QWEN3_MOE), hardware="h100-80gb:4", port=18123, data_parallel_size=4,
        enable_expert_parallel=True,
    )  # fmt: skip
    first = serve_app.prepare(request, dry_run=False)
    taken = int(_flag(first.deployment.launch.argv, "--data-parallel-rpc-port"))
    monkeypatch.setattr(control, "reserved_side_ports", lambda: {taken})  # still held: skipped next
    runs: list[Deployment] = []

    def fake_foreground(dep: Deployment, *_: object) -> Deployment:
        runs.append(dep)
        forget(dep.name)  # as run_foreground does: nothing outlives a foreground serve
        if len(runs) == 1:
            return dep.model_copy(update={"state": "failed", "failure_cause": "port_in_use"})
        return dep.model_copy(update={"state": "stopped"})

    monkeypatch.setattr(serving, "run_foreground", fake_foreground)
    retried: list[int] = []
    final = serving.run_serve(
        serving.PreparedServe(request=request, prepared=first),
        detach=False,
        events=serving.ServeEvents(on_port_retry=retried.append),
    )
    assert final.state == "stopped" and len(runs) == 2 and retried == [18123]
    second = int(_flag(runs[1].launch.argv, "--data-parallel-rpc-port"))
    assert second != taken and runs[1].port == 18123
