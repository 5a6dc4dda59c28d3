"""The `BenchResult` contract: everything a run measured, enough to recompute every figure.

`llmhost bench ... --json` prints one `BenchResult`. Times are milliseconds unless a name says
otherwise; per-request times are offsets on the client's monotonic clock from the run's start.
Fields are additive: add, never rename or remove (bump `SCHEMA_VERSION` on a breaking change).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmhost.contract import Contract
from llmhost.hardware.models import Hardware

SCHEMA_VERSION = 1

Api = Literal["chat", "completions"]
# "length": no usage, finish_reason `length` after max_tokens token chunks (see client.count_output_tokens);
# "tokenizer" is kept so that results saved before that change still load.
TokenSource = Literal["usage", "length", "chunks", "tokenizer"]
ErrorClass = Literal[
    "connection",
    "timeout",
    "http_401",
    "http_404",
    "http_4xx",
    "http_5xx",
    "non_sse",
    "bad_stream",
    "empty",
    "other",
]


class Target(Contract):
    base_url: str = Field(description="OpenAI-compatible base URL, ending in /v1.")
    model: str
    api: Api = "chat"
    deployment: str | None = Field(default=None, description="llmhost deployment name, when benched by name.")
    engine: str | None = None
    server_slots: int | None = Field(
        default=None, description="Concurrent sequences the server runs at once."
    )
    server_slots_source: str | None = None
    api_key_used: bool = Field(default=False, description="Whether a key was sent (never the key).")


class Workload(Contract):
    """Exactly what was sent, so a run can be repeated."""

    api: Api = "chat"
    input_tokens: tuple[int, int] = Field(description="Inclusive range; equal bounds = fixed length.")
    output_tokens: tuple[int, int]
    num_requests: int | None = None
    duration_s: float | None = None
    concurrency: int | None = Field(default=None, description="Closed loop: requests in flight at once.")
    rate: float | None = Field(default=None, description="Open loop: mean arrivals per second.")
    burstiness: float = Field(default=1.0, description="Gamma shape of inter-arrival times; 1 = Poisson.")
    warmup: int = 0
    shared_prefix_tokens: int = 0
    dataset: str | None = Field(default=None, description="JSONL prompt file, when prompts came from one.")
    seed: int = 0
    force_length: bool = Field(default=True, description="Sent ignore_eos/min_tokens to force the length.")
    tokenizer: str | None = None
    sweep: bool = False


class RequestRecord(Contract):
    """One request as the client saw it. Offsets are ms from the run start (monotonic clock)."""

    index: int
    ok: bool
    error_class: ErrorClass | None = None
    error: str | None = None
    scheduled_ms: float = Field(description="When the load generator wanted to send it.")
    sent_ms: float = Field(description="When the request was handed to the connection.")
    first_chunk_ms: float | None = Field(
        default=None, description="Any first SSE data line, role-only included."
    )
    first_token_ms: float | None = Field(default=None, description="First chunk with non-empty content.")
    last_token_ms: float | None = Field(default=None, description="Last chunk with non-empty content.")
    first_token_chunk_ms: float | None = Field(
        default=None, description="First chunk carrying a token, empty text included (decode start)."
    )
    last_token_chunk_ms: float | None = Field(default=None, description="Last chunk carrying a token.")
    last_chunk_ms: float | None = Field(
        default=None, description="Last SSE data line, usage/[DONE] included."
    )
    ended_ms: float | None = Field(default=None, description="When the request finished or failed.")
    chunk_ms: list[float] = Field(default_factory=list, description="Arrival of each content-bearing chunk.")
    concurrency: int | None = Field(default=None, description="Sweep level the request belonged to.")
    prompt_tokens_requested: int
    prompt_tokens: int | None = Field(default=None, description="usage.prompt_tokens, when sent.")
    output_tokens_requested: int | None = None
    output_tokens: int = 0
    output_tokens_source: TokenSource = "chunks"
    usage_tokens: int | None = None
    tokenizer_tokens: int | None = None
    content_chunks: int = Field(default=0, description="Chunks with non-empty content (those timed).")
    token_chunks: int = Field(default=0, description="Chunks that carried a token, empty text included.")
    finish_reason: str | None = None
    length_honoured: bool | None = None
    retried: bool = Field(default=False, description="Re-sent once: a stale keep-alive connection failed.")
    role_chunk_first: bool = Field(default=False, description="An empty/role-only chunk came before content.")
    server_timings: dict[str, float | int | None] | None = Field(
        default=None, description="llama-server's per-response `timings`, when sent."
    )

    # Derived per-request figures (also recomputable from the offsets above).
    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_ms is None else self.first_token_ms - self.sent_ms

    @property
    def ttft_sched_ms(self) -> float | None:
        return None if self.first_token_ms is None else self.first_token_ms - self.scheduled_ms

    @property
    def decode_start_ms(self) -> float | None:
        """First token-carrying chunk (a token may decode to "": it still started decoding)."""
        return self.first_token_chunk_ms if self.first_token_chunk_ms is not None else self.first_token_ms

    @property
    def decode_end_ms(self) -> float | None:
        """Last token-carrying chunk, trailing finish/usage/[DONE] events excluded."""
        return self.last_token_chunk_ms if self.last_token_chunk_ms is not None else self.last_token_ms

    @property
    def e2e_ms(self) -> float | None:
        end = self.decode_end_ms
        return None if end is None or self.first_token_ms is None else end - self.sent_ms

    @property
    def decode_ms(self) -> float | None:
        start, end = self.decode_start_ms, self.decode_end_ms
        return None if start is None or end is None or end <= start else end - start

    @property
    def tpot_ms(self) -> float | None:
        span = self.decode_ms
        if span is None or self.output_tokens < 2:
            return None
        return span / (self.output_tokens - 1)

    @property
    def decode_tokens_per_s(self) -> float | None:
        span = self.decode_ms
        if span is None or self.output_tokens < 2:
            return None
        return (self.output_tokens - 1) / (span / 1000)


class Stat(Contract):
    n: int = 0
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None


class Summary(Contract):
    completed: int
    failed: int
    errors: dict[str, int] = Field(default_factory=dict, description="Failed requests by error class.")
    duration_s: float = Field(description="First send to last content token of the measured requests.")
    ttft_ms: Stat
    ttft_sched_ms: Stat = Field(description="TTFT counted from the scheduled time: includes client queueing.")
    tpot_ms: Stat
    itl_ms: Stat
    e2e_ms: Stat
    tokens_per_chunk: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_per_s: float
    total_tokens_per_s: float
    requests_per_s: float
    decode_tokens_per_s_per_stream: Stat = Field(description="(n-1)/(last-first) per request.")
    goodput_requests_per_s: float | None = None
    good_fraction: float | None = Field(
        default=None, description="Requests meeting every SLO / all requests."
    )


class Flag(Contract):
    """A finding that changes how far the numbers can be trusted."""

    code: str
    severity: Literal["info", "warning", "error"] = "warning"
    message: str


class ClientHealth(Contract):
    loop_lag_ms: Stat
    cpu_percent: float = Field(description="Client process CPU over the run, % of one core.")
    client_bound: bool
    event_loop: str | None = Field(default=None, description='"uvloop" or "asyncio".')


class MetricsSample(Contract):
    t_ms: float
    values: dict[str, float]


class Telemetry(Contract):
    metrics_url: str | None = None
    metrics_available: bool = False
    before: dict[str, float] = Field(default_factory=dict)
    after: dict[str, float] = Field(default_factory=dict)
    samples: list[MetricsSample] = Field(default_factory=list)
    gpu_samples: list[MetricsSample] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class Roofline(Contract):
    hardware: str
    model_ref: str
    bandwidth_bytes_per_s: float
    bytes_per_token: float = Field(description="Weights (active) + KV read per decode step at batch 1.")
    decode_limit_tokens_per_s: float
    measured_tokens_per_s_per_stream: float | None = None
    mbu: float | None = Field(default=None, description="Model bandwidth utilisation, 0..1.")
    source: str


class SweepPoint(Contract):
    concurrency: int
    summary: Summary
    slo_ok: bool | None = None


class BenchResult(Contract):
    schema_version: int = SCHEMA_VERSION
    llmhost_version: str
    started_at: str = Field(description="UTC ISO-8601 wall-clock time of the start.")
    target: Target
    workload: Workload
    hardware: Hardware | None = None
    slos: dict[str, float] = Field(default_factory=dict, description="ttft/tpot/e2e/itl limits in ms.")
    summary: Summary
    requests: list[RequestRecord] = Field(default_factory=list)
    warmup_completed: int = 0
    client: ClientHealth | None = None
    telemetry: Telemetry | None = None
    roofline: Roofline | None = None
    sweep: list[SweepPoint] = Field(default_factory=list)
    knee_concurrency: int | None = None
    flags: list[Flag] = Field(default_factory=list)
    incomplete: bool = Field(default=False, description="Failed requests or an aborted run: partial results.")
    aborted: str | None = Field(default=None, description="Why the run stopped early, if it did.")
