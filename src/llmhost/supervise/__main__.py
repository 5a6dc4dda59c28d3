"""`python -m llmhost.supervise NAME`: the detached supervisor process (started by `llmhost serve --detach`).

It reads the deployment's state file (written by the launcher), takes the API key from the environment
variable the state names, and runs the supervisor until SIGTERM/SIGINT/SIGHUP.

Start-up is pipelined: the engine is spawned from the raw state file with light imports only, and the
supervisor's heavier modules (pydantic models, httpx, the engine module) load while the engine loads its
model. That keeps what supervision adds to time-to-ready small (see benchmarks/serve_overhead.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from types import FrameType


def _early_spawn(name: str) -> subprocess.Popen[bytes] | None:
    """Spawn the engine straight from the state file, or None to let the supervisor do it (and report)."""
    from llmhost.supervise import paths
    from llmhost.supervise.process import engine_env, port_free, spawn

    try:
        raw = json.loads(paths.state_file(name).read_text())
        launch = raw["launch"]
        if launch.get("port") is not None and not port_free(launch["host"], launch["port"]):
            return None
        key_env = launch.get("api_key_env")
        env = engine_env(
            os.environ,
            env=launch.get("env", {}),
            env_remove=launch.get("env_remove", []),
            secret_env=launch.get("secret_env", {}),
            api_key_env=key_env,
            api_key=os.environ.get(key_env) if key_env else None,
        )
        popen = spawn(list(launch["argv"]), env)
        _record_early_engine(name, raw, popen.pid)
        return popen
    except Exception:  # anything odd: the supervisor proper spawns it and reports the failure properly
        return None


def _record_early_engine(name: str, raw: dict[str, object], pid: int) -> None:
    """Write the engine's identity into the state file at once, so that even if this supervisor dies
    before its first proper save, `llmhost ps`/`stop` can find and stop the engine (no orphan)."""
    import psutil

    from llmhost.supervise import paths
    from llmhost.supervise.state import start_ticks

    try:
        create_time = psutil.Process(pid).create_time()
    except psutil.Error:
        return
    raw["engine_process"] = {"pid": pid, "create_time": create_time, "start_ticks": start_ticks(pid)}
    from llmhost.atomic import write_atomic

    write_atomic(paths.state_file(name), json.dumps(raw, indent=2), mode=0o600)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m llmhost.supervise NAME", file=sys.stderr)
        return 2
    # Handlers first: a stop that arrives while modules load must still stop the engine we spawn.
    stop_requested: list[Callable[[], None]] = []
    requested = {"stop": False}

    def _stop(signum: int, frame: FrameType | None) -> None:
        requested["stop"] = True
        for callback in stop_requested:
            callback()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    early = _early_spawn(argv[0])

    from llmhost.engines.registry import get_engine
    from llmhost.errors import ExitCode, LlmhostError
    from llmhost.supervise.process import terminate_tree
    from llmhost.supervise.state import read_deployment
    from llmhost.supervise.supervisor import Supervisor

    dep = read_deployment(argv[0])
    if dep is None:
        if early is not None:
            terminate_tree(early.pid, popen=early)
        print(f"no deployment state for {argv[0]!r}", file=sys.stderr)
        return ExitCode.NOT_FOUND
    api_key = os.environ.get(dep.launch.api_key_env) if dep.launch.api_key_env else None
    try:
        engine = get_engine(dep.engine)
    except (LlmhostError, ImportError) as exc:
        print(f"engine module unavailable ({exc}); failures will not be classified", file=sys.stderr)
        engine = None
    supervisor = Supervisor(dep, engine=engine, api_key=api_key, early_process=early)
    stop_requested.append(supervisor.request_stop)
    if requested["stop"]:
        supervisor.request_stop()
    final = supervisor.run()
    return ExitCode.ENGINE_FAILED if final.state == "failed" else ExitCode.OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
