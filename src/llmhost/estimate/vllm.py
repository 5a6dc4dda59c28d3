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
from typing import Literal

from llmhost.bisection import last_true
from llmhost.engine_ids import VLLM
from llmhost.estimate import overheads as oh
from llmhost.estimate.kv import KVLayout, kv_layout, vllm_request_kv_bytes
from llmhost.estimate.vllm_versions import Accounting
from llmhost.estimate.vllm_workspace import VLLM_FUSED_MOE_CHUNK_SIZE, moe_quant_workspace_bytes
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
    # Which vLLM release's memory accounting (estimate/vllm_versions.py); "v1" is 0.12-0.19.
    accounting: Accounting = "v1"
    # NCCL's NVLink-SHARP buffers on NVSwitch systems (H100/H200/B200 SXM): the large TP non-torch term.
    nvswitch: bool = True
    # --data-parallel-size: engine replicas, each with its own scheduler and KV pool; only the MoE
    # layers are shared across them (`moe_sharding`). --enable-expert-parallel: MoE experts are split
    # whole over the TP x DP ranks instead of being tensor-sliced.
    data_parallel_size: int = 1
    enable_expert_parallel: bool = False


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
    accounting: Accounting = "v1"

    @property
    def cudagraphs_in_budget(self) -> bool:
        """From vLLM 0.20 the CUDA-graph estimate comes out of the KV budget; before, it is captured
        after the pool, in the `1 - gpu_memory_utilization` headroom."""
        return self.accounting == "v1-graphs"

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


def moe_sharding(settings: VllmSettings) -> tuple[int, int]:
    """(MoE tensor-parallel size, expert-parallel size) of one rank, as vLLM's
    `FusedMoEParallelConfig.make` (vllm/model_executor/layers/fused_moe/config.py) decides them: the
    MoE layers span all `tp x dp` GPUs (`flatten_tp_across_dp`); with --enable-expert-parallel each
    GPU owns whole experts (MoE TP 1, EP `tp x dp`), without it every expert is sliced `tp x dp` ways.
    Attention, embeddings and dense layers stay sharded by TP alone: each DP rank is a full replica."""
    flat = max(settings.tensor_parallel_size, 1) * max(settings.data_parallel_size, 1)
    if settings.enable_expert_parallel and flat > 1:
        return 1, flat
    return flat, 1


def routed_expert_bytes(spec: ModelSpec, layout: WeightsLayout) -> tuple[int, ...]:
    """Bytes of the routed experts in each block of `layout` (0 for a dense block): the block's bytes
    times the share of its parameters in `num_experts` gated experts (3 x hidden x expert width each),
    at most all of them. A block with less than half that many parameters is a dense one (DeepSeek's
    first_k_dense_replace layers, Llama 4's interleaved dense layers: a dense MLP is a few percent of
    the experts)."""
    moe = spec.moe
    if moe is None or not layout.layer_bytes:
        return tuple(0 for _ in layout.layer_bytes)
    width = moe.moe_intermediate_size or spec.intermediate_size or 4 * spec.hidden_size
    routed = moe.num_experts * 3 * spec.hidden_size * width
    n = len(layout.layer_bytes)
    params = list(spec.layer_parameters) if len(spec.layer_parameters) == n else []
    if not params:
        avg = max(spec.parameters - spec.embedding_parameters - spec.output_parameters, 0) // max(n, 1)
        params = [avg] * n
    return tuple(
        b * min(routed, p) // p if 2 * p > routed else 0
        for b, p in zip(layout.layer_bytes, params, strict=True)
    )


def moe_tokens(settings: VllmSettings) -> int:
    """Tokens one rank's MoE layers take in the profile run. With data parallelism every DP rank runs
    its own `max_num_batched_tokens` batch, and each MoE layer first gathers the batches of all DP
    ranks (vLLM's `FusedMoE` dispatch: `naive_multicast` into a `cu_tokens_across_dp` buffer up to
    0.10, v0.10.1.1 device_communicators/all2all.py:33-60; `all_gatherv` of the allgather-reducescatter
    backend, the default by v0.32.0, all2all.py:128-156 with `sp_local_sizes`, "without any chunking",
    forward_context.py:110-122), so the experts see DP x `max_num_batched_tokens` tokens."""
    return settings.max_num_batched_tokens * max(settings.data_parallel_size, 1)


