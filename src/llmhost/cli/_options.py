"""Option aliases shared by commands, so the same flag means the same thing everywhere.

`text` is the callback every free-text option takes: `llmhost.inputs.check_text` where the value is
parsed, so `--host ''` or `--name $'x\\n'` is refused naming the option before any command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from llmhost.inputs import check_text


def text(ctx: typer.Context, param: typer.CallbackParam, value: str | list[str] | None) -> object:
    """Typer callback for a free-text option (or a repeated one): refuse what cannot be meant."""
    if value is None:
        return None
    option = param.opts[0] if param.opts else str(param.name)
    for item in [value] if isinstance(value, str) else value:
        check_text(option, item, help_command=ctx.command_path)
    return value


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON (the pydantic model) on stdout.")
]
HardwareOpt = Annotated[
    str | None,
    typer.Option(
        "--hardware",
        help="Plan for catalog hardware instead of this machine, e.g. h100-80gb or rtx-4090:2 "
        "(see `llmhost hw --list-catalog`), or for a GPU by its figures: "
        "gpu=SIZE,bw=BANDWIDTH[,count=N][,name=TEXT][,cc=X.Y][,ram=SIZE][,cpus=N], "
        "e.g. gpu=23.6GiB,bw=936GB/s,count=2 (SIZE: the total nvidia-smi shows).",
        callback=text,
    ),
]
MaxNumSeqsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-num-seqs", help="vLLM max_num_seqs, 1 or more (default: vLLM's for the GPU and version)."
    ),
]
MaxNumBatchedTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--max-num-batched-tokens",
        help="vLLM max_num_batched_tokens, 1 or more (default: vLLM's for the GPU and version).",
    ),
]
DataParallelSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--data-parallel-size",
        "--dp",
        help="vLLM data parallel size: engine replicas, each of TP GPUs with its own KV cache.",
    ),
]
ExpertParallelOpt = Annotated[
    bool,
    typer.Option(
        "--enable-expert-parallel",
        help="vLLM expert parallelism: MoE experts split whole over the TP x DP GPUs, not sliced.",
    ),
]
VllmVersionOpt = Annotated[
    str | None,
    typer.Option(
        "--vllm-version",
        help="Plan vLLM as this release (X.Y.Z) accounts for memory; default: the installed vLLM, else the "
        "newest release llmhost models.",
        callback=text,
    ),
]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="llamacpp (llama-server if installed, else llama-cpp-python), llama-server, llama-cpp-python, "
        "vllm or mlx (MLX LM: loopback only, no API key). Default: the plan's choice.",
        callback=text,
    ),
]
ContextOpt = Annotated[int | None, typer.Option("--context", help="Context length per request.")]
HostOpt = Annotated[
    str | None,
    typer.Option("--host", help="Bind address (default 127.0.0.1; others need an API key).", callback=text),
]
EngineBinOpt = Annotated[
    str | None, typer.Option("--engine-bin", help="Path of the llama-server binary.", callback=text)
]
