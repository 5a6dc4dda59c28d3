"""Runs a benchmark: preflight the target, warm up, drive the load, measure, check, assemble.

Load shapes:
- closed loop: `concurrency` workers, each sending its next request when the last one finished,
  until `num_requests` were sent or `duration_s` passed;
- open loop: arrivals at `rate` per second with Gamma(shape=burstiness) inter-arrival times
  (1 = Poisson), optionally capped at `concurrency` in flight (the wait shows in TTFT_sched);
- sweep: closed loop at concurrency 1, 2, 4, ... until output throughput stops improving
  (< 10% over the previous step) or the SLOs break; the knee is the last step that still helped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import aiohttp

from llmhost import __version__
from llmhost.bench import checks, untrusted
from llmhost.bench.client import Prepared, StreamClient, make_session
from llmhost.bench.metrics import meets_slos, summarize
from llmhost.bench.models import (
    BenchResult,
    ClientHealth,
    Flag,
    RequestRecord,
    Roofline,
    SweepPoint,
    Target,
    Telemetry,
    Workload,
)
from llmhost.bench.telemetry import MetricsScraper, Monitor
from llmhost.bench.workload import MAX_TOKENS, FileWorkload, SyntheticWorkload, request_body
from llmhost.errors import BenchError, NetworkError, UsageError
from llmhost.hardware.models import Hardware

SWEEP_MIN_GAIN = 0.10
NOT_FOUND_HINT = (
    "Check --base-url (the API root, http://HOST:PORT/v1 on most servers, not an endpoint), "
    "--api and --model."
)
SWEEP_GOOD_FRACTION = 0.9
# Side requests (the model list, /props) wait this long at most, or --timeout when that is shorter.
PREFLIGHT_TIMEOUT_S = 10.0
PROPS_TIMEOUT_S = 5.0
# Model ids quoted when --model is not among them (a server may list thousands).
MAX_LISTED_MODELS = 10


class ProgressSink(Protocol):
    def phase(self, name: str, total: int | None) -> None: ...

    def record(self, record: RequestRecord) -> None: ...


class _NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def record(self, record: RequestRecord) -> None:
        pass


@dataclass
class BenchConfig:
    target: Target
    workload: Workload
    api_key: str | None = None
    slos: dict[str, float] = field(default_factory=dict)
    sweep_max_concurrency: int = 256
    read_timeout_s: float = 600.0
    hardware: Hardware | None = None
    roofline: Callable[[float | None, int], Roofline | None] | None = None
    file_workload: FileWorkload | None = None
    synthetic: SyntheticWorkload | None = None
    tokenizer_is_served: bool = False  # the tokenizer is the deployment's own checkpoint's


def root_url(base_url: str) -> str:
    """`http://h:p/v1` -> `http://h:p` (where /metrics, /props, /health live)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


async def _get_json(http: aiohttp.ClientSession, url: str, timeout_s: float) -> tuple[int, Any]:
    # Connection: close, so side requests never pin one of the server's HTTP threads with an idle
    # keep-alive connection (llama-server serves each connection on one of n_slots+2 threads).
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with http.get(url, timeout=timeout, headers={"connection": "close"}) as response:
        body = await untrusted.read_capped(response, untrusted.MAX_JSON_BODY_BYTES)
    try:
        return response.status, untrusted.parse_json(body)
    except ValueError:
        return response.status, None


def _model_ids(data: Any) -> list[str] | None:
    """The ids of an OpenAI model list (`{"data": [{"id": ...}, ...]}`); None for any other shape."""
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return None
    return [m["id"] for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)]


