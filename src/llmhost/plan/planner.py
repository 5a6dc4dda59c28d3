"""`make_plan`: every engine x quantization x parallelism x context the hardware allows, ranked.

Deterministic: a `ModelSpec`, a `Hardware` and a `PlanRequest` in, a `Plan` out (pure unless the caller
passes compute probes, which ask the installed llama.cpp for its compute buffer).
Policy (docs/planning.md): candidates that fit the requested context and concurrency come first;
then, by goal,
- quality (default): launchable as is, at least ~3.5-bit quality, everything on the accelerator,
  highest-precision quantization, vLLM, then MLX LM (Apple Silicon), before llama.cpp, fewest GPUs;
- latency: the same gates, then the fastest single-stream decode;
- throughput: the same gates, vLLM first, then the most concurrent sequences at the context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llmhost.engine_ids import LLAMACPP, MLX, VLLM
from llmhost.errors import UsageError
from llmhost.estimate.llamacpp import ComputeProbe
from llmhost.estimate.weights import normalize_gguf_tag, own_quantization
from llmhost.hardware.models import Hardware
from llmhost.models.spec import ModelSpec, QuantizedVariant
from llmhost.plan.advice import advise
from llmhost.plan.common import Target
from llmhost.plan.hardware_view import vllm_cpu_supported, vllm_gpus
from llmhost.plan.llamacpp_candidates import llamacpp_candidate, llamacpp_quants
from llmhost.plan.mlx_candidates import mlx_candidates
from llmhost.plan.models import Candidate, Plan, PlanModel, PlanRequest
from llmhost.plan.ranking import launchable, sort_key, why_chosen
from llmhost.plan.request import requested_quant, validate_request
from llmhost.plan.vllm_candidates import (
    planned_vllm_version,
    tp_sizes,
    vllm_cpu_candidate,
    vllm_gpu_candidate,
    vllm_quants,
)


def _best_siblings(spec: ModelSpec, siblings: Sequence[QuantizedVariant]) -> dict[str, str]:
    """The most downloaded pre-quantized sibling per method (awq, gptq, fp8, gguf)."""
    best: dict[str, QuantizedVariant] = {}
    own = own_quantization(spec)
    for sib in siblings:
        method = sib.method
        if method not in ("awq", "gptq", "fp8", "gguf") or method == own:
            continue
        current = best.get(method)
        if current is None or (sib.downloads or 0) > (current.downloads or 0):
            best[method] = sib
    return {m: v.repo_id for m, v in sorted(best.items())}


def _all_candidates(
    spec: ModelSpec,
    hardware: Hardware,
    request: PlanRequest,
    target: Target,
    siblings: Sequence[QuantizedVariant] = (),
    compute_probes: Mapping[str, ComputeProbe] | None = None,
) -> list[Candidate]:
    quant = requested_quant(spec, request)
    cands: list[Candidate] = []
    found = _best_siblings(spec, siblings)
    if request.engine in (None, VLLM):
        gpus = vllm_gpus(hardware)
        if gpus:
            gpus = sorted(gpus, key=lambda g: g.index)
            dp = request.data_parallel_size or 1
            for q in vllm_quants(spec, gpus):
                if quant is not None and q != quant:
                    continue
                tps = tp_sizes(spec, len(gpus) // dp, request)
                for tp in tps:
                    c = vllm_gpu_candidate(spec, hardware, request, target, q, tp, gpus, dp=dp)
                    if c is not None:
                        cands.append(c)
                if dp == 1 and request.tensor_parallel_size is None and len(gpus) > max(tps, default=1):
                    # More GPUs than tensor parallelism can use: split the layers instead.
                    c = vllm_gpu_candidate(spec, hardware, request, target, q, 1, gpus, pp=len(gpus))
                    if c is not None:
                        cands.append(c)
            for method, repo in found.items():
                if method == "gguf" or (quant is not None and method != quant):
                    continue
                if method == "fp8" and "fp8" in vllm_quants(spec, gpus):
                    continue  # online fp8 of the original is the same size
                for tp in tp_sizes(spec, len(gpus) // dp, request):
                    c = vllm_gpu_candidate(
                        spec, hardware, request, target, method, tp, gpus, source=repo, dp=dp
                    )
                    if c is not None:
                        cands.append(c)
        elif vllm_cpu_supported(hardware) and quant in (None, "bf16", "fp16"):
            c = vllm_cpu_candidate(spec, hardware, request, target)
            if c is not None:
                cands.append(c)
    if request.nodes > 1 and request.engine in (None, VLLM):
        from llmhost.plan.multinode import multinode_candidates

        cands.extend(multinode_candidates(spec, hardware, request, target, quant))
    if request.engine in (None, LLAMACPP):
        for q, gguf_file, needs_conversion in llamacpp_quants(spec):
            if quant is not None and normalize_gguf_tag(q) != normalize_gguf_tag(quant):
                continue
            probe = (compute_probes or {}).get(gguf_file) if gguf_file and not needs_conversion else None
            c = llamacpp_candidate(
                spec, hardware, request, target, q, gguf_file, needs_conversion, found.get("gguf"), probe
            )
            if c is not None:
                cands.append(c)
    if request.engine in (None, MLX):
        cands.extend(mlx_candidates(spec, hardware, request, target, quant))
    return cands


def make_plan(
    spec: ModelSpec,
    hardware: Hardware,
    request: PlanRequest,
    *,
    siblings: Sequence[QuantizedVariant] = (),
    compute_probes: Mapping[str, ComputeProbe] | None = None,
) -> Plan:
    """Rank every way to run `spec` on `hardware` for `request`. Deterministic, and pure but for
    `compute_probes`.

    `siblings`: pre-quantized repos of the same model (`llmhost.models.find_quantized_variants`); AWQ,
    GPTQ and FP8 ones become vLLM candidates, a GGUF one is named for the llama.cpp options.
    `compute_probes`: GGUF file -> the installed llama.cpp's own compute-buffer figure
    (`llmhost.engines.llamacpp_dryrun.probes_for`), used for llama.cpp candidates of that file.
    """
    target = validate_request(spec, request, hardware)
    if request.nodes != 1:
        from llmhost.plan.multinode import check_nodes

        check_nodes(request, hardware)
    quant = requested_quant(spec, request)
    if quant is not None and spec.gguf_variants and spec.quantization.method == "gguf":
        offered = {normalize_gguf_tag(v.tag) for v in spec.gguf_variants} | {own_quantization(spec)}
        if quant not in offered:
            raise UsageError(
                f"{spec.name} offers no {quant} file.", hint=f"Offered: {', '.join(sorted(offered))}."
            )
    candidates = _all_candidates(spec, hardware, request, target, siblings, compute_probes)
    n_layers = spec.attention.num_layers
    candidates.sort(key=lambda c: sort_key(c, request.goal, n_layers), reverse=True)
    if request.nodes > 1:
        from llmhost.plan.multinode import prefer_one_node

        candidates = prefer_one_node(candidates)
    # Only a candidate that launches as is can be chosen: `serve` runs the chosen one. One that would
    # need a GGUF conversion is reported through advice instead.
    chosen = 0 if candidates and candidates[0].fits and launchable(candidates[0]) else None
    if chosen is not None:
        candidates[0] = candidates[0].model_copy(
            update={
                "reasons_detail": [why_chosen(candidates[0], request.goal), *candidates[0].reasons_detail]
            }
        )
    advice = advise(
        spec,
        hardware,
        request,
        target,
        candidates,
        lambda r: _all_candidates(spec, hardware, r, target, siblings, compute_probes),
    )
    return Plan(
        model=PlanModel(
            ref=spec.ref,
            name=spec.name,
            architecture=spec.architecture,
            parameters=spec.parameters,
            active_parameters=spec.active_parameters,
            max_context=spec.max_context,
            quantization=own_quantization(spec),
            weights_bytes=spec.weights_bytes,
            has_chat_template=spec.has_chat_template,
        ),
        hardware=hardware,
        goal=request.goal,
        requested_context=request.context,
        requested_concurrency=request.concurrency,
        nodes=request.nodes,
        candidates=candidates,
        chosen=chosen,
        advice_detail=advice,
        **_vllm_version_fields(request, candidates),
    )


def _vllm_version_fields(request: PlanRequest, candidates: list[Candidate]) -> dict[str, str | None]:
    """Which vLLM release the GPU candidates were planned for (none planned: nothing to say)."""
    if not any(c.engine == VLLM and not c.engine_options.runs_on_cpu for c in candidates):
        return {}
    return {
        "vllm_version": str(planned_vllm_version(request)),
        "vllm_version_source": request.vllm_version_source
        or ("--vllm-version" if request.vllm_version else "newest modelled"),
    }
