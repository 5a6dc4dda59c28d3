"""`llmhost bench` end to end through the CLI against the reference server: the JSON contract, files,
compare, sweep, open loop, the checks, and every kind of bad input (clear message, exit code, partial
results kept)."""

from __future__ import annotations

import csv
import itertools
import json
import socket
from pathlib import Path

import pytest

from llmhost.bench.models import BenchResult
from llmhost.cli import main
from llmhost.errors import ExitCode

FAST = {"ttft_s": 0.005, "itl_s": 0.002}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["bench", *args])
    out, err = capsys.readouterr()
    return code, out, err


def common(url: str, *extra: str) -> list[str]:
    return ["--base-url", url, "--model", "ref-model", "--input-tokens", "8", "--output-tokens", "12", *extra]


def codes(result: BenchResult) -> set[str]:
    return {f.code for f in result.flags}


def test_json_contract_and_files(ref_server, capsys, tmp_path: Path) -> None:
    out_json, out_csv, out_png = tmp_path / "a.json", tmp_path / "a.csv", tmp_path / "a.png"
    with ref_server(**FAST) as srv:
        code, out, _ = run(
            capsys,
            *common(srv.base_url, "-c", "2", "-n", "6", "--json", "--output", str(out_json)),
            "--csv", str(out_csv), "--plot", str(out_png),
        )  # fmt: skip
    assert code == ExitCode.OK
    data = json.loads(out)
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert set(data["summary"][key]) >= {"mean", "p50", "p90", "p95", "p99"}
    for key in ("output_tokens_per_s", "total_tokens_per_s", "requests_per_s", "completed", "failed"):
        assert key in data["summary"]
    result = BenchResult.model_validate(data)
    assert result.summary.completed == 6 and result.summary.failed == 0
    assert result.warmup_completed == 2 and len(result.requests) == 6
    assert result.workload.input_tokens == (8, 8) and result.workload.concurrency == 2
    assert all(r.output_tokens == 12 and r.output_tokens_source == "usage" for r in result.requests)
    # Any figure can be recomputed from the per-request records.
    total = sum(r.output_tokens for r in result.requests)
    assert total == result.summary.output_tokens == 72
    assert BenchResult.model_validate_json(out_json.read_text()) == result
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 6 and rows[0]["output_tokens"] == "12" and float(rows[0]["ttft_ms"]) > 0
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_human_output_and_compare(ref_server, capsys, tmp_path: Path) -> None:
    a, b = tmp_path / "fast.json", tmp_path / "slow.json"
    with ref_server(ttft_s=0.005, itl_s=0.002) as srv:
        code, out, _ = run(capsys, *common(srv.base_url, "-n", "4", "--output", str(a)))
    assert code == 0 and "TTFT ms" in out and "output tokens/s" in out
    with ref_server(ttft_s=0.005, itl_s=0.004) as srv:
        assert run(capsys, *common(srv.base_url, "-n", "4", "--output", str(b)))[0] == 0
    code, out, _ = run(capsys, "compare", str(a), str(b))
    assert code == 0 and "TPOT p50 ms" in out and "fast.json" in out and "%" in out
    assert "same workload in every run" in out and "c=" in out  # each column says what it ran
    with ref_server(ttft_s=0.005, itl_s=0.002) as srv:
        longer = tmp_path / "longer.json"
        assert (
            run(capsys, *common(srv.base_url, "-n", "4", "--output-tokens", "20", "--output", str(longer)))[0]
            == 0
        )
    code, out, _ = run(capsys, "compare", str(a), str(longer))
    assert code == 0 and "not like for like" in out and "token lengths differ" in out
    code, out, _ = run(capsys, "compare", str(a), str(b), "--json")
    assert code == 0 and len(json.loads(out)) == 2
    code, _, err = run(capsys, "compare", str(a))
    assert code == ExitCode.BAD_INPUT and "at least two" in err


