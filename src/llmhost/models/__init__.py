"""Resolve a model reference into a `ModelSpec` without downloading weights (see docs/models.md)."""

from __future__ import annotations

from llmhost.models.refs import ParsedRef, parse_ref
from llmhost.models.spec import ModelSpec, QuantizedVariant

__all__ = ["ModelSpec", "ParsedRef", "QuantizedVariant", "find_quantized_variants", "parse_ref", "resolve"]


def resolve(ref: str, *, offline: bool | None = None, revision: str | None = None) -> ModelSpec:
    """Read what a model is from its config/headers: a Hub id, `org/name-GGUF:TAG`, a URL or a path.

    `offline=None` follows HF_HUB_OFFLINE; True never touches the network (cache only).
    Raises `ModelError` (bad/missing/gated model, corrupt file) or `NetworkError` (Hub unreachable).
    """
    parsed = parse_ref(ref, revision=revision)
    if parsed.kind == "ollama":
        from llmhost.models.ollama import resolve_ollama

        return resolve_ollama(ref.strip())
    if parsed.kind == "local_path":
        from llmhost.models.local import resolve_local

        assert parsed.path is not None
        return resolve_local(parsed.path, ref)
    from llmhost.models.remote import resolve_remote

    return resolve_remote(parsed, offline=offline)


def find_quantized_variants(repo_id: str, *, offline: bool | None = None) -> list[QuantizedVariant]:
    """Hub repos that declare `repo_id` as their quantized base model (the Hub's model tree)."""
    from llmhost.models.remote import find_quantized_variants as _find

    return _find(repo_id, offline=offline)
