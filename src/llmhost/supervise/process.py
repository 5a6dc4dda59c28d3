"""Process-group plumbing: spawn an engine in its own session, stop the whole tree, prove nothing is left.

Why a new session: the engine and everything it forks share one process group we can signal at once,
and a Ctrl-C in the user's terminal reaches only the supervisor (which then stops the engine in order).
Why also psutil descendants: some engines' children (vLLM's engine core and workers) may move to other
groups, and they would otherwise outlive a killed API server and keep holding memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import psutil

from llmhost.errors import EngineError, UsageError


def spawn(argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session, stdout+stderr on one pipe (the supervisor writes the log)."""
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    except FileNotFoundError as exc:
        raise EngineError(
            f"Engine executable not found: {argv[0]}.",
            hint="Install it (`llmhost engines` shows what is installed) or pass --engine-bin.",
        ) from exc
    except PermissionError as exc:
        raise EngineError(f"Engine executable is not runnable: {argv[0]} ({exc}).") from exc


def engine_env(
    base: Mapping[str, str],
    *,
    env: Mapping[str, str],
    env_remove: Iterable[str],
    secret_env: Mapping[str, str],
    api_key_env: str | None,
    api_key: str | None,
) -> dict[str, str]:
    """The engine's environment: inherited minus `env_remove` (trailing * = prefix) and minus our own
    key variable, plus `env`, plus secrets resolved by reference (`secret_env`: engine var -> our var)."""
    out = dict(base)
    for name in env_remove:
        if name.endswith("*"):
            for key in [k for k in out if k.startswith(name[:-1])]:
                del out[key]
        else:
            out.pop(name, None)
    if api_key_env:
        out.pop(api_key_env, None)
    out.update(env)
    for engine_var, source_var in secret_env.items():
        value = api_key if source_var == api_key_env else base.get(source_var)
        if value:
            out[engine_var] = value
    return out


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
    return members


