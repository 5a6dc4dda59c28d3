"""The detect stage: what this machine has (`detect()`), or a machine from the catalog
(`llmhost.hardware.catalog.hardware_from_spec`). Both return the `Hardware` contract."""

from __future__ import annotations

from llmhost.hardware.detect import detect
from llmhost.hardware.models import CPU, GPU, GPUProcess, Hardware

__all__ = ["CPU", "GPU", "GPUProcess", "Hardware", "detect"]
