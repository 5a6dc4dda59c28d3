"""The serve-side CLI without starting engines: dry runs, profiles, engines listing, usage errors."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from llmhost.supervise import paths
from support.serve_helpers import llmhost

# `llmhost_here` (tests/conftest.py): the same command in this process, for cases that need no process of
# their own; `llmhost` runs one, for what only a real process shows (exit status end to end, no traceback,
# the terminal width, detaching).
Run = Callable[..., subprocess.CompletedProcess[str]]


def test_dry_run_prints_the_exact_command_and_starts_nothing(tiny_gguf: Path, llmhost_here: Run) -> None:
    out = llmhost_here(
        "serve", str(tiny_gguf), "--dry-run", "--engine", "llama-cpp-python", "--context", "1024"
    )
    assert out.returncode == 0, out.stderr
    command = next(line for line in out.stdout.splitlines() if "llama_cpp.server" in line)
    argv = shlex.split(command)
    assert argv[argv.index("--n_ctx") + 1] == "1024" and argv[argv.index("--model") + 1] == str(tiny_gguf)
    assert "plan: llamacpp/llama-cpp-python" in out.stderr
    assert json.loads(llmhost_here("ps", "--json").stdout) == []


def test_dry_run_env_lines_paste_into_a_shell(tiny_gguf: Path, tmp_path: Path, llmhost_here: Run) -> None:
    # The printed env prefix is copy-paste material: a value with spaces or `$` must reach the engine as
    # written, and the key reference must expand to the caller's key (not be printed or left literal).
    prof = tmp_path / "env.yaml"
    prof.write_text("engine: llama-server\nhost: 0.0.0.0\nenv:\n  FOO: 'a b $HOME'\n")
    out = llmhost_here("serve", str(tiny_gguf), "--profile", str(prof), "--port", "18998", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith(("/", "'")) and len(lines) > 1, out.stdout
    script = "\n".join([*lines[:-1], "env"])
    shown = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": os.environ["PATH"], "LLMHOST_API_KEY": "k" * 24},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert "FOO=a b $HOME" in shown
    assert any(line.endswith("=" + "k" * 24) and not line.startswith("LLMHOST_") for line in shown), shown


def test_dry_run_command_keeps_brackets_in_paths(tiny_gguf: Path, tmp_path: Path, llmhost_here: Run) -> None:
    # "m[q4].gguf" was printed as "m.gguf": Rich read "[q4]" as markup in the "exact command".
    model = tmp_path / "m[q4].gguf"
    model.write_bytes(tiny_gguf.read_bytes())
    out = llmhost_here("serve", str(model), "--engine", "llama-server", "--port", "18997", "--dry-run")
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout.strip().splitlines()[-1])
    assert argv[argv.index("-m") + 1] == str(model), out.stdout


def test_plan_lines_are_not_wrapped_when_stderr_is_a_file(tiny_gguf: Path) -> None:
    # `make demo` and `serve 2> log` showed "... memory \n141.3 MiB", reasons cut mid-sentence at 80 columns.
    out = llmhost("serve", str(tiny_gguf), "--dry-run", env={"COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    plan = next(line for line in out.stderr.splitlines() if line.startswith("plan:"))
    assert plan.endswith("MiB") and "memory" in plan, out.stderr
    assert all(line.startswith(("plan:", "  - ")) for line in out.stderr.splitlines()), out.stderr


def test_profile_fills_options_and_flags_win(tiny_gguf: Path, llmhost_here: Run) -> None:
    out = llmhost_here("serve", str(tiny_gguf), "--profile", "tiny-demo", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    prepared = json.loads(out.stdout)
    assert prepared["deployment"]["runtime"] == "llama-cpp-python"
    assert prepared["candidate"]["context_length"] == 2048
    out = llmhost_here(
        "serve", str(tiny_gguf), "--profile", "tiny-demo", "--context", "512", "--dry-run", "--json"
    )
    assert json.loads(out.stdout)["candidate"]["context_length"] == 512


def test_bad_profile_names_key_and_line(tiny_gguf: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: llamacpp\ncontext: 2048\nconcurency: 4\n")
    out = llmhost("serve", str(tiny_gguf), "--profile", str(bad), "--dry-run")
    assert out.returncode == 2
    assert f"{bad}:3: concurency: Extra inputs are not permitted" in out.stderr.replace("\n", "")
    assert "Traceback" not in out.stderr


def test_usage_errors(tiny_gguf: Path, llmhost_here: Run) -> None:
    out = llmhost_here("serve", str(tiny_gguf), "--hardware", "h100-80gb")
    assert out.returncode == 2 and "--dry-run" in out.stderr
    out = llmhost_here("serve", str(tiny_gguf), "--engine", "tgi", "--dry-run")
    assert out.returncode == 2 and "Unknown engine" in out.stderr
    out = llmhost_here("serve", str(tiny_gguf), "--name", "Bad Name!", "--dry-run")
    assert out.returncode == 2 and "Invalid deployment name" in out.stderr
    # A host this machine cannot listen on is named as such, not blamed on ports (exit 2, no traceback).
    out = llmhost_here("serve", str(tiny_gguf), "--host", "bad..host", "--dry-run")
    assert out.returncode == 2 and "Cannot resolve --host bad..host" in out.stderr, out.stderr
    # One case as a user runs it, in a process of its own: exit 2, the one line, no traceback.
    out = llmhost("serve", str(tiny_gguf), "--host", "192.0.2.1", "--api-key", "k" * 20, "--port", "18999")
    assert out.returncode == 2 and "Cannot listen on --host 192.0.2.1" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    # Waiving the key for a non-loopback bind is allowed, and said out loud.
    out = llmhost_here("serve", str(tiny_gguf), "--host", "0.0.0.0", "--insecure-no-auth", "--dry-run")
    assert out.returncode == 0 and "--insecure-no-auth:" in out.stderr and "no API key" in out.stderr
    assert "insecure" not in llmhost_here("serve", str(tiny_gguf), "--dry-run").stderr
    out = llmhost_here("serve", str(tiny_gguf), "--port", "70000", "--dry-run")
    assert out.returncode == 2 and "out of range" in out.stderr and "between 1 and 65535" in out.stderr
    out = llmhost_here("logs", "anything", "-n", "-5")
    assert out.returncode == 2 and "--lines -5 is negative" in out.stderr
    out = llmhost_here("stop")
    assert out.returncode == 2 and "--all" in out.stderr
    out = llmhost_here("logs", "nope")
    assert out.returncode == 5
    out = llmhost_here("engines", "install", "tgi")
    assert out.returncode == 2


def test_engines_lists_every_llamacpp_runtime(llmhost_here: Run) -> None:
    out = llmhost_here("engines", "--json")
    assert out.returncode == 0, out.stderr
    rows = {(r["name"], r["runtime"]): r for r in json.loads(out.stdout)}
    assert ("llamacpp", "llama-server") in rows and ("llamacpp", "llama-cpp-python") in rows
    native = rows[("llamacpp", "llama-server")]
    assert native["usable"] == bool(native["location"]) or native["reason"]


def test_demo_model_command(tmp_path: Path, llmhost_here: Run) -> None:
    out = llmhost_here("demo-model", "--output", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert Path(info["path"]).parent == tmp_path and Path(info["path"]).read_bytes()[:4] == b"GGUF"


def test_logs_follow_ends_when_the_deployment_is_stopped() -> None:
    folder = paths.deployment_dir("follow-me")
    folder.mkdir(parents=True)
    (folder / "deployment.json").write_text("{}")
    log = folder / "engine.log"
    log.write_text("first\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmhost", "logs", "follow-me", "-f"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        assert proc.stdout is not None
        # Once it has printed what the log holds it is following; given time to end, it must not.
        shown = proc.stdout.readline()
        time.sleep(0.5)
        assert proc.poll() is None, "logs -f ended while the deployment still exists"
        with log.open("a") as fh:
            fh.write("last words while stopping\n")
        (folder / "deployment.json").unlink()  # what `llmhost stop` does once every process is gone
        rest, _ = proc.communicate(timeout=15)
        out = shown + rest
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert out.splitlines() == ["first", "last words while stopping"]


def test_help_documents_the_exit_codes_these_tests_check(llmhost_here: Run) -> None:
    serve_help = " ".join(llmhost_here("serve", "--help").stdout.split())
    assert "3 when nothing fits" in serve_help and "4 when the engine fails to start" in serve_help
    stop_help = " ".join(llmhost_here("stop", "--help").stdout.split())
    assert "5 for an unknown NAME" in stop_help


def test_unusable_state_dir_is_a_clear_error(tiny_gguf: Path, tmp_path: Path) -> None:
    # LLMHOST_STATE_DIR under a file (or /proc) was "internal error: NotADirectoryError ...".
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {"LLMHOST_STATE_DIR": str(blocker / "state")}
    out = llmhost("serve", str(tiny_gguf), "--port", "18996", "--detach", "--name", "x-state", env=env)
    assert out.returncode == 2, out.stderr
    assert "internal error" not in out.stderr and "LLMHOST_STATE_DIR" in out.stderr, out.stderr


def test_engine_bin_with_the_python_runtime_is_refused(tiny_gguf: Path, llmhost_here: Run) -> None:
    # --engine-bin names a llama-server binary; with --engine llama-cpp-python it was silently ignored.
    out = llmhost_here(
        "serve", str(tiny_gguf), "--engine", "llama-cpp-python", "--engine-bin", "/bin/true", "--dry-run"
    )
    assert out.returncode == 2 and "--engine-bin" in out.stderr, out.stderr


def test_an_unreadable_state_file_is_named_by_ps_and_removed_by_stop(
    state_dir: Path, llmhost_here: Run
) -> None:
    # A state file cut short (disk full, a crash mid-write by an older version) used to be skipped
    # silently forever: `ps` showed nothing and `stop` said there was no such deployment.
    bad = paths.state_file("half")
    bad.parent.mkdir(parents=True)
    bad.write_text('{"name": "half", "sta')
    out = llmhost_here("ps")
    assert out.returncode == 0 and "'half' is unreadable" in out.stderr and "llmhost stop half" in out.stderr
    out = llmhost_here("stop", "half")
    assert out.returncode == 5 and "unreadable and has been removed" in out.stderr
    assert not bad.exists()
    out = llmhost_here("ps")
    assert "unreadable" not in out.stderr