def forward_activation_bytes(spec: ModelSpec, settings: VllmSettings, act_bytes: int = 2) -> int:
    """The profile forward pass over `max_num_batched_tokens` tokens: per token 4 hidden-size tensors
    plus 3x the TP-sharded MLP width (gate/up output and activation output); for MoE the fused-MoE
    caches hold `top_k x (3 x expert width / tp + hidden)` per token. vLLM <= 0.11 ("v1-early") runs
    the fused-MoE path with far larger workspaces: its MoE forward peak is
    `VLLM_EARLY_V1_MOE_ACTIVATION_FACTOR` times this (estimate/overheads.py, fitted on calibration).

    With data parallelism (vLLM >= 0.12 here) the routed experts work on `moe_tokens` (all DP ranks'
    tokens, at most one fused-MoE chunk of `VLLM_FUSED_MOE_CHUNK_SIZE` per call) and the gathered
    hidden states (`moe_tokens x hidden`) are live beside them. Not applied to "v1-early": there the
    MoE forward is the fitted factor times the DP-1 structure, and factor times the gathered tokens
    contradicts the one DP record (docs/accuracy.md, recipes#12)."""
    tp = settings.tensor_parallel_size
    h = spec.hidden_size
    tokens = settings.max_num_batched_tokens
    if spec.moe is not None:
        moe_tp, _ = moe_sharding(settings)
        expert = spec.moe.moe_intermediate_size or spec.intermediate_size or 4 * h
        routed = spec.moe.num_experts_per_tok * (3 * expert // moe_tp + h)
        shared = spec.moe.num_shared_experts * 3 * expert // tp
        gathered = moe_tokens(settings) if settings.accounting in ("v1", "v1-graphs") else tokens
        if gathered > tokens:
            experts_tokens = min(gathered, max(tokens, VLLM_FUSED_MOE_CHUNK_SIZE))
            forward = (tokens * (4 * h + shared) + experts_tokens * routed + gathered * h) * act_bytes
        else:
            forward = tokens * (4 * h + routed + shared) * act_bytes
    else:
        forward = tokens * (4 * h + 3 * ffn_width(spec) // tp) * act_bytes
    if spec.moe is not None and settings.accounting == "v1-early":
        forward = round(forward * oh.VLLM_EARLY_V1_MOE_ACTIVATION_FACTOR)
    return forward


def sampler_activation_bytes(spec: ModelSpec, settings: VllmSettings) -> int:
    """The sampler dry run over `min(max_num_seqs, max_num_batched_tokens)` requests:
    `VLLM_SAMPLER_BYTES_PER_LOGIT` per vocabulary entry (Llama-3.1-8B with 1024 sequences at v0.19:
    1.89 GiB measured and predicted)."""
    requests = min(settings.max_num_seqs, settings.max_num_batched_tokens)
    return round(requests * spec.vocab_size * oh.VLLM_SAMPLER_BYTES_PER_LOGIT)


def activation_peak_bytes(
    spec: ModelSpec, settings: VllmSettings, act_bytes: int = 2, held_bytes: int = 0
) -> int:
    """PyTorch activation peak of vLLM's profile run (one rank): the larger of the forward pass and
    the sampler dry run. The forward structure was checked on vLLM 0.19 records whose vocabulary is
    small enough for it to dominate (CodeLlama-7B 0.77 GiB predicted 0.77, Granite-3.1-8B 0.85 / 0.83,
    Mixtral-8x7B TP2 1.21 / 1.19: validation-half records, docs/accuracy.md); the sampler constant is
    Llama-3.1-8B's (calibration half). `held_bytes`: buffers sized in the forward pass and still held
    while the sampler runs (the fused-MoE shared workspace, `vllm_workspace.moe_quant_workspace_bytes`)."""
    forward = forward_activation_bytes(spec, settings, act_bytes)
    return max(forward, sampler_activation_bytes(spec, settings) + held_bytes)


def cudagraph_bytes(spec: ModelSpec, settings: VllmSettings) -> int:
    """The CUDA-graph pool: 0.19's estimate (base + per layer); vLLM <= 0.11 captured a larger pool
    (`VLLM_EARLY_V1_CUDAGRAPH_FACTOR` times it, fitted on calibration)."""
    if settings.enforce_eager:
        return 0
    layers = math.ceil(spec.attention.num_layers / max(settings.pipeline_parallel_size, 1))
    graphs = oh.VLLM_CUDAGRAPH_BASE_BYTES + layers * oh.VLLM_CUDAGRAPH_PER_LAYER_BYTES
    if settings.accounting == "v1-early":
        graphs = round(graphs * oh.VLLM_EARLY_V1_CUDAGRAPH_FACTOR)
    return graphs


def rank_weights_bytes(
    layout: WeightsLayout,
    tp: int,
    pp: int = 1,
    *,
    experts: tuple[int, ...] | None = None,
    moe_tp: int | None = None,
    ep: int = 1,
    num_experts: int = 0,
) -> int:
    """Weights on the fullest rank: every matrix is sharded over TP (embeddings and lm_head by
    vocabulary); pipeline stages take `ceil(layers / pp)` blocks each, the first also the embeddings
    and the last the output head.

    With data / expert parallelism (`moe_sharding`) the routed experts of each block (`experts`, from
    `routed_expert_bytes`) are placed apart from the rest: sliced `moe_tp` ways, or, with EP, split
    whole over `ep` ranks, the fullest holding `ceil(num_experts / ep)` of them (vLLM's
    `determine_expert_map` gives the remainder to the first ranks)."""
    routed = experts or tuple(0 for _ in layout.layer_bytes)
    share_tp = moe_tp or tp
    if ep > 1 and num_experts > 0:
        per_rank = math.ceil(num_experts / ep)
        expert_rank = [math.ceil(e * per_rank / num_experts) for e in routed]
    else:
        expert_rank = [math.ceil(e / share_tp) for e in routed]
    blocks = [
        math.ceil((b - e) / tp) + r for b, e, r in zip(layout.layer_bytes, routed, expert_rank, strict=True)
    ]
    if pp <= 1:
        ends = layout.embedding_bytes + layout.output_bytes + layout.other_bytes
        if not any(routed):
            return math.ceil(layout.total_bytes / tp)
        return sum(blocks) + math.ceil(ends / tp)
    per_stage = math.ceil(layout.num_layers / pp)
    stage = sorted(blocks, reverse=True)[:per_stage]
    ends = max(layout.embedding_bytes, layout.output_bytes + layout.other_bytes)
    if not any(routed):
        return math.ceil((sum(sorted(layout.layer_bytes, reverse=True)[:per_stage]) + ends) / tp)
    return sum(stage) + math.ceil(ends / tp)


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


def non_torch_bytes(settings: VllmSettings) -> int:
    """Non-torch memory the profile counts (cuBLAS workspaces; NCCL / custom all-reduce with TP > 1),
    per version range (docs/vllm-memory-by-version.md section 4; constants in estimate/overheads.py)."""
    base, tp_extra = oh.VLLM_NON_TORCH_BY_RANGE[settings.accounting]
    if not settings.nvswitch:
        tp_extra = min(tp_extra, oh.VLLM_NON_TORCH_TP_PCIE_EXTRA_BYTES)
    ranks = settings.tensor_parallel_size * settings.pipeline_parallel_size * settings.data_parallel_size
    return base + (tp_extra if ranks > 1 else 0)


def has_nvswitch(gpu_name: str, compute_capability: str | None) -> bool:
    """Hopper-or-newer SXM parts sit on NVSwitch boards, where NCCL allocates NVLink-SHARP buffers (the
    2 GiB of TP non-torch memory in the v0.19 H100 sweep); PCIe and GeForce cards do not."""
    name = gpu_name.lower()
    if "pcie" in name or "nvl" in name.replace("nvlink", "") or "rtx" in name or "geforce" in name:
        return False
    try:
        major = int((compute_capability or "0").split(".")[0])
    except ValueError:
        return False
    return major >= 9 and any(chip in name for chip in ("h100", "h200", "h20", "b200", "gh200", "gb200"))


def vllm_gpu_memory(
    spec: ModelSpec, layout: WeightsLayout, settings: VllmSettings, total_memory_bytes: int
) -> VllmMemory:
    """One rank's budget: `total x util - weights - activation peak - non-torch`, and from vLLM 0.20
    (accounting "v1-graphs") minus the CUDA-graph estimate too. Before 0.20 the graphs are captured
    after the pool, outside the requested budget."""
    tp = settings.tensor_parallel_size
    pp = settings.pipeline_parallel_size
    requested = int(total_memory_bytes * settings.gpu_memory_utilization)
    moe_tp, ep = moe_sharding(settings)
    weights = rank_weights_bytes(
        layout,
        tp,
        pp,
        experts=routed_expert_bytes(spec, layout) if moe_tp != tp or ep > 1 else None,
        moe_tp=moe_tp,
        ep=ep,
        num_experts=spec.moe.num_experts if spec.moe else 0,
    )
    if layout.quantization == "mxfp4":  # loaded padded: more than the checkpoint holds
        weights = round(weights * oh.VLLM_MXFP4_LOADED_FACTOR)
    held = (  # the shared fused-MoE buffers: the default path from vLLM 0.12 (estimate/vllm_workspace.py)
        moe_quant_workspace_bytes(spec, layout.quantization, moe_tp, moe_tokens(settings))
        if settings.accounting in ("v1", "v1-graphs")
        else 0
    )
    activation = activation_peak_bytes(spec, settings, held_bytes=held)
    graphs = cudagraph_bytes(spec, settings)
    non_torch = non_torch_bytes(settings)
    kv_bytes = requested - weights - activation - non_torch
    if settings.accounting == "v1-graphs":
        kv_bytes -= graphs
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
            kv_layout(spec, settings.kv_cache_dtype, engine=VLLM, tp=tp), spec.attention.num_layers, pp
        ),
        max_num_batched_tokens=settings.max_num_batched_tokens,
        hybrid_kv_cache_manager=settings.hybrid_kv_cache_manager,
        accounting=settings.accounting,
    )


