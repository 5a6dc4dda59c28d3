"""The detect stage: what this machine has (`detect()`), or a machine from the catalog
(`llmhost.hardware.catalog.hardware_from_spec`). Both return the `Hardware` contract."""

from __future__ import annotations

from llmhost.hardware.detect import detect
from llmhost.hardware.models import CPU, GPU, GPUProcess, Hardware

__all__ = ["CPU", "GPU", "GPUProcess", "Hardware", "detect", "hardware_for"]


def hardware_for(spec: str | None) -> Hardware:
    """This machine (`None`), or the catalog machine `spec` names (`h100-80gb:2`): what `--hardware`
    means in every command."""
    if spec:
        from llmhost.hardware.catalog import hardware_from_spec

        return hardware_from_spec(spec)
    return detect()