def test_compare_repeats_what_each_run_was_warned_about(ref_server, capsys, tmp_path: Path) -> None:
    # Found in QA: a client-bound or incomplete run compared side by side looked like any other; the
    # warnings `bench` printed with it were lost in the comparison.
    from llmhost.bench.models import Flag

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    with ref_server(**FAST) as srv:
        assert run(capsys, *common(srv.base_url, "-n", "2", "--output", str(a)))[0] == 0
    result = BenchResult.model_validate_json(a.read_bytes())
    assert {f.severity for f in result.flags} <= {"info"}
    result.flags.append(Flag(code="client_bound", severity="error", message="client-bound"))
    result.incomplete = True
    b.write_text(result.model_dump_json())
    code, out, _ = run(capsys, "compare", str(a), str(b))
    assert code == 0
    text = " ".join(out.split())
    assert "b.json: incomplete, client_bound" in text and "a.json:" not in text
    assert "few_samples" not in text  # info only


def test_sweep_finds_the_knee(ref_server, capsys, tmp_path: Path) -> None:
    with ref_server(ttft_s=0.01, itl_s=0.005, capacity=2) as srv:
        png = tmp_path / "sweep.png"
        args = ["--sweep", "-n", "4", "--output-tokens", "24", "--warmup", "0", "--json", "--plot", str(png)]
        code, out, _ = run(capsys, *common(srv.base_url, *args))
    assert code == 0
    result = BenchResult.model_validate_json(out)
    levels = [p.concurrency for p in result.sweep]
    assert levels[:3] == [1, 2, 4]
    assert result.knee_concurrency == 2
    rates = {p.concurrency: p.summary.output_tokens_per_s for p in result.sweep}
    assert rates[2] > 1.6 * rates[1] and rates[4] < 1.1 * rates[2]
    assert png.exists()


def test_open_loop_rate_records_the_schedule(ref_server, capsys) -> None:
    with ref_server(ttft_s=0.005, itl_s=0.01) as srv:
        code, out, _ = run(
            capsys, *common(srv.base_url, "--rate", "40", "-n", "12", "--burstiness", "0.5", "--json")
        )
    assert code == 0
    result = BenchResult.model_validate_json(out)
    assert result.summary.completed == 12 and result.workload.concurrency is None
    assert all(r.sent_ms >= r.scheduled_ms for r in result.requests)
    sched = sorted(r.scheduled_ms for r in result.requests)
    assert sched[-1] - sched[0] > 50  # spread over time, not all at once
    # Open loop: arrivals do not wait for earlier requests (each takes ~120 ms, arrivals ~25 ms apart).
    ordered = sorted(result.requests, key=lambda r: r.sent_ms)
    assert any(b.sent_ms < a.ended_ms for a, b in itertools.pairwise(ordered))


@pytest.mark.parametrize(
    ("server", "args", "flag"),
    [
        ({"buffered": True, "itl_s": 0.005}, ["--output-tokens", "20"], "buffered_stream"),
        ({"honour_length": False}, [], "length_not_honoured"),
        ({"slots": 1}, ["-c", "2"], "over_capacity"),
    ],
)
def test_checks_flag_untrustworthy_results(ref_server, capsys, server, args, flag) -> None:
    with ref_server(**{**FAST, **server}) as srv:
        code, out, _ = run(capsys, *common(srv.base_url, "-n", "4", "--json", *args))
    assert code == 0
    assert flag in codes(BenchResult.model_validate_json(out))