def tree_of(
    leader_pid: int, extra: Iterable[psutil.Process] = (), *, leader_alive: bool = True
) -> list[psutil.Process]:
    """The leader, its recursive children, its process group and `extra` (deduplicated, live only).

    `leader_alive=False` when the leader was already reaped: its PID may belong to someone else now,
    so only the group (a PGID is not reused while members live) and `extra` are trusted.
    """
    found: dict[int, psutil.Process] = {}
    if leader_alive:
        with contextlib.suppress(psutil.Error):
            leader = psutil.Process(leader_pid)
            found[leader.pid] = leader
            for child in leader.children(recursive=True):
                found[child.pid] = child
    for proc in group_members(leader_pid):
        found[proc.pid] = proc
    for proc in extra:
        found[proc.pid] = proc
    return [p for p in found.values() if _alive(p)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_all(pgid: int, procs: Iterable[psutil.Process], sig: signal.Signals) -> None:
    group_signalled = False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
        group_signalled = True
    for proc in procs:
        # Members of the group already got `sig`: a second SIGTERM makes llama-server ("Received
        # second interrupt, terminating immediately") and uvicorn skip their graceful shutdown.
        with contextlib.suppress(psutil.Error, OSError):
            if group_signalled and os.getpgid(proc.pid) == pgid:
                continue
            proc.send_signal(sig)


def terminate_tree(
    leader_pid: int,
    *,
    extra: Iterable[psutil.Process] = (),
    grace_s: float = 10.0,
    popen: subprocess.Popen[bytes] | None = None,
    hurry: Callable[[], bool] | None = None,
) -> list[psutil.Process]:
    """SIGTERM the group and every known descendant, wait `grace_s`, SIGKILL what is left.

    Returns the processes still alive afterwards (empty on success). `popen` is reaped when given.
    `hurry()` returning True ends the grace period early (a second Ctrl-C).
    """

    def leader_alive() -> bool:
        return popen is None or popen.poll() is None

    targets = tree_of(leader_pid, extra, leader_alive=leader_alive())
    _signal_all(leader_pid, targets, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        # Children forked during shutdown join the group: rescan so they are not missed.
        targets = tree_of(leader_pid, [p for p in targets if _alive(p)], leader_alive=leader_alive())
        if not targets or (hurry is not None and hurry()):
            break
        time.sleep(0.05)
    if targets:
        _signal_all(leader_pid, targets, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            targets = tree_of(leader_pid, [p for p in targets if _alive(p)], leader_alive=leader_alive())
            if not targets:
                break
            _signal_all(leader_pid, targets, signal.SIGKILL)
            time.sleep(0.05)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=1.0)
    return targets


def port_free(host: str, port: int) -> bool:
    """True if a server could bind `host:port` now (SO_REUSEADDR, as servers set it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_port_free(host: str, port: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if port_free(host, port):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _listener_pids(port: int) -> set[int]:
    """PIDs listening on TCP `port`, as far as the OS lets us see (other users' sockets show no PID)."""
    return {
        conn.pid
        for conn in psutil.net_connections(kind="tcp")
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid
    }


def _describe(pid: int) -> str:
    with contextlib.suppress(psutil.Error):
        return f"PID {pid} ({psutil.Process(pid).name()})"
    return f"PID {pid}"


def port_owner(port: int) -> str | None:
    """'PID 123 (python)' for the process listening on `port`, when the OS lets us see it."""
    with contextlib.suppress(psutil.Error, OSError):
        pids = _listener_pids(port)
        if pids:
            return _describe(min(pids))
    return None


def foreign_listeners(port: int, root_pid: int) -> list[str]:
    """Processes outside `root_pid`'s tree listening on `port` ('PID 123 (python)'), as far as the OS
    lets us see (other users' sockets show no PID and are not reported).

    A second server can share the port with the engine (SO_REUSEPORT, which vLLM sets) or take it while
    the engine is still loading; then the readiness probe talks to the wrong server.
    """
    try:
        root = psutil.Process(root_pid)
        ours = {root_pid, *(c.pid for c in root.children(recursive=True))}
        listeners = _listener_pids(port)
    except (psutil.Error, OSError):
        return []
    return [_describe(pid) for pid in sorted(listeners - ours)]


def oom_kill_count(vmstat: Path = Path("/proc/vmstat")) -> int | None:
    """How many processes the Linux kernel's out-of-memory killer has killed since boot (`oom_kill` in
    /proc/vmstat, Linux >= 4.13), or None where the kernel does not say (macOS, older kernels).

    The OOM killer's SIGKILL leaves no line in the engine's log; this counter is the trace it leaves.
    """
    try:
        for line in vmstat.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def check_host_bindable(host: str) -> None:
    """A usage error when `host` is no address of this machine (a typo, another machine's IP).

    Checked before any port: otherwise every port looks "in use" and the user is sent after ports.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except socket.gaierror as exc:
            raise UsageError(
                f"Cannot resolve --host {host} ({exc.strerror}).",
                hint="Pass an address of this machine, 127.0.0.1 or 0.0.0.0.",
            ) from exc
        except OSError as exc:
            raise UsageError(
                f"Cannot listen on --host {host}: {exc.strerror}.",
                hint="Pass an address of this machine (see `ip addr`), 127.0.0.1 or 0.0.0.0.",
            ) from exc


def check_port_in_range(port: int) -> None:
    if not 1 <= port <= 65535:
        # Ports below 1024 are allowed (root, or CAP_NET_BIND_SERVICE, may bind them); the OS says if not.
        raise UsageError(f"Port {port} is out of range.", hint="Pass --port between 1 and 65535.")


def check_port_available(
    host: str, port: int, *, hint: str = "Pass another --port, or leave --port out to use the next free port."
) -> None:
    check_port_in_range(port)
    if not port_free(host, port):
        owner = port_owner(port)
        who = f" by {owner}" if owner else ""
        raise UsageError(f"Port {port} on {host} is already in use{who}.", hint=hint)


def next_free_port(host: str, *, start: int = 8000, exclude: Iterable[int] = (), span: int = 1000) -> int:
    """The first port from `start` that is free now and not reserved by another deployment."""
    reserved = set(exclude)
    for port in range(start, start + span):
        if port not in reserved and port_free(host, port):
            return port
    raise EngineError(f"No free port between {start} and {start + span - 1}.", hint="Pass --port.")
