"""`render(target, sources, ...)`: the one entry point; each target lives in its own module."""

from __future__ import annotations

from collections.abc import Sequence

from llmhost.errors import UsageError
from llmhost.export.models import ExportFile, ExportSource, Target

TARGETS: tuple[Target, ...] = (
    "systemd",
    "compose",
    "kubernetes",
    "kserve",
    "kserve-llm",
    "ray-serve",
    "litellm",
    "vllm-cluster",
)


def render(
    target: str,
    sources: Sequence[ExportSource],
    *,
    scope: str = "user",
    home: str = "~",
    writable: Sequence[str] = (),
    user: str | None = None,
    fallbacks: Sequence[str] = (),
    max_replicas: int = 1,
) -> list[ExportFile]:
    """The files that run `sources` on `target`. Only `litellm` takes more than one deployment."""
    if target not in TARGETS:
        raise UsageError(f"Unknown export target {target!r}.", hint=f"Choose one of: {', '.join(TARGETS)}.")
    if not sources:
        raise UsageError("Nothing to export.", hint="Give a deployment NAME or a MODEL.")
    if target == "litellm":
        from llmhost.export.litellm import render_litellm

        return render_litellm(sources, fallbacks=fallbacks)
    if fallbacks:
        raise UsageError("--fallback is a litellm option.", hint="Drop it, or export litellm.")
    if len(sources) > 1:
        raise UsageError(f"`llmhost export {target}` writes one deployment.", hint="Give one NAME or MODEL.")
    source = sources[0]
    if target == "systemd":
        from llmhost.export.systemd import render_systemd

        if scope not in ("user", "system"):
            raise UsageError(f"Unknown --scope {scope!r}.", hint="Use --scope user or --scope system.")
        return render_systemd(source, scope="user" if scope == "user" else "system", home=home,
                              writable=list(writable), user=user)  # fmt: skip
    if target == "compose":
        from llmhost.export.compose import render_compose

        return render_compose(source)
    if target == "kubernetes":
        from llmhost.export.kubernetes import render_kubernetes

        return render_kubernetes(source)
    if target == "kserve":
        from llmhost.export.kubernetes import render_kserve

        return render_kserve(source)
    if target == "kserve-llm":
        from llmhost.export.kubernetes import render_kserve_llm

        return render_kserve_llm(source)
    if target == "vllm-cluster":
        from llmhost.export.vllm_cluster import render_vllm_cluster

        return render_vllm_cluster(source)
    from llmhost.export.ray_serve import render_ray_serve

    if max_replicas < 1:
        raise UsageError("--max-replicas must be at least 1.", hint="Pass --max-replicas 1 or more.")
    return render_ray_serve(source, max_replicas=max_replicas)


def as_text(files: Sequence[ExportFile]) -> str:
    """Every file for stdout, each after a `# --- NAME` line when there is more than one."""
    if len(files) == 1:
        return files[0].text
    return "".join(f"# --- {f.filename}\n{f.text}" for f in files)
