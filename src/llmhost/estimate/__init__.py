"""The estimate stage: pure functions from `ModelSpec` (+ engine settings) to bytes and tokens/s.

No I/O, no globals: weights per quantization, KV bytes per token per engine, vLLM's and llama.cpp's
memory layouts, and the bandwidth roofline for decode speed. See docs/estimator.md.
"""

from llmhost.estimate.dtypes import ggml_row_bytes, kv_bits_per_element, kv_row_bytes, normalize_kv_dtype
from llmhost.estimate.kv import (
    KVLayout,
    kv_bytes_per_token,
    kv_layout,
    llamacpp_kv_cells,
    vllm_request_kv_bytes,
)
from llmhost.estimate.llamacpp import (
    ComputeProbe,
    Device,
    DeviceBuffers,
    LlamaCppSettings,
    compute_buffer_bytes,
    llamacpp_memory,
    max_gpu_layers,
)
from llmhost.estimate.roofline import active_weight_fraction, decode_roofline
from llmhost.estimate.vllm import (
    VllmMemory,
    VllmSettings,
    activation_peak_bytes,
    max_gpu_memory_utilization,
    vllm_cpu_memory,
    vllm_gpu_memory,
)
from llmhost.estimate.weights import (
    WeightsLayout,
    own_quantization,
    quality_score,
    weights_bytes,
    weights_layout,
)

__all__ = [
    "ComputeProbe",
    "Device",
    "DeviceBuffers",
    "KVLayout",
    "LlamaCppSettings",
    "VllmMemory",
    "VllmSettings",
    "WeightsLayout",
    "activation_peak_bytes",
    "active_weight_fraction",
    "compute_buffer_bytes",
    "decode_roofline",
    "ggml_row_bytes",
    "kv_bits_per_element",
    "kv_bytes_per_token",
    "kv_layout",
    "kv_row_bytes",
    "llamacpp_kv_cells",
    "llamacpp_memory",
    "max_gpu_layers",
    "max_gpu_memory_utilization",
    "normalize_kv_dtype",
    "own_quantization",
    "quality_score",
    "vllm_cpu_memory",
    "vllm_gpu_memory",
    "vllm_request_kv_bytes",
    "weights_bytes",
    "weights_layout",
]
