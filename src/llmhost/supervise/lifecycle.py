"""A deployment's states, the transitions between them, and the supervisor's restart decision.

The supervisor changes a deployment's state in one place (`Supervisor._save`), and every change is
checked against `TRANSITIONS` there, as llama-swap's `proxy/process.go` checks its `swapState`s
(`isValidTransition`): a transition the table does not list is a bug in llmhost and raises
`InvalidTransition` instead of writing a state file that `ps`, `stop` and `bench` would then trust.

`DEAD` is not a state the supervisor enters: it is what a reader (`state.refreshed`) concludes when the
supervisor is gone. A reader's corrections are observations, not transitions, and go through the one
escape hatch, `observed(...)`, which says why.

The restart decision (`decide_after_exit`) is pure: the facts of one engine exit in, restart or give up
(with the cause and the sentence a user reads) out. The supervisor gathers the facts (kills the
leftovers, classifies the log tail, reads the OOM-kill counter) and carries the decision out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from llmhost.engines.base import FailureCause


class DeploymentState(str, Enum):
    """A deployment's state; its value is what state files and `ps --json` carry."""

    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEAD = "dead"

    # Printed as its value everywhere (f-strings, Rich, logs): "ready", never "DeploymentState.READY".
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


S = DeploymentState

TERMINAL_STATES: frozenset[DeploymentState] = frozenset({S.FAILED, S.STOPPED, S.DEAD})

# state -> the states the supervisor may move it to. Staying in a state (a save that changes other
# fields, or a new engine process while starting) is always allowed.
TRANSITIONS: dict[DeploymentState, frozenset[DeploymentState]] = {
    # ready; exits (before ready on a first start: failed; after a restart: restarting); stop
    S.STARTING: frozenset({S.READY, S.RESTARTING, S.FAILED, S.STOPPING}),
    # the engine exits or wedges (restarting), a permanent cause or a crash loop (failed), stop
    S.READY: frozenset({S.RESTARTING, S.FAILED, S.STOPPING}),
    # the backoff ends (starting), a port taken before the relaunch (failed), stop during the backoff
    S.RESTARTING: frozenset({S.STARTING, S.FAILED, S.STOPPING}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.FAILED: frozenset(),
    S.STOPPED: frozenset(),
    S.DEAD: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A state change the table does not allow: a bug in llmhost, reported as an internal error."""


def check_transition(old: DeploymentState | str, new: DeploymentState | str) -> DeploymentState:
    """`new` as a state, if the supervisor may move a deployment from `old` to it; else raise."""
    before, after = DeploymentState(old), DeploymentState(new)
    if after != before and after not in TRANSITIONS[before]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[before])) or "none (terminal)"
        raise InvalidTransition(
            f"deployment state {before} -> {after} is not allowed (from {before}: {allowed})"
        )
    return after


def observed(new: DeploymentState, *, why: str) -> DeploymentState:
    """The escape hatch: a state a reader concludes from outside (the supervisor died, the engine's
    process is gone), not one the supervisor moved to. `why` is required so every use says itself."""
    if not why:
        raise ValueError("observed(): say why the state is set outside the transition table")
    return new


# -- the restart decision -----------------------------------------------------------------------------

# Causes for which a restart with the same flags cannot help.
PERMANENT_CAUSES: frozenset[str] = frozenset(
    {"out_of_memory", "model_invalid", "port_in_use", "missing_library", "kv_cache_too_small", "bad_argument"}
)

Outcome = Literal["stopped", "exited", "deadline", "wedged"]


@dataclass(frozen=True)
class ExitFacts:
    """What the supervisor knows after one engine process ended."""

    outcome: Outcome
    exit_words: str  # e.g. "The engine exited with code 1", "The engine stopped answering (wedged)"
    cause: FailureCause | None  # from the engine's log classifier (or the OOM-kill counter)
    was_ready: bool
    restarts_so_far: int
    consecutive_crashes: int  # before this one
    ready_deadline_s: float
    already_failed: bool = False  # the attempt recorded its own failure (port in use before launch)


@dataclass(frozen=True)
class Decision:
    restart: bool
    cause: FailureCause | None = None  # when giving up: the cause recorded ("unknown" if none known)
    message: str = ""  # when giving up: the sentence before the hint and the log excerpt


RESTART = Decision(restart=True)


def decide_after_exit(facts: ExitFacts, *, max_consecutive_crashes: int) -> Decision:
    """Restart, or give up and why. Order matters: the most specific reason a user can act on first."""
    cause = facts.cause
    if facts.already_failed:
        return Decision(restart=False)  # the failure is already recorded, with its own words
    if facts.outcome == "deadline":
        within = f"{facts.ready_deadline_s:.0f}s"
        return Decision(False, cause or "unknown", f"The engine did not become ready within {within}.")
    if not facts.was_ready and facts.restarts_so_far == 0:
        # The very first start failed: the same flags would fail the same way.
        return Decision(False, cause or "unknown", f"{facts.exit_words} before it became ready.")
    if cause is not None and cause in PERMANENT_CAUSES:
        return Decision(
            False,
            cause,
            f"{facts.exit_words} ({cause.replace('_', ' ')}); not restarting with the same flags.",
        )
    crashes = facts.consecutive_crashes + 1
    if crashes > max_consecutive_crashes:
        return Decision(
            False, cause or "unknown", f"Crash loop: the engine crashed {crashes} times in a row; giving up."
        )
    return RESTART
