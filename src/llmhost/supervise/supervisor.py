"""The supervisor: runs one deployment's engine from its `LaunchSpec`, whatever the engine.

Life of a deployment:

    starting --ready--> ready --engine exits--> restarting --backoff--> starting ...
        |                                           |
        +-- exits before ready / deadline --> failed (no restart: the same flags would fail again)
                                                    +-- permanent cause, OOM, or crash loop --> failed
    any state --stop (SIGTERM/Ctrl-C)--> stopping --> stopped

The states and the transitions allowed between them are `lifecycle.TRANSITIONS`, checked on every change
(`_save`); whether to restart after an exit is decided by the pure `lifecycle.decide_after_exit`.

- Readiness: process alive AND health endpoint OK AND the served name listed, before a deadline.
- Restarts: exponential backoff (2 s doubling to 5 min, as GPUStack's serve manager does), reset after
  the engine has been ready for 10 minutes; give up after 5 crashes in a row (like systemd's
  StartLimitBurst). Out of memory is never retried with the same flags.
- Stop: SIGTERM the process group and tracked descendants, grace period, SIGKILL, then check that no
  process is left and the port is free.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import psutil

from llmhost.engines.base import Engine, FailureCause
from llmhost.hardware.models import GPUProcess
from llmhost.supervise import paths
from llmhost.supervise.gpu import wait_gpu_released
from llmhost.supervise.health import REQUEST_COUNTERS, TOKEN_COUNTERS, Prober, first_counter
from llmhost.supervise.lifecycle import (
    DeploymentState,
    ExitFacts,
    Outcome,
    check_transition,
    decide_after_exit,
)
from llmhost.supervise.logs import OutputPump, RotatingLog
from llmhost.supervise.probe import CompletionProbe
from llmhost.supervise.process import (
    engine_env,
    foreign_listeners,
    oom_kill_count,
    port_free,
    port_owner,
    spawn,
    terminate_tree,
    wait_port_free,
)
from llmhost.supervise.state import Deployment, ProcessRef, write_deployment

CAUSE_HINTS: dict[str, str] = {
    "out_of_memory": "The engine ran out of memory. Serve with a smaller --context or --concurrency, or a "
    "smaller --quant (see `llmhost plan MODEL`).",
    "kv_cache_too_small": "The KV cache cannot hold the requested context. Lower --context or raise the "
    "memory share (see `llmhost plan MODEL`).",
    "model_invalid": "Not a valid model file for this engine. Check the path or download it again.",
    "port_in_use": "The port is taken. Pass another --port, or leave it out to pick a free one.",
    "missing_library": "The engine is missing a shared library. Reinstall it (`llmhost engines`).",
    "bad_argument": "The engine rejected its arguments; check the profile's extra args.",
}


@dataclass(frozen=True)
class SupervisorConfig:
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 300.0
    max_consecutive_crashes: int = 5
    stable_after_s: float = 600.0
    probe_interval_s: float = 0.05
    monitor_interval_s: float = 0.25
    metrics_interval_s: float = 5.0
    tick_interval_s: float = 0.5
    # The kernel's OOM-kill counter (tests inject one: the real OOM killer is not something to provoke).
    oom_kill_counter: Callable[[], int | None] = oom_kill_count


def backoff_delay(consecutive_crashes: int, config: SupervisorConfig) -> float:
    """2 s, 4 s, 8 s ... capped at 5 minutes."""
    exponent = max(consecutive_crashes - 1, 0)
    return float(min(config.backoff_initial_s * (2**exponent), config.backoff_max_s))


@dataclass
class _Attempt:
    outcome: Outcome
    exit_code: int | None = None
    was_ready: bool = False
    ran_for_s: float = 0.0


class Supervisor:
    def __init__(
        self,
        deployment: Deployment,
        *,
        engine: Engine | None,
        api_key: str | None = None,
        config: SupervisorConfig | None = None,
        on_update: Callable[[Deployment], None] | None = None,
        on_event: Callable[[str], None] | None = None,
        early_process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.dep = deployment
        self.engine = engine
        self.api_key = api_key
        self.config = config or SupervisorConfig()
        self._on_update = on_update
        self._on_event = on_event
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._popen: subprocess.Popen[bytes] | None = None
        self._pump: OutputPump | None = None
        self._tracked: dict[int, psutil.Process] = {}
        self._oom_kills_at_start: int | None = None
        self._gpu_held: list[GPUProcess] = []  # engine processes NVML still listed after the last kill
        paths.ensure_private_dir(paths.deployment_dir(deployment.name))
        self._engine_log = RotatingLog(paths.engine_log(deployment.name))
        self._supervisor_log = RotatingLog(paths.supervisor_log(deployment.name), max_bytes=1024 * 1024)
        self._last_tick = 0.0
        self._started_any = False
        self._early = early_process

    # -- public -------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the supervisor to stop the engine and return (safe from a signal handler).

        A second request while stopping cuts the grace period short (SIGKILL now), as a second Ctrl-C
        does in most servers."""
        if self._stop.is_set():
            self._hurry.set()
        self._stop.set()

    def run(self) -> Deployment:
        """Run until stopped or given up; returns the final deployment (state "stopped" or "failed")."""
        self._save(supervisor=ProcessRef.of(os.getpid()), state=DeploymentState.STARTING)
        self._event(
            f"supervisor started for {self.dep.engine}/{self.dep.runtime}: {' '.join(self.dep.launch.argv)}"
        )
        consecutive = 0
        try:
            while not self._stop.is_set():
                attempt = self._run_once()
                if attempt.outcome == "stopped":
                    break
                if attempt.ran_for_s >= self.config.stable_after_s:
                    consecutive = 0
                if self._give_up(attempt, consecutive):
                    break
                consecutive += 1
                delay = backoff_delay(consecutive, self.config)
                self._event(f"restarting in {delay:.0f}s (crash {consecutive} in a row)")
                self._save(state=DeploymentState.RESTARTING)
                if self._stop.wait(delay):
                    break
                self._save(restarts=self.dep.restarts + 1)
        finally:
            self._shutdown()
        return self.dep

    # -- one engine process --------------------------------------------------------------------------
    def _run_once(self) -> _Attempt:
        spec = self.dep.launch
        early, self._early = self._early, None
        if early is not None:
            popen = early  # spawned by the detached entry point before the heavy imports (see __main__)
        elif spec.port is not None and not port_free(spec.host, spec.port):
            # Do not even start: the engine would fail to bind (or worse, bind the other family).
            owner = port_owner(spec.port)
            if not wait_port_free(spec.host, spec.port, 3.0):
                who = f" by {owner}" if owner else ""
                self._fail("port_in_use", f"Port {spec.port} on {spec.host} is already in use{who}.")
                return _Attempt("exited")
        self._oom_kills_at_start = self.config.oom_kill_counter()
        self._engine_log.write(f"\n===== llmhost: starting engine at {_now()} =====\n".encode())
        if early is None:
            popen = spawn(spec.argv, self._engine_env())
        self._popen = popen
        self._started_any = True
        assert popen.stdout is not None
        self._pump = OutputPump(
            popen.stdout, self._engine_log, secrets=[self.api_key] if self.api_key else []
        )
        self._tracked = {}
        started = time.time()
        self._save(
            state=DeploymentState.STARTING,
            engine_process=ProcessRef.of(popen.pid),
            descendants=[],
            started_at=started,
            ready_at=None,
            failure=None,
            failure_cause=None,
        )
        self._event(f"engine started: PID {popen.pid}")
        prober = Prober(spec, self.api_key)
        deadline = time.monotonic() + spec.ready_deadline_s
        ready = False
        watchdog: CompletionProbe | None = None  # started once ready, if the launch spec asks for it
        owner_checked = False
        last_metrics = 0.0
        last_track = 0.0
        try:
            while True:
                if self._stop.is_set():
                    return _Attempt("stopped", was_ready=ready, ran_for_s=time.time() - started)
                code = popen.poll()
                if code is not None:
                    self._pump.join()
                    return _Attempt(
                        "exited", exit_code=code, was_ready=ready, ran_for_s=time.time() - started
                    )
                now = time.monotonic()
                if now - last_track >= 1.0:
                    self._track_descendants(popen.pid)
                    last_track = now
                if not ready:
                    if now > deadline:
                        self._event(f"not ready after {spec.ready_deadline_s:.0f}s: stopping the engine")
                        return _Attempt("deadline", was_ready=False, ran_for_s=time.time() - started)
                    result = prober.check()
                    if result.state in ("ready", "unauthorized") and not owner_checked:
                        owner_checked = True  # something answers: is it our engine?
                        if self._port_taken_by_another(popen.pid):
                            return _Attempt("exited", was_ready=False, ran_for_s=time.time() - started)
                    if result.state == "ready":
                        ready = True
                        self._became_ready(started)
                        watchdog = CompletionProbe.for_launch(spec, self.api_key)
                    elif result.state == "unauthorized":
                        self._event(f"readiness probe rejected: {result.detail}")
                    self._stop.wait(self.config.probe_interval_s)
                else:
                    if watchdog is not None and watchdog.wedged:
                        self._event(f"engine wedged: {watchdog.reason}; restarting it")
                        return _Attempt("wedged", was_ready=True, ran_for_s=time.time() - started)
                    if spec.metrics_path and now - last_metrics >= self.config.metrics_interval_s:
                        last_metrics = now
                        samples = prober.metrics()
                        if samples:
                            self._save(
                                requests_served=first_counter(samples, REQUEST_COUNTERS),
                                tokens_generated=first_counter(samples, TOKEN_COUNTERS),
                            )
                    self._tick()
                    self._stop.wait(self.config.monitor_interval_s)
        finally:
            prober.close()
            if watchdog is not None:
                watchdog.stop()

    def _port_taken_by_another(self, engine_pid: int) -> bool:
        """Fail the deployment when another server listens on the engine's port: it took the port while
        the engine was loading, or shares it (SO_REUSEPORT, which vLLM sets), and the readiness probe
        would talk to it."""
        port = self.dep.launch.port
        others = foreign_listeners(port, engine_pid) if port is not None else []
        if others:
            self._fail(
                "port_in_use",
                f"Port {port} is answered by {', '.join(others)}, not by the engine: another server "
                "took it while the engine was loading.",
            )
        return bool(others)

    def _became_ready(self, started: float) -> None:
        actual = None
        if self.engine is not None and self._pump is not None:
            try:
                actual = self.engine.parse_startup(self._pump.startup_text())
            except Exception as exc:  # a log parser bug must never take a healthy deployment down
                self._event(f"could not parse engine start-up figures: {exc}")
        self._save(state=DeploymentState.READY, ready_at=time.time(), actual=actual)
        self._event(f"ready after {time.time() - started:.2f}s at {self.dep.base_url}")

    def _give_up(self, attempt: _Attempt, consecutive: int) -> bool:
        """After an engine exit: gather the facts, let `decide_after_exit` rule, carry it out.
        True if the deployment failed (restarting cannot help)."""
        tail = self._pump.tail_text() if self._pump else ""
        self._kill_engine()  # the leader exited (or is stopped at the deadline); no child may linger
        if attempt.outcome == "deadline":
            tail = self._pump.tail_text() if self._pump else tail  # what it printed while being stopped
        else:
            self._save(last_exit_code=attempt.exit_code)
        cause = self._classify(tail)
        what = (
            "The engine stopped answering (wedged)"
            if attempt.outcome == "wedged"
            else _exit_words(attempt.exit_code)
        )
        if attempt.outcome != "deadline" and cause is None and self._killed_by_oom_killer(attempt.exit_code):
            cause = "out_of_memory"
            what = "The engine was killed by the kernel's out-of-memory killer"
            self._event("the kernel's oom_kill count rose while the engine ran and it died of SIGKILL")
        facts = ExitFacts(
            outcome=attempt.outcome,
            exit_words=what,
            cause=cause,
            was_ready=attempt.was_ready,
            restarts_so_far=self.dep.restarts,
            consecutive_crashes=consecutive,
            ready_deadline_s=self.dep.launch.ready_deadline_s,
            already_failed=self.dep.state == DeploymentState.FAILED,
        )
        decision = decide_after_exit(facts, max_consecutive_crashes=self.config.max_consecutive_crashes)
        if decision.restart:
            self._event(f"{what}{f' ({cause})' if cause else ''}; last lines:\n{_indent(tail, 12)}")
            return False
        if decision.cause is not None:  # None: the attempt already recorded its failure
            self._fail(decision.cause, decision.message, tail)
        return True

    def _killed_by_oom_killer(self, exit_code: int | None) -> bool:
        """SIGKILL while the kernel's OOM-kill count rose: the OOM killer (it leaves no log line)."""
        if exit_code != -signal.SIGKILL or self._oom_kills_at_start is None:
            return False
        now = self.config.oom_kill_counter()
        return now is not None and now > self._oom_kills_at_start

    def _classify(self, tail: str) -> FailureCause | None:
        if self.engine is None or not tail:
            return None
        try:
            return self.engine.classify_failure(tail)
        except Exception:
            return None

    def _fail(self, cause: FailureCause, message: str, tail: str = "") -> None:
        hint = self._engine_fix(cause, tail) or CAUSE_HINTS.get(cause)
        full = message + (f" {hint}" if hint else "")
        if tail:
            full += f"\nFrom {paths.engine_log(self.dep.name)}:\n{_indent(_excerpt(tail), 15)}"
        self._save(state=DeploymentState.FAILED, failure=full, failure_cause=cause)
        self._event(f"failed: {full}")

    def _engine_fix(self, cause: FailureCause, tail: str) -> str | None:
        """The engine's own answer (settings that would work), for engines that offer `suggest_fix`."""
        suggest = getattr(self.engine, "suggest_fix", None)
        if suggest is None or not tail:
            return None
        try:
            fix = suggest(cause, tail, self.dep.launch, self.dep.planned)
        except Exception:  # a hint is a courtesy: never let it mask the failure itself
            return None
        return str(fix) if fix else None

    # -- environment, children, shutdown --------------------------------------------------------------
    def _engine_env(self) -> dict[str, str]:
        spec = self.dep.launch
        return engine_env(
            os.environ,
            env=spec.env,
            env_remove=spec.env_remove,
            secret_env=spec.secret_env,
            api_key_env=spec.api_key_env,
            api_key=self.api_key,
        )

    def _track_descendants(self, leader: int) -> None:
        try:
            children = psutil.Process(leader).children(recursive=True)
        except psutil.Error:
            return
        new = [c for c in children if c.pid not in self._tracked]
        if not new:
            return
        for child in new:
            self._tracked[child.pid] = child
        refs = [r for r in (ProcessRef.of(p.pid) for p in self._tracked.values()) if r is not None]
        self._save(descendants=refs)

    def _kill_engine(self) -> list[psutil.Process]:
        if self._popen is None:
            return []
        engine_pids = {self._popen.pid, *self._tracked}
        survivors = terminate_tree(
            self._popen.pid,
            extra=list(self._tracked.values()),
            grace_s=self.dep.launch.stop_grace_s,
            popen=self._popen,
            hurry=self._hurry.is_set,
        )
        if self._pump is not None:
            self._pump.join()
        self._popen = None
        # The driver frees a dead process's GPU memory a moment later; a restart must find it free.
        self._gpu_held = wait_gpu_released(engine_pids)
        return survivors

    def _shutdown(self) -> None:
        if self._early is not None:  # stopped before the first attempt adopted the early-spawned engine
            self._popen, self._early = self._early, None
            self._started_any = True
        stopping = self.dep.state != "failed"
        if stopping:
            self._save(state=DeploymentState.STOPPING)
            self._event("stopping the engine")
        survivors = self._kill_engine()
        spec = self.dep.launch
        problems = []
        if survivors:
            problems.append("processes survived SIGKILL: " + ", ".join(str(p.pid) for p in survivors))
        if self._gpu_held:
            problems.append("GPU memory still held by PIDs " + ", ".join(str(p.pid) for p in self._gpu_held))
        if spec.port is not None and self._started_any and not wait_port_free(spec.host, spec.port, 5.0):
            owner = port_owner(spec.port)
            problems.append(f"port {spec.port} still in use{f' by {owner}' if owner else ''}")
        if problems:
            self._event("warning: " + "; ".join(problems))
        if stopping:
            self._save(state=DeploymentState.STOPPED)
            self._event("stopped; no engine process left" if not problems else "stopped with leftovers")
        self._engine_log.close()
        self._supervisor_log.close()

    # -- state and events -----------------------------------------------------------------------------
    def _save(self, **changes: object) -> None:
        """The one place a deployment's state changes: each change is checked against the table."""
        if "state" in changes:
            changes["state"] = check_transition(self.dep.state, changes["state"])  # type: ignore[arg-type]
        self.dep = self.dep.model_copy(update=changes)
        write_deployment(self.dep)
        if self._on_update is not None:
            self._on_update(self.dep)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._on_update is not None and now - self._last_tick >= self.config.tick_interval_s:
            self._last_tick = now
            self._on_update(self.dep)

    def _event(self, message: str) -> None:
        self._supervisor_log.write(f"{_now()} {message}\n".encode())
        if self._on_event is not None:
            self._on_event(message)


def _exit_words(code: int | None) -> str:
    """Popen's negative exit code as a user reads it: the signal's name (SIGKILL also comes from the OOM
    killer, which leaves no line in the engine's log)."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        extra = " (by a user, or the kernel's out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"The engine was killed by {name}{extra}"
    return f"The engine exited with code {code}"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


_SIGNAL_WORDS = ("error", "failed", "fatal", "exception", "cannot", "unable", "out of memory", "killed")


def _excerpt(tail: str, *, keep_last: int = 4, max_lines: int = 15) -> str:
    """The lines of a log tail that say what went wrong (errors), then its last lines, in order.

    A Python traceback or a verbose loader can push the one telling line out of a plain tail.
    """
    lines = [line for line in tail.splitlines() if line.strip()]
    chosen = {i for i, line in enumerate(lines) if any(w in line.lower() for w in _SIGNAL_WORDS)}
    chosen |= set(range(max(len(lines) - keep_last, 0), len(lines)))
    picked = [lines[i] for i in sorted(chosen)]
    return "\n".join(picked[-max_lines:])


def _indent(text: str, lines: int) -> str:
    return "\n".join("  " + line for line in text.splitlines()[-lines:])
