"""The plan stage: rank every way to run a model on a machine (`make_plan`, pure).

`make_plan` is imported on first use: the engines and the CLI import `llmhost.plan.models` at start-up
and should not pay for the estimator (and the `gguf` package) until a plan is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmhost.plan.models import Candidate, DeviceMemory, MemoryBreakdown, Plan, PlanModel, PlanRequest

if TYPE_CHECKING:
    from llmhost.plan.planner import make_plan

__all__ = ["Candidate", "DeviceMemory", "MemoryBreakdown", "Plan", "PlanModel", "PlanRequest", "make_plan"]


def __getattr__(name: str) -> Any:
    if name == "make_plan":
        from llmhost.plan.planner import make_plan

        return make_plan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
