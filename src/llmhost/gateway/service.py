"""`llmhost gateway` as library calls: run it (foreground or detached), read its status, stop it.

The foreground gateway records itself in `<state dir>/gateway/gateway.json` (PID + create time, address,
config): one gateway per state dir, held to by an exclusive flock on `gateway.lock` while it runs.
SIGTERM/SIGINT drain in-flight requests, then stop the models it started. A detached gateway is
`python -m llmhost.gateway` in its own session (like a detached supervisor), started here and waited
for until `/health` answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
from pydantic import Field

from llmhost.atomic import write_atomic
from llmhost.contract import Contract
from llmhost.errors import EngineError, NotFoundError, UsageError
from llmhost.gateway.config import GatewayConfig, Keys, check_listen, load_config, load_keys
from llmhost.gateway.deploy import DEPLOYMENT_PREFIX, gateway_dir
from llmhost.net import base_url, run_on_new_loop
from llmhost.supervise.state import DeploymentStatus, ProcessRef


class GatewayRecord(Contract):
    """`gateway.json`: the running gateway."""

    process: ProcessRef
    host: str
    port: int
    url: str
    config: str
    started_at: float


class GatewayStatus(Contract):
    running: bool
    record: GatewayRecord | None = None
    models: list[DeploymentStatus] = Field(default_factory=list)


def record_path() -> Path:
    return gateway_dir() / "gateway.json"


def read_record() -> GatewayRecord | None:
    try:
        return GatewayRecord.model_validate(json.loads(record_path().read_text()))
    except (FileNotFoundError, ValueError):
        return None


def running_record() -> GatewayRecord | None:
    record = read_record()
    return record if record is not None and record.process.alive() else None


def settings(
    config_path: str | None, host: str | None, port: int | None, *, insecure_no_auth: bool
) -> tuple[GatewayConfig, Path, Keys]:
    """The models file with the command's --host/--port over it, the keys, and the listen check."""
    config, path = load_config(config_path)
    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    config = config.model_copy(update=updates)
    keys = load_keys(config, path if path.exists() else None)
    check_listen(config.host, keys, insecure_no_auth=insecure_no_auth)
    return config, path, keys


def _check_port(config: GatewayConfig) -> None:
    from llmhost.supervise.process import check_port_available

    check_port_available(
        config.host,
        config.port,
        hint="Pass another --port (or set port: in the models file), or stop what listens there.",
    )


def run_gateway(
    config_path: str | None,
    *,
    host: str | None = None,
    port: int | None = None,
    insecure_no_auth: bool = False,
    on_ready: Callable[[GatewayRecord], None] | None = None,
    warn: Callable[[str], None] = lambda _m: None,
) -> None:
    """Serve until SIGTERM/SIGINT; returns after draining and stopping the models it started."""
    config, path, keys = settings(config_path, host, port, insecure_no_auth=insecure_no_auth)
    with _the_only_gateway():
        existing = running_record()
        if existing is not None and existing.process.pid != os.getpid():
            raise _already_running(existing)
        _check_port(config)
        # uvloop where installed: every streamed token costs the gateway a read, a write and a loop turn.
        run_on_new_loop(_serve(config, path, keys, on_ready=on_ready, warn=warn))


def _already_running(
    existing: GatewayRecord | None,
    hint: str = "Stop it with `llmhost gateway stop`, or point LLMHOST_STATE_DIR elsewhere.",
) -> UsageError:
    where = f" (PID {existing.process.pid}, {existing.url})" if existing is not None else ""
    return UsageError(f"A gateway is already running{where}.", hint=hint)


