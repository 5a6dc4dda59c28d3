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
