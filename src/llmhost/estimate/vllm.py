"""vLLM's memory arithmetic, reproduced without a GPU.

vLLM (vllm/v1/worker/gpu_worker.py `determine_available_memory`):
    requested  = total_memory x gpu_memory_utilization            (a share of TOTAL, not free, memory)
    kv_cache   = requested - weights - activation_peak - non_torch - cuda_graphs
The KV pool is cut into blocks of 16 tokens (vllm/v1/core/kv_cache_utils.py); a request of length L
needs `vllm_request_kv_bytes(L)`; start-up fails with "max seq len ... larger than the available KV
cache memory" when one request of `max_model_len` does not fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmhost.bisection import last_true
from llmhost.estimate import overheads as oh
from llmhost.estimate.kv import KVLayout, kv_layout, vllm_request_kv_bytes
from llmhost.estimate.weights import WeightsLayout
from llmhost.models.spec import ModelSpec


@dataclass(frozen=True)
class VllmSettings:
    gpu_memory_utilization: float
    max_num_seqs: int
    max_num_batched_tokens: int
    tensor_parallel_size: int = 1
    kv_cache_dtype: str = "bf16"
    enforce_eager: bool = False
    hybrid_kv_cache_manager: bool = True
    pipeline_parallel_size: int = 1


@dataclass(frozen=True)
class VllmMemory:
    """One rank's memory as vLLM will lay it out."""

    total_bytes: int
    requested_bytes: int
    weights_bytes: int
    activation_bytes: int
    cudagraph_bytes: int
    non_torch_bytes: int
    context_bytes: int
    kv_cache_bytes: int
    kv: KVLayout
    max_num_batched_tokens: int
    hybrid_kv_cache_manager: bool = True

    def request_bytes(self, tokens: int) -> int:
        return vllm_request_kv_bytes(
            self.kv, tokens, self.max_num_batched_tokens, hybrid_manager=self.hybrid_kv_cache_manager
        )

    def max_concurrency(self, tokens: int) -> int:
        need = self.request_bytes(tokens)
        return 0 if need <= 0 or self.kv_cache_bytes <= 0 else self.kv_cache_bytes // need

    def max_context(self, limit: int) -> int:
        """Largest length (multiple of 16, <= limit) of which one request fits: vLLM's own binary search."""
        if self.kv_cache_bytes <= 0 or self.request_bytes(16) > self.kv_cache_bytes:
            return 0
        hi = max(limit, 16)
        if self.request_bytes(hi) <= self.kv_cache_bytes:
            return hi
        return last_true(
            lambda n: self.request_bytes(n) <= self.kv_cache_bytes, 16, hi, step=16, aligned=True
        )


def default_max_num_batched_tokens(total_memory_bytes: int, gpu_name: str) -> int:
    if total_memory_bytes >= oh.VLLM_LARGE_GPU_BYTES and "a100" not in gpu_name.lower():
        return oh.VLLM_LARGE_GPU_MNBT
    return oh.VLLM_SMALL_GPU_MNBT


