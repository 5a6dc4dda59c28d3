"""`llmhost inspect MODEL`: what llmhost reads about a model (the ModelSpec), without downloading weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from llmhost.cli._options import JsonOpt
from llmhost.cli._output import emit, literal
from llmhost.models.spec import ModelSpec
from llmhost.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console

    from llmhost.models.ollama import StoreEntry


def _count(n: int) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _runs(kinds: list[str]) -> str:
    """Layer kinds, compressed: ["sliding"]*5 + ["full"] repeated 8 times -> "(sliding x5, full) x8"."""
    n = len(kinds)
    period = next((p for p in range(1, n + 1) if n % p == 0 and kinds == kinds[:p] * (n // p)), n)
    out: list[str] = []
    prev, run = None, 0
    for kind in [*kinds[:period], None]:
        if kind == prev:
            run += 1
            continue
        if prev is not None:
            out.append(prev if run == 1 else f"{prev} x{run}")
        prev, run = kind, 1
    text = ", ".join(out)
    if period < n:
        text = f"({text}) x{n // period}" if len(out) > 1 else f"{text} x{n // period}"
    return text if len(text) <= 100 else text[:97] + "..."


def render_spec(console: Console, spec: ModelSpec) -> None:
    from rich.table import Table

    att = spec.attention
    # Every value is literal: names, architectures and notes come from the model's own files.
    table = Table(
        title=literal(f"{spec.name}  ({spec.kind}: {spec.ref})"), show_header=False, title_justify="left"
    )
    table.add_column("field", style="bold")
    table.add_column("value")

    def row(field: str, value: str) -> None:
        table.add_row(field, literal(value))

    row("architecture", f"{spec.architecture} ({spec.model_type or '-'})")
    source = "tensor headers" if spec.parameters_source == "tensors" else "config.json (architecture)"
    row("parameters", f"{_count(spec.parameters)} total, {_count(spec.active_parameters)} active ({source})")
    row("weights", f"{_in_gib(spec.weights_bytes, '.2f')} ({spec.weights_bytes:,} bytes)")
    if spec.bytes_by_dtype:
        parts = ", ".join(f"{k} {_in_gib(v, '.2f')}" for k, v in sorted(spec.bytes_by_dtype.items()))
        row("by dtype", parts)
    q = spec.quantization
    if q.method != "none":
        detail = q.gguf_file_type or (f"{q.bits:g} bits" if q.bits else "")
        group = f", group {q.group_size}" if q.group_size else ""
        row("quantization", f"{q.method} {detail}{group}".strip())
    row("layers", f"{att.num_layers}: {_runs(list(att.layer_kinds))}")
    kv = sorted(set(att.num_kv_heads))
    row(
        "attention",
        f"{att.num_attention_heads} heads, KV heads {kv if len(kv) > 1 else kv[0]}, "
        f"head dim K {att.head_dim_k} / V {att.head_dim_v}",
    )
    if att.sliding_window:
        row("sliding window", f"{att.sliding_window} tokens")
    if att.kv_lora_rank:
        row("MLA latent", f"kv_lora_rank {att.kv_lora_rank} + rope {att.qk_rope_head_dim}")
    if att.recurrent_state_bytes_per_seq:
        row("recurrent state", f"{att.recurrent_state_bytes_per_seq / 2**20:.1f} MiB per sequence")
    if spec.moe:
        m = spec.moe
        row(
            "experts",
            f"{m.num_experts} routed, {m.num_experts_per_tok} per token, {m.num_shared_experts} shared",
        )
    row("context", f"{spec.max_context:,} tokens (trained)")
    row("vocabulary", f"{spec.vocab_size:,}" + ("  (tied embeddings)" if spec.tied_embeddings else ""))
    if spec.gguf_variants:
        row(
            "GGUF variants",
            ", ".join(f"{v.tag} {_in_gib(v.size_bytes, '.1f')}" for v in spec.gguf_variants),
        )
    if spec.kind in ("hf_repo", "gguf_repo", "gguf_url"):
        row("read", f"{spec.bytes_read:,} bytes over the network")
    for note in spec.notes:
        row("note", note)
    console.print(table)


def _in_gib(n: int, spec: str) -> str:
    return format_bytes(n, spec, units=("GiB",))


def _bytes(n: int) -> str:
    return format_bytes(n, ".2f", ".1f")


def render_ollama(console: Console, root: str, entries: list[StoreEntry]) -> None:
    from rich.table import Table

    # Names and errors come from files in the store: literal, never markup.
    table = Table(title=literal(f"Ollama store {root}"), title_justify="left")
    for column in ("name", "size", "quantization", "digest", "status"):
        table.add_column(column)
    for e in entries:
        size = "-" if e.size_bytes is None else _bytes(e.size_bytes)
        digest = e.digest.removeprefix("sha256:")[:12] if e.digest else "-"
        table.add_row(literal(e.name), size, literal(e.quantization or "-"), digest, literal(e.error or "ok"))
    console.print(table if entries else literal(f"Ollama store {root} holds no models."))


def register(app: typer.Typer) -> None:
    """Register `inspect`."""

    @app.command("inspect")
    def inspect(
        model: Annotated[
            str | None,
            typer.Argument(
                help="Hub id (org/name[@rev]), GGUF repo with tag (org/name-GGUF:Q4_K_M), .gguf URL, "
                "model directory, config.json, .gguf file, or ollama:NAME[:TAG]."
            ),
        ] = None,
        json_output: JsonOpt = False,
        offline: Annotated[
            bool, typer.Option("--offline", help="Use only the local cache (same as HF_HUB_OFFLINE=1).")
        ] = False,
        ollama: Annotated[
            bool,
            typer.Option(
                "--ollama", help="List the models in Ollama's local store ($OLLAMA_MODELS or its default)."
            ),
        ] = False,
    ) -> None:
        """Show what llmhost reads about a model: parameters, weights, attention/KV layout, quantization."""
        from llmhost.errors import UsageError

        if ollama:
            if model is not None:
                raise UsageError(
                    "--ollama lists the store and takes no MODEL.",
                    hint="Run `llmhost inspect --ollama`, or `llmhost inspect ollama:NAME` for one model.",
                )
            from llmhost.models.ollama import list_store

            root, entries = list_store()
            emit(
                {"store": str(root), "models": [e.as_dict() for e in entries]},
                as_json=json_output,
                human=lambda console: render_ollama(console, str(root), entries),
            )
            return
        if model is None:
            raise UsageError(
                "Missing MODEL.", hint="Run `llmhost inspect MODEL`, or `llmhost inspect --ollama`."
            )
        from llmhost.models import resolve

        spec = resolve(model, offline=True if offline else None)
        emit(spec, as_json=json_output, human=lambda console: render_spec(console, spec))
