"""`Engine.classify_failure` and `parse_startup` for an engine whose module keeps them as plain functions.

vLLM's (`vllm_failures`, `vllm_startup`) and MLX LM's readers are functions their tests call on real logs;
the engine object hands them on instead of wrapping each in a method of its own.
"""

from __future__ import annotations

from collections.abc import Callable

from llmhost.engines.base import FailureCause, StartupReport


class LogReaders:
    """`Engine.classify_failure` and `parse_startup` for an engine whose module keeps them as functions
    (vLLM's and MLX LM's: their tests call the functions on real logs)."""

    def __init__(
        self, classify: Callable[[str], FailureCause | None], parse: Callable[[str], StartupReport]
    ) -> None:
        self._classify = classify
        self._parse = parse

    def classify_failure(self, log_tail: str) -> FailureCause | None:
        return self._classify(log_tail)

    def parse_startup(self, log_text: str) -> StartupReport:
        return self._parse(log_text)
