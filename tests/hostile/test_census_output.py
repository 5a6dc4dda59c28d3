"""Census, output area: bench against hostile and broken servers, bad bench options, bench compare with
bad or foreign files, logs/ps/stop on odd names and state.

The servers are one `HostileServer` (tests/support/hostile_server.py) started for this module on a port
taken at import, so the cases can name it in their argv; each case's URL path picks a misbehaviour.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmhost.errors import ExitCode
from support.hostile_server import HostileServer, free_port

from .census import BadInput, ids, run_case

PORT = free_port()
BAD, NOT_FOUND, BENCH, NETWORK = (
    ExitCode.BAD_INPUT,
    ExitCode.NOT_FOUND,
    ExitCode.BENCH_INCOMPLETE,
    ExitCode.NETWORK,
)
# One request, no warm-up, a short --timeout: a case that waits on a silent server waits 1 s.
FAST = ["-n", "1", "--warmup", "0", "--timeout", "1"]


def bench(mode: str, *extra: str) -> list[str]:
    return ["bench", "--base-url", f"http://127.0.0.1:{PORT}/{mode}/v1", "--model", "m", *FAST, *extra]


def server_case(mode: str, exit_code: int, *extra: str) -> BadInput:
    return BadInput(f"output-server-{mode}", bench(mode, *extra), exit_code)


def option_case(name: str, *options: str, make=None) -> BadInput:
    argv = ["bench", "--base-url", f"http://127.0.0.1:{PORT}/v1", "--model", "m", *options]
    return BadInput(f"output-option-{name}", argv, BAD, make=make)


def _files(**contents: bytes) -> object:
    def make(tmp: Path) -> None:
        for name, data in contents.items():
            (tmp / name.replace("_", ".")).write_bytes(data)

    return make


def _fifo(tmp: Path) -> None:
    os.mkfifo(tmp / "fifo.json")
    (tmp / "foreign.json").write_text('{"a": 1}')


def _sparse(tmp: Path) -> None:
    with (tmp / "big.json").open("wb") as fh:
        fh.truncate(3 * 2**30)  # a hole: 3 GiB that take no disk
    (tmp / "foreign.json").write_text('{"a": 1}')


def _folder(tmp: Path) -> None:
    (tmp / "dir.json").mkdir()
    (tmp / "foreign.json").write_text('{"a": 1}')


# The census runs each case with LLMHOST_STATE_DIR at `_state` beside the case's folder.
def _engine_log(tmp: Path) -> Path:
    folder = tmp.parent / "_state" / "deployments" / "x"
    folder.mkdir(parents=True)
    return folder / "engine.log"


def _log_is_a_folder(tmp: Path) -> None:
    _engine_log(tmp).mkdir()  # a half-removed or tampered state dir


def _log_is_a_fifo(tmp: Path) -> None:
    os.mkfifo(_engine_log(tmp))  # reading it would wait for a writer forever


FOREIGN = json.dumps({"llmhost_version": "0", "summary": "fast"}).encode()

CASES: list[BadInput] = [
    # A server that is not an OpenAI server at all, or cannot be reached: 7.
    server_case("never-answer", NETWORK),
    server_case("redirect-loop", NETWORK),
    server_case("not-http", NETWORK),
    BadInput(
        "output-server-refused",
        ["bench", "--base-url", "http://127.0.0.1:1/v1", "--model", "m", *FAST],
        NETWORK,
    ),
    # The model list: 6 (the target answered, the benchmark could not run).
    server_case("models-401", BENCH),
    server_case("models-foreign", BENCH),
    server_case("models-hostile", BENCH),
    # Streams that are not OpenAI streams: every request fails, 6.
    server_case("not-json", BENCH),
    server_case("event-array", BENCH),
    server_case("deep-json", BENCH),
    server_case("choices-dict", BENCH),
    server_case("choices-strings", BENCH),
    server_case("choices-null", BENCH),
    server_case("delta-list", BENCH),
    server_case("content-number", BENCH),
    server_case("finish-object", BENCH),
    server_case("no-finish", BENCH),
    server_case("usage-negative", BENCH),
    server_case("usage-huge", BENCH),
    server_case("usage-float", BENCH),
    server_case("usage-string", BENCH),
    server_case("usage-list", BENCH),
    server_case("error-event", BENCH),
    # Bodies and streams without end, servers that stall or break the connection: 6, in bounded time.
    server_case("long-line", BENCH),
    server_case("endless", BENCH),
    server_case("stream-gzip-bomb", BENCH),
    server_case("keepalive", BENCH),
    server_case("trickle", BENCH),
    server_case("hang-post", BENCH),
    server_case("close-mid-stream", BENCH),
    server_case("bad-chunked", BENCH),
    server_case("html", BENCH),
    server_case("http-404", BENCH),
    server_case("error-hostile", BENCH),
    server_case("error-huge", BENCH),
    server_case("error-gzip-bomb", BENCH),
    # Bad options: 2.
    option_case("timeout-zero", "--timeout", "0"),
    option_case("timeout-nan", "--timeout", "nan"),
    option_case("rate-nan", "--rate", "nan"),
    option_case("duration-inf", "--duration", "inf"),
    option_case("input-tokens-huge", "--input-tokens", "99999999999"),
    option_case("output-tokens-backwards", "--output-tokens", "64:8"),
    option_case("slo-negative", "--slo", "ttft=-5ms"),
    option_case("sweep-max-zero", "--sweep", "--sweep-max", "0"),
    option_case(
        "dataset-binary", "--dataset", "{tmp}/bin.jsonl", make=_files(bin_jsonl=b"\x00\xff\xfe\x1b[2J")
    ),
    option_case("dataset-deep", "--dataset", "{tmp}/deep.jsonl", make=_files(deep_jsonl=b"[" * 100_000)),
    option_case("dataset-fifo", "--dataset", "{tmp}/fifo.json", make=_fifo),
    option_case("dataset-folder", "--dataset", "{tmp}/dir.json", make=_folder),
    BadInput(
        "output-option-port-out-of-range",
        ["bench", "--base-url", "http://127.0.0.1:99999/v1", "--model", "m"],
        BAD,
    ),
    BadInput(
        "output-option-url-unclosed-bracket", ["bench", "--base-url", "http://[::1/v1", "--model", "m"], BAD
    ),
    BadInput(
        "output-option-empty-model",
        ["bench", "--base-url", f"http://127.0.0.1:{PORT}/v1", "--model", ""],
        BAD,
    ),
    # bench compare: 2.
    BadInput(
        "output-compare-one-file", ["bench", "compare", "{tmp}/a.json"], BAD, make=_files(a_json=FOREIGN)
    ),
    BadInput(
        "output-compare-foreign",
        ["bench", "compare", "{tmp}/a.json", "{tmp}/a.json"],
        BAD,
        make=_files(a_json=FOREIGN),
    ),
    BadInput(
        "output-compare-binary",
        ["bench", "compare", "{tmp}/b.json", "{tmp}/b.json"],
        BAD,
        make=_files(b_json=b"\x00\xff\x1b[2J[/bold]"),
    ),
    BadInput(
        "output-compare-deep",
        ["bench", "compare", "{tmp}/d.json", "{tmp}/d.json"],
        BAD,
        make=_files(d_json=b"[" * 100_000),
    ),
    BadInput(
        "output-compare-fifo", ["bench", "compare", "{tmp}/fifo.json", "{tmp}/foreign.json"], BAD, make=_fifo
    ),
    BadInput(
        "output-compare-sparse-3gib",
        ["bench", "compare", "{tmp}/big.json", "{tmp}/foreign.json"],
        BAD,
        make=_sparse,
    ),
    BadInput(
        "output-compare-folder",
        ["bench", "compare", "{tmp}/dir.json", "{tmp}/foreign.json"],
        BAD,
        make=_folder,
    ),
    BadInput("output-compare-missing", ["bench", "compare", "{tmp}/none.json", "{tmp}/none2.json"], BAD),
    # logs / ps / stop on odd names and state.
    BadInput("output-logs-traversal", ["logs", "../../etc/passwd"], BAD),
    BadInput("output-logs-escape-in-name", ["logs", "x\x1b[2J"], BAD),
    BadInput("output-logs-markup-name", ["logs", "[/bold]"], BAD),
    BadInput("output-logs-unknown", ["logs", "nosuch"], NOT_FOUND),
    BadInput(
        "output-logs-log-is-a-folder",
        ["logs", "x"],
        BAD,
        make=_log_is_a_folder,
    ),
    BadInput("output-logs-log-is-a-fifo", ["logs", "x", "-n", "5"], BAD, make=_log_is_a_fifo),
    BadInput("output-stop-escape-in-name", ["stop", "\x1b]0;pwned\x07"], BAD),
]


@pytest.fixture(scope="module", autouse=True)
def hostile_server():
    with HostileServer(PORT) as server:
        yield server


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_input(
    case: BadInput, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_case(case, tmp_path, capsys, monkeypatch)
