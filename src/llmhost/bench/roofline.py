"""The decode roofline: how fast one stream could decode if memory bandwidth were the only limit.

At batch 1 every decode step reads the active weights once plus the KV cache of the context, so
t_step >= (W_read + KV_bytes_per_token * context) / BW and the limit is 1 / t_step tokens per second.
MBU (model bandwidth utilisation, Databricks' definition) = measured per-stream decode rate / limit.
The planner's own roofline (`llmhost.estimate`) is used when it offers one; otherwise the same
formula is computed here from the `ModelSpec` and `Hardware` contracts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmhost.bench.models import Roofline
from llmhost.errors import LlmhostError
from llmhost.hardware.models import Hardware

RooflineFn = Callable[[float | None, int], Roofline | None]


def hardware_bandwidth(hw: Hardware) -> tuple[float | None, str]:
    gpus = [g for g in hw.gpus if g.memory_bandwidth_bytes_per_s]
    if gpus:
        # Tensor parallel splits the weights, so the ranks' bandwidths add up.
        return sum(g.memory_bandwidth_bytes_per_s or 0.0 for g in gpus), f"{len(gpus)}x {gpus[0].name}"
    if hw.cpu.memory_bandwidth_bytes_per_s:
        return hw.cpu.memory_bandwidth_bytes_per_s, f"CPU {hw.cpu.model_name}"
    return None, "unknown"


def bytes_per_token(spec: Any, context_tokens: int) -> float:
    """Active weight bytes (one embedding row, not the table) + KV read for `context_tokens`."""
    weights = float(spec.weights_bytes)
    if spec.parameters and spec.active_parameters and spec.active_parameters < spec.parameters:
        weights *= spec.active_parameters / spec.parameters
    weights -= float(spec.embedding_bytes)  # only one row of the input embedding is read per token
    kv_per_token = 0
    try:
        from llmhost.estimate.kv import kv_bytes_per_token

        kv_per_token = kv_bytes_per_token(spec, "f16")
    except (ImportError, LlmhostError, ValueError, TypeError):
        att = spec.attention
        kv_per_token = sum(2 * h * att.head_dim_k * 2 for h in att.num_kv_heads)
    return max(weights, 1.0) + kv_per_token * context_tokens


def make_roofline(
    model_ref: str | None, hardware_spec: str | None
) -> tuple[RooflineFn | None, Hardware | None]:
    """Resolve the model and the hardware once; return a function of the measured rate."""
    from llmhost.cli._output import warn

    if not model_ref:
        warn("the roofline needs the model: pass --model-ref (a repo or GGUF) as well as --hardware.")
        return None, None
    try:
        if hardware_spec:
            from llmhost.hardware.catalog import hardware_from_spec

            hw = hardware_from_spec(hardware_spec)
        else:
            from llmhost.hardware import detect

            hw = detect()
        from llmhost.models import resolve

        spec = resolve(model_ref)
    except LlmhostError as exc:
        warn(f"no roofline: {exc}")
        return None, None
    bandwidth, hw_name = hardware_bandwidth(hw)
    if bandwidth is None:
        warn(
            "no roofline: the hardware's memory bandwidth is unknown (pass --hardware NAME from the catalog)."
        )
        return None, hw

    def roofline(measured: float | None, context_tokens: int) -> Roofline:
        per_token = bytes_per_token(spec, context_tokens)
        limit = bandwidth / per_token
        return Roofline(
            hardware=hw_name,
            model_ref=model_ref,
            bandwidth_bytes_per_s=bandwidth,
            bytes_per_token=per_token,
            decode_limit_tokens_per_s=limit,
            measured_tokens_per_s_per_stream=measured,
            mbu=measured / limit if measured else None,
            source="llmhost.bench.roofline (active weights + f16 KV at the mean context) / bandwidth",
        )

    return roofline, hw
