"""`python -m llmhost.supervise NAME`: the detached supervisor process (started by `llmhost serve --detach`).

It reads the deployment's state file (written by the launcher), takes the API key from the environment
variable the state names, and runs the supervisor until SIGTERM/SIGINT/SIGHUP.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


def main(argv: list[str]) -> int:
    from llmhost.engines.registry import get_engine
    from llmhost.errors import ExitCode, LlmhostError
    from llmhost.supervise.state import read_deployment
    from llmhost.supervise.supervisor import Supervisor

    if len(argv) != 1:
        print("usage: python -m llmhost.supervise NAME", file=sys.stderr)
        return ExitCode.BAD_INPUT
    dep = read_deployment(argv[0])
    if dep is None:
        print(f"no deployment state for {argv[0]!r}", file=sys.stderr)
        return ExitCode.NOT_FOUND
    api_key = os.environ.get(dep.launch.api_key_env) if dep.launch.api_key_env else None
    try:
        engine = get_engine(dep.engine)
    except (LlmhostError, ImportError) as exc:
        print(f"engine module unavailable ({exc}); failures will not be classified", file=sys.stderr)
        engine = None
    supervisor = Supervisor(dep, engine=engine, api_key=api_key, on_event=lambda m: None)

    def _stop(signum: int, frame: FrameType | None) -> None:
        supervisor.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    final = supervisor.run()
    return ExitCode.ENGINE_FAILED if final.state == "failed" else ExitCode.OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
