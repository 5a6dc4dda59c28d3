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
    machine: Hardware | None = None,
) -> PlannedModel:
    """Plan `model` on this machine, or on the catalog machine `hardware` names (a what-if plan), or on
    `machine` as given (the gateway: this machine with only its memory budget free).

    `quantized_siblings`: also list the Hub's pre-quantized versions of a Hub model (one more request;
    `plan` shows them, `serve` does not need them). `warn` is told what could not be found out.
    """
    from llmhost.engines.llamacpp_dryrun import compute_probes
    from llmhost.hardware import hardware_for
    from llmhost.models import resolve
    from llmhost.plan import make_plan

    machine = machine or hardware_for(hardware)
    request = with_vllm_version(request)
    # The dry-run child starts before the model's header is parsed: the two overlap (docs/planning.md).
    with compute_probes(model, machine, what_if=bool(hardware)) as probes_for:
        spec = resolve(model, offline=True if offline else None)
        siblings = _quantized_siblings(spec, offline=offline, warn=warn) if quantized_siblings else []
        plan = make_plan(spec, machine, request, siblings=siblings, compute_probes=probes_for(spec))
    return PlannedModel(spec=spec, hardware=machine, plan=plan)


def with_vllm_version(request: PlanRequest) -> PlanRequest:
    """Plan vLLM for the release the user runs: --vllm-version, else the installed GPU build's version
    (`llmhost engines`), else the newest release llmhost models (the estimator's default)."""
    if request.vllm_version is not None:
        return request.model_copy(update={"vllm_version_source": "--vllm-version"})
    from llmhost.engines.vllm_env import find_runtime
    from llmhost.estimate.vllm_versions import parse_version

    runtime = find_runtime(device="gpu")
    if runtime is None:
        return request
    try:
        parse_version(runtime.version)
    except LlmhostError:
        return request  # LLMHOST_VLLM_PYTHON: a python whose version is not known without running it
    return request.model_copy(update={"vllm_version": runtime.version, "vllm_version_source": "installed"})


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
