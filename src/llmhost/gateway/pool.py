"""The models behind the gateway: load on demand (one load per model however many requests race for it),
bounded waiting, placement and eviction, TTL unloads, pinned loads at start, re-adoption after a restart,
drain on stop. Runs on the gateway's event loop; the blocking library calls (plan, launch, stop) run in
threads.

Deployments the gateway starts are named `gw-NAME` (NAME from the models file): that name is how a
restarted gateway knows them and re-adopts them instead of launching a second engine, and how it tells
them from deployments started by hand (`serve --detach`), which it routes to but never stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import psutil

from llmhost.app.serving import PreparedServe
from llmhost.errors import LlmhostError, NothingFitsError
from llmhost.gateway import deploy
from llmhost.gateway.config import API_KEY_ENV, GatewayConfig, ModelEntry
from llmhost.gateway.metrics import GatewayMetrics
from llmhost.gateway.placement import (
    Decision,
    Device,
    Need,
    Resident,
    evictable,
    place,
    unknown_budget_devices,
)
from llmhost.supervise.state import TERMINAL_STATES, Deployment

SlotState = Literal["unloaded", "loading", "loaded", "unloading", "failed"]

# A model that failed to load answers with that failure, without retrying, for this long.
FAILURE_COOLDOWN_S = 60.0
# How often a loaded model's state file is re-read (it may be restarting after a crash).
RECHECK_S = 1.0
# The TTL sweep and the wait for a blocked placement poll this often.
POLL_S = 0.2


class GatewayBusy(Exception):
    """503 + Retry-After: the queue is full, or the wait for a load passed its deadline."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ModelUnavailable(Exception):
    """The model failed to load (the supervisor's classified cause) or cannot fit here."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass
class Slot:
    name: str
    entry: ModelEntry | None  # None: a deployment started by hand
    queue_limit: int
    state: SlotState = "unloaded"
    dep: Deployment | None = None
    key: str | None = None
    in_flight: int = 0
    waiting: int = 0
    loaded_at: float = 0.0
    last_used: float = 0.0
    failure: str | None = None
    failed_at: float = 0.0
    busy_reason: str | None = None
    load_task: asyncio.Task[None] | None = None
    planned: dict[str, int] = field(default_factory=dict)  # actual device -> bytes
    measured: dict[str, int] = field(default_factory=dict)
    checked_at: float = 0.0
    adopted: bool = False

    @property
    def manual(self) -> bool:
        return self.entry is None

    @property
    def pinned(self) -> bool:
        return self.entry is not None and self.entry.pin

    @property
    def embeddings(self) -> bool:
        return self.entry is None or self.entry.embeddings

    def resident(self) -> Resident:
        return Resident(
            name=self.name,
            planned=dict(self.planned),
            measured=dict(self.measured),
            pinned=self.pinned,
            manual=self.manual,
            in_flight=self.in_flight,
            loaded_at=self.loaded_at,
            last_used=self.last_used,
        )


class Pool:
    def __init__(
        self,
        config: GatewayConfig,
        metrics: GatewayMetrics,
        *,
        warn: Callable[[str], None],
        event: Callable[[dict[str, object]], None] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.warn = warn
        self.event = event or (lambda _e: None)
        self.slots = {
            name: Slot(name, entry, queue_limit=entry.queue or config.queue_size)
            for name, entry in config.models.items()
        }
        self._names = config.names()
        self._manual: dict[str, Slot] = {}
        self._manual_at = 0.0
        self._lock = asyncio.Lock()
        self._gpus: list[str] | None = None
        self._ttl_task: asyncio.Task[None] | None = None
        self.launches = 0
        self.closing = False

    # -- names ----------------------------------------------------------------------------------------
    def lookup(self, requested: str) -> Slot | None:
        if requested in self._names:
            return self.slots[self._names[requested]]
        self._refresh_manual()
        for slot in self._manual.values():
            if slot.dep is not None and requested in (slot.name, slot.dep.served_model_name):
                return slot
        return None

    def names(self) -> list[str]:
        self._refresh_manual()
        return sorted({*self._names, *self._manual})

    def all_slots(self) -> list[Slot]:
        self._refresh_manual()
        return [*self.slots.values(), *self._manual.values()]

    def _refresh_manual(self, *, force: bool = False) -> None:
        """Deployments started by hand that are ready now (re-read at most every RECHECK_S)."""
        now = time.monotonic()
        if not force and now - self._manual_at < RECHECK_S:
            return
        self._manual_at = now
        from llmhost.supervise.state import deployment_names, read_deployment, refreshed

        found: dict[str, Slot] = {}
        for name in deployment_names():
            if name.startswith(deploy.DEPLOYMENT_PREFIX):
                continue
            dep = read_deployment(name)
            if dep is None or refreshed(dep).state != "ready":
                continue
            slot = self._manual.get(name) or Slot(name, None, queue_limit=self.config.queue_size)
            slot.dep, slot.state = dep, "loaded"
            slot.key = os.environ.get(API_KEY_ENV) if dep.auth else None
            slot.loaded_at = slot.loaded_at or (dep.ready_at or time.time())
            found[name] = slot
        self._manual = found

    # -- start and stop -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Re-adopt the gateway's deployments that are still running, stop those it no longer serves,
        start the TTL sweep and the pinned models' loads."""
        await asyncio.to_thread(self._adopt)
        budget = self.config.memory_budget if isinstance(self.config.memory_budget, dict) else {}
        if unknown := unknown_budget_devices(budget, await asyncio.to_thread(self.devices)):
            self.warn(unknown)
        self._ttl_task = asyncio.create_task(self._ttl_loop())
        for slot in self.slots.values():
            if slot.pinned and slot.state == "unloaded":
                slot.load_task = asyncio.create_task(self._load(slot))

    def _adopt(self) -> None:
        from llmhost.supervise.control import cleanup, stop_deployment
        from llmhost.supervise.state import deployment_names, read_deployment, refreshed

        by_dep = {deploy.deployment_name(n): s for n, s in self.slots.items()}
        launched = deploy.launched_fingerprints()
        for name in deployment_names():
            if not name.startswith(deploy.DEPLOYMENT_PREFIX):
                continue
            dep = read_deployment(name)
            if dep is None:
                continue
            current = refreshed(dep)
            slot = by_dep.get(name)
            if current.state in TERMINAL_STATES:
                cleanup(dep)  # its supervisor is gone: stop what is left of its engine
                self.event({"event": "cleaned", "deployment": name, "state": str(current.state)})
            elif slot is None:
                stop_deployment(name)  # started by an earlier gateway for a model no longer configured
                self.event({"event": "stopped", "deployment": name, "reason": "not configured"})
            elif slot.entry is not None and launched.get(name, "") not in (
                "",
                deploy.entry_fingerprint(slot.entry),
            ):
                # Launched from an entry since edited (context, quant, engine, ...): launch it afresh
                # (on demand, or now if pinned), not adopt the old settings. Nothing recorded: adopt.
                stop_deployment(name)
                self.event({"event": "stopped", "deployment": name, "reason": "models file changed"})
            else:
                now = time.time()
                slot.dep, slot.state, slot.adopted = current, "loaded", True
                slot.key = deploy.upstream_key(name)
                slot.loaded_at, slot.last_used = dep.ready_at or now, now
                if dep.planned is not None:
                    slot.planned = {"cpu": _report_total(dep)}
                self.event({"event": "adopted", "model": slot.name, "deployment": name})

    async def shutdown(self) -> None:
        """Drain in-flight requests (up to drain_grace), then stop every model the gateway started."""
        self.closing = True
        deadline = time.monotonic() + self.config.drain_grace
        while any(s.in_flight for s in self.slots.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._ttl_task is not None:
            self._ttl_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ttl_task
        loading = [s.load_task for s in self.slots.values() if s.load_task is not None]
        if loading:
            await asyncio.wait(loading, timeout=max(deadline - time.monotonic(), 5.0))
        owned = [s for s in self.slots.values() if s.dep is not None]
        await asyncio.gather(*(self._unload(s, "shutdown") for s in owned), return_exceptions=True)

    # -- requests -----------------------------------------------------------------------------------
    async def acquire(self, slot: Slot, deadline: float) -> None:
        """Wait until `slot` is loaded and ready (loading it if needed) and count one request in flight.

        Raises GatewayBusy (queue full, deadline passed) or ModelUnavailable (failed, does not fit)."""
        if self.closing:
            raise GatewayBusy("The gateway is shutting down.", retry_after=5.0)
        if slot.state == "failed":
            remaining = FAILURE_COOLDOWN_S - (time.time() - slot.failed_at)
            if remaining > 0:
                raise ModelUnavailable(slot.failure or "The model failed to load.", retry_after=remaining)
            slot.state, slot.failure = "unloaded", None
        if slot.state == "loaded":
            await self._check_alive(slot, deadline)
        if slot.state != "loaded":
            if slot.manual:
                raise ModelUnavailable(f"The deployment {slot.name!r} is no longer running.")
            await self._wait_for_load(slot, deadline)
        slot.in_flight += 1
        slot.last_used = time.time()
        self.metrics.in_flight.labels(slot.name).set(slot.in_flight)

    def release(self, slot: Slot) -> None:
        slot.in_flight = max(0, slot.in_flight - 1)
        slot.last_used = time.time()
        self.metrics.in_flight.labels(slot.name).set(slot.in_flight)

    async def recheck(self, slot: Slot, deadline: float) -> None:
        """The engine did not answer: wait until its supervisor reports it ready again (a crash restarts
        it). Raises GatewayBusy (still restarting at `deadline`) or ModelUnavailable (gone)."""
        slot.checked_at = 0.0
        await self._check_alive(slot, deadline)
        if slot.state != "loaded" or slot.dep is None:
            raise ModelUnavailable(f"The engine of {slot.name!r} is no longer running.")

    def suspect(self, slot: Slot) -> None:
        """The engine did not answer: re-read its state on the next request."""
        slot.checked_at = 0.0

    async def _wait_for_load(self, slot: Slot, deadline: float) -> None:
        if slot.waiting >= slot.queue_limit:
            raise GatewayBusy(
                f"{slot.waiting} requests already wait for {slot.name!r} (queue: {slot.queue_limit}).",
                retry_after=5.0,
            )
        slot.waiting += 1
        self.metrics.queue_depth.labels(slot.name).set(slot.waiting)
        try:
            if slot.load_task is None:
                slot.load_task = asyncio.create_task(self._load(slot))
            remaining = deadline - time.time()
            if remaining <= 0:
                raise TimeoutError
            await asyncio.wait_for(asyncio.shield(slot.load_task), remaining)
        except TimeoutError:
            raise GatewayBusy(f"{slot.name!r} is not loaded yet (still loading).", retry_after=5.0) from None
        finally:
            slot.waiting -= 1
            self.metrics.queue_depth.labels(slot.name).set(slot.waiting)
        if slot.state == "failed":
            raise ModelUnavailable(
                slot.failure or "The model failed to load.", retry_after=FAILURE_COOLDOWN_S
            )
        if slot.state != "loaded":
            raise GatewayBusy(slot.busy_reason or f"{slot.name!r} could not be loaded now.", retry_after=5.0)

    async def _check_alive(self, slot: Slot, deadline: float) -> None:
        """A loaded model whose engine crashed is restarting under its supervisor: wait for it; one that
        ended for good is unloaded (the next request loads it again)."""
        if time.monotonic() - slot.checked_at < RECHECK_S or slot.dep is None:
            return
        from llmhost.supervise.state import read_deployment, refreshed

        while True:
            dep = read_deployment(slot.dep.name)
            current = refreshed(dep) if dep is not None else None
            if current is not None and current.state == "ready":
                slot.dep, slot.checked_at = current, time.monotonic()
                return
            if current is None or current.state in TERMINAL_STATES:
                if current is not None and current.failure and not slot.manual:
                    slot.state, slot.failure, slot.failed_at = "failed", current.failure, time.time()
                    slot.dep = None
                    raise ModelUnavailable(current.failure, retry_after=FAILURE_COOLDOWN_S)
                slot.state, slot.dep = "unloaded", None
                return
            if time.time() > deadline:
                raise GatewayBusy(f"{slot.name!r} is restarting.", retry_after=5.0)
            await asyncio.sleep(0.1)

    # -- loading --------------------------------------------------------------------------------------
    async def _load(self, slot: Slot) -> None:
        assert slot.entry is not None
        started = time.monotonic()
        slot.busy_reason = None
        try:
            async with self._lock:
                if slot.state == "loaded":  # loaded while this task waited for the lock
                    return
                slot.state = "loading"
                self.event({"event": "loading", "model": slot.name})
                await self._load_locked(slot, slot.entry)
            self.metrics.loads.labels(slot.name, "ok").inc()
            self.metrics.load_seconds.labels(slot.name).observe(time.monotonic() - started)
            self.event({"event": "loaded", "model": slot.name, "s": round(time.monotonic() - started, 3)})
        except _Blocked as exc:
            slot.state, slot.busy_reason = "unloaded", exc.reason
        except LlmhostError as exc:
            self._failed(slot, str(exc))
        except Exception as exc:  # never let a load task die silently: its waiters need an answer
            self._failed(slot, f"{type(exc).__name__}: {exc}")
        finally:
            slot.load_task = None

    def _failed(self, slot: Slot, message: str) -> None:
        slot.state, slot.failure, slot.failed_at, slot.dep = "failed", message, time.time(), None
        self.metrics.loads.labels(slot.name, "failed").inc()
        self.event({"event": "load_failed", "model": slot.name, "error": message})
        # In the gateway's own output too: a pinned load has no client to tell (one line a failure; a
        # failed model is retried only after its Retry-After, not on every request).
        self.warn(f"{slot.name} failed to load: {' '.join(x.strip() for x in message.splitlines())}")

    async def _load_locked(self, slot: Slot, entry: ModelEntry) -> None:
        ready = await self._prepare(slot, entry)
        need = Need(
            slot.name,
            deploy.planned_per_device(ready),
            allowed=frozenset(entry.devices) if entry.devices else None,
        )
        decision = await self._placement(slot, entry, need)  # marks its victims `unloading`
        for victim in decision.evict:
            await self._unload(self._slot(victim), "evicted")
        ready = deploy.on_devices(ready, decision.gpus)
        from llmhost.app.serving import run_serve

        self.launches += 1
        self.event({"event": "launching", "model": slot.name, "deployment": ready.prepared.deployment.name})
        await asyncio.to_thread(deploy.record_launch, ready.prepared.deployment.name, entry)
        dep = await asyncio.to_thread(run_serve, ready, detach=True)
        now = time.time()
        slot.dep, slot.key, slot.state = dep, ready.prepared.api_key, "loaded"
        slot.loaded_at = slot.last_used = now
        slot.checked_at = time.monotonic()
        slot.planned = {decision.assignment.get(d, d): b for d, b in need.per_device.items()}
        slot.measured = {}

    async def _prepare(self, slot: Slot, entry: ModelEntry) -> PreparedServe:
        """Plan the model for real. The planner sees the memory residents hold: when nothing fits, evict
        the least recently used idle model and plan again."""
        while True:
            try:
                return await asyncio.to_thread(deploy.prepare_launch, slot.name, entry, self.warn)
            except NothingFitsError:
                victim = self._lru_evictable()
                if victim is None:
                    raise
                victim.state = "unloading"
                await self._unload(victim, "evicted")

    def _lru_evictable(self) -> Slot | None:
        now = time.time()
        order = sorted(
            (s for s in self.slots.values() if s.state == "loaded" and s.dep is not None),
            key=lambda s: s.last_used,
        )
        for s in order:
            if evictable(s.resident(), now=now, min_residence=self.config.min_residence) is None:
                return s
        return None

    async def _placement(self, slot: Slot, entry: ModelEntry, need: Need) -> Decision:
        """Where `need` goes now; the residents it evicts are marked `unloading` before this returns.

        The residents (requests in flight included) are read after the last await, and the victims are
        marked before the next one: a request that arrives in between cannot start on a model that is
        about to be evicted, and one already in flight is always seen."""
        deadline = time.time() + self.config.queue_timeout
        while True:
            await self.refresh_measured()
            devices = await asyncio.to_thread(self.devices)
            decision = place(
                need,
                devices,
                self._residents(),
                now=time.time(),
                policy=self.config.placement,
                min_residence=self.config.min_residence,
            )
            if decision.fits:
                for victim in decision.evict:  # no await since the residents were read
                    self._slot(victim).state = "unloading"
                return decision
            if decision.never_fits and not decision.room:  # its devices: pin, not memory
                raise NothingFitsError(f"{decision.reason}.", hint="Fix devices: in the models file.")
            if decision.never_fits:
                advice = await asyncio.to_thread(
                    deploy.advice_within, slot.name, entry, decision.room, warn=self.warn
                )
                raise NothingFitsError(
                    " ".join([f"{decision.reason}.", *advice]),
                    hint="Set a smaller quant or a shorter context for it (quant:, context: in the models "
                    "file); `llmhost gateway plan` shows what fits together.",
                )
            if time.time() > deadline:
                raise _Blocked(decision.reason)
            # Waiting for in-flight or young models to free memory: other models' loads, which may fit
            # now, go on meanwhile (each decision is made afresh under the lock).
            self._lock.release()
            try:
                await asyncio.sleep(POLL_S)
            finally:
                await self._lock.acquire()

    def _slot(self, name: str) -> Slot:
        return self.slots.get(name) or self._manual[name]

    def _holding(self) -> list[Slot]:
        """The slots whose engines hold memory now."""
        return [s for s in self.all_slots() if s.dep is not None and s.state in ("loaded", "unloading")]

    async def refresh_measured(self) -> list[Resident]:
        """Read what each resident engine holds (RSS, NVML per process; in a thread), then the residents."""
        slots = self._holding()
        deps = [s.dep for s in slots if s.dep is not None]
        readings = await asyncio.to_thread(lambda: [deploy.measured_per_device(d) for d in deps])
        for slot, reading in zip(slots, readings, strict=True):
            slot.measured = reading
        return self._residents()

    def _residents(self) -> list[Resident]:
        """The residents as of now (synchronous: no request can start or end while this runs)."""
        out = []
        for slot in self._holding():
            resident = slot.resident()
            for device in resident.devices:
                self.metrics.resident_bytes.labels(slot.name, device).set(resident.use(device))
            out.append(resident)
        return out

    def devices(self) -> list[Device]:
        """This machine's devices with what is used on each now, and the models file's budgets."""
        budget = self.config.memory_budget if isinstance(self.config.memory_budget, dict) else {}
        vm = psutil.virtual_memory()
        out = [Device("cpu", vm.total, used_bytes=vm.total - vm.available, budget_bytes=budget.get("cpu"))]
        for name, total, used in _gpu_devices():
            out.append(Device(name, total, used_bytes=used, budget_bytes=budget.get(name)))
        return out

    async def _unload(self, slot: Slot, reason: str) -> None:
        dep = slot.dep
        slot.state = "unloading"
        in_flight = slot.in_flight  # 0 but at shutdown past the drain grace (the event records it)
        if dep is not None:
            from llmhost.supervise.control import stop_deployment
            from llmhost.supervise.gpu import wait_gpu_released
            from llmhost.supervise.state import engine_processes

            pids = [p.pid for p in engine_processes(dep)]
            with contextlib.suppress(LlmhostError):
                await asyncio.to_thread(stop_deployment, dep.name)
            held = await asyncio.to_thread(wait_gpu_released, pids)
            if held:
                self.warn(f"{slot.name}: GPU memory still held by PIDs {[p.pid for p in held]} after stop")
        for device in {*slot.planned, *slot.measured}:
            with contextlib.suppress(KeyError):
                self.metrics.resident_bytes.remove(slot.name, device)
        slot.dep, slot.state, slot.planned, slot.measured = None, "unloaded", {}, {}
        self.metrics.unloads.labels(slot.name, reason).inc()
        self.event({"event": "unloaded", "model": slot.name, "reason": reason, "in_flight": in_flight})

    async def _ttl_loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            now = time.time()
            for slot in list(self.slots.values()):
                ttl = self.config.ttl_of(slot.name)
                idle = slot.state == "loaded" and not slot.pinned and slot.in_flight == 0
                if idle and ttl > 0 and now - slot.last_used > ttl and not self._lock.locked():
                    async with self._lock:
                        if slot.state == "loaded" and slot.in_flight == 0:
                            await self._unload(slot, "ttl")


class _Blocked(Exception):
    """Placement waited its deadline for in-flight or pinned models: the load is given up for now."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _report_total(dep: Deployment) -> int:
    report = dep.planned
    if report is None:
        return 0
    return sum(x or 0 for x in (report.weights_bytes, report.kv_cache_bytes, report.compute_bytes))


def _gpu_devices() -> list[tuple[str, int, int]]:
    """(device, total, used) of each NVIDIA GPU NVML reads; none without NVML."""
    from llmhost.hardware.nvidia import load_nvml, read_nvidia

    nvml, _ = load_nvml()
    if nvml is None:
        return []
    try:
        reading = read_nvidia(nvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
    except Exception:  # best effort: without a reading, GPUs are not placed on
        return []
    return [(f"cuda:{g.index}", g.memory_total_bytes, g.memory_used_bytes or 0) for g in reading.gpus]
