"""`ps`, `stop` and `logs` as use cases: list the deployments, stop one or all, find and follow a log.

`supervise.control` does the supervision these are made of (stopping one deployment's process groups,
cleaning up after a dead supervisor); this module decides which deployments, and in what order. Nothing
here prints: the CLI renders what is returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmhost.errors import NotFoundError, UsageError
from llmhost.supervise.state import Deployment, DeploymentStatus


@dataclass(frozen=True)
class Listing:
    """What `ps` shows: every readable deployment, and the names whose state file could not be read."""

    deployments: list[DeploymentStatus]
    unreadable: list[str]


def list_deployments(*, clean: bool = True) -> list[DeploymentStatus]:
    """Every deployment with live figures. With `clean`, a deployment whose supervisor is gone is
    reported (as "dead", or its final state) once, its orphaned engine stopped and its state removed."""
    from llmhost.supervise.control import cleanup
    from llmhost.supervise.state import (
        TERMINAL_STATES,
        deployment_names,
        read_deployment,
        status_of,
        supervisor_alive,
    )

    out = []
    for name in deployment_names():
        dep = read_deployment(name)
        if dep is None:
            continue
        status = status_of(dep)
        out.append(status)
        if clean and not supervisor_alive(dep) and status.state in TERMINAL_STATES:
            cleanup(dep)
    return out


def listing() -> Listing:
    """`llmhost ps`: the deployments (dead ones cleaned up after being reported) and the unreadable."""
    from llmhost.supervise.state import unreadable_states

    deployments = list_deployments()
    return Listing(deployments=deployments, unreadable=list(unreadable_states()))


def stop(name: str | None = None, *, all_: bool = False) -> list[Deployment]:
    """`llmhost stop NAME` or `--all`: the deployments stopped, each once all its processes exited and
    its port is free."""
    from llmhost.supervise.control import stop_deployment

    if all_ == (name is not None):
        raise UsageError("Give a deployment NAME or --all (not both).", hint="See `llmhost ps`.")
    return stop_all() if all_ else [stop_deployment(name or "")]


def stop_all() -> list[Deployment]:
    """Stop every deployment; the ones stopped."""
    from llmhost.supervise.control import stop_deployment
    from llmhost.supervise.state import deployment_names

    stopped = []
    for name in deployment_names():
        # A corrupt or foreign state file reads as no deployment (see `read_deployment`), and another
        # `llmhost stop` may finish one first: neither may fail the others' stop.
        try:
            stopped.append(stop_deployment(name))
        except NotFoundError:
            continue
    return stopped


def log_file(name: str, *, supervisor: bool = False) -> Path:
    """The deployment's engine log (or its supervisor's), checked to be a regular file."""
    from llmhost.supervise import paths

    path = paths.supervisor_log(name) if supervisor else paths.engine_log(name)
    if not path.exists():
        raise NotFoundError(f"No logs for {name!r} ({path}).", hint="See `llmhost ps` for deployment names.")
    if not path.is_file():  # a folder, or a FIFO that would block the read forever
        raise UsageError(
            f"the log of {name!r} ({path}) is not a regular file.",
            hint=f"Remove it; `llmhost stop {name}` clears the deployment's state.",
        )
    return path


def last_lines(name: str, *, lines: int, supervisor: bool = False) -> tuple[Path, list[str]]:
    """`llmhost logs NAME -n LINES`: the log file and its last `lines` lines."""
    from llmhost.supervise.logs import tail

    if lines < 0:
        raise UsageError(
            f"--lines {lines} is negative.", hint="Pass --lines 0 or more (0 with -f: new lines only)."
        )
    path = log_file(name, supervisor=supervisor)
    return path, list(tail(path, lines))


def follow_log(name: str, path: Path) -> Iterator[str]:
    """New lines of `path` as they are written, until the deployment `name` is stopped (its state file
    removed, as `docker logs -f` stops with the container)."""
    import threading

    from llmhost.supervise import paths
    from llmhost.supervise.logs import follow, watch_until_gone

    done = threading.Event()
    watch_until_gone(paths.state_file(name), done)
    yield from follow(path, stop=done)
