"""Targets and extras: a deployment by name (real supervisor state files), the roofline from the
planner, client health, NVML absent, reconciliation with the server's own figures."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from llmhost.bench import checks
from llmhost.bench.models import BenchResult, RequestRecord, Stat, Telemetry
from llmhost.bench.telemetry import Monitor
from llmhost.cli import main
from llmhost.errors import ExitCode
from llmhost.prometheus import parse_prometheus


def _deployment(
    name: str, base_url: str, *, state: str = "ready", key_env: str | None = None, model: str = "./x.gguf"
) -> None:
    from llmhost.engines.base import LaunchSpec
    from llmhost.supervise.state import Deployment, ProcessRef, write_deployment

    me = ProcessRef.of(os.getpid())
    launch = LaunchSpec(
        engine="llamacpp",
        runtime="llama-server",
        argv=["llama-server", "-m", "x.gguf", "-np", "3"],
        base_url=base_url,
        api_key_env=key_env,
    )
    dep = Deployment(
        name=name, model=model, served_model_name="ref-model", engine="llamacpp", runtime="llama-server",
        base_url=base_url, host="127.0.0.1", port=int(base_url.rsplit(":", 1)[1].split("/")[0]), state=state,
        supervisor=me, engine_process=me, launch=launch, log_dir="/tmp",
    )  # fmt: skip
    write_deployment(dep)


def test_bench_a_deployment_by_name(ref_server, capsys, state_dir: Path, monkeypatch) -> None:
    monkeypatch.delenv("LLMHOST_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MY_DEPLOY_KEY", "k-123")
    with ref_server(ttft_s=0.005, itl_s=0.002, api_key="k-123") as srv:
        _deployment("web", srv.base_url, key_env="MY_DEPLOY_KEY")
        code = main(
            ["bench", "web", "-c", "4", "-n", "4", "--input-tokens", "8", "--output-tokens", "8", "--json"]
        )
        out, err = capsys.readouterr()
    assert code == 0, err
    result = BenchResult.model_validate_json(out)
    t = result.target
    assert (t.deployment, t.model, t.base_url) == ("web", "ref-model", srv.base_url)
    assert t.server_slots == 3 and "-np" in (t.server_slots_source or "")
    assert "over_capacity" in {f.code for f in result.flags}
    assert "k-123" not in out


def _bench_deployment_of(ref_server, capsys, model: Path, *, input_tokens: int) -> BenchResult:
    with ref_server(ttft_s=0.005, itl_s=0.002) as srv:
        _deployment("local", srv.base_url, model=str(model))
        args = ["-n", "2", "--input-tokens", str(input_tokens), "--output-tokens", "4", "--json"]
        code = main(["bench", "local", *args])
        out, err = capsys.readouterr()
    assert code == 0, err
    return BenchResult.model_validate_json(out)


def test_a_deployment_of_a_local_checkpoint_lends_its_tokenizer(ref_server, capsys, state_dir: Path) -> None:
    # Found in acceptance: `bench q5` on the tiny vLLM model asked for 32 prompt tokens and sent 121.
    from llmhost.tiny_hf import tiny_llama_checkpoint

    checkpoint = tiny_llama_checkpoint()
    result = _bench_deployment_of(ref_server, capsys, checkpoint, input_tokens=8)
    assert result.workload.tokenizer == str(checkpoint)  # prompts cut to 8 tokens by it
    # Found in QA: on vLLM the deployment's own tokenizer re-encoded the generated text to 14-29 tokens
    # where usage said 16 (decode then encode need not round-trip), and the warning asked "is --tokenizer
    # the served model's?" of a user who passed none. The served checkpoint's tokenizer cannot be the
    # wrong one: the disagreement is information, and usage is what counts.
    (flag,) = [f for f in result.flags if f.code == "token_count_disagreement"]
    assert flag.severity == "info" and "--tokenizer" not in flag.message
    assert all(r.output_tokens == r.usage_tokens == 4 for r in result.requests)


def test_a_gguf_deployment_lends_its_tokenizer(ref_server, capsys, state_dir: Path, tiny_gguf: Path) -> None:
    # Found in QA: `bench NAME` on the demo GGUF deployment asked for 64 prompt tokens and llama-server
    # counted 217 (flagged prompt_length_off): only a tokenizer.json folder lent its tokenizer.
    pytest.importorskip("llama_cpp")
    from llmhost.bench.workload import SyntheticWorkload, TokenizerAdapter

    result = _bench_deployment_of(ref_server, capsys, tiny_gguf, input_tokens=24)
    assert result.workload.tokenizer == str(tiny_gguf)
    tok = TokenizerAdapter(str(tiny_gguf))
    for _ in range(5):
        prompt = SyntheticWorkload((24, 24), (4, 4), tokenizer=tok, api="completions").make()
        assert tok.count(prompt.text or "") == 24


def test_missing_and_dead_deployments(capsys, state_dir: Path) -> None:
    assert main(["bench", "nothere"]) == ExitCode.NOT_FOUND
    assert "nothere" in capsys.readouterr().err
    _deployment("old", "http://127.0.0.1:9/v1", state="stopped")
    assert main(["bench", "old"]) == ExitCode.BENCH_INCOMPLETE
    assert "stopped" in capsys.readouterr().err


def test_a_deployment_still_starting_is_named_as_such(capsys, state_dir: Path) -> None:
    # Found in QA: `bench NAME` on a vLLM deployment still loading said "cannot reach ... Check --base-url",
    # an option the user never passed.
    _deployment("boot", "http://127.0.0.1:9/v1", state="starting")
    assert main(["bench", "boot", "-n", "1"]) == ExitCode.BENCH_INCOMPLETE
    err = capsys.readouterr().err
    assert "still starting" in err and "llmhost ps" in err and "--base-url" not in err


def test_roofline_from_the_planner(ref_server, capsys, tiny_gguf: Path) -> None:
    from llmhost.estimate.roofline import decode_roofline
    from llmhost.hardware.catalog import hardware_from_spec
    from llmhost.models import resolve

    with ref_server(ttft_s=0.005, itl_s=0.002) as srv:
        code = main(
            ["bench", "--base-url", srv.base_url, "--model", "ref-model", "-n", "4", "--input-tokens", "16",
             "--output-tokens", "16", "--hardware", "h100-80gb", "--model-ref", str(tiny_gguf), "--json"]
        )  # fmt: skip
        out, err = capsys.readouterr()
    assert code == 0, err
    result = BenchResult.model_validate_json(out)
    roof = result.roofline
    assert roof is not None and result.hardware is not None
    context = (result.summary.input_tokens + result.summary.output_tokens // 2) // result.summary.completed
    expected = decode_roofline(resolve(str(tiny_gguf)), hardware_from_spec("h100-80gb"), context)
    assert expected and roof.decode_limit_tokens_per_s == pytest.approx(expected)
    measured = result.summary.decode_tokens_per_s_per_stream.p50
    assert roof.measured_tokens_per_s_per_stream == measured
    assert roof.mbu == pytest.approx(measured / expected)


def test_client_health_marks_a_blocked_event_loop() -> None:
    async def scenario() -> tuple[bool, bool]:
        monitor = Monitor(None, time.perf_counter_ns())
        await monitor.start()
        await asyncio.sleep(0.1)
        healthy = monitor.client_health().client_bound
        for _ in range(5):
            time.sleep(0.05)  # a client that hogs its loop (per-token work too heavy)
            await asyncio.sleep(0)
        busy = monitor.client_health()
        telemetry = await monitor.stop()
        assert any("NVML" in note for note in telemetry.notes)  # no GPU here: skipped with a note
        return healthy, busy.client_bound

    healthy, bound = asyncio.run(scenario())
    assert not healthy and bound
    flags = checks.client_flags(
        Monitor(None, 0)
        .client_health()
        .model_copy(update={"client_bound": True, "loop_lag_ms": Stat(p99=40.0)})
    )
    assert flags and flags[0].code == "client_bound"


def _record(**kw: object) -> RequestRecord:
    base: dict[str, object] = dict(
        index=0, ok=True, scheduled_ms=0.0, sent_ms=0.0, first_chunk_ms=5.0, first_token_ms=50.0,
        last_token_ms=240.0, prompt_tokens_requested=8, output_tokens=20, output_tokens_requested=20,
        output_tokens_source="usage", content_chunks=20, token_chunks=20,
    )  # fmt: skip
    base.update(kw)
    return RequestRecord.model_validate(base)


def test_reconciliation_with_llama_server_timings() -> None:
    # 19 gaps in 190 ms: the client saw 100 tok/s per stream.
    agree = _record(server_timings={"predicted_n": 20, "predicted_per_second": 102.0, "prompt_ms": 30.0})
    assert checks.reconcile_llama_timings([agree]) == []
    off = _record(server_timings={"predicted_n": 21, "predicted_per_second": 150.0, "prompt_ms": 80.0})
    codes = {f.code for f in checks.reconcile_llama_timings([off])}
    assert codes == {"server_token_count_mismatch", "server_disagrees_decode", "ttft_below_server_prefill"}


def test_decode_rates_of_streams_decoded_in_a_few_ms_are_not_compared() -> None:
    # Found in QA: the tiny demo GGUF on llama-server decodes 16 tokens in ~7 ms; a few ms of event-loop
    # lag then halve the client's per-stream rate, and nearly every run warned server_disagrees_decode.
    fast = {"predicted_n": 20, "predicted_ms": 7.6, "predicted_per_second": 2500.0, "prompt_ms": 30.0}
    assert checks.reconcile_llama_timings([_record(last_token_ms=80.0, server_timings=fast)]) == []
    # A decode long enough to time is still compared (19 gaps in 190 ms vs the server's 150 tok/s).
    slow = {"predicted_n": 20, "predicted_ms": 126.7, "predicted_per_second": 150.0, "prompt_ms": 30.0}
    (flag,) = checks.reconcile_llama_timings([_record(server_timings=slow)])
    assert flag.code == "server_disagrees_decode"


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:num_preemptions_total{engine="0",model_name="m"} %(pre)s
vllm:generation_tokens_total{engine="0",model_name="m"} %(gen)s
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 4.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} %(n)s
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} %(ttft)s
llamacpp:requests_deferred 0
python_gc_objects_collected_total{generation="0"} 1.0
"""


