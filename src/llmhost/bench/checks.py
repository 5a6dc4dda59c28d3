"""Checks that decide how far a result can be trusted. Each returns `Flag`s; none changes a number.

Thresholds are documented in docs/bench.md; they are deliberately loose so that a flag means
something is really off (a buffering proxy, an ignored max_tokens, a client that could not keep up).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from llmhost.bench.models import ClientHealth, Flag, RequestRecord, Summary, Target, Telemetry

TOKEN_DISAGREEMENT = 0.02  # usage vs tokenizer counts
RECONCILE_TOLERANCE = 0.10  # client vs server decode rate / TTFT
BUFFERED_MAX_ARRIVALS = 2  # distinct arrival times of a stream of >= 8 content chunks
BUFFERED_MIN_TTFT_SHARE = 0.9  # ... and TTFT this close to E2E: it all came at the end
# A stream the server itself decoded faster than this (llama-server `timings.predicted_ms`) arrives in
# one read however it is delivered: it is no evidence of buffering (tiny model: 16 tokens in 7 ms), and
# its per-stream decode rate is below what the client's clock (an event loop) can resolve.
BUFFERED_MIN_SERVER_DECODE_MS = 50.0
BUNDLED_TOKENS_PER_CHUNK = 1.05  # above this, client TPOT is not compared with the server's
EARLY_CHUNK_MIN_MS = 1.0  # an empty first chunk this much before the content is reported
PROMPT_EXCESS_MIN_TOKENS = 32  # a chat template adds some tens of tokens: that alone is no finding
PROMPT_EXCESS_SHARE = 0.5  # ... nor is a prompt within half its requested length


def length_flags(records: Sequence[RequestRecord]) -> list[Flag]:
    ok = [r for r in records if r.ok and r.output_tokens_requested is not None]
    short = [r for r in ok if r.length_honoured is False]
    if not short:
        return []
    reasons = sorted({r.finish_reason or "none" for r in short})
    example = short[0]
    return [
        Flag(
            code="length_not_honoured",
            message=f"{len(short)} of {len(ok)} requests did not produce the requested output length "
            f"(e.g. {example.output_tokens} instead of {example.output_tokens_requested}; finish reasons: "
            f"{', '.join(reasons)}): the server ignored max_tokens/ignore_eos/min_tokens, so per-request "
            "speed and latency are not comparable with runs that honoured them.",
        )
    ]


def prompt_length_flags(records: Sequence[RequestRecord]) -> list[Flag]:
    """Server-counted prompts far from --input-tokens: random words are several tokens each in a small
    or unusual vocabulary (32 requested became ~100 on the tiny test models); pass --tokenizer."""
    pairs = [(r.prompt_tokens, r.prompt_tokens_requested) for r in records if r.ok and r.prompt_tokens]
    if not pairs:
        return []
    sent = statistics.median(a for a, _ in pairs)
    asked = statistics.median(b for _, b in pairs)
    if abs(sent - asked) <= max(PROMPT_EXCESS_MIN_TOKENS, PROMPT_EXCESS_SHARE * asked):
        return []
    return [
        Flag(
            code="prompt_length_off",
            message=f"the server counted a median of {sent:g} prompt tokens where {asked:g} were requested: "
            "the synthetic words do not tokenize one token each for this model, so prefill load and TTFT "
            "are not those of the requested length. Pass --tokenizer (the model's tokenizer.json or "
            "folder) to cut prompts exactly.",
        )
    ]


def token_count_flags(records: Sequence[RequestRecord], *, served_tokenizer: bool = False) -> list[Flag]:
    """`served_tokenizer`: the tokenizer is the served checkpoint's own (a deployment's), so it cannot
    be the wrong one; a disagreement with usage is then re-encoding drift, reported as information."""
    ok = [r for r in records if r.ok]
    flags: list[Flag] = []
    sources = {r.output_tokens_source for r in ok}
    if "chunks" in sources:
        flags.append(
            Flag(
                code="tokens_from_chunks",
                severity="info",
                message="the server sent no usage and some streams did not end at max_tokens: their output "
                "tokens are counted as token chunks (exact only when the server streams one token per "
                "chunk).",
            )
        )
    # No usage: the count is max_tokens (a `length` finish) or chunks; re-encoding the streamed text is a
    # cross-check only, and drift is expected (decoded text need not encode back to the same tokens).
    crossed = [
        (r, r.tokenizer_tokens)
        for r in ok
        if r.usage_tokens is None and r.tokenizer_tokens is not None and r.output_tokens
    ]
    drift = [r for r, t in crossed if abs(r.output_tokens - t) / r.output_tokens > TOKEN_DISAGREEMENT]
    if drift:
        flags.append(
            Flag(
                code="tokenizer_cross_check",
                severity="info",
                message=f"{len(drift)} of {len(crossed)} requests without usage: the tokenizer re-encodes "
                f"the streamed text to another count than the one taken from the stream (e.g. "
                f"{drift[0].tokenizer_tokens} vs {drift[0].output_tokens}, {drift[0].output_tokens_source}); "
                "decoded text need not encode back to the same tokens, so the stream's count is used.",
            )
        )
    both = [r for r in ok if r.usage_tokens and r.tokenizer_tokens is not None]
    bad = [r for r in both if abs(r.usage_tokens - r.tokenizer_tokens) / r.usage_tokens > TOKEN_DISAGREEMENT]  # type: ignore[operator]
    if bad and served_tokenizer:
        flags.append(
            Flag(
                code="token_count_disagreement",
                severity="info",
                message=f"{len(bad)} of {len(both)} requests: the served checkpoint's tokenizer re-encodes "
                f"the generated text to another count than the server's usage (e.g. usage "
                f"{bad[0].usage_tokens} vs {bad[0].tokenizer_tokens}): decoded text need not encode back "
                "to the same tokens; usage is what is counted.",
            )
        )
    elif bad:
        flags.append(
            Flag(
                code="token_count_disagreement",
                message=f"{len(bad)} of {len(both)} requests: server usage and the tokenizer disagree by "
                "more than "
                f"{TOKEN_DISAGREEMENT:.0%} (e.g. usage {bad[0].usage_tokens} vs tokenizer "
                f"{bad[0].tokenizer_tokens}); "
                "is --tokenizer the served model's?",
            )
        )
    return flags


def _decoded_at_once(record: RequestRecord) -> bool:
    predicted = (record.server_timings or {}).get("predicted_ms")
    return isinstance(predicted, int | float) and predicted < BUFFERED_MIN_SERVER_DECODE_MS


def streaming_flags(records: Sequence[RequestRecord], summary: Summary) -> list[Flag]:
    ok = [r for r in records if r.ok]
    flags: list[Flag] = []
    early = [
        r for r in ok if r.role_chunk_first and r.first_chunk_ms is not None and r.first_token_ms is not None
    ]
    gap = statistics.median(r.first_token_ms - r.first_chunk_ms for r in early) if early else 0.0  # type: ignore[operator]
    if gap >= EARLY_CHUNK_MIN_MS:  # arriving in the same read as the first token, it misleads nobody
        naive = statistics.median(r.first_chunk_ms - r.sent_ms for r in early)  # type: ignore[operator]
        flags.append(
            Flag(
                code="early_role_chunk",
                severity="info",
                message=f"{len(early)} of {len(ok)} streams began with an empty/role-only chunk, {gap:.1f} "
                "ms (median) "
                f"before the first content; TTFT here ignores it (a client stopping at it would report "
                f"{naive:.1f} ms).",
            )
        )
    # A buffering proxy delivers a whole response in one or two reads, at the end. Fast engines also
    # coalesce events into one write (vLLM with a tiny model: most gaps are 0; a starved vLLM API
    # server sent 24 tokens in 2 writes, half-way), so neither zero gaps nor few reads alone prove it.
    long = [
        r
        for r in ok
        if r.content_chunks >= 8 and r.ttft_ms is not None and r.e2e_ms and not _decoded_at_once(r)
    ]
    if long:
        arrivals = statistics.median(len(set(r.chunk_ms)) for r in long)
        ratio = statistics.median(r.ttft_ms / r.e2e_ms for r in long)  # type: ignore[operator]
        if arrivals <= BUFFERED_MAX_ARRIVALS and ratio > BUFFERED_MIN_TTFT_SHARE:
            flags.append(
                Flag(
                    code="buffered_stream",
                    message=f"the stream looks buffered: a median of {arrivals:g} distinct arrival times for "
                    f"{statistics.median(r.content_chunks for r in long):g} content chunks (TTFT/E2E "
                    f"{ratio:.2f}): a proxy or the server holds chunks back, so TTFT and ITL do not show "
                    "generation. Disable proxy buffering (nginx: proxy_buffering off) or bench the engine "
                    "directly.",
                )
            )
    if summary.tokens_per_chunk is not None and summary.tokens_per_chunk > 1.2:
        flags.append(
            Flag(
                code="bundled_chunks",
                severity="info",
                message=f"the server sends {summary.tokens_per_chunk:.2f} tokens per chunk: ITL is the gap "
                "between "
                "chunks (aiperf's ICL), not between tokens; TPOT is per token.",
            )
        )
    return flags


def sample_size_flags(summary: Summary) -> list[Flag]:
    if 0 < summary.completed < 100:
        return [
            Flag(
                code="few_samples",
                severity="info",
                message=f"percentiles from {summary.completed} requests: p99 is the maximum or close to it.",
            )
        ]
    return []


def client_flags(health: ClientHealth) -> list[Flag]:
    if not health.client_bound:
        return []
    return [
        Flag(
            code="client_bound",
            severity="error",
            message=f"the benchmark client was saturated (CPU {health.cpu_percent:.0f}% of a core, "
            "event-loop lag "
            f"p90 {health.loop_lag_ms.p90 or 0:.1f} ms): these figures measure the client, not the server. "
            "Lower --concurrency or run the client on a less loaded machine.",
        )
    ]


def capacity_flags(target: Target, concurrency: int | None) -> list[Flag]:
    if concurrency is None or target.server_slots is None or concurrency <= target.server_slots:
        return []
    return [
        Flag(
            code="over_capacity",
            message=f"--concurrency {concurrency} exceeds the server's {target.server_slots} parallel slots "
            f"({target.server_slots_source}): the extra requests queue in the server, so TTFT includes "
            "waiting.",
        )
    ]


def _timing(record: RequestRecord, key: str) -> float | None:
    value = (record.server_timings or {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def _ratio_off(a: float, b: float) -> bool:
    return b > 0 and abs(a / b - 1) > RECONCILE_TOLERANCE


def reconcile_llama_timings(records: Sequence[RequestRecord]) -> list[Flag]:
    timed = [r for r in records if r.ok and r.server_timings]
    if not timed:
        return []
    flags: list[Flag] = []
    counts = [r for r in timed if _timing(r, "predicted_n") not in (None, float(r.output_tokens))]
    if counts:
        flags.append(
            Flag(
                code="server_token_count_mismatch",
                message=f"{len(counts)} of {len(timed)} responses: llama-server's timings.predicted_n "
                "differs from "
                "the client's output token count.",
            )
        )
    # Only streams of one token per chunk: when a server bundles tokens (llama-server holds back
    # partial UTF-8), the client cannot see when the first tokens of a bundle were decoded.
    # And only decodes the server timed at >= 50 ms: a few ms of event-loop lag would swamp a shorter one.
    single = [r for r in timed if r.token_chunks == r.output_tokens and not _decoded_at_once(r)]
    server_rates = [v for v in (_timing(r, "predicted_per_second") for r in single) if v]
    client_rates = [v for v in (r.decode_tokens_per_s for r in single) if v]
    if server_rates and client_rates:
        s, c = statistics.median(server_rates), statistics.median(client_rates)
        if _ratio_off(c, s):
            flags.append(
                Flag(
                    code="server_disagrees_decode",
                    message=f"client-measured decode rate {c:.1f} tok/s per stream vs llama-server's "
                    f"predicted_per_second {s:.1f}: more than {RECONCILE_TOLERANCE:.0%} apart "
                    "(network jitter, a proxy, or a busy client).",
                )
            )
    early = [
        r
        for r in timed
        if r.ttft_ms is not None
        and (prompt_ms := _timing(r, "prompt_ms")) is not None
        and r.ttft_ms + 1.0 < prompt_ms
    ]
    if early:
        flags.append(
            Flag(
                code="ttft_below_server_prefill",
                severity="error",
                message=f"{len(early)} requests got their first token before llama-server finished prefill "
                "(client TTFT < timings.prompt_ms): the client clock is wrong.",
            )
        )
    return flags


def reconcile_vllm_metrics(telemetry: Telemetry | None, summary: Summary) -> list[Flag]:
    if telemetry is None or not telemetry.before or not telemetry.after:
        return []
    b, a = telemetry.before, telemetry.after

    def delta_mean(name: str) -> float | None:
        n = a.get(f"{name}_count", 0.0) - b.get(f"{name}_count", 0.0)
        s = a.get(f"{name}_sum", 0.0) - b.get(f"{name}_sum", 0.0)
        return s / n if n > 0 else None

    flags: list[Flag] = []
    server_ttft = delta_mean("vllm:time_to_first_token_seconds")
    if server_ttft is not None and summary.ttft_ms.mean is not None:
        client = summary.ttft_ms.mean
        if client + 1.0 < server_ttft * 1000 * (1 - RECONCILE_TOLERANCE):
            flags.append(
                Flag(
                    code="server_disagrees_ttft",
                    message=f"client mean TTFT {client:.1f} ms is below vLLM's own {server_ttft * 1000:.1f} "
                    "ms "
                    "(vllm:time_to_first_token_seconds): the client stops its clock too early.",
                )
            )
    server_tpot = delta_mean("vllm:request_time_per_output_token_seconds") or delta_mean(
        "vllm:time_per_output_token_seconds"
    )
    # Bundled chunks hide when a bundle's first tokens were decoded: compare unbundled runs only.
    bundled = (summary.tokens_per_chunk or 1.0) > BUNDLED_TOKENS_PER_CHUNK
    if (
        not bundled
        and server_tpot is not None
        and summary.tpot_ms.mean is not None
        and _ratio_off(summary.tpot_ms.mean, server_tpot * 1000)
    ):
        flags.append(
            Flag(
                code="server_disagrees_tpot",
                message=f"client mean TPOT {summary.tpot_ms.mean:.2f} ms vs vLLM's {server_tpot * 1000:.2f} "
                "ms: "
                f"more than {RECONCILE_TOLERANCE:.0%} apart.",
            )
        )
    gen = a.get("vllm:generation_tokens_total", 0.0) - b.get("vllm:generation_tokens_total", 0.0)
    if gen > 0 and summary.output_tokens and _ratio_off(summary.output_tokens, gen):
        flags.append(
            Flag(
                code="server_token_count_mismatch",
                message=f"the client counted {summary.output_tokens} output tokens, vLLM generated {gen:.0f} "
                "(vllm:generation_tokens_total): other traffic on the server, or a counting error.",
            )
        )
    preempt = a.get("vllm:num_preemptions_total", 0.0) - b.get("vllm:num_preemptions_total", 0.0)
    if preempt > 0:
        flags.append(
            Flag(
                code="preemptions",
                message=f"vLLM preempted {preempt:.0f} requests during the run (KV cache full): latency "
                "includes "
                "recomputation. Lower --concurrency or give the server more KV cache.",
            )
        )
    deferred = max((s.values.get("llamacpp:requests_deferred", 0.0) for s in telemetry.samples), default=0.0)
    if deferred > 0:
        flags.append(
            Flag(
                code="requests_deferred",
                message=f"llama-server deferred up to {deferred:.0f} requests (all slots busy): TTFT "
                "includes queueing.",
            )
        )
    return flags
