"""`llmhost export TARGET (NAME | MODEL)`: what runs the same plan elsewhere.

Thin: parse the options into an `ExportCommand`, run it with `llmhost.app.export.run_export`, then say
what was written or print the files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from llmhost.cli import _options as shared  # options several commands declare alike: `shared.X`
from llmhost.cli._options import text
from llmhost.cli._output import info, literal, stderr, warn

TargetArg = Annotated[
    str,
    typer.Argument(
        help="systemd, compose, kubernetes, kserve, kserve-llm, ray-serve, litellm or vllm-cluster.",
        callback=text,
    ),
]
RefsArg = Annotated[
    list[str],
    typer.Argument(
        help="A deployment NAME (see `llmhost ps`) or a MODEL as `serve` takes it; litellm takes several.",
        callback=text,
    ),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="Write the files into this directory instead of stdout.",
        metavar="<dir>",
        callback=text,
    ),
]
# Flags serve has too, with export's own help (Export*: not serve's options, which say other things).
ExportQuantOpt = Annotated[
    str | None, typer.Option("--quant", help="Quantization (as serve).", callback=text)
]
ExportConcurrencyOpt = Annotated[int | None, typer.Option("--concurrency", help="Concurrent requests.")]
ExportPortOpt = Annotated[
    int | None, typer.Option("--port", help="Port the service listens on (default 8000).")
]
ExportNameOpt = Annotated[str | None, typer.Option("--name", help="Deployment name.", callback=text)]
NodesOpt = Annotated[
    int | None,
    typer.Option("--nodes", help="Plan over this many nodes of the --hardware type (as plan)."),
]
ExportTrustRemoteCodeOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow the model's own code (vLLM).")
]
AuthOpt = Annotated[
    bool, typer.Option("--auth", help="Require an API key even on loopback (always off loopback).")
]
ScopeOpt = Annotated[str, typer.Option("--scope", help="systemd: a user or a system unit.", callback=text)]
UserOpt = Annotated[
    str | None,
    typer.Option(
        "--user", help="systemd --scope system: the account it runs as (default: you).", callback=text
    ),
]
InstallOpt = Annotated[
    bool, typer.Option("--install", help="systemd: write the unit where systemd reads it.")
]
FallbackOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--fallback",
        help="litellm: A=B, try B when A fails (deployment or model names; repeatable).",
        callback=text,
    ),
]
MaxReplicasOpt = Annotated[int, typer.Option("--max-replicas", help="ray-serve: autoscaling upper bound.")]


def register(app: typer.Typer) -> None:
    """Register `export`."""
    app.command("export")(export)


def export(
    target: TargetArg,
    refs: RefsArg,
    output: OutputOpt = None,
    engine: shared.EngineOpt = None,
    quant: ExportQuantOpt = None,
    context: shared.ContextOpt = None,
    concurrency: ExportConcurrencyOpt = None,
    port: ExportPortOpt = None,
    host: shared.HostOpt = None,
    name: ExportNameOpt = None,
    hardware: shared.HardwareOpt = None,
    engine_bin: shared.EngineBinOpt = None,
    nodes: NodesOpt = None,
    data_parallel_size: shared.DataParallelSizeOpt = None,
    enable_expert_parallel: shared.ExpertParallelOpt = False,
    max_num_seqs: shared.MaxNumSeqsOpt = None,
    max_num_batched_tokens: shared.MaxNumBatchedTokensOpt = None,
    vllm_version: shared.VllmVersionOpt = None,
    trust_remote_code: ExportTrustRemoteCodeOpt = False,
    auth: AuthOpt = False,
    scope: ScopeOpt = "user",
    user: UserOpt = None,
    install: InstallOpt = False,
    fallback: FallbackOpt = None,
    max_replicas: MaxReplicasOpt = 1,
) -> None:
    """Write what runs the plan `serve` would run, on another platform: a systemd unit, a Compose
    file, Kubernetes manifests, a KServe InferenceService or LLMInferenceService, a Ray Serve LLM
    config or a LiteLLM proxy config. Keys are referenced (env file, Secret, os.environ/...), never
    written.

    Exit 0 when written; 2 on bad input or a plan the target cannot run; 3 when nothing fits;
    5 for an unknown deployment NAME.
    """
    from llmhost.app.export import ExportCommand, run_export
    from llmhost.export.render import as_text

    cmd = ExportCommand(
        target=target, refs=refs, output=Path(output) if output is not None else None, engine=engine,
        quant=quant, context=context, concurrency=concurrency, port=port, host=host, name=name,
        hardware=hardware, engine_bin=engine_bin, nodes=nodes, data_parallel_size=data_parallel_size,
        enable_expert_parallel=enable_expert_parallel, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens, vllm_version=vllm_version,
        trust_remote_code=trust_remote_code,
        auth=auth, scope=scope, user=user, install=install, fallback=fallback or [],
        max_replicas=max_replicas,
    )  # fmt: skip
    exported = run_export(cmd, warn=warn)
    if exported.written is None:
        sys.stdout.write(as_text(exported.files))
        sys.stdout.flush()
        return
    for written in exported.written:
        info(f"wrote {written}")
    for line in exported.systemctl:
        stderr.print(literal(line), soft_wrap=True)
