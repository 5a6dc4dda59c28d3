"""`llmhost plan MODEL`: will this model run here, how, and how well (thin over `make_plan`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import typer

from llmhost.cli import _options as shared  # options several commands declare alike: `shared.X`
from llmhost.cli._options import text
from llmhost.cli._output import emit, literal, warn
from llmhost.engine_ids import Llamacpp, Mlx, Vllm, title
from llmhost.errors import NothingFitsError
from llmhost.plan.models import Candidate, Plan, PlanRequest
from llmhost.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

COMPACT_ROWS = 8


def _size(n: int) -> str:
    return format_bytes(n, ".2f", ".0f")


def _engine(c: Candidate) -> str:
    return title(c.engine) + (" CPU" if c.engine_options.cpu_build else "")


def _speed(c: Candidate) -> str:
    return "-" if c.decode_tokens_per_s is None else f"~{c.decode_tokens_per_s:.0f}"


def _layout(c: Candidate) -> str:
    return c.engine_options.layout(c)


def _count(n: int) -> str:
    """1.05M, 8.03B, 671.03B: a tiny model must not read as "0.00B parameters"."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def render_plan(console: Console, plan: Plan, *, show_all: bool = False) -> None:
    from rich.text import Text  # only the human view renders; `--json` never loads Rich's text and tables

    # Names, architectures, devices, reasons and advice quote the model's files: literal text throughout.
    _render_model(console, plan)
    chosen = plan.chosen_candidate
    if chosen is not None:
        _render_chosen(console, plan, chosen)
    elif any(c.fits for c in plan.candidates):
        console.print("\n[bold red]Nothing runs here as given[/bold red] (see the advice below).")
    else:
        console.print("\n[bold red]Nothing fits this machine.[/bold red]")
    _render_others(console, plan, show_all=show_all)
    for line in plan.advice:
        console.print(Text.assemble(("advice:", "yellow"), " ", literal(line)))


def _render_model(console: Console, plan: Plan) -> None:
    """The model's line, and a warning when it has no chat template."""
    from rich.text import Text

    model = plan.model
    active = (
        f" ({_count(model.active_parameters)} active)" if model.active_parameters != model.parameters else ""
    )
    console.print(
        Text.assemble(
            literal(model.name, "bold"),
            literal(
                f"  {model.architecture}, {_count(model.parameters)} parameters{active}"
                f", {model.quantization}, {_size(model.weights_bytes)}, max context {model.max_context}"
            ),
        )
    )
    if model.has_chat_template is False:
        # Said before the engine choice: every engine would fall back to a template of its own silently.
        console.print(
            literal(
                "base model, no chat template: use completions, or give a template "
                "(a profile's chat_template:, e.g. gemma)",
                "yellow",
            )
        )
    if plan.vllm_version is not None:
        console.print(
            literal(
                f"vLLM memory planned as vLLM {plan.vllm_version} does it ({plan.vllm_version_source})", "dim"
            )
        )


def _render_chosen(console: Console, plan: Plan, c: Candidate) -> None:
    """The chosen candidate: how it runs, why, its memory per device and its limits."""
    from rich.text import Text

    console.print(
        Text.assemble(
            (f"\nRun it with {_engine(c)}", "bold green"),
            literal(
                f" {c.quantization}, KV {c.kv_cache_dtype}, "
                f"context {c.context_length} x {c.concurrency} sequence(s), {_layout(c)}"
            ),
        )
    )
    if not plan.model.ref.startswith(c.model_source):  # a pre-quantized sibling repo
        console.print(literal(f"  from {c.model_source}"))
    for reason in c.reasons:
        console.print(literal(f"  - {reason}"))
    console.print(_memory_table(c))
    console.print(
        literal(
            f"KV cache per token: {c.kv_bytes_per_token / 1024:.1f} KiB   max context: {c.max_context}   "
            f"max concurrency at {c.context_length}: {c.max_concurrency}   decode: {_speed(c)} tok/s "
            "(bandwidth roofline)"
        )
    )


def _memory_table(c: Candidate) -> Table:
    from rich.table import Table

    table = Table(title="Memory per device", title_justify="left")
    for col in ("device", "weights", "KV cache", "compute", "overhead", "total", "available"):
        table.add_column(col, justify="left" if col == "device" else "right")
    for d in c.per_device:
        b = d.breakdown
        table.add_row(
            literal(d.device),
            _size(b.weights_bytes),
            _size(b.kv_cache_bytes),
            _size(b.compute_bytes),
            _size(b.overhead_bytes),
            _size(b.total_bytes),
            _size(d.capacity_bytes),
        )
    return table