async def preflight(http: aiohttp.ClientSession, target: Target, timeout_s: float = 600.0) -> list[Flag]:
    """Reach the server, check the key and the model name before sending load."""
    url = target.base_url.rstrip("/") + "/models"
    try:
        status, data = await _get_json(http, url, min(PREFLIGHT_TIMEOUT_S, timeout_s))
    except aiohttp.InvalidURL as exc:
        raise UsageError(
            f"--base-url {target.base_url} is not a valid URL (its host or port).",
            hint="Pass the server's API root, e.g. --base-url http://127.0.0.1:8000/v1.",
        ) from exc
    except aiohttp.ClientConnectorError as exc:
        raise NetworkError(
            f"cannot reach {target.base_url}: {exc.os_error.strerror or exc}.",
            hint="Check --base-url (host, port, /v1) and that the server is up; see `llmhost ps`.",
        ) from exc
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        why = untrusted.quoted(f"{type(exc).__name__} {exc}")  # aiohttp quotes what the server sent
        raise NetworkError(
            f"cannot reach {target.base_url}: {why}.",
            hint="Check --base-url and that the server is up.",
        ) from exc
    if status in (401, 403):
        sent = "the API key was rejected" if target.api_key_used else "it needs an API key"
        raise BenchError(
            f"{target.base_url} answered {status}: {sent}.",
            hint="Pass --api-key or set LLMHOST_API_KEY (or OPENAI_API_KEY) to the server's key.",
        )
    if status != 200:
        return [
            Flag(
                code="no_model_list",
                severity="info",
                message=f"GET {url} answered {status}: the model name was not checked first.",
            )
        ]
    ids = _model_ids(data)
    if ids is None:
        return [
            Flag(
                code="no_model_list",
                severity="info",
                message=f"GET {url} answered no OpenAI model list: the model name was not checked first.",
            )
        ]
    if ids and target.model not in ids:
        listed = ", ".join(untrusted.quoted(i, 80) for i in ids[:MAX_LISTED_MODELS])
        more = f" and {len(ids) - MAX_LISTED_MODELS} more" if len(ids) > MAX_LISTED_MODELS else ""
        raise BenchError(
            f"model {target.model!r} is not served at {target.base_url}; it serves: {listed}{more}.",
            hint=f"Pass --model {untrusted.quoted(ids[0], 80)}.",
        )
    return []


async def probe_slots(http: aiohttp.ClientSession, target: Target, timeout_s: float = 600.0) -> None:
    """llama-server tells its parallel slots in /props (`total_slots`)."""
    if target.server_slots is not None:
        return
    try:
        status, data = await _get_json(
            http, root_url(target.base_url) + "/props", min(PROPS_TIMEOUT_S, timeout_s)
        )
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return
    slots = data.get("total_slots") if status == 200 and isinstance(data, dict) else None
    if untrusted.token_count(slots) and slots > 0:
        target.server_slots = slots
        target.server_slots_source = "llama-server /props total_slots"


class _Load:
    """One benchmark phase's bookkeeping: prompts, records, abort on a run of failures."""

    def __init__(
        self, cfg: BenchConfig, client: StreamClient, progress: ProgressSink, abort_after: int
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.progress = progress
        self.records: list[RequestRecord] = []
        self.index = 0
        self.abort_after = abort_after
        self.consecutive_failures = 0
        self.aborted: str | None = None
        self.stop = asyncio.Event()

    def prepare(self) -> Prepared:
        source = self.cfg.file_workload or self.cfg.synthetic
        assert source is not None
        prompt = source.make()
        wl = self.cfg.workload
        body = request_body(prompt, model=self.cfg.target.model, api=wl.api, force_length=wl.force_length)
        self.index += 1
        return Prepared(self.index - 1, json.dumps(body).encode(), prompt.prompt_tokens, prompt.output_tokens)

    async def send(self, req: Prepared, scheduled_ns: int, concurrency: int | None) -> None:
        record = await self.client.send(req, scheduled_ns)
        if concurrency is not None:
            record.concurrency = concurrency
        self.records.append(record)
        self.progress.record(record)
        if record.ok:
            self.consecutive_failures = 0
            return
        self.consecutive_failures += 1
        fatal = record.error_class in ("http_401", "http_404", "non_sse")
        if fatal or self.consecutive_failures >= self.abort_after:
            if self.aborted is None:
                self.aborted = (
                    f"stopped after {self.consecutive_failures} failed request(s) in a row: {record.error}"
                )
            self.stop.set()

    async def closed_loop(self, concurrency: int, num_requests: int | None, duration_s: float | None) -> None:
        deadline = time.perf_counter() + duration_s if duration_s else None
        sent = 0

        async def worker() -> None:
            nonlocal sent
            while not self.stop.is_set():
                if num_requests is not None and sent >= num_requests:
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                sent += 1
                req = self.prepare()
                await self.send(req, time.perf_counter_ns(), concurrency)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def _wait_until(self, when_ns: int) -> bool:
        """Sleep until `when_ns` (timers may fire up to a millisecond early: wait again); True if stopped."""
        while (delay := (when_ns - time.perf_counter_ns()) / 1e9) > 0:
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=delay)
                return True
            except asyncio.TimeoutError:
                continue
        return self.stop.is_set()

    async def open_loop(
        self,
        rate: float,
        burstiness: float,
        num_requests: int | None,
        duration_s: float | None,
        cap: int | None,
        seed: int,
    ) -> None:
        rng = random.Random(seed)
        limit = asyncio.Semaphore(cap) if cap else None
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter_ns()
        at = 0.0
        count = 0

        async def one(req: Prepared, scheduled_ns: int) -> None:
            if limit is None:
                await self.send(req, scheduled_ns, None)
                return
            async with limit:
                if not self.stop.is_set():
                    await self.send(req, scheduled_ns, None)

        while not self.stop.is_set():
            if num_requests is not None and count >= num_requests:
                break
            at += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
            if duration_s is not None and at > duration_s:
                break
            scheduled_ns = start + int(at * 1e9)
            req = self.prepare()
            if await self._wait_until(scheduled_ns):
                break
            task = asyncio.create_task(one(req, scheduled_ns))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            count += 1
        if tasks:
            await asyncio.gather(*tasks)


