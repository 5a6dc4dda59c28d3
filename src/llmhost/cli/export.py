"""`llmhost export TARGET (NAME | MODEL)`: what runs the same plan elsewhere (thin over `llmhost.export`).

The plan comes from the same `prepare()` as `serve --dry-run`: a running deployment's NAME is re-planned
with its model, engine, address and key handling; a MODEL takes serve's options.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmhost.cli._options import HardwareOpt, MaxNumBatchedTokensOpt, MaxNumSeqsOpt, VllmVersionOpt, text
from llmhost.cli._output import info, literal, stderr, warn
from llmhost.cli.serve import EngineOpt
from llmhost.errors import UsageError

if TYPE_CHECKING:
    from llmhost.app.serve import ServeRequest
    from llmhost.export.models import ExportFile, ExportSource

DEFAULT_PORT = 8000


def _serve_args(
    source_model: str, request: ServeRequest, prepared_runtime: str, cand_fields: dict[str, str]
) -> list[str]:
    args = [
        source_model,
        "--name",
        cand_fields["name"],
        "--host",
        request.host,
        "--port",
        cand_fields["port"],
    ]
    args += ["--engine", prepared_runtime]
    args += ["--quant", cand_fields["quant"], "--context", cand_fields["context"]]
    args += ["--concurrency", cand_fields["concurrency"]]
    if request.engine_bin:
        args += ["--engine-bin", request.engine_bin]
    if request.trust_remote_code:
        args.append("--trust-remote-code")
    return args


def build_source(ref: str, options: dict[str, object], *, auth: bool, command: str) -> ExportSource:
    """Plan one deployment the way `serve --dry-run` does and describe it for the renderers."""
    import secrets

    from llmhost import __version__
    from llmhost.app.serve import API_KEY_ENV, ServeRequest, is_loopback, prepare
    from llmhost.export.models import ExportSource
    from llmhost.supervise.paths import is_valid_name
    from llmhost.supervise.state import read_deployment

    fields = {k: v for k, v in options.items() if v is not None}
    recorded = read_deployment(ref) if is_valid_name(ref) else None
    if recorded is not None:
        # A running deployment: its model, engine, name, address and key handling; options override.
        fields = {
            "name": recorded.name,
            "host": recorded.host,
            "port": recorded.port,
            "engine": recorded.runtime if recorded.engine == "llamacpp" else recorded.engine,
            **fields,
        }
        ref = recorded.model
        auth = auth or recorded.auth
    elif not Path(ref).exists() and is_valid_name(ref) and "/" not in ref:
        # A bare name is a deployment's (model references have an org/ or a path): say which is missing.
        from llmhost.errors import NotFoundError

        raise NotFoundError(
            f"No deployment named {ref!r} (and it is no model reference).",
            hint="See `llmhost ps` for names, or give a model: org/name, org/name-GGUF:Q4_K_M, ./model.gguf.",
        )
    if Path(ref).exists():
        # The unit or container runs elsewhere (another cwd): name the model by its absolute path.
        ref = str(Path(ref).resolve())
    fields.setdefault("port", DEFAULT_PORT)  # not the next free port here: the target node is not this one
    request = ServeRequest.model_validate({**fields, "model": ref})
    host_needs_key = not is_loopback(request.host)
    if auth or host_needs_key:
        # prepare() decides auth from a key; the key itself is never rendered (exports reference the
        # env var), so a throwaway one stands in for the user's.
        request = request.model_copy(update={"api_key": secrets.token_urlsafe(24)})
    prepared = prepare(request, dry_run=True)
    dep, cand = prepared.deployment, prepared.candidate
    if recorded is not None and recorded.launch.argv != dep.launch.argv:
        warn(
            f"{recorded.name!r} runs a command the re-plan does not reproduce (it was started with options "
            "the state does not record): pass them to export (--context, --concurrency, --quant)."
        )
    pinned = {
        "name": dep.name,
        "port": str(dep.port),
        "quant": cand.quantization,
        "context": str(cand.context_length),
        "concurrency": str(cand.concurrency),
    }
    runtime = dep.runtime if dep.engine == "llamacpp" else dep.engine
    return ExportSource(
        llmhost_version=__version__,
        name=dep.name,
        model=ref,
        served_model_name=dep.served_model_name,
        candidate=cand,
        hardware=prepared.hardware,
        launch=dep.launch,
        host=dep.host,
        port=dep.port,
        auth=dep.auth,
        api_key_env=API_KEY_ENV,
        serve_args=_serve_args(ref, request, runtime, pinned),
        llmhost_argv=[sys.executable, "-m", "llmhost"],
        command=command,
    )


def _write(files: list[ExportFile], directory: Path) -> list[Path]:
    from llmhost.outputs import check_directory_target, make_directory, write_atomically

    check_directory_target("-o", directory)
    make_directory("-o", directory)
    written = []
    for f in files:

        def write(tmp: Path, text: str = f.text) -> None:
            tmp.write_text(text)

        written.append(write_atomically("-o", directory / f.filename, write, mode=f.mode))
    return written


def _command_line(
    target: str, refs: list[str], options: dict[str, object], *, auth: bool, scope: str, fallback: list[str]
) -> str:
    """The export command, for the header: how to write the same files again."""
    words = ["llmhost", "export", target, *refs]
    for key, value in options.items():
        if value is True:
            words.append("--" + key.replace("_", "-"))
        elif value is not None:
            words += ["--" + key.replace("_", "-"), str(value)]
    if auth:
        words.append("--auth")
    if target == "systemd" and scope != "user":
        words += ["--scope", scope]
    for rule in fallback:
        words += ["--fallback", rule]
    return shlex.join(words)


def _writable_dirs() -> list[str]:
    """What `serve` writes: llmhost's state and cache dirs and the Hugging Face cache."""
    import os

    from llmhost.cache import cache_dir
    from llmhost.supervise.paths import state_dir

    hf = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return [str(state_dir()), str(cache_dir()), hf]


