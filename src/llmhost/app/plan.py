"""Plan a model: resolve it, read the hardware, ask the installed llama.cpp, and run the planner.

The one place "resolve -> compute probes -> make_plan" is written; `plan`, `serve` (and everything
built on serve: export, the gateway) plan through it, so a model is planned the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmhost.errors import LlmhostError
from llmhost.hardware.models import Hardware
from llmhost.models.spec import ModelSpec, QuantizedVariant
from llmhost.plan.models import Plan, PlanRequest


@dataclass(frozen=True)
class PlannedModel:
    spec: ModelSpec
    hardware: Hardware
    plan: Plan


def plan_model(
    model: str,
    request: PlanRequest,
    *,
    hardware: str | None = None,
    offline: bool = False,
    quantized_siblings: bool = False,
    warn: Callable[[str], None] | None = None,
) -> PlannedModel:
    """Plan `model` on this machine, or on the catalog machine `hardware` names (a what-if plan).

    `quantized_siblings`: also list the Hub's pre-quantized versions of a Hub model (one more request;
    `plan` shows them, `serve` does not need them). `warn` is told what could not be found out.
    """
    from llmhost.engines.llamacpp_dryrun import compute_probes
    from llmhost.hardware import hardware_for
    from llmhost.models import resolve
    from llmhost.plan import make_plan

    machine = hardware_for(hardware)
    # The dry-run child starts before the model's header is parsed: the two overlap (docs/planning.md).
    with compute_probes(model, machine, what_if=bool(hardware)) as probes_for:
        spec = resolve(model, offline=True if offline else None)
        siblings = _quantized_siblings(spec, offline=offline, warn=warn) if quantized_siblings else []
        plan = make_plan(spec, machine, request, siblings=siblings, compute_probes=probes_for(spec))
    return PlannedModel(spec=spec, hardware=machine, plan=plan)


def _quantized_siblings(
    spec: ModelSpec, *, offline: bool, warn: Callable[[str], None] | None
) -> list[QuantizedVariant]:
    """Pre-quantized repos of a Hub model (its model tree); none offline or when the Hub cannot say."""
    if offline or spec.kind != "hf_repo" or not spec.repo_id:
        return []
    from llmhost.models import find_quantized_variants

    try:
        return find_quantized_variants(spec.repo_id)
    except LlmhostError as exc:
        if warn is not None:
            warn(f"could not list pre-quantized versions of {spec.repo_id}: {exc}")
        return []
