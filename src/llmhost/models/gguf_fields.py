"""Typed, bounded reads of the GGUF metadata a `ModelSpec` is built from.

A GGUF header parses whatever its writer put in it: a block count stored as the string "abc", a float
or a bool where a count belongs, 10^8 layers, a per-layer array of the wrong length or of floats. Every
value `spec_from_gguf` uses is read through `GGUFFields`, which turns anything but a whole number in a
sane range into a `ModelError` naming the file, the key and the value.

The caps are far above any released model and far below what would make the per-layer tables, the
estimator or the planner slow or large; each says why its number.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from llmhost.errors import ModelError

if TYPE_CHECKING:
    from llmhost.models.gguf_header import GGUFHeader

# Widest residual streams released: ~25,600 (and 16,384 for Llama-3.1-405B).
MAX_EMBEDDING = 1 << 20
# Attention heads per layer: at most 128 in released models.
MAX_HEADS = 1 << 16
# Per-head, latent (MLA kv_lora_rank) and rope dimensions: at most 576 in released models.
MAX_HEAD_DIM = 1 << 16
# Trained context: the longest released is 10M tokens (Llama 4 Scout).
MAX_CONTEXT = 1 << 30
# Vocabularies: at most ~262k tokens.
MAX_VOCAB = 1 << 24
# Routed experts: at most 512 (Qwen3-Next).
MAX_EXPERTS = 1 << 16
# Feed-forward widths and recurrent (SSM / short-conv) sizes: at most ~100k in released models.
MAX_WIDTH = 1 << 24
# general.architecture becomes part of every key and is shown to the user: llama.cpp's names are short
# identifiers ("llama", "gpt-oss", "qwen3moe", "t5encoder").
_ARCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HINT = "Re-download it or pick another file (corrupt or not a model file?)."
_SHOWN = 40  # characters of a bad value quoted in an error


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class GGUFFields:
    """The metadata of a GGUF's first header, read as `label` (the file the user named)."""

    def __init__(self, header: GGUFHeader, label: str) -> None:
        self.label = label
        self.fields = header.fields
        arch = header.fields.get("general.architecture")
        if arch is None:
            raise ModelError(f"{label}: GGUF header has no general.architecture.", hint=_HINT)
        if not isinstance(arch, str) or not _ARCH_RE.fullmatch(arch):
            raise ModelError(
                f"{label}: general.architecture is {_shown(arch)}, not an architecture name.", hint=_HINT
            )
        self.arch = arch

    def key(self, name: str) -> str:
        return f"{self.arch}.{name}"

    def raw(self, name: str) -> Any:
        return self.fields.get(self.key(name))

    def _check(self, key: str, value: Any, low: int, high: int, what: str) -> int:
        if not _is_int(value):
            raise ModelError(f"{self.label}: {key} is {_shown(value)}, not a whole number.", hint=_HINT)
        if value < low:
            raise ModelError(f"{self.label}: {key} is {value}, less than {low}.", hint=_HINT)
        if value > high:
            raise ModelError(
                f"{self.label}: {key} is {value}, more than the {high} {what} llmhost accepts "
                "(corrupt file?).",
                hint=_HINT,
            )
        return int(value)

    def count(self, name: str, *, high: int, what: str, low: int = 0) -> int | None:
        """`arch.name` as a whole number in [low, high]; None when absent."""
        value = self.raw(name)
        return None if value is None else self._check(self.key(name), value, low, high, what)

    def required(self, name: str, *, high: int, what: str, low: int = 1) -> int:
        value = self.count(name, high=high, what=what, low=low)
        if value is None:
            raise ModelError(f"{self.label}: GGUF header lacks {self.key(name)}.", hint=_HINT)
        return value

    def per_layer(self, name: str, n_layers: int, *, high: int, what: str) -> list[int] | None:
        """`arch.name` as one whole number per layer: a scalar applies to every layer, an array must
        have one entry per layer. None when absent."""
        value = self.raw(name)
        key = self.key(name)
        if value is None:
            return None
        if not isinstance(value, list):
            return [self._check(key, value, 0, high, what)] * n_layers
        if len(value) != n_layers:
            raise ModelError(
                f"{self.label}: {key} has {len(value)} entries for {n_layers} layers.", hint=_HINT
            )
        return [self._check(f"{key}[{i}]", v, 0, high, what) for i, v in enumerate(value)]