def register(app: typer.Typer) -> None:
    """Register `export`."""

    @app.command("export")
    def export(
        target: Annotated[
            str,
            typer.Argument(
                help="systemd, compose, kubernetes, kserve, kserve-llm, ray-serve, litellm or vllm-cluster.",
                callback=text,
            ),
        ],
        refs: Annotated[
            list[str],
            typer.Argument(
                help="A deployment NAME (see `llmhost ps`) or a MODEL as `serve` takes it; litellm takes "
                "several.",
                callback=text,
            ),
        ],
        output: Annotated[
            str | None,
            typer.Option(
                "--output",
                "-o",
                help="Write the files into this directory instead of stdout.",
                metavar="<dir>",
                callback=text,
            ),
        ] = None,
        engine: EngineOpt = None,
        quant: Annotated[
            str | None, typer.Option("--quant", help="Quantization (as serve).", callback=text)
        ] = None,
        context: Annotated[int | None, typer.Option("--context", help="Context length per request.")] = None,
        concurrency: Annotated[int | None, typer.Option("--concurrency", help="Concurrent requests.")] = None,
        port: Annotated[
            int | None, typer.Option("--port", help="Port the service listens on (default 8000).")
        ] = None,
        host: Annotated[
            str | None,
            typer.Option(
                "--host", help="Bind address (default 127.0.0.1; others need an API key).", callback=text
            ),
        ] = None,
        name: Annotated[str | None, typer.Option("--name", help="Deployment name.", callback=text)] = None,
        hardware: HardwareOpt = None,
        engine_bin: Annotated[
            str | None, typer.Option("--engine-bin", help="Path of the llama-server binary.", callback=text)
        ] = None,
        nodes: Annotated[
            int | None,
            typer.Option("--nodes", help="Plan over this many nodes of the --hardware type (as plan)."),
        ] = None,
        max_num_seqs: MaxNumSeqsOpt = None,
        max_num_batched_tokens: MaxNumBatchedTokensOpt = None,
        vllm_version: VllmVersionOpt = None,
        trust_remote_code: Annotated[
            bool, typer.Option("--trust-remote-code", help="Allow the model's own code (vLLM).")
        ] = False,
        auth: Annotated[
            bool, typer.Option("--auth", help="Require an API key even on loopback (always off loopback).")
        ] = False,
        scope: Annotated[
            str, typer.Option("--scope", help="systemd: a user or a system unit.", callback=text)
        ] = "user",
        user: Annotated[
            str | None,
            typer.Option(
                "--user", help="systemd --scope system: the account it runs as (default: you).", callback=text
            ),
        ] = None,
        install: Annotated[
            bool, typer.Option("--install", help="systemd: write the unit where systemd reads it.")
        ] = False,
        fallback: Annotated[
            list[str] | None,
            typer.Option(
                "--fallback",
                help="litellm: A=B, try B when A fails (deployment or model names; repeatable).",
                callback=text,
            ),
        ] = None,
        max_replicas: Annotated[
            int, typer.Option("--max-replicas", help="ray-serve: autoscaling upper bound.")
        ] = 1,
    ) -> None:
        """Write what runs the plan `serve` would run, on another platform: a systemd unit, a Compose
        file, Kubernetes manifests, a KServe InferenceService or LLMInferenceService, a Ray Serve LLM
        config or a LiteLLM proxy config. Keys are referenced (env file, Secret, os.environ/...), never
        written.

        Exit 0 when written; 2 on bad input or a plan the target cannot run; 3 when nothing fits;
        5 for an unknown deployment NAME.
        """
        import getpass

        from llmhost.export import TARGETS, render
        from llmhost.export.render import as_text

        if target not in TARGETS:  # before planning: a typo must not cost a model resolution
            raise UsageError(
                f"Unknown export target {target!r}.", hint=f"Choose one of: {', '.join(TARGETS)}."
            )
        if install and target != "systemd":
            raise UsageError("--install is a systemd option.", hint="Drop --install, or export systemd.")
        if install and output is not None:
            raise UsageError("--install and -o both say where to write.", hint="Pass one of them.")
        if target != "litellm" and len(refs) > 1:
            raise UsageError(
                f"`llmhost export {target}` writes one deployment.", hint="Give one NAME or MODEL."
            )
        if name is not None and len(refs) > 1:
            raise UsageError("--name names one deployment.", hint="Drop --name when exporting several.")
        options: dict[str, object] = {
            "engine": engine,
            "quant": quant,
            "context": context,
            "concurrency": concurrency,
            "port": port,
            "host": host,
            "name": name,
            "hardware": hardware,
            "engine_bin": engine_bin,
            "nodes": nodes,
            "max_num_seqs": max_num_seqs,
            "max_num_batched_tokens": max_num_batched_tokens,
            "vllm_version": vllm_version,
            "trust_remote_code": trust_remote_code or None,
        }
        command = _command_line(target, refs, options, auth=auth, scope=scope, fallback=fallback or [])
        sources = [build_source(ref, options, auth=auth, command=command) for ref in refs]
        home = str(Path.home())
        files = render(
            target,
            sources,
            scope=scope,
            home=home,
            writable=_writable_dirs(),
            user=user or getpass.getuser(),
            fallbacks=fallback or [],
            max_replicas=max_replicas,
        )
        if target in ("systemd", "compose") and output is not None:
            from llmhost.export.systemd import env_file_template

            files.append(env_file_template(sources[0], compose=target == "compose"))
        if install:
            from llmhost.export.systemd import systemctl_lines, unit_path

            path = Path(unit_path(sources[0], "user" if scope == "user" else "system", home))
            for written in _write(files, path.parent):
                info(f"wrote {written}")
            for line in systemctl_lines(sources[0], "user" if scope == "user" else "system", home):
                stderr.print(literal(line), soft_wrap=True)
            return
        if output is not None:
            for written in _write(files, Path(output).expanduser()):
                info(f"wrote {written}")
            return
        sys.stdout.write(as_text(files))
        sys.stdout.flush()
