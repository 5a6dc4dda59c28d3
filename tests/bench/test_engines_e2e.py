"""Bench the real llama.cpp serving the tiny generated GGUF: results must be sane.

- llama-cpp-python's server streams no `usage`, and its chunks do not map one-to-one to tokens (its
  flush of held-back text at the end repeats or merges pieces); every request must end with
  `finish_reason: length`, be counted as exactly the requested length from that finish (the
  tokenizer, the GGUF's own as in `make demo`, only cross-checks) and raise no `length_not_honoured`.
- the native llama-server (when `make llama-server` built it) streams `usage` and per-response
  `timings`: tokens counted must equal the requested output lengths exactly, and the client must
  agree with the server's own timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmhost.bench.models import BenchResult
from llmhost.cli import main

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(argv: list[str], port: int, log: Path) -> Iterator[str]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    if json.load(r).get("data"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


def bench_json(capsys, url: str, model: str, *args: str) -> BenchResult:
    code = main(["bench", "--base-url", url, "--model", model, "--input-tokens", "24", "--json", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return BenchResult.model_validate_json(out)


def test_llama_cpp_python_server(tiny_gguf: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("llama_cpp")
    port = free_port()
    argv = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_gguf), "--host", "127.0.0.1",
        "--port", str(port), "--model_alias", "tiny", "--n_ctx", "1024", "--interrupt_requests", "False",
    ]  # fmt: skip
    with serving(argv, port, tmp_path / "server.log") as url:
        for api, extra in (("chat", ["--tokenizer", str(tiny_gguf)]), ("completions", [])):
            result = bench_json(
                capsys, url, "tiny", "--api", api, "-c", "2", "-n", "6", "--output-tokens", "16", *extra
            )
            s = result.summary
            assert s.completed == 6 and s.failed == 0 and not result.incomplete
            assert all(r.finish_reason == "length" for r in result.requests)
            assert {r.output_tokens_source for r in result.requests} == {"length"}
            assert all(r.output_tokens == 16 and r.length_honoured for r in result.requests)
            assert s.output_tokens == 16 * 6
            codes = {f.code for f in result.flags}
            assert "length_not_honoured" not in codes and "tokens_from_chunks" not in codes
            # The chunks confirm the length: far off would mean the reader lost events.
            assert all(12 <= r.token_chunks <= 24 for r in result.requests)
            if extra:
                assert all(r.tokenizer_tokens for r in result.requests)
            assert s.ttft_ms.p50 and s.ttft_ms.p50 > 0 and s.tpot_ms.p50 and s.tpot_ms.p50 > 0
            assert s.e2e_ms.p50 and s.e2e_ms.p50 > s.ttft_ms.p50


def _llama_server_binary() -> Path | None:
    try:
        from llmhost.engines.llamacpp_build import find_cached_binary
    except ImportError:
        return None
    return find_cached_binary()


@pytest.mark.llama_server
def test_native_llama_server_counts_exactly(tiny_gguf: Path, tmp_path: Path, capsys) -> None:
    binary = _llama_server_binary()
    if binary is None:
        pytest.skip("native llama-server not built (make llama-server)")
    port = free_port()
    argv = [
        str(binary), "-m", str(tiny_gguf), "--host", "127.0.0.1", "--port", str(port),
        "-np", "2", "-c", "2048", "--metrics", "--alias", "tiny",
    ]  # fmt: skip
    with serving(argv, port, tmp_path / "server.log") as url:
        for api in ("chat", "completions"):
            result = bench_json(
                capsys, url, "tiny", "--api", api, "-c", "4", "-n", "8", "--output-tokens", "20"
            )
            s = result.summary
            assert s.completed == 8 and s.failed == 0
            assert {r.output_tokens_source for r in result.requests} == {"usage"}
            assert all(r.output_tokens == 20 and r.length_honoured for r in result.requests)
            assert s.output_tokens == 160
            codes = {f.code for f in result.flags}
            assert "length_not_honoured" not in codes and "server_token_count_mismatch" not in codes
            assert all(
                r.server_timings and r.server_timings.get("predicted_n") == 20 for r in result.requests
            )
            # llama-server reports its 2 slots; concurrency 4 is flagged.
            assert result.target.server_slots == 2 and "over_capacity" in codes
            assert result.telemetry and result.telemetry.metrics_available
            assert "llamacpp:tokens_predicted_total" in result.telemetry.after