def test_created_timestamps_are_not_summed_into_telemetry() -> None:
    # Found in QA: vLLM 0.32's `*_created` series (the Unix time a counter was created, one per label set)
    # were summed over labels into BenchResult.telemetry: 'prompt_tokens_by_source_created': 5386910529.9.
    text = (
        'vllm:prompt_tokens_by_source_total{source="a"} 5.0\n'
        'vllm:prompt_tokens_by_source_total{source="b"} 7.0\n'
        'vllm:prompt_tokens_by_source_created{source="a"} 1795636843.3\n'
        'vllm:prompt_tokens_by_source_created{source="b"} 1795636843.3\n'
    )
    assert parse_prometheus(text) == {"vllm:prompt_tokens_by_source_total": 12.0}


def test_vllm_metrics_parsed_and_reconciled() -> None:
    before = parse_prometheus(VLLM_METRICS % {"pre": 0, "gen": 100, "n": 2, "ttft": 0.2})
    assert before["vllm:num_requests_running"] == 3.0 and "python_gc_objects_collected_total" not in before
    assert not any(k.endswith("_bucket") for k in before)
    after = parse_prometheus(VLLM_METRICS % {"pre": 2, "gen": 260, "n": 6, "ttft": 1.0})
    from llmhost.bench.metrics import summarize

    records = [_record(index=i, first_token_ms=50.0) for i in range(4)]  # client TTFT 50 ms, 80 tokens
    summary = summarize(records)
    telemetry = Telemetry(before=before, after=after)
    codes = {f.code for f in checks.reconcile_vllm_metrics(telemetry, summary)}
    # vLLM saw 200 ms mean TTFT (0.8 s / 4) and 160 tokens: the client is wrong or not alone.
    assert codes == {"server_disagrees_ttft", "server_token_count_mismatch", "preemptions"}