@contextlib.contextmanager
def _the_only_gateway() -> Iterator[None]:
    """Hold `gateway.lock` (an exclusive flock) while this gateway runs: gateway.json is written only once
    a gateway listens, so two started together would both pass a check of it alone."""
    try:
        import fcntl
    except ImportError:  # Windows: gateway.json's check alone
        yield
        return
    fd = os.open(gateway_dir() / "gateway.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _already_running(read_record()) from None
        yield
    finally:
        os.close(fd)  # releases the lock


async def _serve(
    config: GatewayConfig,
    path: Path,
    keys: Keys,
    *,
    on_ready: Callable[[GatewayRecord], None] | None,
    warn: Callable[[str], None],
) -> None:
    from aiohttp import web

    from llmhost.gateway.metrics import GatewayMetrics
    from llmhost.gateway.pool import Pool
    from llmhost.gateway.server import Gateway
    from llmhost.supervise.logs import RotatingLog

    metrics = GatewayMetrics()
    access = RotatingLog(gateway_dir() / "access.log")
    events = RotatingLog(gateway_dir() / "events.log")

    def event(item: dict[str, object]) -> None:
        events.write((json.dumps({"ts": round(time.time(), 3), **item}) + "\n").encode())

    pool = Pool(config, metrics, warn=warn, event=event)
    gateway = Gateway(config, pool, keys, metrics, access, warn=warn)
    runner = web.AppRunner(gateway.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        await pool.start()
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
        await site.start()
        me = ProcessRef.of(os.getpid())
        assert me is not None
        record = GatewayRecord(
            process=me,
            host=config.host,
            port=config.port,
            url=base_url(config.host, config.port),
            config=str(path),
            started_at=time.time(),
        )
        write_atomic(record_path(), record.model_dump_json(indent=2), mode=0o600)
        event({"event": "started", "url": record.url, "models": sorted(config.models)})
        if on_ready is not None:
            on_ready(record)
        await stop.wait()
        event({"event": "stopping"})
        await pool.shutdown()
    finally:
        await runner.cleanup()
        current = read_record()
        if current is not None and current.process.pid == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                record_path().unlink()
        event({"event": "stopped"})
        access.close()
        events.close()


def start_detached(
    config_path: str | None,
    *,
    host: str | None,
    port: int | None,
    insecure_no_auth: bool,
    timeout_s: float = 60.0,
) -> GatewayRecord:
    """Start `python -m llmhost.gateway` in the background and wait until it answers /health."""
    config, path, _keys = settings(config_path, host, port, insecure_no_auth=insecure_no_auth)
    existing = running_record()
    if existing is not None:
        raise _already_running(existing, hint="Stop it with `llmhost gateway stop`.")
    _check_port(config)  # here, not only in the background process: exit 2 and its own one line
    argv = [sys.executable, "-m", "llmhost.gateway", "--host", config.host, "--port", str(config.port)]
    if config_path is not None:
        argv += ["--config", str(path)]
    if insecure_no_auth:
        argv.append("--insecure-no-auth")
    log = gateway_dir() / "gateway.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True, close_fds=True
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = read_record()
        if record is not None and record.process.pid == proc.pid:
            return record
        code = proc.poll()
        if code is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise EngineError(f"The gateway exited with code {code}: {tail[0]}", hint=f"See {log}.")
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    raise EngineError("The gateway did not start in time; stopped it.", hint=f"See {log}.")


def gateway_status() -> GatewayStatus:
    from llmhost.app.deployments import list_deployments

    record = running_record()
    models = [d for d in list_deployments(clean=False) if d.name.startswith(DEPLOYMENT_PREFIX)]
    return GatewayStatus(running=record is not None, record=record, models=models)


class GatewayStopped(Contract):
    """What `gateway stop` stopped: the gateway (None when none was running) and the `gw-*` deployments
    it had left running (a gateway killed with SIGKILL leaves its models for a restart to re-adopt)."""

    record: GatewayRecord | None = None
    left_over: list[str] = Field(default_factory=list, description="gw-* deployments stopped here.")


def stop_gateway(timeout_s: float = 120.0) -> GatewayStopped:
    """SIGTERM the gateway and wait until it has drained, stopped its models and exited. With no gateway
    running, the models a killed one left are stopped instead (NotFoundError when there are none)."""
    record = running_record()
    if record is None:
        from llmhost.app.deployments import list_deployments
        from llmhost.supervise.control import stop_deployment

        left = [d.name for d in list_deployments(clean=False) if d.name.startswith(DEPLOYMENT_PREFIX)]
        if not left:
            raise NotFoundError("No gateway is running.", hint="Start one with `llmhost gateway`.")
        stopped = []
        for name in left:
            with contextlib.suppress(NotFoundError):  # stopped meanwhile
                stopped.append(stop_deployment(name).name)
        return GatewayStopped(left_over=stopped)
    proc = record.process.process()
    if proc is not None:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while record.process.alive():
        if time.monotonic() > deadline:
            raise EngineError(
                f"The gateway (PID {record.process.pid}) did not stop within {timeout_s:.0f}s.",
                hint="It may still be stopping its models; check `llmhost gateway status`.",
            )
        time.sleep(0.05)
    return GatewayStopped(record=record)