def ffn_width(spec: ModelSpec) -> int:
    """Intermediate width one token goes through per layer (MoE: the active experts together)."""
    dense = spec.intermediate_size or 0
    if spec.moe is not None:
        per_expert = spec.moe.moe_intermediate_size or dense
        active = per_expert * (spec.moe.num_experts_per_tok + spec.moe.num_shared_experts)
        return max(active, dense)
    if dense:
        return dense
    # No config value: recover it from the per-layer parameter count of a gated MLP.
    att = spec.attention
    h = spec.hidden_size
    attn = h * (
        att.num_attention_heads * att.head_dim_k * 2 + 2 * max(att.num_kv_heads, default=0) * att.head_dim_k
    )
    per_layer = (spec.layer_parameters[0] if spec.layer_parameters else 0) - attn
    return max(per_layer // (3 * h), 4 * h) if per_layer > 0 else 4 * h


def activation_peak_bytes(spec: ModelSpec, settings: VllmSettings, act_bytes: int = 2) -> int:
    """PyTorch activation peak of vLLM's profile run (one rank).

    The larger of two phases:
    - the forward pass over `max_num_batched_tokens` tokens: per token 4 hidden-size tensors plus 3x the
      TP-sharded MLP width (gate/up output and activation output); for MoE the fused-MoE caches hold
      `top_k x (3 x expert width / tp + hidden)` per token. Fitted on vLLM 0.19 records whose vocabulary is
      small enough for the forward pass to dominate: CodeLlama-7B 0.77 GiB (predicted 0.77),
      Granite-3.1-8B 0.85 (0.83), Mixtral-8x7B TP2 1.21 (1.19);
    - the sampler dry run over `max_num_seqs` requests: `VLLM_SAMPLER_BYTES_PER_LOGIT` per vocabulary
      entry (Llama-3.1-8B with 1024 sequences: 1.89 GiB measured and predicted).
    """
    tp = settings.tensor_parallel_size
    h = spec.hidden_size
    if spec.moe is not None:
        expert = spec.moe.moe_intermediate_size or spec.intermediate_size or 4 * h
        routed = spec.moe.num_experts_per_tok * (3 * expert // tp + h)
        shared = spec.moe.num_shared_experts * 3 * expert // tp
        per_token = 4 * h + routed + shared
    else:
        per_token = 4 * h + 3 * ffn_width(spec) // tp
    forward = settings.max_num_batched_tokens * per_token * act_bytes
    requests = min(settings.max_num_seqs, settings.max_num_batched_tokens)
    sampler = round(requests * spec.vocab_size * oh.VLLM_SAMPLER_BYTES_PER_LOGIT)
    return max(forward, sampler)


def cudagraph_bytes(spec: ModelSpec, settings: VllmSettings) -> int:
    if settings.enforce_eager:
        return 0
    layers = math.ceil(spec.attention.num_layers / max(settings.pipeline_parallel_size, 1))
    return oh.VLLM_CUDAGRAPH_BASE_BYTES + layers * oh.VLLM_CUDAGRAPH_PER_LAYER_BYTES


def rank_weights_bytes(layout: WeightsLayout, tp: int, pp: int = 1) -> int:
    """Weights on the fullest rank: every matrix is sharded over TP (embeddings and lm_head by
    vocabulary); pipeline stages take `ceil(layers / pp)` blocks each, the first also the embeddings
    and the last the output head."""
    if pp <= 1:
        return math.ceil(layout.total_bytes / tp)
    per_stage = math.ceil(layout.num_layers / pp)
    blocks = sorted(layout.layer_bytes, reverse=True)[:per_stage]
    ends = max(layout.embedding_bytes, layout.output_bytes + layout.other_bytes)
    return math.ceil((sum(blocks) + ends) / tp)


def _stage_kv(kv: KVLayout, layers: int, pp: int) -> KVLayout:
    """The KV layout of one pipeline stage (its share of the layers)."""
    if pp <= 1 or layers <= 0:
        return kv
    share = math.ceil(layers / pp) / layers
    return KVLayout(
        full_bytes_per_token=math.ceil(kv.full_bytes_per_token * share),
        sliding_bytes_per_token=math.ceil(kv.sliding_bytes_per_token * share),
        sliding_window=kv.sliding_window,
        recurrent_bytes_per_seq=math.ceil(kv.recurrent_bytes_per_seq * share),
        full_layers=math.ceil(kv.full_layers * share),
        sliding_layers=math.ceil(kv.sliding_layers * share),
    )


def vllm_gpu_memory(
    spec: ModelSpec, layout: WeightsLayout, settings: VllmSettings, total_memory_bytes: int
) -> VllmMemory:
    tp = settings.tensor_parallel_size
    pp = settings.pipeline_parallel_size
    requested = int(total_memory_bytes * settings.gpu_memory_utilization)
    weights = rank_weights_bytes(layout, tp, pp)
    activation = activation_peak_bytes(spec, settings)
    graphs = cudagraph_bytes(spec, settings)
    non_torch = oh.VLLM_NON_TORCH_BYTES + (oh.VLLM_NON_TORCH_TP_EXTRA_BYTES if tp * pp > 1 else 0)
    # CUDA graphs are captured after the KV cache is allocated, outside the requested budget.
    kv_bytes = requested - weights - activation - non_torch
    return VllmMemory(
        total_bytes=total_memory_bytes,
        requested_bytes=requested,
        weights_bytes=weights,
        activation_bytes=activation,
        cudagraph_bytes=graphs,
        non_torch_bytes=non_torch,
        context_bytes=oh.VLLM_CUDA_CONTEXT_BYTES,
        kv_cache_bytes=kv_bytes,  # negative: weights and activations alone exceed the budget
        kv=_stage_kv(
            kv_layout(spec, settings.kv_cache_dtype, engine="vllm", tp=tp), spec.attention.num_layers, pp
        ),
        max_num_batched_tokens=settings.max_num_batched_tokens,
        hybrid_kv_cache_manager=settings.hybrid_kv_cache_manager,
    )


def max_gpu_memory_utilization(total_bytes: int, free_bytes: int, outside_budget_bytes: int = 0) -> float:
    """Largest utilization that starts and runs given what other processes hold.

    vLLM refuses to start when free memory (after its own CUDA context) is below
    `total x gpu_memory_utilization`; CUDA graphs (`outside_budget_bytes`) need room on top.
    Rounded down to 0.01.
    """
    if total_bytes <= 0:
        return 0.0
    usable = free_bytes - oh.VLLM_CUDA_CONTEXT_BYTES - outside_budget_bytes
    return max(math.floor(usable / total_bytes * 100) / 100, 0.0)


@dataclass(frozen=True)
class VllmCpuMemory:
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    runtime_bytes: int
    kv: KVLayout
    max_num_batched_tokens: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes + self.runtime_bytes

    def request_bytes(self, tokens: int) -> int:
        return vllm_request_kv_bytes(self.kv, tokens, self.max_num_batched_tokens)


def vllm_cpu_memory(
    spec: ModelSpec, layout: WeightsLayout, settings: VllmSettings, kv_space_bytes: int
) -> VllmCpuMemory:
    """vLLM's CPU backend: the KV pool is exactly VLLM_CPU_KVCACHE_SPACE (GiB) of RAM."""
    return VllmCpuMemory(
        weights_bytes=layout.total_bytes,
        kv_cache_bytes=kv_space_bytes,
        activation_bytes=activation_peak_bytes(spec, settings),
        runtime_bytes=oh.VLLM_CPU_RUNTIME_BYTES,
        kv=kv_layout(spec, settings.kv_cache_dtype, engine="vllm", tp=1),
        max_num_batched_tokens=settings.max_num_batched_tokens,
    )
