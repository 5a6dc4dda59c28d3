"""Operations on deployments from outside their supervisor: launch detached, stop, clean up.

A detached deployment is a re-exec of `python -m llmhost.supervise NAME` in its own session. The API key
reaches it (and then the engine) through the environment, never argv; state files hold only env var names.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil

from llmhost.errors import EngineError, NotFoundError, UsageError
from llmhost.supervise import paths
from llmhost.supervise.process import terminate_tree
from llmhost.supervise.state import (
    TERMINAL_STATES,
    Deployment,
    ProcessRef,
    deployment_names,
    engine_processes,
    forget,
    read_deployment,
    refreshed,
    supervisor_alive,
    write_deployment,
)


def claim_name(dep: Deployment) -> None:
    """Record a new deployment; refuse a name whose supervisor is alive, replace stale state."""
    existing = read_deployment(dep.name)
    if existing is not None:
        current = refreshed(existing)
        if current.state not in TERMINAL_STATES:
            raise UsageError(
                f"A deployment named {dep.name!r} is already running ({current.state}, {current.base_url}).",
                hint=f"Stop it with `llmhost stop {dep.name}` or choose another --name.",
            )
        cleanup(existing)
    write_deployment(dep)


def reserved_ports() -> set[int]:
    """Ports of live deployments (an engine that is still loading may not have bound its port yet)."""
    ports = set()
    for name in deployment_names():
        dep = read_deployment(name)
        if dep is not None and refreshed(dep).state not in TERMINAL_STATES:
            ports.add(dep.port)
    return ports


def reserved_side_ports() -> set[int]:
    """The side ports (`LaunchSpec.side_ports`: vLLM's DP RPC port) of every live deployment (a loading
    engine may not have bound them yet)."""
    ports: set[int] = set()
    for name in deployment_names():
        dep = read_deployment(name)
        if dep is None or refreshed(dep).state in TERMINAL_STATES:
            continue
        ports.update(dep.launch.side_ports)
    return ports


def port_holder(port: int) -> str | None:
    """The live deployment that holds `port` (bound or about to be), if any."""
    for name in deployment_names():
        dep = read_deployment(name)
        if dep is not None and dep.port == port and refreshed(dep).state not in TERMINAL_STATES:
            return name
    return None


def launch_detached(dep: Deployment, *, api_key: str | None, timeout_s: float | None = None) -> Deployment:
    """Start the supervisor in the background and wait until the deployment is ready or has failed."""
    env = dict(os.environ)
    if api_key and dep.launch.api_key_env:
        env[dep.launch.api_key_env] = api_key
    log_path = paths.supervisor_log(dep.name)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmhost.supervise", dep.name],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + (timeout_s or dep.launch.ready_deadline_s + 60.0)
    try:
        while True:
            current = _written_by(read_deployment(dep.name), proc.pid)
            if current is not None and current.state == "ready":
                return current
            if current is not None and current.state in ("failed", "stopped"):
                # Its supervisor still kills the engine and may save once more: wait for it to exit, so a
                # retry under the same name (serve's port retry) never has its state overwritten.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=dep.launch.stop_grace_s + 30.0)
                return _written_by(read_deployment(dep.name), proc.pid) or current
            code = proc.poll()
            if code is not None:
                current = read_deployment(dep.name)
                if current is not None and current.state in TERMINAL_STATES:
                    return current
                if current is not None:
                    cleanup(current)  # the supervisor died: do not leave its engine running unsupervised
                raise EngineError(
                    f"The supervisor exited with code {code} before the deployment was ready.",
                    hint=f"See `llmhost logs {dep.name} --supervisor`.",
                )
            if time.monotonic() > deadline:
                stop_deployment(dep.name)
                raise EngineError(
                    f"Deployment {dep.name!r} was not ready in time; stopped it.",
                    hint=f"See `llmhost logs {dep.name}`.",
                )
            time.sleep(0.02)
    except KeyboardInterrupt:
        stop_deployment(dep.name)
        raise


def reclaim_orphans() -> list[str]:
    """Stop the engines left by deployments whose supervisor died; the names of those deployments.

    Such an engine still holds its port and memory: run before a new deployment picks its port, or
    `serve` would blame the port on a process only `ps` or `stop` would have cleaned up.
    """
    reclaimed = []
    for name in deployment_names():
        dep = read_deployment(name)
        if dep is None or supervisor_alive(dep) or refreshed(dep).state not in TERMINAL_STATES:
            continue
        if engine_processes(dep):
            cleanup(dep)
            reclaimed.append(name)
    return reclaimed


def cleanup(dep: Deployment) -> None:
    """Stop whatever is left of a deployment whose supervisor is gone, then forget its state."""
    if supervisor_alive(dep):
        return
    procs = engine_processes(dep)
    if procs:
        leader = dep.engine_process.pid if dep.engine_process else procs[0].pid
        terminate_tree(leader, extra=procs, grace_s=dep.launch.stop_grace_s)
    forget(dep.name)


def stop_deployment(name: str, *, timeout_s: float | None = None) -> Deployment:
    """Stop a deployment and return once every process of it has exited (then forget its state)."""
    dep = read_deployment(paths.validate_name(name))
    if dep is None and paths.state_file(name).is_file():
        # Its PIDs are unknown, so nothing can be stopped safely; the unreadable file only blocks the name.
        forget(name)
        raise NotFoundError(
            f"The state of {name!r} was unreadable and has been removed; nothing was stopped.",
            hint="If an engine of it is still running, find it with `ps aux | grep -E 'llama|vllm'`.",
        )
    if dep is None:
        raise NotFoundError(f"No deployment named {name!r}.", hint="See `llmhost ps` for what is running.")
    grace = dep.launch.stop_grace_s
    wait_s = timeout_s if timeout_s is not None else grace + 20.0
    if dep.supervisor is not None:
        sup = dep.supervisor.process()
        if sup is not None:
            with contextlib.suppress(psutil.Error):
                sup.send_signal(signal.SIGTERM)
            if not _wait_gone(dep.supervisor, wait_s):
                with contextlib.suppress(
                    psutil.Error
                ):  # a wedged supervisor: kill it, then clean up ourselves
                    sup.kill()
                _wait_gone(dep.supervisor, 5.0)
    final = read_deployment(name) or dep
    procs = engine_processes(final)
    survivors: list[psutil.Process] = []
    if procs:
        leader = final.engine_process.pid if final.engine_process else procs[0].pid
        survivors = terminate_tree(leader, extra=procs, grace_s=grace)
    if survivors:
        raise EngineError(
            f"Processes of {name!r} survived SIGKILL: {', '.join(str(p.pid) for p in survivors)}.",
            hint="They may be stuck in the kernel (e.g. a GPU driver call); check `ps` and the driver.",
        )
    forget(name)
    state = "failed" if final.state == "failed" else "stopped"
    return final.model_copy(update={"state": state})


def _written_by(dep: Deployment | None, supervisor_pid: int) -> Deployment | None:
    """`dep` if the supervisor `supervisor_pid` wrote it (or no supervisor has written it yet), else None:
    a state file also written by an earlier attempt's supervisor is not this attempt's answer."""
    if dep is None or dep.supervisor is None or dep.supervisor.pid == supervisor_pid:
        return dep
    return None


def _wait_gone(ref: ProcessRef, timeout_s: float) -> bool:
    """Wait for a process that is not our child to exit. A zombie counts as gone: its reaper (init, or
    a container's PID 1) may take seconds to collect it, and it holds no resources meanwhile."""
    deadline = time.monotonic() + timeout_s
    while ref.alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