def vllm_total_bytes(device_total_bytes: int) -> int:
    """The total vLLM sizes its budget from (torch.cuda.mem_get_info), given NVML's / the catalog's
    total: the driver's reserved memory is not in it (estimate/overheads.py VLLM_TORCH_RESERVED_BYTES)."""
    return max(device_total_bytes - oh.VLLM_TORCH_RESERVED_BYTES, 0)


StartFailure = Literal[
    "utilization_exceeds_free",
    "weights_exceed_budget",
    "no_kv_memory",
    "max_len_exceeds_kv",
    "cuda_oom_after_kv",
]


def start_failure(
    mem: VllmMemory,
    free_bytes: int,
    max_model_len: int,
    *,
    free_check: bool = True,
) -> StartFailure | None:
    """How vLLM would fail to start with this budget, in the order it checks (None: it starts).

    - `utilization_exceeds_free` (V1 from 0.9, `free_check`): free memory after the CUDA context is
      below `total x gpu_memory_utilization` (v0.19.0 v1/worker/utils.py:412-421);
    - `weights_exceed_budget`: the weights alone exceed the request; vLLM reports it as a negative KV
      budget ("No available memory for the cache blocks"), so no --max-model-len helps;
    - `no_kv_memory`: weights + activation peak + non-torch (+ graphs from 0.20) leave nothing;
    - `max_len_exceeds_kv`: one request of `max_model_len` needs more KV than the pool;
    - `cuda_oom_after_kv`: before 0.20 the CUDA graphs are captured after the pool and must fit in
      what the pool leaves free.
    """
    free_after_context = free_bytes - mem.context_bytes
    if free_check and free_after_context < mem.requested_bytes:
        return "utilization_exceeds_free"
    if mem.weights_bytes >= mem.requested_bytes:
        return "weights_exceed_budget"
    if mem.kv_cache_bytes <= 0:
        return "no_kv_memory"
    if mem.request_bytes(max_model_len) > mem.kv_cache_bytes:
        return "max_len_exceeds_kv"
    if not mem.cudagraphs_in_budget and free_after_context - mem.requested_bytes < mem.cudagraph_bytes:
        return "cuda_oom_after_kv"
    return None


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
        kv=kv_layout(spec, settings.kv_cache_dtype, engine=VLLM, tp=1),
        max_num_batched_tokens=settings.max_num_batched_tokens,
    )
