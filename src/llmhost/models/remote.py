"""Hub repos, GGUF repos with a quant tag, GGUF URLs (first version: not wired yet)."""

from __future__ import annotations

from llmhost.errors import ModelError
from llmhost.models.refs import ParsedRef
from llmhost.models.spec import ModelSpec


def resolve_remote(parsed: ParsedRef, *, offline: bool | None = None) -> ModelSpec:
    raise ModelError(f"Remote references are not supported yet: {parsed.raw}.", hint="Pass a local path.")


def find_quantized_variants(repo_id: str, *, offline: bool | None = None) -> list[str]:
    return []
