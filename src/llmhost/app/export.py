"""`llmhost export` as a use case: an `ExportCommand` -> `run_export` -> the files, written or not.

The plan comes from the same `prepare()` as `serve --dry-run`: a running deployment's NAME is re-planned
with its model, engine, address and key handling; a MODEL takes serve's options. Nothing here prints:
warnings go to `warn`; the CLI says what was written, or prints the files.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from llmhost.app.serving import REQUEST_OPTIONS, ServeChoices
from llmhost.engines.registry import engine_flag
from llmhost.errors import UsageError

if TYPE_CHECKING:
    from llmhost.app.serve import ServeRequest
    from llmhost.export.models import ExportFile, ExportSource
    from llmhost.plan.models import Candidate
    from llmhost.supervise.state import Deployment

DEFAULT_PORT = 8000

# The command's options that are serve options too, in the order its command line repeats them.
SERVE_OPTIONS = (
    *REQUEST_OPTIONS,
    "nodes",
    "data_parallel_size",
    "enable_expert_parallel",
    "trust_remote_code",
)


class ExportCommand(ServeChoices):
    """What `llmhost export` was asked (the defaults are the CLI's)."""

    target: str
    refs: list[str]
    output: Path | None = Field(default=None, description="Write the files into this directory.")
    nodes: int | None = None
    data_parallel_size: int | None = None
    enable_expert_parallel: bool = False
    auth: bool = False
    scope: str = "user"
    user: str | None = None
    install: bool = False
    fallback: list[str] = Field(default_factory=list)
    max_replicas: int = 1

    def serve_options(self) -> dict[str, object]:
        """The serve options given (None: not given; a flag not set is not given)."""
        options: dict[str, object] = {key: getattr(self, key) for key in SERVE_OPTIONS}
        options["trust_remote_code"] = self.trust_remote_code or None
        options["enable_expert_parallel"] = self.enable_expert_parallel or None
        return options


@dataclass(frozen=True)
class Exported:
    """The files of an export; `written` where they went (None: they are for stdout)."""

    files: list[ExportFile]
    written: list[Path] | None = None
    systemctl: list[str] = field(default_factory=list)  # --install: how to start the unit


def run_export(cmd: ExportCommand, *, warn: Callable[[str], None] | None = None) -> Exported:
    """Check the command, plan every deployment, render the target's files and write them (-o,
    --install) or return them for stdout."""
    import getpass

    from llmhost.export import render

    check_command(cmd)
    options = cmd.serve_options()
    command = command_line(cmd)
    sources = [build_source(ref, options, auth=cmd.auth, command=command, warn=warn) for ref in cmd.refs]
    home = str(Path.home())
    files = render(
        cmd.target,
        sources,
        scope=cmd.scope,
        home=home,
        writable=writable_dirs(),
        user=cmd.user or getpass.getuser(),
        fallbacks=cmd.fallback,
        max_replicas=cmd.max_replicas,
    )
    if cmd.target in ("systemd", "compose") and cmd.output is not None:
        from llmhost.export.systemd import env_file_template

        files.append(env_file_template(sources[0], compose=cmd.target == "compose"))
    if cmd.install:
        from llmhost.export.systemd import systemctl_lines, unit_path

        scope: Literal["user", "system"] = "user" if cmd.scope == "user" else "system"
        written = write_files(files, Path(unit_path(sources[0], scope, home)).parent)
        return Exported(files, written, systemctl_lines(sources[0], scope, home))
    if cmd.output is not None:
        return Exported(files, write_files(files, cmd.output.expanduser()))
    return Exported(files)


def check_command(cmd: ExportCommand) -> None:
    """What can be refused before planning: a typo must not cost a model resolution."""
    from llmhost.export import TARGETS

    if cmd.target not in TARGETS:
        raise UsageError(
            f"Unknown export target {cmd.target!r}.", hint=f"Choose one of: {', '.join(TARGETS)}."
        )
    if cmd.install and cmd.target != "systemd":
        raise UsageError("--install is a systemd option.", hint="Drop --install, or export systemd.")
    if cmd.install and cmd.output is not None:
        raise UsageError("--install and -o both say where to write.", hint="Pass one of them.")
    if cmd.target != "litellm" and len(cmd.refs) > 1:
        raise UsageError(
            f"`llmhost export {cmd.target}` writes one deployment.", hint="Give one NAME or MODEL."
        )
    if cmd.name is not None and len(cmd.refs) > 1:
        raise UsageError("--name names one deployment.", hint="Drop --name when exporting several.")


def build_source(
    ref: str,
    options: dict[str, object],
    *,
    auth: bool,
    command: str,
    warn: Callable[[str], None] | None = None,
) -> ExportSource:
    """Plan one deployment the way `serve --dry-run` does and describe it for the renderers."""
    import secrets

    from llmhost import __version__
    from llmhost.app.serve import API_KEY_ENV, prepare
    from llmhost.export.models import ExportSource
    from llmhost.net import is_loopback

    request, recorded, auth = _serve_request(ref, options, auth=auth)
    if auth or not is_loopback(request.host):
        # prepare() decides auth from a key; the key itself is never rendered (exports reference the
        # env var), so a throwaway one stands in for the user's.
        request = request.model_copy(update={"api_key": secrets.token_urlsafe(24)})
    prepared = prepare(request, dry_run=True)
    dep, cand = prepared.deployment, prepared.candidate
    if recorded is not None and recorded.launch.argv != dep.launch.argv and warn is not None:
        warn(
            f"{recorded.name!r} runs a command the re-plan does not reproduce (it was started with options "
            "the state does not record): pass them to export (--context, --concurrency, --quant)."
        )
    return ExportSource(
        llmhost_version=__version__,
        name=dep.name,
        model=request.model,
        served_model_name=dep.served_model_name,
        candidate=cand,
        hardware=prepared.hardware,
        launch=dep.launch,
        host=dep.host,
        port=dep.port,
        auth=dep.auth,
        api_key_env=API_KEY_ENV,
        serve_args=_serve_args(request, dep, cand),
        llmhost_argv=[sys.executable, "-m", "llmhost"],
        command=command,
    )


def _serve_request(
    ref: str, options: dict[str, object], *, auth: bool
) -> tuple[ServeRequest, Deployment | None, bool]:
    """The serve request `ref` stands for: a recorded deployment's (options override) or a model's;
    (request, the recorded deployment if any, whether a key is required)."""
    from llmhost.app.serve import ServeRequest
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
            "engine": engine_flag(recorded.engine, recorded.runtime),
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
    return ServeRequest.model_validate({**fields, "model": ref}), recorded, auth


def _serve_args(request: ServeRequest, dep: Deployment, cand: Candidate) -> list[str]:
    """`llmhost serve` arguments that run the same plan: name, address and the plan's choices pinned."""
    args = [request.model, "--name", dep.name, "--host", request.host, "--port", str(dep.port)]
    args += ["--engine", engine_flag(dep.engine, dep.runtime)]
    args += ["--quant", cand.quantization, "--context", str(cand.context_length)]
    args += ["--concurrency", str(cand.concurrency)]
    # The re-plan on the node must keep the replicas (and the expert split) this plan has.
    args += cand.engine_options.replica_serve_args()
    if request.engine_bin:
        args += ["--engine-bin", request.engine_bin]
    if request.trust_remote_code:
        args.append("--trust-remote-code")
    return args


def command_line(cmd: ExportCommand) -> str:
    """The export command, for the files' header: how to write the same files again."""
    words = ["llmhost", "export", cmd.target, *cmd.refs]
    for key, value in cmd.serve_options().items():
        if value is True:
            words.append("--" + key.replace("_", "-"))
        elif value is not None:
            words += ["--" + key.replace("_", "-"), str(value)]
    if cmd.auth:
        words.append("--auth")
    if cmd.target == "systemd" and cmd.scope != "user":
        words += ["--scope", cmd.scope]
    for rule in cmd.fallback:
        words += ["--fallback", rule]
    return shlex.join(words)


def writable_dirs() -> list[str]:
    """What `serve` writes: llmhost's state and cache dirs and the Hugging Face cache."""
    import os

    from llmhost.cache import cache_dir
    from llmhost.supervise.paths import state_dir

    hf = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return [str(state_dir()), str(cache_dir()), hf]


def write_files(files: list[ExportFile], directory: Path) -> list[Path]:
    """Write `files` into `directory` (made if missing), each atomically; the paths written."""
    from llmhost.outputs import check_directory_target, make_directory, write_atomically

    check_directory_target("-o", directory)
    make_directory("-o", directory)
    written = []
    for f in files:

        def write(tmp: Path, text: str = f.text) -> None:
            tmp.write_text(text)

        written.append(write_atomically("-o", directory / f.filename, write, mode=f.mode))
    return written