def test_unreachable_url(capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = run(capsys, *common(f"http://127.0.0.1:{port}/v1", "-n", "2"))
    assert code == ExitCode.NETWORK
    assert "cannot reach" in err and "--base-url" in err and "Traceback" not in err
    assert out == ""


def test_wrong_model_name(ref_server, capsys) -> None:
    with ref_server(**FAST) as srv:
        code, _, err = run(capsys, "--base-url", srv.base_url, "--model", "nope", "-n", "2")
    assert code == ExitCode.BENCH_INCOMPLETE
    assert "'nope' is not served" in err and "--model ref-model" in err


def test_401_without_key_and_key_never_printed(ref_server, capsys, monkeypatch) -> None:
    monkeypatch.delenv("LLMHOST_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ref_server(**FAST, api_key="sekret-123") as srv:
        code, _, err = run(capsys, *common(srv.base_url, "-n", "2"))
        assert code == ExitCode.BENCH_INCOMPLETE
        assert "401" in err and "LLMHOST_API_KEY" in err
        monkeypatch.setenv("LLMHOST_API_KEY", "sekret-123")
        code, out, err = run(capsys, *common(srv.base_url, "-n", "2", "--json"))
    assert code == 0
    assert "sekret" not in out and "sekret" not in err
    assert BenchResult.model_validate_json(out).target.api_key_used


def test_server_dying_mid_run_keeps_partial_results(ref_server, capsys) -> None:
    with ref_server(ttft_s=0.005, itl_s=0.01, die_after_tokens=150) as srv:
        code, out, err = run(
            capsys,
            *common(srv.base_url, "-c", "2", "-n", "30", "--output-tokens", "40", "--warmup", "0", "--json"),
        )
    assert code == ExitCode.BENCH_INCOMPLETE
    assert "incomplete" in err and "Traceback" not in err
    result = BenchResult.model_validate_json(out)
    assert result.incomplete and result.summary.completed >= 2 and result.summary.failed >= 2
    assert "connection" in result.summary.errors
    assert result.aborted is not None and len(result.requests) < 30


def test_non_sse_reply(ref_server, capsys) -> None:
    with ref_server(**FAST, non_sse=True) as srv:
        code, out, err = run(capsys, *common(srv.base_url, "-n", "4", "--warmup", "0", "--json"))
    assert code == ExitCode.BENCH_INCOMPLETE
    result = BenchResult.model_validate_json(out)
    assert result.summary.errors == {"non_sse": result.summary.failed}
    assert "text/event-stream" in err


def test_all_warmups_failing_is_one_clear_error(ref_server, capsys) -> None:
    with ref_server(**FAST, non_sse=True) as srv:
        code, out, err = run(capsys, *common(srv.base_url, "-n", "4", "--warmup", "2"))
    assert code == ExitCode.BENCH_INCOMPLETE and "warm-up" in err and out == ""


def test_an_endpoint_404_points_at_the_base_url(ref_server, capsys) -> None:
    # Found in QA: --base-url .../v1/chat/completions (the full endpoint pasted) said "HTTP 404: File Not
    # Found. Check --model, --api ..." without the URL that was posted to or a word about --base-url.
    with ref_server(**FAST) as srv:
        url = srv.base_url + "/chat/completions"
        code, _, err = run(capsys, "--base-url", url, "--model", "ref-model", "-n", "2")
        code_no_warmup, _, err_no_warmup = run(
            capsys, "--base-url", url, "--model", "ref-model", "-n", "2", "--warmup", "0"
        )
    err = " ".join(err.split())
    assert code == code_no_warmup == ExitCode.BENCH_INCOMPLETE
    assert f"POST {url}/chat/completions answered" in err and "--base-url" in err and "/v1" in err
    assert "Check --base-url" in " ".join(err_no_warmup.split())


def test_failed_requests_say_why(ref_server, capsys) -> None:
    # Found in QA: --input-tokens 3000 on a 4096-token llama-server failed every request and the last
    # line said only "4 of 4 requests failed" (http_4xx); the server's reason was in the JSON alone.
    with ref_server(**FAST, context=50) as srv:
        code, _, err = run(capsys, *common(srv.base_url, "-n", "3", "--input-tokens", "100"))
    assert code == ExitCode.BENCH_INCOMPLETE and "3 of 3 requests failed" in err
    assert "HTTP 400: the request exceeds the available context size" in " ".join(err.split())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--base-url", "http://x/v1", "--model", "m", "--input-tokens", "abc"], "--input-tokens"),
        (["--base-url", "http://x/v1", "--model", "m", "--output-tokens", "9:3"], "--output-tokens"),
        (["--base-url", "http://x/v1", "--model", "m", "--slo", "speed=3"], "SLO"),
        (["--base-url", "x:1", "--model", "m"], "http"),
        (["--model", "m"], "llmhost bench NAME"),
        (["--base-url", "http://x/v1", "--model", "m", "--dataset", "/nonexistent.jsonl"], "cannot read"),
        # Found in QA: each of these ran (or ran nothing) and exited 0 with an empty table.
        (["--base-url", "http://x/v1", "--model", "m", "-n", "0"], "--num-requests"),
        (["--base-url", "http://x/v1", "--model", "m", "--duration", "-1"], "--duration"),
        (["--base-url", "http://x/v1", "--model", "m", "--warmup", "-1"], "--warmup"),
        (["--base-url", "http://x/v1", "--model", "m", "--timeout", "0"], "--timeout"),
        (["--base-url", "http://x/v1", "--model", "m", "--sweep", "--sweep-max", "0"], "--sweep-max"),
        (["--base-url", "http://x/v1", "--model", "m", "--shared-prefix", "-1"], "--shared-prefix"),
        # Found in QA: options another one overrides were dropped without a word.
        (["--base-url", "http://x/v1", "--model", "m", "--sweep", "--rate", "5"], "--sweep"),
        (["--base-url", "http://x/v1", "--model", "m", "--sweep", "-c", "4"], "--sweep"),
        (["--base-url", "http://x/v1", "--model", "m", "--burstiness", "0.5"], "--rate"),
        (
            ["--base-url", "http://x/v1", "--model", "m", "--dataset", "d.jsonl", "--shared-prefix", "5"],
            "--dataset",
        ),
        (
            ["--base-url", "http://x/v1", "--model", "m", "--shared-prefix", "500", "--input-tokens", "100"],
            "--shared-prefix",
        ),
    ],
)
def test_bad_options(capsys, args, needle) -> None:
    code, _, err = run(capsys, *args)
    assert code == ExitCode.BAD_INPUT
    assert needle in err and "Traceback" not in err


