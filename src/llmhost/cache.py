"""Where llmhost keeps what it can rebuild: engine builds, generated models, dry-run answers.

`LLMHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/llmhost`, else `~/.cache/llmhost`. One function, so every
module (engine builds, the vLLM virtualenv, the demo model) agrees on it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("LLMHOST_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llmhost"


def engines_dir() -> Path:
    """Engine builds and virtualenvs, keyed by content inside."""
    return cache_dir() / "engines"
