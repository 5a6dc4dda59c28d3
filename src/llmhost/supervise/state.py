"""Deployment state: one JSON file per deployment under the state dir, written atomically with mode 0600.

Public API for other stages (e.g. `llmhost bench NAME`):

- `load_deployment(name) -> Deployment`: the recorded state, with `state` corrected to "dead" when the
  supervisor is gone (a dead PID, or a PID reused by another program: the process create time is checked).
  Raises `NotFoundError` when there is no such deployment. `Deployment.base_url` ends in `/v1`;
  `Deployment.launch.api_key_env` names the env var that held the key (the key itself is never stored).
- `status_of(dep) -> DeploymentStatus`: a deployment with uptime and memory (`llmhost.app.deployments`
  lists them all).

Secrets never reach these files: `LaunchSpec` carries env var *names* only.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import psutil
from pydantic import Field, ValidationError, field_serializer

from llmhost.atomic import write_atomic
from llmhost.contract import Contract
from llmhost.engines.base import FailureCause, LaunchSpec, StartupReport
from llmhost.errors import NotFoundError, UsageError
from llmhost.supervise import paths
from llmhost.supervise.lifecycle import TERMINAL_STATES, DeploymentState, observed
from llmhost.supervise.process import group_members

# The states and their transitions live in lifecycle (re-exported here for readers of state files).
__all__ = ["TERMINAL_STATES", "Deployment", "DeploymentState", "DeploymentStatus", "ProcessRef"]


class ProcessRef(Contract):
    """A process identified by PID *and* start time, so a reused PID is never mistaken for ours.

    psutil's `create_time` is the boot time plus the process's start in clock ticks, and the boot time
    is derived from the wall clock: a clock step (NTP, a resumed or forked VM: 26 s was seen on a test
    machine) moves every process's create time for the processes that read it afterwards, and every
    live supervisor looked gone. Where the kernel says it (Linux's /proc/PID/stat), the start in ticks
    since boot is recorded too and decides alone; `create_time` is the check elsewhere and for state
    files written before it was recorded."""

    pid: int
    create_time: float
    start_ticks: int | None = Field(
        default=None, description="Linux: start time in clock ticks since boot (/proc/PID/stat field 22)."
    )

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        try:
            create_time = psutil.Process(pid).create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return cls(pid=pid, create_time=create_time, start_ticks=start_ticks(pid))

    def process(self) -> psutil.Process | None:
        """The live process, or None if it exited, is a zombie, or the PID now belongs to another program."""
        try:
            proc = psutil.Process(self.pid)
            ticks = start_ticks(self.pid) if self.start_ticks is not None else None
            if ticks is not None:
                if ticks != self.start_ticks:
                    return None
            elif abs(proc.create_time() - self.create_time) > 0.05:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def alive(self) -> bool:
        return self.process() is not None


def start_ticks(pid: int) -> int | None:
    """A process's start in clock ticks since boot (Linux), which no wall-clock step moves; None where
    /proc has no such file (macOS) or the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of the line; fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None


class Deployment(Contract):
    name: str
    model: str = Field(description="The model reference the user served.")
    served_model_name: str
    engine: str
    runtime: str
    base_url: str = Field(description="OpenAI-compatible base URL, ending in /v1.")
    host: str
    port: int
    state: DeploymentState = DeploymentState.STARTING
    detached: bool = False
    auth: bool = Field(default=False, description="Requests need the API key.")
    supervisor: ProcessRef | None = None
    engine_process: ProcessRef | None = None
    descendants: list[ProcessRef] = Field(
        default_factory=list, description="Engine children seen so far (they may leave the process group)."
    )
    restarts: int = 0
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = Field(default=None, description="When the current engine process started.")
    ready_at: float | None = None
    last_exit_code: int | None = None
    failure: str | None = None
    failure_cause: FailureCause | None = None
    requests_served: int | None = None
    tokens_generated: int | None = None
    launch: LaunchSpec
    planned: StartupReport | None = Field(default=None, description="What the plan expected (memory, KV).")
    actual: StartupReport | None = Field(default=None, description="What the engine reported at start-up.")
    reasons: list[str] = Field(default_factory=list, description="Why the plan chose this candidate.")
    log_dir: str

    @field_serializer("state")
    def _state_value(self, state: DeploymentState | str) -> str:
        # `model_copy(update=...)` does not validate: a plain string there is written as it is.
        return DeploymentState(state).value


class DeploymentStatus(Deployment):
    """What `llmhost ps --json` prints: the recorded state plus live figures read at query time."""

    supervisor_pid: int | None = None
    engine_pid: int | None = None
    uptime_s: float | None = None
    memory_bytes: int | None = Field(default=None, description="RSS of the engine and its children.")


def write_deployment(dep: Deployment) -> None:
    """Atomically replace the state file (0600 from creation, never world-readable even briefly)."""
    directory = paths.ensure_private_dir(paths.deployment_dir(dep.name))
    write_atomic(directory / "deployment.json", dep.model_dump_json(indent=2), mode=0o600)


def read_deployment(name: str) -> Deployment | None:
    path = paths.state_file(name)
    try:
        raw = path.read_text()
    except (FileNotFoundError, NotADirectoryError):  # no state (a bad state dir is reported on write)
        return None
    try:
        return Deployment.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        # A corrupt or foreign file is not trusted: treat it as absent (it is cleaned on the next write).
        return None


def supervisor_alive(dep: Deployment) -> bool:
    return dep.supervisor is not None and dep.supervisor.alive()


def refreshed(dep: Deployment) -> Deployment:
    """The deployment with its state corrected when its supervisor or its engine is gone."""
    if dep.state in TERMINAL_STATES:
        return dep
    if supervisor_alive(dep):
        if dep.state == "ready" and dep.engine_process is not None and not dep.engine_process.alive():
            # The engine died and the supervisor has not noticed yet (it polls): never report it ready.
            state = observed(DeploymentState.RESTARTING, why="engine process gone, supervisor polling")
            return dep.model_copy(update={"state": state})
        return dep
    if dep.supervisor is None and time.time() - dep.created_at < 30:
        return dep  # the launcher wrote it and is about to start the supervisor
    return dep.model_copy(update={"state": observed(DeploymentState.DEAD, why="supervisor process gone")})


def load_deployment(name: str) -> Deployment:
    """The deployment called `name` (see module docstring); raises NotFoundError if there is none."""
    dep = read_deployment(paths.validate_name(name))
    if dep is None:
        raise NotFoundError(f"No deployment named {name!r}.", hint="See `llmhost ps` for what is running.")
    return refreshed(dep)


def engine_processes(dep: Deployment) -> list[psutil.Process]:
    """Every live process of the deployment's engine: the leader, its process group, tracked children."""
    found: dict[int, psutil.Process] = {}
    refs = [dep.engine_process, *dep.descendants] if dep.engine_process else list(dep.descendants)
    for ref in refs:
        if ref is None:
            continue
        proc = ref.process()
        if proc is not None:
            found[proc.pid] = proc
    leader = dep.engine_process.process() if dep.engine_process else None
    if leader is not None:
        with contextlib.suppress(psutil.Error):
            for child in leader.children(recursive=True):
                found[child.pid] = child
        for proc in group_members(leader.pid):
            found[proc.pid] = proc
    return list(found.values())


def status_of(dep: Deployment) -> DeploymentStatus:
    dep = refreshed(dep)
    memory = None
    procs = engine_processes(dep) if dep.state not in TERMINAL_STATES else []
    if procs:
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        memory = total
    uptime = time.time() - dep.started_at if dep.started_at and dep.state not in TERMINAL_STATES else None
    data = dep.model_dump()
    data.update(
        supervisor_pid=dep.supervisor.pid if dep.supervisor else None,
        engine_pid=dep.engine_process.pid if dep.engine_process else None,
        uptime_s=uptime,
        memory_bytes=memory,
    )
    return DeploymentStatus.model_validate(data)


def deployment_names() -> list[str]:
    """Deployments with a state file. A folder whose name llmhost would refuse is not one of its own."""
    root = paths.deployments_dir()
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:  # nothing served yet
        return []
    except OSError as exc:  # under a file (ENOTDIR), unreadable (EACCES): was "no deployments", exit 0
        raise UsageError(
            f"Cannot read the llmhost state directory {root}: {exc.strerror}.",
            hint="Point LLMHOST_STATE_DIR (or XDG_STATE_HOME) at a readable directory.",
        ) from exc
    return sorted(
        p.name for p in entries if paths.is_valid_name(p.name) and (p / "deployment.json").is_file()
    )


def unreadable_states() -> list[str]:
    """Names whose state file exists but cannot be trusted (corrupt, foreign, truncated by a crash)."""
    return [name for name in deployment_names() if read_deployment(name) is None]


def forget(name: str) -> None:
    """Remove the state file (the logs stay, so `llmhost logs NAME` still works)."""
    with contextlib.suppress(FileNotFoundError):
        paths.state_file(name).unlink()


def log_files(name: str) -> tuple[Path, Path]:
    return paths.engine_log(name), paths.supervisor_log(name)
