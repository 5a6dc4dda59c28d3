"""`llmhost serve` as a use case: a `ServeCommand` -> `prepare_serve` -> `run_serve` -> the final
`Deployment`.

`app/serve.py` turns one `ServeRequest` into a launch spec; this module holds the command's work around
it: the profile merge, the checks that need the whole command, the orphan reclaim, the chat-template
pin (a second plan), the port-retry loop and the foreground supervision with its signal handlers.

Nothing here prints: warnings go to a `warn` callback, the supervisor's progress to `ServeEvents`, and
what the CLI shows (plan lines, the key, the ready text) it renders from what is returned.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from types import FrameType

from pydantic import Field

from llmhost.app.serve import Prepared, ServeRequest, prepare
from llmhost.contract import Contract
from llmhost.errors import EngineError, UsageError
from llmhost.net import is_loopback
from llmhost.supervise.state import Deployment

# Times `serve` picks another port when the one it chose (no --port) is taken before the engine binds it.
PORT_RETRIES = 2

# Engine flags that set a chat template (llama-server, llama-cpp-python, vLLM spellings).
TEMPLATE_FLAGS = frozenset({"--chat-template", "--chat-template-file", "--chat_format"})

# Signals that stop a foreground deployment (Ctrl-C, `kill`, the terminal closing).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ServeChoices(Contract):
    """The options `serve` and `export` share: how to plan and where to listen (None: not given)."""

    engine: str | None = None
    quant: str | None = None
    context: int | None = None
    concurrency: int | None = None
    port: int | None = None
    host: str | None = None
    name: str | None = None
    hardware: str | None = None
    engine_bin: str | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    vllm_version: str | None = None
    trust_remote_code: bool = False


class ServeCommand(ServeChoices):
    """What `llmhost serve` was given on its command line (the profile is merged by `prepare_serve`)."""

    model: str | None = None
    profile: str | None = None
    api_key: str | None = Field(default=None, exclude=True, repr=False)
    insecure_no_auth: bool = False
    dry_run: bool = False
    # vLLM data / expert parallelism (serve only: `export` does not write data-parallel deployments).
    data_parallel_size: int | None = None
    enable_expert_parallel: bool = False


@dataclass(frozen=True)
class PreparedServe:
    """A serve command planned and checked: what `--dry-run` prints and what `run_serve` starts."""

    request: ServeRequest  # after the profile merge and the chat-template pin; port retries replan it
    prepared: Prepared
    chat_template: str | None = None  # the profile's chat_template:, if any
    dry_run: bool = False

    @property
    def templated(self) -> bool:
        """A chat template was given (a profile's, or an engine flag in extra_args)."""
        flags = (a.split("=", 1)[0] for a in self.request.extra_args)
        return bool(self.chat_template) or any(f in TEMPLATE_FLAGS for f in flags)

    @property
    def lacks_chat_template(self) -> bool:
        """A base model with no template given: the engine's default template would be used silently."""
        return self.prepared.has_chat_template is False and not self.templated

    @property
    def unauthenticated_remote(self) -> bool:
        """Listening beyond loopback with no key (--insecure-no-auth)."""
        return not self.prepared.api_key and not is_loopback(self.prepared.deployment.host)


def _ignore(_: object) -> None:
    return None


def _no_watch(_: Deployment) -> AbstractContextManager[object]:
    from contextlib import nullcontext

    return nullcontext()


@dataclass
class ServeEvents:
    """What `run_serve` reports while it runs; every callback is optional.

    `watching(dep)` wraps each foreground supervision (the CLI's live status line); `on_update` gets every
    state change, `on_event` the supervisor's event lines, `on_port_retry` the port that was taken.
    """

    on_update: Callable[[Deployment], None] = _ignore
    on_event: Callable[[str], None] = _ignore
    on_port_retry: Callable[[int], None] = _ignore
    watching: Callable[[Deployment], AbstractContextManager[object]] = field(default=_no_watch)


# The command's options that are ServeRequest fields too; a profile gives the same ones. In the order
# `llmhost export` repeats them on its command line.
REQUEST_OPTIONS = (
    "engine",
    "quant",
    "context",
    "concurrency",
    "port",
    "host",
    "name",
    "hardware",
    "engine_bin",
    "max_num_seqs",
    "max_num_batched_tokens",
    "vllm_version",
)


def build_request(cmd: ServeCommand) -> tuple[ServeRequest, str | None]:
    """The profile merged under the command's options (options win); (request, profile's chat template)."""
    fields: dict[str, object] = {}
    chat_template: str | None = None
    model = cmd.model
    if cmd.profile is not None:
        from llmhost.profiles import load_profile

        prof = load_profile(cmd.profile)
        fields.update(prof.model_dump(exclude={"description", "model", "chat_template"}, exclude_none=True))
        model = model or prof.model
        chat_template = prof.chat_template
    if not model:
        raise UsageError(
            "No model given.",
            hint="Pass MODEL (e.g. `llmhost serve ./model.gguf`) or a --profile with model:.",
        )
    given = cmd.model_dump(include=set(REQUEST_OPTIONS))
    fields.update({k: v for k, v in given.items() if v is not None})
    if cmd.trust_remote_code:
        fields["trust_remote_code"] = True
    if cmd.data_parallel_size is not None:
        fields["data_parallel_size"] = cmd.data_parallel_size
    if cmd.enable_expert_parallel:
        fields["enable_expert_parallel"] = True
    request = ServeRequest.model_validate({**fields, "model": model})
    # The key is excluded from dumps: set after validation, never through a dict that could be printed.
    request = request.model_copy(update={"api_key": cmd.api_key, "insecure_no_auth": cmd.insecure_no_auth})
    return request, chat_template


def prepare_serve(cmd: ServeCommand, *, warn: Callable[[str], None]) -> PreparedServe:
    """Merge the profile, check the command, reclaim orphaned engines (not on a dry run), plan and build
    the launch spec; with a profile's chat template, plan again pinned to the runtime that template's
    flag is spelled for."""
    request, chat_template = build_request(cmd)
    if cmd.vllm_version is not None and not cmd.dry_run:
        raise UsageError(
            "--vllm-version plans for a vLLM release other than the installed one; it can only be "
            "combined with --dry-run.",
            hint="Add --dry-run, or drop --vllm-version to serve with the installed vLLM.",
        )
    if cmd.hardware is not None and not cmd.dry_run:
        raise UsageError(
            "--hardware plans for another machine; it can only be combined with --dry-run.",
            hint="Add --dry-run, or drop --hardware to serve on this machine.",
        )
    from llmhost.supervise import paths

    if request.name is not None:
        paths.check_not_gateways(request.name)
    ready = prepare_request(request, chat_template, dry_run=cmd.dry_run, warn=warn)
    paths.check_not_gateways(ready.prepared.deployment.name)  # a default name, from the model's
    return ready


def prepare_request(
    request: ServeRequest, chat_template: str | None, *, dry_run: bool, warn: Callable[[str], None]
) -> PreparedServe:
    """`prepare_serve` from an assembled request (the gateway builds one per configured model)."""
    if not dry_run:
        from llmhost.supervise.control import reclaim_orphans

        for gone in reclaim_orphans():
            warn(f"Stopped the engine left running by {gone!r}, whose supervisor had died.")
    prepared = prepare(request, dry_run=dry_run)
    if chat_template:
        # The flag depends on the runtime the plan picked: plan once, then pin that runtime with the flag.
        from llmhost.engines.registry import engine_flag
        from llmhost.profiles import chat_template_args

        first = prepared.deployment
        flags = chat_template_args(chat_template, first.engine, first.runtime)
        pinned = engine_flag(first.engine, first.runtime)
        request = request.model_copy(update={"engine": pinned, "extra_args": [*request.extra_args, *flags]})
        prepared = prepare(request, dry_run=dry_run)
    return PreparedServe(request=request, prepared=prepared, chat_template=chat_template, dry_run=dry_run)


def run_serve(ready: PreparedServe, *, detach: bool, events: ServeEvents | None = None) -> Deployment:
    """Start what `prepare_serve` planned and return the final `Deployment`: ready (detach) or stopped
    (foreground, after Ctrl-C/SIGTERM/SIGHUP). A port llmhost picked that another program takes before
    the engine binds it (the API port, or a data-parallel plan's DP RPC port) is replanned on the next
    free port, up to PORT_RETRIES times.

    Raises EngineError when the engine fails for good (or a detached one never gets ready).
    """
    if ready.dry_run:
        raise ValueError("a dry run's plan starts nothing: prepare_serve it without dry_run")
    from llmhost.supervise.control import claim_name
    from llmhost.supervise.state import forget

    events = events or ServeEvents()
    prepared, request = ready.prepared, ready.request
    dep = prepared.deployment
    for attempt in range(PORT_RETRIES + 1):
        dep = dep.model_copy(update={"detached": detach})
        claim_name(dep)
        if detach:
            from llmhost.supervise.control import launch_detached

            final = launch_detached(dep, api_key=prepared.api_key)
            if final.state != "ready":
                forget(dep.name)
        else:
            final = run_foreground(dep, prepared.api_key, events)
        # A port llmhost picked was free then, but another program took it before the engine bound it:
        # the API port when serve chose it, a side port (a data-parallel plan's DP RPC port) always.
        failed_on_port = final.state == "failed" and final.failure_cause == "port_in_use"
        port_stolen = failed_on_port and (request.port is None or bool(dep.launch.side_ports))
        if not port_stolen or attempt == PORT_RETRIES:
            break
        events.on_port_retry(dep.port)
        prepared = prepare(request.model_copy(update={"api_key": prepared.api_key}), dry_run=False)
        dep = prepared.deployment
    if final.state == "failed" or (detach and final.state != "ready"):
        raise EngineError(
            final.failure or f"Deployment {dep.name!r} ended in state {final.state}.",
            hint=f"Full logs: `llmhost logs {dep.name}`.",
        )
    return final


def run_foreground(dep: Deployment, api_key: str | None, events: ServeEvents) -> Deployment:
    """Supervise in this process until Ctrl-C/SIGTERM/SIGHUP or failure; the final state. The
    deployment's state file is removed afterwards: nothing outlives a foreground serve."""
    from llmhost.engines.registry import get_engine
    from llmhost.supervise.state import forget
    from llmhost.supervise.supervisor import Supervisor

    supervisor = Supervisor(
        dep,
        engine=get_engine(dep.engine),
        api_key=api_key,
        on_update=events.on_update,
        on_event=events.on_event,
    )
    try:
        with _stopping_on_signals(supervisor.request_stop), events.watching(dep):
            return supervisor.run()
    finally:
        forget(dep.name)


@contextmanager
def _stopping_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """A stop signal asks for a clean stop (the supervisor stops the engine's process group) instead of
    killing this process and leaving the engine behind; the previous handlers come back afterwards."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
