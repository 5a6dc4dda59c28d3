"""The deployment state table and the restart decision (pure: no processes)."""

from __future__ import annotations

import itertools
import json

import pytest

from llmhost.supervise.lifecycle import (
    PERMANENT_CAUSES,
    TERMINAL_STATES,
    TRANSITIONS,
    DeploymentState,
    ExitFacts,
    InvalidTransition,
    check_transition,
    decide_after_exit,
    observed,
)

S = DeploymentState

# Every path the supervisor takes (supervisor.py's module docstring), as state sequences.
LIVES = [
    [S.STARTING, S.READY, S.STOPPING, S.STOPPED],  # served, then stopped
    [S.STARTING, S.FAILED],  # first start fails: no restart
    [S.STARTING, S.READY, S.RESTARTING, S.STARTING, S.READY, S.STOPPING, S.STOPPED],  # crash, restart
    [S.STARTING, S.READY, S.RESTARTING, S.STARTING, S.RESTARTING, S.STARTING, S.FAILED],  # crash loop
    [S.STARTING, S.READY, S.RESTARTING, S.FAILED],  # port taken before the relaunch
    [S.STARTING, S.READY, S.RESTARTING, S.STOPPING, S.STOPPED],  # Ctrl-C during the backoff
    [S.STARTING, S.STOPPING, S.STOPPED],  # Ctrl-C while loading
    [S.STARTING, S.READY, S.FAILED],  # OOM after ready: not retried
]


@pytest.mark.parametrize("life", LIVES, ids=lambda life: "-".join(s.value for s in life))
def test_every_supervisor_path_is_allowed(life):
    for old, new in itertools.pairwise(life):
        assert check_transition(old, new) is new


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES, key=str))
def test_terminal_states_go_nowhere(terminal):
    for new in DeploymentState:
        if new is terminal:
            assert check_transition(terminal, new) is terminal  # a save of other fields
        else:
            with pytest.raises(InvalidTransition, match=f"{terminal.value} -> {new.value}"):
                check_transition(terminal, new)


def test_illegal_moves_are_refused_and_say_what_is_allowed():
    with pytest.raises(
        InvalidTransition, match=r"ready -> starting .*from ready: failed, restarting, stopping"
    ):
        check_transition("ready", "starting")  # a restart always goes through restarting
    with pytest.raises(InvalidTransition):
        check_transition(S.STOPPING, S.READY)
    # The supervisor never declares a deployment dead: only a reader concludes it.
    assert all(S.DEAD not in targets for targets in TRANSITIONS.values())
    assert observed(S.DEAD, why="supervisor gone") is S.DEAD
    with pytest.raises(ValueError, match="say why"):
        observed(S.DEAD, why="")


def test_a_state_prints_and_serialises_as_its_value():
    from llmhost.supervise.state import Deployment

    assert f"{S.READY}" == "ready" and str(S.READY) == "ready" and f"{S.READY:>7}" == "  ready"
    fields = {
        "name": "n",
        "model": "m",
        "served_model_name": "m",
        "engine": "llama.cpp",
        "runtime": "llama-server",
        "base_url": "http://127.0.0.1:1/v1",
        "host": "127.0.0.1",
        "port": 1,
        "log_dir": "/tmp",
        "launch": {
            "engine": "llama.cpp",
            "runtime": "llama-server",
            "argv": ["x"],
            "base_url": "http://x/v1",
        },
    }
    dep = Deployment.model_validate({**fields, "state": "ready"})
    assert dep.state is S.READY and dep.state == "ready"
    assert json.loads(dep.model_dump_json())["state"] == "ready"
    with pytest.raises(ValueError):
        Deployment.model_validate({**fields, "state": "running"})


def facts(**over) -> ExitFacts:
    base = {
        "outcome": "exited",
        "exit_words": "The engine exited with code 1",
        "cause": None,
        "was_ready": True,
        "restarts_so_far": 1,
        "consecutive_crashes": 0,
        "ready_deadline_s": 120.0,
    }
    return ExitFacts(**{**base, **over})


def decide(**over):
    return decide_after_exit(facts(**over), max_consecutive_crashes=5)


def test_a_crash_after_ready_is_restarted():
    assert decide().restart
    assert decide(outcome="wedged", exit_words="The engine stopped answering (wedged)").restart
    assert decide(cause="unknown", consecutive_crashes=4).restart  # the 5th crash in a row still restarts


def test_the_first_start_failing_is_not_retried():
    d = decide(was_ready=False, restarts_so_far=0)
    assert not d.restart and d.cause == "unknown"
    assert d.message == "The engine exited with code 1 before it became ready."
    # ...but a start that fails after a restart (the engine served before) is retried.
    assert decide(was_ready=False, restarts_so_far=2).restart


def test_the_deadline_gives_up_with_the_classified_cause():
    d = decide(outcome="deadline", cause="out_of_memory", ready_deadline_s=300)
    assert (d.restart, d.cause, d.message) == (
        False,
        "out_of_memory",
        "The engine did not become ready within 300s.",
    )
    assert decide(outcome="deadline").cause == "unknown"


@pytest.mark.parametrize("cause", sorted(PERMANENT_CAUSES))
def test_permanent_causes_are_not_retried_with_the_same_flags(cause):
    d = decide(cause=cause)
    assert not d.restart and d.cause == cause
    assert d.message.endswith(f"({cause.replace('_', ' ')}); not restarting with the same flags.")


def test_a_crash_loop_gives_up_after_the_limit():
    d = decide(consecutive_crashes=5)
    assert not d.restart and d.message == "Crash loop: the engine crashed 6 times in a row; giving up."


def test_a_failure_the_attempt_recorded_itself_is_not_recorded_twice():
    d = decide(already_failed=True)
    assert not d.restart and d.cause is None
