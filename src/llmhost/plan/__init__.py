"""The plan stage: rank every way to run a model on a machine (`make_plan`, pure)."""

from llmhost.plan.models import Candidate, DeviceMemory, MemoryBreakdown, Plan, PlanModel, PlanRequest
from llmhost.plan.planner import make_plan

__all__ = ["Candidate", "DeviceMemory", "MemoryBreakdown", "Plan", "PlanModel", "PlanRequest", "make_plan"]