def test_jsonl_and_sharegpt_prompts(ref_server, capsys, tmp_path: Path) -> None:
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        '{"prompt": "one two three"}\n'
        '{"messages": [{"role": "user", "content": "four five"}]}\n'
        '{"conversations": [{"from": "human", "value": "six"}, {"from": "gpt", "value": "a b c d e"}]}\n'
        '{"text": "no prompt field"}\n'
        "[1, 2]\n"
    )
    with ref_server(**FAST) as srv:
        code, out, err = run(
            capsys, "--base-url", srv.base_url, "--model", "ref-model", "--dataset", str(data), "-n", "3",
            "--warmup", "0", "--json",
        )  # fmt: skip
    assert code == 0
    result = BenchResult.model_validate_json(out)
    # The ShareGPT reply sets the output length when --output-tokens is not given.
    assert sorted(r.output_tokens for r in result.requests) == [6, 128, 128]
    assert sorted(r.prompt_tokens for r in result.requests) == [1, 2, 3]
    # Found in QA: rows without a usable prompt were dropped without a word.
    assert "skipped 2 of 5 rows" in " ".join(err.split())


def test_duration_runs_the_closed_loop_for_that_long(ref_server, capsys) -> None:
    with ref_server(**FAST) as srv:
        code, out, _ = run(capsys, *common(srv.base_url, "-c", "2", "--duration", "1", "--json"))
    assert code == 0
    result = BenchResult.model_validate_json(out)
    sends = [r.sent_ms - result.requests[0].sent_ms for r in result.requests]
    assert result.summary.completed > 10 and max(sends) < 1100 and max(sends) > 800


def test_sweep_stops_when_slos_break(ref_server, capsys) -> None:
    # Two streams at a time: from concurrency 4 on, half the requests queue behind a whole answer (10 ms +
    # 12 x 20 ms), so their TTFT is about 260 ms. The SLO (120 ms) sits far from both that and the 10 ms
    # of an unqueued request, so a loaded machine's scheduling delays cannot move a step across it (at
    # 30 ms against 10 ms, one late first token of eight failed concurrency 1 under load).
    with ref_server(ttft_s=0.01, itl_s=0.02, capacity=2) as srv:
        code, out, _ = run(
            capsys,
            *common(srv.base_url, "--sweep", "-n", "4", "--warmup", "0", "--slo", "ttft=120ms", "--json"),
        )
    assert code == 0
    result = BenchResult.model_validate_json(out)
    assert [p.slo_ok for p in result.sweep] == [True, True, False]
    assert result.knee_concurrency == 2


