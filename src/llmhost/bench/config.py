"""What one benchmark run is given: target, workload, SLOs, limits, the roofline, progress sink."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from llmhost.bench.models import (
    RequestRecord,
    Roofline,
    Target,
    Workload,
)
from llmhost.bench.workload import FileWorkload, SyntheticWorkload
from llmhost.hardware.models import Hardware


class ProgressSink(Protocol):
    def phase(self, name: str, total: int | None) -> None: ...

    def record(self, record: RequestRecord) -> None: ...


class NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def record(self, record: RequestRecord) -> None:
        pass


@dataclass
class BenchConfig:
    target: Target
    workload: Workload
    api_key: str | None = None
    slos: dict[str, float] = field(default_factory=dict)
    sweep_max_concurrency: int = 256
    read_timeout_s: float = 600.0
    hardware: Hardware | None = None
    roofline: Callable[[float | None, int], Roofline | None] | None = None
    file_workload: FileWorkload | None = None
    synthetic: SyntheticWorkload | None = None
    tokenizer_is_served: bool = False  # the tokenizer is the deployment's own checkpoint's