def _other_sweep_step_flags(records: list[RequestRecord], knee: int | None) -> list[Flag]:
    """Trust checks for the sweep steps other than the knee: the summary shows only the knee, but the
    sweep table and plot show every step, and a buffered or short-changed step there misleads as much."""
    flags: list[Flag] = []
    if knee is None:  # the summary already covers every record
        return flags
    for level in sorted({r.concurrency for r in records if r.concurrency is not None} - {knee}):
        step = [r for r in records if r.concurrency == level]
        found = checks.length_flags(step) + checks.streaming_flags(step, summarize(step, {}))
        flags += [
            Flag(code=f.code, severity=f.severity, message=f"sweep step at concurrency {level}: {f.message}")
            for f in found
            if f.code != "bundled_chunks"
        ]
    return flags


def _workload_done_flags(cfg: BenchConfig, records: list[RequestRecord], summary: Any) -> list[Flag]:
    flags = checks.length_flags(records)
    flags += checks.token_count_flags(records, served_tokenizer=cfg.tokenizer_is_served)
    if cfg.workload.dataset is None and cfg.workload.tokenizer is None:
        flags += checks.prompt_length_flags(records)
    flags += checks.streaming_flags(records, summary)
    flags += checks.sample_size_flags(summary)
    flags += checks.reconcile_llama_timings(records)
    return flags