def test_without_usage_a_length_finish_counts_max_tokens_and_the_tokenizer_cross_checks(
    ref_server, capsys
) -> None:
    from llmhost.tiny_hf import tiny_llama_checkpoint

    tok = str(tiny_llama_checkpoint())
    with ref_server(**FAST, usage=False) as srv:
        code, out, _ = run(capsys, *common(srv.base_url, "-n", "3", "--tokenizer", tok, "--json"))
    assert code == 0
    result = BenchResult.model_validate_json(out)
    assert {r.output_tokens_source for r in result.requests} == {"length"}
    assert all(
        r.output_tokens == 12 and r.length_honoured and r.usage_tokens is None for r in result.requests
    )
    # The streamed text is still re-encoded, as a cross-check recorded next to the count.
    assert all(r.tokenizer_tokens for r in result.requests)
    assert "length_not_honoured" not in codes(result)
    # With a tokenizer the prompt is cut to exactly the requested length.
    from llmhost.bench.workload import TokenizerAdapter

    adapter = TokenizerAdapter(tok)
    assert adapter.count(adapter.cut("the of and to in is was for on that with as by at from", 8)) == 8


def _tokens_predicted(port: int) -> int:
    """The reference server's count of tokens streamed so far (its /metrics)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return int(
        next(line.split()[1] for line in text.splitlines() if line.startswith("llamacpp:tokens_predicted"))
    )


def test_ctrl_c_keeps_what_was_measured(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("refserver.py")), "--ttft-ms", "5", "--itl-ms", "5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(server.stdout.readline().split()[1])
        bench = subprocess.Popen(
            [sys.executable, "-m", "llmhost", "bench", *common(f"http://127.0.0.1:{port}/v1"), "-c", "2",
             "-n", "10000", "--output-tokens", "20", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # Start-up, warm-up (2 requests of 20 tokens), then some measured requests: the server's token
        # count says when (200 tokens: at least two measured requests done), instead of a blind 6 s.
        deadline = time.monotonic() + 60
        while _tokens_predicted(port) < 200:
            assert time.monotonic() < deadline and bench.poll() is None, "no measured requests in 60 s"
            time.sleep(0.1)
        bench.send_signal(signal.SIGINT)
        out, err = bench.communicate(timeout=30)
    finally:
        server.terminate()
        server.wait(10)
    assert bench.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    result = BenchResult.model_validate_json(out)
    assert result.incomplete and result.aborted and "interrupted" in result.aborted
    assert result.summary.completed > 0 and result.summary.failed == 0


def test_ctrl_c_before_the_measured_load_says_so(ref_server, capsys, monkeypatch) -> None:
    # Found in QA: Ctrl-C during a long warm-up exited 130 with nothing on stderr (Typer turns
    # KeyboardInterrupt into a silent Exit(130), so the CLI's own "interrupted." never showed).
    from llmhost.bench import runner

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # what run_blocking raises on Ctrl-C before the load started

    monkeypatch.setattr(runner, "run_blocking", interrupted)
    code, out, err = run(capsys, "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "-n", "2")
    assert code == ExitCode.INTERRUPTED and out == ""
    assert "interrupted" in err and "nothing was measured" in err


def test_unwritable_output_and_missing_matplotlib(ref_server, capsys, tmp_path: Path, monkeypatch) -> None:
    import errno

    import llmhost.bench.report as report

    with ref_server(**FAST) as srv:
        # A directory that does not exist is refused before the run: nothing is sent.
        code, out, err = run(
            capsys, *common(srv.base_url, "-n", "2", "--output", str(tmp_path / "no" / "a.json"))
        )
        assert code == ExitCode.BAD_INPUT and "does not exist" in err and "TTFT ms" not in out

        # A write that fails only after the run (a full disk) is reported with the results shown first.
        def full_disk(result, path):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(report, "write_csv", full_disk)
        code, out, err = run(capsys, *common(srv.base_url, "-n", "2", "--csv", str(tmp_path / "a.csv")))
        assert code == ExitCode.BAD_INPUT and "No space left" in err and "TTFT ms" in out
        assert not list(tmp_path.glob("*.csv")) and not list(tmp_path.glob(".tmp-*"))
        monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
        code, _, err = run(capsys, *common(srv.base_url, "-n", "2", "--plot", str(tmp_path / "p.png")))
    assert code == ExitCode.BAD_INPUT and "matplotlib" in err and "plot extra" in err


def test_sweep_checks_every_step_not_only_the_knee(ref_server, capsys, tmp_path: Path) -> None:
    # Found in acceptance: against vLLM CPU, the concurrency-2 step of a sweep arrived in one read per
    # stream (TPOT '-'), yet only the knee's records were checked, so nothing was flagged.
    with ref_server(ttft_s=0.005, itl_s=0.005, buffered=True) as srv:
        args = ["--sweep", "--sweep-max", "4", "-n", "4", "--output-tokens", "20", "--warmup", "0", "--json"]
        code, out, _ = run(capsys, *common(srv.base_url, *args))
    assert code == 0
    result = BenchResult.model_validate_json(out)
    others = {p.concurrency for p in result.sweep} - {result.knee_concurrency}
    assert others, "the sweep needs a step besides the knee for this test"
    messages = [f.message for f in result.flags if f.code == "buffered_stream"]
    for level in others:
        assert any(m.startswith(f"sweep step at concurrency {level}:") for m in messages)


def test_sweep_plot_leaves_out_steps_without_tpot(ref_server, capsys, tmp_path: Path) -> None:
    from llmhost.bench.report import plot_requests, sweep_curve

    with ref_server(ttft_s=0.01, itl_s=0.005, capacity=2) as srv:
        args = ["--sweep", "--sweep-max", "2", "-n", "4", "--output-tokens", "8", "--warmup", "0", "--json"]
        code, out, _ = run(capsys, *common(srv.base_url, *args))
    assert code == 0
    result = BenchResult.model_validate_json(out)
    assert [level for level, _, _ in sweep_curve(result)] == [p.concurrency for p in result.sweep]
    # Found in QA: the latency histograms of a sweep pooled every step (c=1 and c=2 mixed) beside a
    # summary of the knee alone; they show the knee's requests.
    assert len(result.sweep) > 1
    used = plot_requests(result)
    assert used and {r.concurrency for r in used} == {result.knee_concurrency}
    assert len(used) == result.summary.completed
    # A step whose streams could not be timed (TPOT None) must not be drawn at 0 ms.
    result.sweep[-1].summary.tpot_ms.p50 = None
    assert [level for level, _, _ in sweep_curve(result)] == [p.concurrency for p in result.sweep[:-1]]


def test_prompts_far_from_the_requested_length_are_flagged(ref_server, capsys) -> None:
    # Found in acceptance: --input-tokens 32 became ~100 server-counted tokens on the tiny models, unflagged.
    from llmhost.bench.checks import prompt_length_flags

    with ref_server(**FAST) as srv:  # counts one token per word: prompts as long as requested
        code, out, _ = run(capsys, *common(srv.base_url, "-n", "4", "--input-tokens", "64", "--json"))
    assert code == 0
    result = BenchResult.model_validate_json(out)
    assert "prompt_length_off" not in codes(result)
    assert not prompt_length_flags(result.requests)
    for r in result.requests:
        r.prompt_tokens = 4 * r.prompt_tokens_requested
    (flag,) = prompt_length_flags(result.requests)
    assert flag.code == "prompt_length_off" and "--tokenizer" in flag.message


def test_a_decode_too_fast_to_spread_over_reads_is_not_called_buffered(ref_server, capsys) -> None:
    # Found in QA: the tiny demo GGUF on llama-server at --rate 20 decoded 16 tokens in 7 ms by its own
    # `timings` (after ~30 ms in the queue); they arrived in one read and `buffered_stream` was raised.
    # The server's predicted_ms says the stream was generated that fast: no proxy held it back.
    with ref_server(ttft_s=0.05, itl_s=0.0, timings=True) as srv:
        code, out, _ = run(capsys, *common(srv.base_url, "-n", "4", "--output-tokens", "20", "--json"))
    assert code == 0
    result = BenchResult.model_validate_json(out)
    assert all(r.server_timings and r.server_timings["predicted_ms"] < 1 for r in result.requests)
    assert "buffered_stream" not in codes(result)
    # A buffering proxy in front of a server whose own timings show a slow decode is still caught.
    with ref_server(ttft_s=0.005, itl_s=0.01, buffered=True, timings=True) as srv:
        code, out, _ = run(capsys, *common(srv.base_url, "-n", "4", "--output-tokens", "20", "--json"))
    assert code == 0
    assert "buffered_stream" in codes(BenchResult.model_validate_json(out))


def test_live_throughput_is_over_the_time_the_phase_ran(monkeypatch) -> None:
    # Found in QA: a steady 1,088 tok/s run showed ~154, ~333, ~525 ... tok/s in its first seconds: the
    # tokens of the last 5 s were divided by 5 s even when the phase had run for only one.
    import io

    from rich.console import Console

    from llmhost.bench import report
    from llmhost.bench.models import RequestRecord

    clock = [100.0]
    monkeypatch.setattr(report.time, "monotonic", lambda: clock[0])
    view = report.LiveView(Console(file=io.StringIO()))
    view.phase("concurrency 1", 10)
    record = RequestRecord.model_validate(
        dict(
            index=0,
            ok=True,
            scheduled_ms=0.0,
            sent_ms=0.0,
            prompt_tokens_requested=8,
            output_tokens=100,
            output_tokens_source="usage",
        )
    )
    for _ in range(10):
        clock[0] += 0.1
        view.record(record)
    assert "~1,000 tok/s" in view.status.plain  # 1,000 tokens in 1 s


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        # Found in issue 13: nan and inf compared false against every bound and were accepted.
        (["--duration", "nan"], "--duration nan is out of range"),
        (["--duration", "inf"], "--duration inf is out of range"),
        (["--rate", "nan"], "--rate nan is out of range"),
        (["--timeout", "inf"], "--timeout inf is out of range"),
        (["--slo", "ttft=nan"], "bad SLO"),
        # Counts far beyond any run: refused instead of exhausting memory.
        (["-c", str(10**9)], "--concurrency 1000000000 is out of range"),
        (["-n", str(10**12)], "--num-requests 1000000000000 is out of range"),
        (["--input-tokens", str(10**10)], "--input-tokens"),
        (["--sweep", "--sweep-max", str(10**9)], "--sweep-max"),
        (["-o", "r.json", "--csv", "r.json"], "--output and --csv both name r.json"),
    ],
)
def test_out_of_range_and_contradictory_options_are_refused_before_any_request(capsys, extra, needle) -> None:
    code, _, err = run(capsys, "--base-url", "http://127.0.0.1:9/v1", "--model", "m", *extra)
    assert code == ExitCode.BAD_INPUT and needle in err, err


@pytest.mark.parametrize("url", ["http://", "http://127.0.0.1:99999/v1", "http://[::1/v1", "ftp://host/v1"])
def test_a_base_url_that_names_no_server_is_bad_input(capsys, url: str) -> None:
    # These were "cannot reach" (exit 7), sending the user after their network.
    code, _, err = run(capsys, "--base-url", url, "--model", "m")
    assert code == ExitCode.BAD_INPUT and "--base-url" in err, err


@pytest.mark.timeout(10)
def test_a_dataset_that_is_no_regular_file_is_refused(capsys, tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "d.jsonl")  # hung bench, waiting for a writer
    code, _, err = run(
        capsys, "--base-url", "http://x/v1", "--model", "m", "--dataset", str(tmp_path / "d.jsonl")
    )
    assert code == ExitCode.BAD_INPUT and "is a FIFO (named pipe), not a file" in err
    (tmp_path / "b.jsonl").write_bytes(b'{"prompt": "\xff"}\n')  # was UnicodeDecodeError
    code, _, err = run(
        capsys, "--base-url", "http://x/v1", "--model", "m", "--dataset", str(tmp_path / "b.jsonl")
    )
    assert code == ExitCode.BAD_INPUT and "not UTF-8" in err
