"""Shared, generic fixtures: isolated llmhost state, the tiny generated GGUF model.

- Every test session gets its own llmhost state dir (`LLMHOST_STATE_DIR`, `XDG_STATE_HOME`), so tests
  never see or touch a user's deployments. The cache dir (`LLMHOST_CACHE_DIR`) is left alone on purpose:
  engine builds (native llama-server, the vLLM virtualenv) live there and are expensive to rebuild.
- `tiny_gguf`: a real llama-architecture GGUF (about 2 MB) generated once per session with the `gguf`
  package (`llmhost.demo_model`); llama.cpp loads and runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_llmhost_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("llmhost-state")
    saved = {k: os.environ.get(k) for k in ("LLMHOST_STATE_DIR", "XDG_STATE_HOME")}
    os.environ["LLMHOST_STATE_DIR"] = str(root / "llmhost")
    os.environ["XDG_STATE_HOME"] = str(root)
    yield root / "llmhost"
    # A test that failed half-way may have left a deployment running (a vLLM holds GBs): stop it, and
    # say so, so a CI machine is never left with an engine nobody owns.
    from llmhost.app.deployments import stop_all

    try:
        left = stop_all()
    except Exception as exc:  # the safety net must not hide the session's own result
        print(f"\nllmhost test session: could not stop leftover deployments: {exc}", file=sys.stderr)
    else:
        if left:
            names = ", ".join(d.name for d in left)
            print(f"\nllmhost test session: stopped deployments left running: {names}", file=sys.stderr)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty llmhost state dir for one test (deployments, logs, pid files)."""
    path = tmp_path / "state"
    monkeypatch.setenv("LLMHOST_STATE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the tiny demo GGUF (llama architecture, byte-level BPE, ChatML template, random weights)."""
    from llmhost.demo_model import ensure_demo_model

    return ensure_demo_model(tmp_path_factory.mktemp("models"))


@pytest.fixture
def llmhost_here(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`llmhost ARGS` run in this process through `llmhost.cli.main`, what the console script runs, and
    answered as `support.serve_helpers.llmhost` answers (a CompletedProcess: exit code, stdout, stderr),
    in the environment that helper gives a subprocess (no inherited key, NO_COLOR, COLUMNS=200).

    For commands that need no process of their own: a subprocess pays the CLI's start-up (about half a
    second each on 2 cores). The Rich consoles are made afresh for each call, so they read that
    environment as a new process's would. What only a real process shows (exit status, nothing printed
    past the one error line, no traceback, terminal width) keeps its subprocess tests."""
    from rich.console import Console

    from llmhost.cli import _output, main

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        with monkeypatch.context() as patch:
            patch.delenv("LLMHOST_API_KEY", raising=False)
            for key, value in {"NO_COLOR": "1", "COLUMNS": "200", **(env or {})}.items():
                patch.setenv(key, value)
            fresh = {"stdout": Console(soft_wrap=False), "stderr": Console(stderr=True, soft_wrap=False)}
            cli_modules = [
                m for n, m in sys.modules.items() if n == "llmhost.cli" or n.startswith("llmhost.cli.")
            ]
            for module in cli_modules:
                for name, console in fresh.items():
                    if module is _output or isinstance(getattr(module, name, None), Console):
                        patch.setattr(module, name, console, raising=False)
            capsys.readouterr()
            code = main(list(args))
            out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["llmhost", *args], code, out, err)

    return run