def _render_others(console: Console, plan: Plan, *, show_all: bool) -> None:
    """The candidates not chosen, COMPACT_ROWS of them unless `show_all`."""
    from rich.table import Table

    others = [c for i, c in enumerate(plan.candidates) if i != plan.chosen]
    if not others:
        return
    shown = others if show_all else others[:COMPACT_ROWS]
    # The reasons column only where the terminal has room: an 80-column table must stay readable.
    wide = console.width >= 140
    table = Table(title="Other candidates", title_justify="left", box=None, pad_edge=False)
    columns = ["engine", "quant", "KV", "layout", "fits", "total", "max ctx", "max conc", "tok/s"]
    for col in [*columns, "why"] if wide else columns:
        table.add_column(col, no_wrap=col != "why", overflow="ellipsis")
    for c in shown:
        row = [
            _engine(c),
            c.quantization,
            c.kv_cache_dtype,
            _layout(c),
            "yes" if c.fits else "no",
            _size(c.memory.total_bytes),
            str(c.max_context),
            str(c.max_concurrency),
            _speed(c),
        ]
        if wide:
            row.append(c.reasons[0] if c.reasons else "")
        table.add_row(*(literal(cell) for cell in row))
    console.print(table)
    if len(others) > len(shown):
        console.print(f"({len(others) - len(shown)} more: `--all` shows them)")


# Options as declared once: the command's signature below is their order in --help.
ModelArg = Annotated[
    str,
    typer.Argument(
        help="org/name[@rev], org/name-GGUF:Q4_K_M, a GGUF URL, a local .gguf, a model dir or a config.json."
    ),
]
PlanContextOpt = Annotated[int | None, typer.Option("--context", help="Context length per sequence.")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", help="Sequences served at once.")]
PlanEngineOpt = Annotated[
    Literal[Vllm, Llamacpp, Mlx] | None,
    typer.Option("--engine", help="Only plan for this engine (mlx: Apple Silicon; forced here: Linux CPU)."),
]
QuantOpt = Annotated[
    str | None,
    typer.Option("--quant", help="Only this quantization: bf16, fp8, awq, Q4_K_M...", callback=text),
]
KvCacheDtypeOpt = Annotated[
    str | None,
    typer.Option("--kv-cache-dtype", help="f16, bf16, fp8 (vLLM), q8_0, q4_0... (llama.cpp).", callback=text),
]
GpuMemoryUtilizationOpt = Annotated[
    float | None,
    typer.Option("--gpu-memory-utilization", help="vLLM's share of TOTAL GPU memory (default 0.90)."),
]
TensorParallelSizeOpt = Annotated[
    int | None, typer.Option("--tensor-parallel-size", "--tp", help="vLLM tensor parallel size.")
]
NodesOpt = Annotated[
    int,
    typer.Option(
        "--nodes",
        help="Plan over this many nodes of the --hardware type (vLLM: TP inside, PP across).",
    ),
]
GoalOpt = Annotated[
    Literal["quality", "throughput", "latency"],
    typer.Option("--goal", help="Ranking policy: quality (default), throughput or latency."),
]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Use only cached model files.")]
ShowAllOpt = Annotated[bool, typer.Option("--all", help="List every candidate.")]


def register(app: typer.Typer) -> None:
    """Register `plan`."""
    app.command("plan")(plan)


def plan(
    model: ModelArg,
    context: PlanContextOpt = None,
    concurrency: ConcurrencyOpt = 1,
    engine: PlanEngineOpt = None,
    quant: QuantOpt = None,
    kv_cache_dtype: KvCacheDtypeOpt = None,
    hardware: shared.HardwareOpt = None,
    gpu_memory_utilization: GpuMemoryUtilizationOpt = None,
    tensor_parallel_size: TensorParallelSizeOpt = None,
    data_parallel_size: shared.DataParallelSizeOpt = None,
    enable_expert_parallel: shared.ExpertParallelOpt = False,
    max_num_seqs: shared.MaxNumSeqsOpt = None,
    max_num_batched_tokens: shared.MaxNumBatchedTokensOpt = None,
    vllm_version: shared.VllmVersionOpt = None,
    nodes: NodesOpt = 1,
    goal: GoalOpt = "quality",
    offline: OfflineOpt = False,
    json_output: shared.JsonOpt = False,
    show_all: ShowAllOpt = False,
) -> None:
    """Estimate memory and speed, and pick engine, quantization and layout for MODEL on this machine.

    Exit 0 when something fits, 2 on bad input, 3 when nothing fits.
    """
    from llmhost.app.plan import plan_model

    request = PlanRequest(
        context=context,
        concurrency=concurrency,
        goal=goal,
        engine=engine,
        quantization=quant,
        kv_cache_dtype=kv_cache_dtype,
        gpu_memory_utilization=gpu_memory_utilization,
        tensor_parallel_size=tensor_parallel_size,
        data_parallel_size=data_parallel_size,
        enable_expert_parallel=enable_expert_parallel,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        vllm_version=vllm_version,
        nodes=nodes,
    )
    planned = plan_model(
        model, request, hardware=hardware, offline=offline, quantized_siblings=True, warn=warn
    )
    spec, result = planned.spec, planned.plan
    emit(result, as_json=json_output, human=lambda console: render_plan(console, result, show_all=show_all))
    if result.chosen is None:
        hint = result.advice[0] if result.advice else "Try a smaller quantization or a shorter --context."
        raise NothingFitsError(
            f"Nothing fits: no way to run {spec.name} as given fits this hardware.", hint=hint
        )
