"""A LiteLLM proxy config listing llmhost deployments, with fallbacks between them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmhost.errors import UsageError
from llmhost.export.common import dump_yaml, header
from llmhost.export.models import ExportFile, ExportSource


def _base_url(source: ExportSource) -> str:
    # A deployment bound to every interface is reached on loopback from the proxy's own host.
    host = "127.0.0.1" if source.host in ("0.0.0.0", "::") else source.host  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{source.port}/v1"


def parse_fallbacks(
    pairs: Sequence[str], names: Sequence[str], aliases: dict[str, str] | None = None
) -> list[dict[str, list[str]]]:
    """`a=b` (or `a=b,c`): when model a fails, LiteLLM tries b (then c). Each name is a served model
    name or (`aliases`) a deployment name, which stands for the model it serves."""
    aliases = aliases or {}
    out: dict[str, list[str]] = {}
    for pair in pairs:
        primary, sep, rest = pair.partition("=")
        targets = [aliases.get(t.strip(), t.strip()) for t in rest.split(",") if t.strip()]
        primary = aliases.get(primary.strip(), primary.strip())
        if not sep or not primary or not targets:
            raise UsageError(f"--fallback {pair!r} is not NAME=OTHER.", hint="Write it as --fallback a=b.")
        for name in [primary, *targets]:
            if name not in names:
                raise UsageError(
                    f"--fallback names {name!r}, which is not among the exported models.",
                    hint=f"Export it too, or use one of: {', '.join(names)}.",
                )
        out.setdefault(primary, []).extend(targets)
    return [{k: v} for k, v in out.items()]


def render_litellm(sources: Sequence[ExportSource], *, fallbacks: Sequence[str] = ()) -> list[ExportFile]:
    model_list: list[dict[str, Any]] = []
    for source in sources:
        params: dict[str, Any] = {
            # LiteLLM's OpenAI-compatible provider: "openai/<the id the engine serves>".
            "model": f"openai/{source.served_model_name}",
            "api_base": _base_url(source),
        }
        # Referenced, never inlined: LiteLLM reads `os.environ/NAME` from its own environment.
        params["api_key"] = f"os.environ/{source.api_key_env}" if source.auth else "none"
        model_list.append({"model_name": source.served_model_name, "litellm_params": params})
    names = [m["model_name"] for m in model_list]
    config: dict[str, Any] = {"model_list": model_list}
    rules = parse_fallbacks(fallbacks, names, {s.name: s.served_model_name for s in sources})
    if rules:
        config["router_settings"] = {"fallbacks": rules}
    first = sources[0]
    notes = "# Run: litellm --config litellm.yaml (clients then use the proxy's own master key)\n"
    text = header(first, "litellm") + notes + dump_yaml(config)
    return [ExportFile(filename="litellm.yaml", text=text)]
