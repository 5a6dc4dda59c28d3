"""The gateway's deployments, through the library calls `serve` uses (never its CLI): a configured model
-> a `ServeRequest` -> `prepare_request` (plan, port, launch spec) -> `run_serve(detach=True)`; stopped
with `stop_deployment`, measured like `ps` does. Blocking calls: the pool runs them in threads.

The deployments it starts are named `gw-NAME`: how a restarted gateway finds them to re-adopt (never a
second launch) and tells them from deployments started by hand. What the gateway keeps under
`<state dir>/gateway/` (0700): `gateway.json` (its PID, address, config), the access and event logs,
`launched.json` (a fingerprint of the entry each `gw-*` deployment was launched from), and
`upstream.secret` (0600: the secret the engines' internal keys derive from, so a restarted
gateway can still talk to what it adopted; no key is written anywhere).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from llmhost.app.serve import ServeRequest
from llmhost.app.serving import PreparedServe, prepare_request
from llmhost.atomic import write_atomic
from llmhost.gateway.config import ModelEntry
from llmhost.profiles import Profile, load_profile
from llmhost.supervise import paths
from llmhost.supervise.state import Deployment

DEPLOYMENT_PREFIX = paths.GATEWAY_PREFIX
GOALS = ("quality", "throughput", "latency")
# Profile fields that are ServeRequest fields too (the rest are the profile's own or the gateway's).
_REQUEST_FIELDS = set(Profile.model_fields) & set(ServeRequest.model_fields)


def gateway_dir() -> Path:
    return paths.ensure_private_dir(paths.state_dir() / "gateway")


def deployment_name(model: str) -> str:
    return paths.validate_name(f"{DEPLOYMENT_PREFIX}{model}")


def upstream_key(name: str) -> str:
    """The internal key of deployment `name`, derived from the gateway's 0600 secret."""
    secret_path = gateway_dir() / "upstream.secret"
    try:
        secret = secret_path.read_bytes()
    except FileNotFoundError:
        secret = secrets.token_bytes(32)
        with contextlib.suppress(FileExistsError):
            fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secret)
        secret = secret_path.read_bytes()
    return hmac.new(secret, name.encode(), hashlib.sha256).hexdigest()


# Entry fields that change how the gateway serves a model, not the engine it runs: a restarted gateway
# still adopts an engine when only these changed.
_SERVING_FIELDS = {"aliases", "ttl", "pin", "queue", "queue_timeout", "description"}


def entry_fingerprint(entry: ModelEntry) -> str:
    """What a model's engine was launched from (its models-file entry, serving settings aside)."""
    text = entry.model_dump_json(exclude=_SERVING_FIELDS)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _launched_path() -> Path:
    return gateway_dir() / "launched.json"


