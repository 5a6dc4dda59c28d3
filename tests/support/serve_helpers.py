"""Helpers for the serve tests: run the real CLI in a subprocess, inspect processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil


def llmhost(
    *args: str, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m llmhost ARGS` with the test session's (isolated) environment."""
    full_env = {k: v for k, v in os.environ.items() if k != "LLMHOST_API_KEY"}
    full_env.update({"NO_COLOR": "1", "COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "llmhost", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )


def serve_detached(model: Path, name: str, *extra: str, env: dict[str, str] | None = None) -> dict:
    proc = llmhost("serve", str(model), "--detach", "--name", name, "--json", *extra, env=env)
    assert proc.returncode == 0, f"serve failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}"
    return json.loads(proc.stdout)


def ps_json() -> list[dict]:
    proc = llmhost("ps", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def deployment(name: str) -> dict | None:
    return next((d for d in ps_json() if d["name"] == name), None)


def group_alive(pgid: int) -> list[int]:
    pids = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                pids.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return pids


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
