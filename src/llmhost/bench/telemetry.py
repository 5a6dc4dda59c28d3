"""What the server, the GPU and the client itself were doing during a run.

- Server: Prometheus `/metrics` scraped before, every second during, and after (vLLM `vllm:*`,
  llama-server `llamacpp:*`; label sets summed per metric name).
- GPU: NVML utilisation, memory and power, when an NVIDIA driver is present (skipped cleanly otherwise).
- Client: event-loop lag (how late a 10 ms sleep wakes) and the process's CPU share, so a result
  limited by the benchmark client is marked instead of published as the server's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import psutil

from llmhost.bench import untrusted
from llmhost.bench.metrics import stat
from llmhost.bench.models import ClientHealth, MetricsSample, Telemetry
from llmhost.prometheus import parse_prometheus

# Thresholds for calling a run client-bound (see docs/bench.md).
CLIENT_CPU_LIMIT = 90.0
CLIENT_LAG_P90_LIMIT_MS = 10.0
# /metrics comes from the benchmarked server, which may be hostile: vLLM's page is about 100 KiB;
# 16 MiB is far above it (the parser bounds the names, `prometheus.MAX_METRIC_NAMES`).
MAX_METRICS_BYTES = 16 * 2**20


class MetricsScraper:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.available = True

    async def scrape(self) -> dict[str, float] | None:
        if not self.available:
            return None
        try:
            timeout = aiohttp.ClientTimeout(total=3.0)
            async with self.http.get(self.url, timeout=timeout, headers={"connection": "close"}) as response:
                status = response.status
                body = await untrusted.read_capped(response, MAX_METRICS_BYTES)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            self.available = False
            return None
        if status != 200:
            self.available = False
            return None
        values = parse_prometheus(body.decode("utf-8", "replace"))
        if not values:
            self.available = False
            return None
        return values


class NvmlSampler:
    """NVML readings per GPU: util %, memory used bytes, power W. Inert when NVML is absent."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.note: str | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as exc:  # no driver, no library, no GPU: all mean "no NVML here"
            self.note = f"NVML not available ({type(exc).__name__}): no GPU telemetry"

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, h in enumerate(self.handles):
            with contextlib.suppress(Exception):
                out[f"gpu{i}_util_percent"] = float(self.nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            with contextlib.suppress(Exception):
                out[f"gpu{i}_memory_used_bytes"] = float(self.nvml.nvmlDeviceGetMemoryInfo(h).used)
            with contextlib.suppress(Exception):
                out[f"gpu{i}_power_w"] = self.nvml.nvmlDeviceGetPowerUsage(h) / 1000.0
        return out

    def close(self) -> None:
        if self.handles:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()


class Monitor:
    """Runs beside the load: scrapes, samples and measures the client's own health."""

    def __init__(self, scraper: MetricsScraper | None, t0_ns: int, interval_s: float = 1.0) -> None:
        self.scraper = scraper
        self.t0_ns = t0_ns
        self.interval_s = interval_s
        self.nvml = NvmlSampler()
        self.telemetry = Telemetry(metrics_url=scraper.url if scraper else None)
        if self.nvml.note:
            self.telemetry.notes.append(self.nvml.note)
        self.lags_ms: list[float] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._proc = psutil.Process()
        self._cpu0: float = 0.0
        self._wall0: float = 0.0

    def _t_ms(self) -> float:
        return (time.perf_counter_ns() - self.t0_ns) / 1e6

    async def start(self) -> None:
        if self.scraper is not None:
            before = await self.scraper.scrape()
            if before is not None:
                self.telemetry.before = before
                self.telemetry.metrics_available = True
            else:
                self.telemetry.notes.append(f"no Prometheus metrics at {self.scraper.url}")
        self.begin_client_window()
        self._tasks = [asyncio.create_task(self._lag_loop()), asyncio.create_task(self._sample_loop())]

    def begin_client_window(self) -> None:
        times = self._proc.cpu_times()
        self._cpu0 = times.user + times.system
        self._wall0 = time.perf_counter()
        self.lags_ms.clear()

    async def _lag_loop(self) -> None:
        period = 0.01
        while True:
            t = time.perf_counter()
            await asyncio.sleep(period)
            self.lags_ms.append(max(0.0, (time.perf_counter() - t - period) * 1000))

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self.scraper is not None and self.scraper.available:
                values = await self.scraper.scrape()
                if values is not None:
                    self.telemetry.samples.append(MetricsSample(t_ms=self._t_ms(), values=values))
            if self.nvml.handles:
                self.telemetry.gpu_samples.append(MetricsSample(t_ms=self._t_ms(), values=self.nvml.sample()))

    def client_health(self) -> ClientHealth:
        times = self._proc.cpu_times()
        wall = time.perf_counter() - self._wall0
        cpu = 100.0 * ((times.user + times.system) - self._cpu0) / wall if wall > 0 else 0.0
        lag = stat(self.lags_ms)
        # p90, not p99: one late wake-up (a GC pause, the scheduler) does not make a run client-bound.
        bound = cpu >= CLIENT_CPU_LIMIT or (lag.p90 is not None and lag.p90 >= CLIENT_LAG_P90_LIMIT_MS)
        return ClientHealth(loop_lag_ms=lag, cpu_percent=cpu, client_bound=bound)

    async def stop(self) -> Telemetry:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.scraper is not None and self.telemetry.metrics_available:
            after = await self.scraper.scrape()
            if after is not None:
                self.telemetry.after = after
        self.nvml.close()
        return self.telemetry
