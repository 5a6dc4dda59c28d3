"""The load generators: a closed loop (N workers) and an open loop (Gamma arrivals, optionally capped),
and one phase's records."""

from __future__ import annotations

import asyncio
import json
import random
import time

from llmhost.bench.client import Prepared, StreamClient
from llmhost.bench.config import BenchConfig, ProgressSink
from llmhost.bench.models import (
    RequestRecord,
)
from llmhost.bench.workload import request_body


class Load:
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