DATA = Path(__file__).with_name("data")


def test_recorded_vllm_metrics_reconcile_with_the_recorded_run() -> None:
    """Real /metrics from vLLM 0.32.0 (CPU build, tiny llama) scraped right before and after a real
    `llmhost bench` run of 8 requests x 16 tokens (also recorded), with nothing else on the server."""
    before = parse_prometheus((DATA / "vllm-0.32-cpu-metrics-before.txt").read_text())
    after = parse_prometheus((DATA / "vllm-0.32-cpu-metrics-after.txt").read_text())
    result = BenchResult.model_validate_json((DATA / "vllm-0.32-cpu-bench.json").read_text())
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == 128
    assert result.summary.output_tokens == 128
    assert "vllm:kv_cache_usage_perc" in after and "vllm:num_requests_waiting" in after
    telemetry = Telemetry(before=before, after=after)
    assert checks.reconcile_vllm_metrics(telemetry, result.summary) == []
    # A client that stopped its clock at the role chunk would undercut vLLM's own TTFT.
    early = result.summary.model_copy(update={"ttft_ms": Stat(mean=5.0)})
    assert {f.code for f in checks.reconcile_vllm_metrics(telemetry, early)} == {"server_disagrees_ttft"}
    # The recorded run's figures recompute from its per-request records.
    from llmhost.bench.metrics import summarize

    again = summarize(result.requests)
    assert (
        again.tpot_ms == result.summary.tpot_ms
        and again.output_tokens_per_s == result.summary.output_tokens_per_s
    )


def test_wrong_hardware_or_model_ref_is_a_usage_error(capsys, tmp_path: Path) -> None:
    base = ["bench", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "-n", "1"]
    assert main([*base, "--hardware", "no-such-gpu", "--model-ref", "x.gguf"]) == ExitCode.BAD_INPUT
    assert "no-such-gpu" in capsys.readouterr().err
    assert (
        main([*base, "--hardware", "h100-80gb", "--model-ref", str(tmp_path / "none.gguf")])
        == ExitCode.BAD_INPUT
    )
