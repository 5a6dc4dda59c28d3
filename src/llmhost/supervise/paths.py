"""Where deployment state and logs live: `$LLMHOST_STATE_DIR`, else `$XDG_STATE_HOME/llmhost`, else
`~/.local/state/llmhost` (the XDG base-directory default). Directories are 0700, files 0600."""

from __future__ import annotations

import os
import re
from pathlib import Path

from llmhost.errors import UsageError

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def state_dir() -> Path:
    env = os.environ.get("LLMHOST_STATE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "llmhost"


def deployments_dir() -> Path:
    return state_dir() / "deployments"


def is_valid_name(name: str) -> bool:
    # fullmatch: `$` alone also matches before a trailing newline ("web\n" was a valid name).
    return _NAME.fullmatch(name) is not None


# Deployments named gw-NAME are `llmhost gateway`'s own: it adopts, evicts and stops them.
GATEWAY_PREFIX = "gw-"


def check_not_gateways(name: str) -> str:
    """`name` for a deployment started by hand: refused when the gateway would take it for its own."""
    if name.startswith(GATEWAY_PREFIX):
        raise UsageError(
            f"The deployment name {name!r} starts with {GATEWAY_PREFIX}, which `llmhost gateway` keeps for "
            "the models it starts (it would stop it as its own).",
            hint="Pass another --name.",
        )
    return name


def validate_name(name: str) -> str:
    if not is_valid_name(name):
        raise UsageError(
            f"Invalid deployment name {name if len(name) <= 80 else name[:80] + '...'!r}.",
            hint="Use 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit.",
        )
    return name


def deployment_dir(name: str) -> Path:
    return deployments_dir() / validate_name(name)


def ensure_private_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise UsageError(
            f"Cannot create the llmhost state directory {path}: {exc.strerror}.",
            hint="Point LLMHOST_STATE_DIR (or XDG_STATE_HOME) at a writable directory.",
        ) from exc
    return path


def state_file(name: str) -> Path:
    return deployment_dir(name) / "deployment.json"


def engine_log(name: str) -> Path:
    return deployment_dir(name) / "engine.log"


def supervisor_log(name: str) -> Path:
    return deployment_dir(name) / "supervisor.log"
