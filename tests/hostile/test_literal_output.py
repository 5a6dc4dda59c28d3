"""Text llmhost did not write (model metadata, paths, served names, server answers, engine logs) is shown
literally in every output mode: never Rich markup or emoji, control characters escaped (`\\x1b`), and
exact in --json (JSON escapes control characters itself).

A model whose name held `[/bold]` crashed `inspect` and `plan` with Rich's MarkupError; an ESC in a log
line or a server's error reached the terminal as an escape sequence.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from llmhost.cli import _output, main
from llmhost.cli._output import printable
from llmhost.demo_model import write_llama_gguf
from support.hostile_server import HOSTILE_TEXT, TYPED_TEXT, HostileServer

SHOWN = printable(HOSTILE_TEXT)  # what a user must read
RAW_CONTROLS = ("\x1b", "\r", "\x07", "\x9b")
# A local GGUF is named after its file: "[/red]" spans a folder "a[" and the file, whose stem is the name.
STEM = "red]x :smile: \x1b[2J\x07\x9b"
# A log or a failure is split into lines at CR: this carries the rest of the hostile text.
LINE_TEXT = "[/bold][red]x[/red] :smile: \x1b[2J\x07\x9b"


@pytest.fixture(autouse=True)
def wide_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tables wider than the 80 columns of a captured stream must not wrap the text being looked for.
    monkeypatch.setattr(_output, "stdout", Console(width=400, soft_wrap=False))


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with HostileServer() as running:
        yield running


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_literal(text: str, shown: str = SHOWN) -> None:
    assert shown in text, text
    assert not any(c in text for c in RAW_CONTROLS), repr(text)
    assert "MarkupError" not in text and "internal error" not in text, text


def hostile_gguf(folder: Path) -> Path:
    """A GGUF at `folder`/a[/red]x...gguf: Rich reads "[/red]" with no open tag as a MarkupError."""
    (folder / "a[").mkdir(parents=True, exist_ok=True)
    return write_llama_gguf(
        folder / "a[" / f"{STEM}.gguf",
        n_layer=2,
        n_embd=64,
        n_head=2,
        n_head_kv=1,
        n_ff=128,
        n_vocab=300,
        name=HOSTILE_TEXT,
        chat_template=HOSTILE_TEXT,
    )


def test_printable_escapes_c0_del_and_c1_and_keeps_layout() -> None:
    assert printable("a\x1b[2Jb\r\x07\x08\x7f\x9b\x00") == "a\\x1b[2Jb\\x0d\\x07\\x08\\x7f\\x9b\\x00"
    assert printable("tab\there\nnext é [/bold]") == "tab\there\nnext é [/bold]"


def test_inspect_shows_a_hostile_gguf_name_literally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = hostile_gguf(tmp_path)
    rc, out, err = run(capsys, "inspect", str(model))
    assert rc == 0, err
    assert_literal(out, printable(STEM))
    rc, out, err = run(capsys, "inspect", str(model), "--json")
    assert rc == 0, err
    assert json.loads(out)["name"] == STEM  # exact: JSON escapes the controls itself
    assert json.loads(out)["ref"] == str(model)


def test_plan_shows_a_hostile_gguf_name_literally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = hostile_gguf(tmp_path)
    rc, out, err = run(capsys, "plan", str(model), "--hardware", "h100-80gb")
    assert rc == 0, err
    assert_literal(out, printable(STEM))
    rc, out, err = run(capsys, "plan", str(model), "--hardware", "h100-80gb", "--json")
    assert rc == 0, err
    assert json.loads(out)["model"]["name"] == STEM


def test_a_control_character_in_a_file_name_is_escaped_in_the_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _out, err = run(capsys, "inspect", str(tmp_path / f"{HOSTILE_TEXT}.gguf"))
    assert rc in (2, 5), err
    assert err.startswith("error:") and err.count("\n") == 1, repr(err)
    assert_literal(err)


def _write_deployment(name: str) -> None:
    from llmhost.engines.base import LaunchSpec
    from llmhost.supervise.state import Deployment, write_deployment

    url = "http://127.0.0.1:1/v1"
    launch = LaunchSpec(engine="llamacpp", runtime="llama-server", argv=["llama-server"], base_url=url)
    write_deployment(
        Deployment(
            name=name,
            model=HOSTILE_TEXT,
            served_model_name=HOSTILE_TEXT,
            engine="llamacpp",
            runtime="llama-server",
            base_url=url,
            host="127.0.0.1",
            port=1,
            state="failed",
            failure=f"the engine said {LINE_TEXT}\nand more",
            launch=launch,
            log_dir="/nonexistent",
        )
    )


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_ps_shows_hostile_served_names_literally(
    as_json: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMHOST_STATE_DIR", str(tmp_path))
    _write_deployment("odd")
    rc, out, err = run(capsys, "ps", *(["--json"] if as_json else []))
    assert rc == 0, err
    if as_json:
        (dep,) = json.loads(out)
        assert dep["served_model_name"] == HOSTILE_TEXT and LINE_TEXT in dep["failure"]
    else:
        assert_literal(out)
        assert f"odd: the engine said {printable(LINE_TEXT)}" in out


def test_logs_escape_control_characters_and_keep_markup_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmhost.supervise import paths

    monkeypatch.setenv("LLMHOST_STATE_DIR", str(tmp_path))
    log = paths.engine_log("odd")
    log.parent.mkdir(parents=True)
    log.write_text(f"first\n{LINE_TEXT}\n\x1b[31mred\x1b[0m\tcolumn\n", encoding="utf-8")
    rc, out, err = run(capsys, "logs", "odd")
    assert rc == 0, err
    assert out.splitlines() == ["first", printable(LINE_TEXT), "\\x1b[31mred\\x1b[0m\tcolumn"]


def test_bench_shows_a_hostile_served_model_name_literally(
    server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--base-url", server.url("ok"), "--model", TYPED_TEXT, "-n", "2", "--warmup", "0"]
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    assert_literal(out, TYPED_TEXT)
    rc, out, err = run(capsys, *argv, "--json")
    assert rc == 0, err
    assert json.loads(out)["target"]["model"] == TYPED_TEXT


@pytest.mark.parametrize("mode", ["error-hostile", "error-event"])
def test_bench_quotes_a_hostile_server_error_literally(
    mode: str, server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--base-url", server.url(mode), "--model", "m", "-n", "2", "--warmup", "0"]
    rc, out, err = run(capsys, *argv)
    assert rc == 6, err
    assert_literal(err.splitlines()[-1])
    rc, out, err = run(capsys, *argv, "--json")
    assert rc == 6, err
    assert HOSTILE_TEXT in json.loads(out)["requests"][0]["error"]


def test_bench_lists_a_hostile_model_list_literally(
    server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _out, err = run(
        capsys, "bench", "--base-url", server.url("models-hostile"), "--model", "m", "-n", "1"
    )
    assert rc == 6, err
    assert err.startswith("error: model 'm' is not served") and err.count("\n") == 1, err
    assert_literal(err)


def test_bench_compare_shows_hostile_file_and_model_names_literally(
    server: HostileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = []
    (tmp_path / "c[").mkdir()
    for name in ("c[/x]a.json", "b\x1b[2J.json"):
        path = tmp_path / name
        argv = ["bench", "--base-url", server.url("ok"), "--model", TYPED_TEXT, "-n", "2", "--warmup", "0"]
        # --output refuses control characters in its value: the ESC enters the name afterwards.
        written = tmp_path / f"written-{len(saved)}.json"
        assert run(capsys, *argv, "--output", str(written))[0] == 0
        written.rename(path)
        saved.append(str(path))
    rc, out, err = run(capsys, "bench", "compare", *saved)
    assert rc == 0, err
    assert_literal(out, TYPED_TEXT)
    assert "x]a.json" in out and "b\\x1b[2J.json" in out


def test_demo_model_prints_an_output_path_with_markup_literally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "[/x]"  # the folders "[" and "x]": the path reads "[/x]"
    folder.mkdir(parents=True)
    rc, out, err = run(capsys, "demo-model", "-o", str(folder))
    assert rc == 0, err
    assert str(folder) in out