def launched_fingerprints() -> dict[str, str]:
    """Deployment name -> `entry_fingerprint` of the entry it was launched from ({} if none recorded)."""
    try:
        data = json.loads(_launched_path().read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return (
        {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(data, dict)
        else {}
    )


def record_launch(deployment: str, entry: ModelEntry) -> None:
    """Remember what `deployment` is launched from (read back by a restarted gateway before adopting)."""
    data = {**launched_fingerprints(), deployment: entry_fingerprint(entry)}
    write_atomic(_launched_path(), json.dumps(data, indent=2, sort_keys=True), mode=0o600)


def build_request(
    name: str, entry: ModelEntry, *, hardware: str | None = None
) -> tuple[ServeRequest, str | None]:
    """The serve request for configured model `name`: its profile: under its own fields, on loopback,
    under the deployment name `gw-NAME`, served as `name`; (request, chat template)."""
    fields: dict[str, object] = {}
    chat_template = None
    if entry.profile in GOALS:
        fields["goal"] = entry.profile
    elif entry.profile is not None:
        prof = load_profile(entry.profile)
        fields.update(prof.model_dump(include=_REQUEST_FIELDS, exclude_none=True))
        fields["model"] = prof.model
        chat_template = prof.chat_template
    own = entry.model_dump(include=_REQUEST_FIELDS, exclude_none=True, exclude_defaults=True)
    fields.update(own)
    if entry.model is not None:
        fields["model"] = entry.model
    if entry.embeddings:
        fields["embeddings"] = True  # the engine's own switch (llama-server --embeddings)
    chat_template = entry.chat_template or chat_template
    # The engine serves the model under the models file's name: what clients ask for, so the gateway
    # rewrites no `model` in a request or its answer (aliases and adopted older engines aside).
    fields.update(
        name=deployment_name(name),
        served_model_name=name,
        host=fields.get("host") or "127.0.0.1",
        hardware=hardware,
    )
    request = ServeRequest.model_validate(fields)
    if hardware is None:
        request = request.model_copy(update={"api_key": upstream_key(request.name or name)})
    return request, chat_template


def plan_model(
    name: str, entry: ModelEntry, *, hardware: str | None = None, warn: Callable[[str], None]
) -> PreparedServe:
    """Plan configured model `name` without launching anything (its need, for placement)."""
    request, template = build_request(name, entry, hardware=hardware)
    return prepare_request(request, template, dry_run=True, warn=warn)


def prepare_launch(name: str, entry: ModelEntry, warn: Callable[[str], None]) -> PreparedServe:
    """Plan it for real: port, launch spec, model download (nothing starts yet)."""
    request, template = build_request(name, entry)
    return prepare_request(request, template, dry_run=False, warn=warn)


def on_devices(ready: PreparedServe, gpus: list[str]) -> PreparedServe:
    """The launch restricted to the GPUs placement chose (`CUDA_VISIBLE_DEVICES`: the engine sees them
    as the devices 0..k-1 the plan was made for)."""
    if not gpus:
        return ready
    visible = ",".join(g.split(":", 1)[1] for g in gpus)
    dep = ready.prepared.deployment
    launch = dep.launch.model_copy(update={"env": {**dep.launch.env, "CUDA_VISIBLE_DEVICES": visible}})
    prepared = ready.prepared.model_copy(update={"deployment": dep.model_copy(update={"launch": launch})})
    return PreparedServe(
        request=ready.request, prepared=prepared, chat_template=ready.chat_template, dry_run=ready.dry_run
    )


def planned_per_device(ready: PreparedServe) -> dict[str, int]:
    """Bytes the plan puts on each device."""
    candidate = ready.prepared.candidate
    per = {d.device: d.breakdown.total_bytes for d in candidate.per_device}
    if not per:
        per = {"cpu": candidate.memory.total_bytes}
    return per


def measured_per_device(dep: Deployment) -> dict[str, int]:
    """What the engine's processes hold now: RSS on the CPU, NVML's per-process use on each GPU."""
    from llmhost.supervise.state import engine_processes, status_of

    status = status_of(dep)
    out: dict[str, int] = {}
    if status.memory_bytes:
        out["cpu"] = status.memory_bytes
    pids = {p.pid for p in engine_processes(dep)}
    for device, used in _gpu_use(pids).items():
        out[device] = used
    return out


def _gpu_use(pids: set[int]) -> dict[str, int]:
    if not pids:
        return {}
    from llmhost.hardware.nvidia import load_nvml, read_nvidia

    nvml, _ = load_nvml()
    if nvml is None:
        return {}
    try:
        reading = read_nvidia(nvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
    except Exception:  # best effort: NVML failing must not fail a placement
        return {}
    out: dict[str, int] = {}
    for gpu in reading.gpus:
        for proc in gpu.processes:
            if proc.pid in pids and proc.used_memory_bytes:
                out[f"cuda:{gpu.index}"] = out.get(f"cuda:{gpu.index}", 0) + proc.used_memory_bytes
    return out


def advice_within(
    name: str,
    entry: ModelEntry,
    room: Mapping[str, int],
    *,
    hardware: str | None = None,
    warn: Callable[[str], None],
) -> list[str]:
    """The planner's advice (smaller quant, shorter context, ...) for configured model `name` when only
    `room` bytes per device are the gateway's: the same plan, on this (or the what-if) machine with its
    free memory cut to that room. [] when the planner has none (or cannot plan it at all)."""
    from llmhost.app.serve import resolve_and_plan
    from llmhost.errors import LlmhostError
    from llmhost.estimate.overheads import HOST_RESERVE_BYTES
    from llmhost.hardware import hardware_for
    from llmhost.plan.hardware_view import device_name, gpu_free_bytes

    request, _template = build_request(name, entry, hardware=hardware)
    try:
        machine = hardware_for(hardware)
        cpu = room.get("cpu")
        if cpu is not None:
            available = min(machine.ram_available_bytes, max(cpu, 0) + HOST_RESERVE_BYTES)
            machine = machine.model_copy(update={"ram_available_bytes": available})
        gpus = [
            g.model_copy(update={"memory_free_bytes": min(gpu_free_bytes(g), max(room[device_name(g)], 0))})
            if device_name(g) in room
            else g
            for g in machine.gpus
        ]
        machine = machine.model_copy(update={"gpus": gpus})
        _spec, _hw, plan = resolve_and_plan(request, machine=machine)
    except LlmhostError as exc:
        warn(f"{name}: no advice from the planner: {exc.message}")
        return []
    return list(plan.advice)