async def run_bench(cfg: BenchConfig, progress: ProgressSink | None = None) -> BenchResult:
    sink: ProgressSink = progress or _NoProgress()
    wl = cfg.workload
    concurrency = wl.concurrency or 1
    pool = max(concurrency, cfg.sweep_max_concurrency if wl.sweep else concurrency) + 2
    if wl.rate is not None and wl.concurrency is None:
        pool = 0  # open loop without a cap: as many connections as arrivals need (aiohttp: 0 = no limit)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    async with make_session(pool, api_key=cfg.api_key, read_timeout_s=cfg.read_timeout_s) as http:
        flags = await preflight(http, cfg.target, cfg.read_timeout_s)
        await probe_slots(http, cfg.target, cfg.read_timeout_s)
        t0 = time.perf_counter_ns()
        url = cfg.target.base_url.rstrip("/") + ("/chat/completions" if wl.api == "chat" else "/completions")
        source = cfg.file_workload or cfg.synthetic
        tokenizer = source.tokenizer if source is not None else None
        client = StreamClient(
            http, url, api=wl.api, t0_ns=t0, tokenizer=tokenizer, read_timeout_s=cfg.read_timeout_s
        )
        abort_after = max(8, 2 * concurrency)

        warm = 0
        if wl.warmup:
            sink.phase("warm-up", wl.warmup)
            warm_load = _Load(cfg, client, sink, abort_after)
            await warm_load.closed_loop(min(concurrency, wl.warmup), wl.warmup, None)
            warm = sum(r.ok for r in warm_load.records)
            if warm_load.aborted and not warm:
                bad = warm_load.records[-1]
                if bad.error_class == "http_404":
                    raise BenchError(
                        f"every warm-up request failed: POST {url} answered {bad.error}.",
                        hint=NOT_FOUND_HINT,
                    )
                raise BenchError(
                    f"every warm-up request failed: {bad.error}.",
                    hint="Check --model, --api and the server's log; `llmhost logs NAME` for a deployment.",
                )

        scraper = MetricsScraper(http, root_url(cfg.target.base_url) + "/metrics")
        monitor = Monitor(scraper, t0)
        await monitor.start()
        load = _Load(cfg, client, sink, abort_after)
        sweep: list[SweepPoint] = []
        knee: int | None = None
        health: ClientHealth | None = None
        try:
            if wl.sweep:
                knee, sweep, health = await _sweep(cfg, load, sink, monitor)
            elif wl.rate is not None:
                sink.phase(f"rate {wl.rate:g}/s", wl.num_requests)
                await load.open_loop(
                    wl.rate, wl.burstiness, wl.num_requests, wl.duration_s, wl.concurrency, wl.seed
                )
            else:
                sink.phase(f"concurrency {concurrency}", wl.num_requests)
                await load.closed_loop(concurrency, wl.num_requests, wl.duration_s)
        except asyncio.CancelledError:
            # Ctrl-C (see run_blocking): in-flight requests are dropped, finished ones kept.
            load.aborted = INTERRUPTED
        finally:
            if health is None:
                health = monitor.client_health()
            telemetry: Telemetry = await monitor.stop()

    records = load.records
    main = [r for r in records if r.concurrency == knee] if wl.sweep and knee is not None else records
    summary = summarize(main, cfg.slos)
    flags += _workload_done_flags(cfg, main, summary)
    flags += _other_sweep_step_flags(records, knee) if wl.sweep else []
    flags += checks.client_flags(health)
    flags += checks.capacity_flags(cfg.target, knee if wl.sweep else wl.concurrency)
    flags += checks.reconcile_vllm_metrics(telemetry, summary) if not wl.sweep else []
    if load.aborted:
        flags.append(Flag(code="aborted", severity="error", message=load.aborted))
    roofline = None
    if cfg.roofline is not None and summary.completed:
        context = (summary.input_tokens + summary.output_tokens // 2) // summary.completed
        roofline = cfg.roofline(summary.decode_tokens_per_s_per_stream.p50, context)
    return BenchResult(
        llmhost_version=__version__,
        started_at=started_at,
        target=cfg.target,
        workload=wl,
        hardware=cfg.hardware,
        slos=cfg.slos,
        summary=summary,
        requests=records,
        warmup_completed=warm,
        client=health,
        telemetry=telemetry,
        roofline=roofline,
        sweep=sweep,
        knee_concurrency=knee,
        flags=flags,
        incomplete=bool(load.aborted) or summary.failed > 0,
        aborted=load.aborted,
    )


async def _sweep(
    cfg: BenchConfig, load: _Load, sink: ProgressSink, monitor: Monitor
) -> tuple[int | None, list[SweepPoint], ClientHealth]:
    wl = cfg.workload
    points: list[SweepPoint] = []
    knee: int | None = None
    best = 0.0
    worst_health: ClientHealth | None = None
    c = 1
    while c <= cfg.sweep_max_concurrency and not load.stop.is_set():
        n = max(wl.num_requests or 0, 2 * c)
        sink.phase(f"sweep: concurrency {c}", n)
        before = len(load.records)
        monitor.begin_client_window()
        await load.closed_loop(c, n, wl.duration_s)
        health = monitor.client_health()
        if worst_health is None or health.cpu_percent > worst_health.cpu_percent:
            worst_health = health
        step = load.records[before:]
        summary = summarize(step, cfg.slos)
        slo_ok = None
        if cfg.slos:
            good = sum(meets_slos(r, cfg.slos) for r in step)
            slo_ok = bool(step) and good / len(step) >= SWEEP_GOOD_FRACTION
        points.append(SweepPoint(concurrency=c, summary=summary, slo_ok=slo_ok))
        gain = summary.output_tokens_per_s / best - 1 if best > 0 else float("inf")
        if slo_ok is False or summary.failed:
            break
        if gain < SWEEP_MIN_GAIN:
            break
        knee = c
        best = summary.output_tokens_per_s
        c *= 2
    if worst_health is None:
        worst_health = monitor.client_health()
    return knee, points, worst_health


INTERRUPTED = "interrupted by the user (Ctrl-C)"


def run_blocking(cfg: BenchConfig, progress: ProgressSink | None = None) -> BenchResult:
    """Run a benchmark on a fresh event loop: uvloop's where installed (measured in
    benchmarks/bench_client_capacity.py: about 40% more tokens per second through the same client at
    128 streams), asyncio's otherwise."""
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # uvloop has no Windows build
        loop = asyncio.new_event_loop()
    main = loop.create_task(run_bench(cfg, progress))

    def interrupt() -> None:
        loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C stops at once
        main.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signals: Windows, threads
        loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        try:
            result = loop.run_until_complete(main)
        except asyncio.CancelledError:  # Ctrl-C before the load started: nothing measured
            raise KeyboardInterrupt from None
        if result.client is not None:
            result.client.event_loop = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        return result
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# Caps on what one benchmark may ask for, far above any real run, so that a slip (three zeros too many,
# `nan`) is refused up front instead of exhausting memory or never ending.
MAX_REQUESTS = 1_000_000  # each request's record (chunk times too) stays in memory: about 1 GiB here
MAX_CONCURRENCY = 10_000  # streams in flight: 40x the default sweep's top, beyond any server's slots
MAX_DURATION_S = 7 * 24 * 3600  # a week


def _check_number(option: str, value: float | None, *, least: float, most: float, unit: str) -> None:
    """`value`, when given, is finite and in [least, most]; least=0 for a float means "more than 0"."""
    if value is None:
        return
    positive = least == 0 and isinstance(value, float)
    if math.isfinite(value) and (value > 0 if positive else value >= least) and value <= most:
        return
    floor = "more than 0" if positive else f"{least:g}"
    raise UsageError(
        f"{option} {value} is out of range.", hint=f"Pass {option} from {floor} to {most:g} {unit}."
    )


def check_workload(wl: Workload) -> None:
    if wl.num_requests is None and wl.duration_s is None and not wl.sweep:
        raise UsageError("say how long to run.", hint="Pass --num-requests N or --duration SECONDS.")
    _check_number("--num-requests", wl.num_requests, least=1, most=MAX_REQUESTS, unit="requests")
    _check_number("--warmup", wl.warmup, least=0, most=MAX_REQUESTS, unit="requests (0: no warm-up)")
    _check_number("--concurrency", wl.concurrency, least=1, most=MAX_CONCURRENCY, unit="requests in flight")
    _check_number("--duration", wl.duration_s, least=0, most=MAX_DURATION_S, unit="seconds")
    _check_number("--rate", wl.rate, least=0, most=1e6, unit="requests per second")
    _check_number("--burstiness", wl.burstiness, least=0, most=1e3, unit="(1 = Poisson, < 1 burstier)")
    _check_number("--shared-prefix", wl.shared_prefix_tokens, least=0, most=MAX_TOKENS, unit="tokens")
    if wl.dataset is None and 0 < wl.shared_prefix_tokens >= wl.input_tokens[0]:
        raise UsageError(
            f"--shared-prefix {wl.shared_prefix_tokens} leaves no unique part of a prompt of "
            f"{wl.input_tokens[0]} tokens.",
            hint="Make --shared-prefix smaller than --input-tokens (the low end of a range).",
        )
