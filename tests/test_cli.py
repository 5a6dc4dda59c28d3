"""The CLI's shared behaviour: version, usage errors, one-line errors with documented exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmhost import __version__
from llmhost.cli import app, main
from llmhost.errors import ExitCode, ModelError, NothingFitsError


@pytest.fixture
def temp_command():
    """Register a hidden command on the real app for the duration of one test."""
    added = []

    def add(fn):
        app.command(name=fn.__name__.replace("_", "-"), hidden=True)(fn)
        added.append(app.registered_commands[-1])
        return fn

    yield add
    for info in added:
        app.registered_commands.remove(info)


def test_version_is_printed(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"llmhost {__version__}"


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "No such command" in err
    assert "Traceback" not in err


def test_llmhost_error_is_one_line_with_hint_and_its_exit_code(temp_command, capsys):
    @temp_command
    def boom_model() -> None:
        raise ModelError("No config.json in ./x.", hint="Pass a model directory or a .gguf file.")

    assert main(["boom-model"]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "No config.json in ./x. Pass a model directory or a .gguf file." in err.replace("\n", " ")
    assert "Traceback" not in err


def test_each_error_class_keeps_its_exit_code(temp_command):
    @temp_command
    def boom_fit() -> None:
        raise NothingFitsError("Nothing fits.")

    assert main(["boom-fit"]) == ExitCode.NOTHING_FITS


def test_unexpected_exception_is_reported_without_traceback_unless_debug(temp_command, capsys):
    @temp_command
    def boom_bug() -> None:
        raise RuntimeError("kaput")

    assert main(["boom-bug"]) == ExitCode.INTERNAL
    err = capsys.readouterr().err
    assert "kaput" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError):
        main(["--debug", "boom-bug"])


def test_help_documents_exit_codes():
    out = subprocess.run(
        [sys.executable, "-m", "llmhost", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for code in ("2 bad input", "3 nothing fits", "4 engine failed"):
        assert code in out.replace("\n  ", " ")


def test_cli_start_up_does_not_import_heavy_modules():
    code = (
        "import sys, llmhost.cli; "
        "mods = ('torch', 'vllm', 'llama_cpp', 'transformers', 'matplotlib'); "
        "heavy = [m for m in mods if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_long_error_stays_on_one_line_and_brackets_are_literal(temp_command, capsys):
    message = "Profile key [engine] is wrong: " + "x" * 200 + "."

    @temp_command
    def boom_long() -> None:
        raise ModelError(message)

    assert main(["boom-long"]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err


def test_ctrl_c_in_any_command_says_interrupted(temp_command, capsys):
    # Typer turns KeyboardInterrupt into a silent exit 130: main() must still say what happened.
    @temp_command
    def long_wait() -> None:
        raise KeyboardInterrupt  # what Ctrl-C raises wherever the command is

    assert main(["long-wait"]) == ExitCode.INTERRUPTED
    err = capsys.readouterr().err
    assert err.strip() == "interrupted." and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "refusal"),
    [
        # Found in issue 13: each of these was taken as "not given" (or bound every interface) and exited 0.
        (["hw", "--hardware", ""], "--hardware is empty"),
        (["doctor", "--hardware", "  "], "--hardware is empty"),
        (["serve", "m.gguf", "--dry-run", "--host", ""], "--host is empty"),
        (["serve", "m.gguf", "--dry-run", "--name", ""], "--name is empty"),
        (["serve", "m.gguf", "--dry-run", "--engine-bin", ""], "--engine-bin is empty"),
        (["serve", "m.gguf", "--dry-run", "--profile", ""], "--profile is empty"),
        (["demo-model", "-o", ""], "--output is empty"),  # wrote into the current directory
        (
            ["serve", "m.gguf", "--dry-run", "--name", "web\n"],
            r"--name 'web\n' contains a control character",
        ),
        (["bench", "--base-url", "http://h/v1", "--model", "m", "--slo", "\x1b[2J"], "--slo"),
        (["plan", "m.gguf", "--quant", "q" * 5000], "--quant is 5000 characters long"),
    ],
)
def test_option_values_that_cannot_name_anything_are_refused_where_parsed(argv, refusal, capsys):
    assert main(argv) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and refusal in err, err
    assert len(err.strip().splitlines()) == 1 and ("Give " in err or "Pass " in err)  # the next step
