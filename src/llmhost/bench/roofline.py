"""The decode roofline: how fast one stream could decode if memory bandwidth were the only limit.

At batch 1 every decode step reads the active weights once plus the KV cache of the context, so
t_step >= (W_read + KV_bytes_per_token * context) / BW. The limit comes from the planner
(`llmhost.estimate.roofline.decode_roofline`, the same function `plan` uses for its speed figures);
MBU (model bandwidth utilisation, Databricks' definition) = measured per-stream decode rate / limit.
"""

from __future__ import annotations

from collections.abc import Callable

from llmhost.bench.models import Roofline
from llmhost.errors import LlmhostError
from llmhost.hardware.models import Hardware

RooflineFn = Callable[[float | None, int], Roofline | None]


def hardware_name(hw: Hardware) -> tuple[float | None, str]:
    """Bandwidth the planner's roofline uses (first GPU, else RAM) and a readable name."""
    if hw.gpus:
        gpu = hw.gpus[0]
        return gpu.memory_bandwidth_bytes_per_s, gpu.name
    return hw.cpu.memory_bandwidth_bytes_per_s, f"CPU {hw.cpu.model_name}"


def make_roofline(
    model_ref: str | None,
    hardware_spec: str | None,
    *,
    model_is_explicit: bool = True,
    warn: Callable[[str], None],
) -> tuple[RooflineFn | None, Hardware | None]:
    """Resolve the model and the hardware once; return a function of the measured rate.

    A wrong `--hardware` or `--model-ref` is the user's mistake and raises; a deployment's own model
    that cannot be resolved (offline, say) only costs the roofline, and `warn` is told why (the caller
    decides how a warning reaches the user: this stage never imports the CLI's console).
    """
    if not model_ref:
        warn("the roofline needs the model: pass --model-ref (a repo or GGUF) as well as --hardware.")
        return None, None
    from llmhost.hardware import hardware_for

    hw = hardware_for(hardware_spec)
    from llmhost.models import resolve

    try:
        spec = resolve(model_ref)
    except LlmhostError as exc:
        if model_is_explicit:
            raise
        warn(f"no roofline: {exc}")
        return None, hw
    bandwidth, hw_name = hardware_name(hw)
    if not bandwidth:
        warn(
            "no roofline: the hardware's memory bandwidth is unknown (pass --hardware NAME from the catalog)."
        )
        return None, hw
    from llmhost.estimate.roofline import decode_roofline

    def roofline(measured: float | None, context_tokens: int) -> Roofline | None:
        limit = decode_roofline(spec, hw, context_tokens)
        if not limit:
            return None
        return Roofline(
            hardware=hw_name,
            model_ref=model_ref,
            bandwidth_bytes_per_s=bandwidth,
            bytes_per_token=bandwidth / limit,
            decode_limit_tokens_per_s=limit,
            measured_tokens_per_s_per_stream=measured,
            mbu=measured / limit if measured else None,
            source=f"llmhost.estimate.roofline.decode_roofline at {context_tokens} tokens of context",
        )

    return roofline, hw
