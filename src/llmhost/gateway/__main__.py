"""`python -m llmhost.gateway [--config FILE] [--host H] [--port P] [--insecure-no-auth]`: the detached
gateway (started by `llmhost gateway --detach`); errors go to its log as one line, exit code as the CLI's."""

from __future__ import annotations

import argparse
import sys

from llmhost.errors import LlmhostError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmhost.gateway")
    parser.add_argument("--config")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--insecure-no-auth", action="store_true")
    args = parser.parse_args(argv)
    from llmhost.gateway.service import run_gateway

    try:
        run_gateway(
            args.config,
            host=args.host,
            port=args.port,
            insecure_no_auth=args.insecure_no_auth,
            warn=lambda m: print(f"warning: {m}", file=sys.stderr, flush=True),
        )
    except LlmhostError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
