"""`ps`, `stop` and `logs` as library calls (`llmhost.app.deployments`), without the CLI: real state files
in a fresh state dir, real processes where a deployment's supervisor must be alive or gone."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from llmhost.app.deployments import follow_log, last_lines, listing, log_file, stop, stop_all
from llmhost.engines.base import LaunchSpec
from llmhost.errors import NotFoundError, UsageError
from llmhost.supervise import paths
from llmhost.supervise.state import Deployment, ProcessRef, read_deployment, write_deployment


def _deployment(name: str, port: int = 18555) -> Deployment:
    spec = LaunchSpec(
        engine="fake", runtime="fake", argv=["true"], base_url=f"http://127.0.0.1:{port}/v1", port=port
    )
    return Deployment(
        name=name, model="m", served_model_name="m", engine="fake", runtime="fake", base_url=spec.base_url,
        host="127.0.0.1", port=port, launch=spec, log_dir=str(paths.deployment_dir(name)),
    )  # fmt: skip


def _corrupt(name: str) -> None:
    folder = paths.deployment_dir(name)
    folder.mkdir(parents=True)
    (folder / "deployment.json").write_text("{not json")


def test_stop_needs_exactly_one_of_a_name_and_all(state_dir: Path) -> None:
    with pytest.raises(UsageError, match="NAME or --all"):
        stop()
    with pytest.raises(UsageError, match="NAME or --all"):
        stop("x", all_=True)
    with pytest.raises(NotFoundError, match="No deployment named 'x'"):
        stop("x")
    assert stop(all_=True) == []


def test_stop_all_skips_an_unreadable_state_that_listing_reports(state_dir: Path) -> None:
    _corrupt("broken")
    listed = listing()
    assert listed.deployments == [] and listed.unreadable == ["broken"]
    assert stop_all() == []  # its PIDs are unknown: nothing is stopped, the file that blocks the name goes
    assert listing().unreadable == []
    with pytest.raises(NotFoundError, match="No deployment named 'broken'"):
        stop("broken")


def test_stop_by_name_removes_an_unreadable_state(state_dir: Path) -> None:
    _corrupt("broken")
    with pytest.raises(NotFoundError, match="unreadable and has been removed"):
        stop("broken")
    assert listing().unreadable == []


def test_a_dead_deployment_is_listed_once_then_forgotten(state_dir: Path) -> None:
    # Our own PID with another create time: a reused PID, not the deployment's supervisor.
    reused = ProcessRef(pid=os.getpid(), create_time=1.0)
    write_deployment(_deployment("gone").model_copy(update={"state": "ready", "supervisor": reused}))
    first = listing().deployments
    assert [(d.name, d.state) for d in first] == [("gone", "dead")]
    assert read_deployment("gone") is None
    assert listing().deployments == []


def test_a_live_deployment_is_listed_and_kept(state_dir: Path) -> None:
    me = ProcessRef.of(os.getpid())  # a live "supervisor" with no engine yet
    write_deployment(_deployment("alive").model_copy(update={"state": "starting", "supervisor": me}))
    assert [d.name for d in listing().deployments] == ["alive"]
    assert [d.name for d in listing().deployments] == ["alive"]  # not cleaned up
    assert read_deployment("alive") is not None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start ticks are read from Linux's /proc")
def test_a_wall_clock_step_does_not_make_a_live_supervisor_look_dead(state_dir: Path) -> None:
    """After a clock step (a forked VM moved it 26 s on a test machine) psutil's create time of every
    process moves for readers that start afterwards; the start in ticks since boot does not."""
    me = ProcessRef.of(os.getpid())
    assert me is not None and me.start_ticks is not None
    stepped = me.model_copy(update={"create_time": me.create_time + 26.0})
    write_deployment(_deployment("stepped").model_copy(update={"state": "ready", "supervisor": stepped}))
    assert [(d.name, d.state) for d in listing().deployments] == [("stepped", "ready")]
    # Another start under the same PID (a reused PID) is not ours, whatever the create time says.
    reused = me.model_copy(update={"start_ticks": me.start_ticks + 1})
    write_deployment(_deployment("reused").model_copy(update={"state": "ready", "supervisor": reused}))
    states = {d.name: d.state for d in listing().deployments}
    assert states == {"stepped": "ready", "reused": "dead"}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start ticks are read from Linux's /proc")
def test_start_ticks_are_read_past_a_process_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    import subprocess
    import sys

    import psutil

    from llmhost.supervise.state import start_ticks

    odd = tmp_path / "a) b (c"  # the kernel's comm field: "pid (a) b (c) S ..."
    odd.symlink_to(sys.executable)
    child = subprocess.Popen([str(odd), "-c", "import time; time.sleep(30)"])
    try:
        assert psutil.Process(child.pid).name() == "a) b (c"
        assert start_ticks(child.pid) == int(
            psutil.Process(child.pid)._proc._parse_stat_file()["create_time"]
        )
    finally:
        child.kill()
        child.wait()
    assert start_ticks(2**22 + 7) is None  # no such process


def test_logs_are_found_checked_and_tailed(state_dir: Path) -> None:
    with pytest.raises(NotFoundError, match="No logs for 'web'"):
        log_file("web")
    log = paths.engine_log("web")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("one\ntwo\nthree\n")
    paths.supervisor_log("web").write_text("supervised\n")
    assert last_lines("web", lines=2) == (log, ["two", "three"])
    assert last_lines("web", lines=5, supervisor=True)[1] == ["supervised"]
    with pytest.raises(UsageError, match="--lines -1 is negative"):
        last_lines("web", lines=-1)
    paths.engine_log("dir").mkdir(parents=True)
    with pytest.raises(UsageError, match="not a regular file"):
        log_file("dir")


def test_following_a_log_ends_when_the_deployment_is_forgotten(state_dir: Path) -> None:
    write_deployment(_deployment("tail"))
    log = paths.engine_log("tail")
    log.write_text("old\n")
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(follow_log("tail", log)), daemon=True)
    reader.start()
    while not seen:  # new lines only: "old" was there before
        with log.open("a") as fh:
            fh.write("new\n")
        reader.join(0.3)
    paths.state_file("tail").unlink()
    reader.join(10)
    assert not reader.is_alive()
    assert seen[0] == "new" and "old" not in seen
