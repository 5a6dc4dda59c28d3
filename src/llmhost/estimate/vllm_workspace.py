"""Memory vLLM's fused-MoE kernels hold through the profile run, beyond the forward pass's own tensors.

vLLM's V1 profile (`profile_run`) is one forward over `max_num_batched_tokens` tokens followed by the
sampler dry run over `min(max_num_seqs, max_num_batched_tokens)` requests; the KV budget subtracts the
torch peak of the two (docs/vllm-memory-by-version.md). A dense model's intermediates are freed
between the two phases, so the peak is the larger phase. A mixture-of-experts model run through the
modular fused-MoE kernel is different: its scratch space lives in `FusedMoEModularKernel.shared_buffers`
(vllm/model_executor/layers/fused_moe/modular_kernel.py: "Persistent buffers that are shared across
`FusedMoEModularKernel` instances (layers)"), three `SharedResizableBuffer`s (`fused_out`,
`workspace13`, `workspace2`) that grow to the largest shape asked for and are never freed. They are
sized in the forward pass and still held while the sampler runs, so they add to the sampler phase too.

Their shapes come from the experts implementation's `workspace_shapes(M, N, K, topk, ...)`, with
`M = min(num_tokens, VLLM_FUSED_MOE_CHUNK_SIZE)` (`_maybe_chunk_fused_experts`; the chunk size defaults
to 32768 tokens, so one profile batch of <= 32768 tokens is one chunk), `N = w1.size(1)` (gate and up
projections of one expert on this rank: `2 x moe_intermediate_size / tp`), `K` the hidden size and
`topk` the experts per token. The Triton / CUTLASS / FlashInfer experts classes all ask for

    workspace13 = (M, topk, max(N // 2, K))      workspace2 = (M, topk, max(N, K))      fused_out = (M, K)

in the activation dtype (`a.dtype`: bf16/fp16, also for FP8 block-quantized weights, whose quantized
activations and per-128-column scales are transient inside the call). The same expression serves for
unquantized, FP8 (per-tensor or 128x128 block) and INT4/INT8 (WNA16) MoE checkpoints.

Where it does not apply (returns 0):
- dense models (no experts);
- MXFP4 (gpt-oss): on Hopper vLLM runs OpenAI's `triton_kernels.matmul_ogs`, which allocates inside the
  call. Measured: gpt-oss-20b on H100, vLLM 0.19, 8192 batched tokens, 1024 sequences: torch peak
  2.87 GiB at TP 1 and at TP 2, which is the sampler alone (201088 x 1024 logits at 14.9 B each); a
  shared workspace of this formula (0.37 GiB at TP 1) would have shown;
- vLLM before 0.12: the unquantized and FP8 MoE methods called `fused_experts()`, whose caches are
  `torch.empty` inside the call (freed with the layer), i.e. part of the forward term only. Not checked
  against a record (none of 0.9-0.11 prints its torch peak), so the release the shared buffers became the
  default path may be earlier than modelled.

Checked on the v0.19 calibration records (torch peak printed, 8192 tokens, 1024 sequences): Qwen3-30B-A3B
2.68 GiB = sampler 2.21 + 0.53 here (within 0.06), DeepSeek-V2-Lite 1.93 = 1.49 + 0.48 (within 0.04),
Llama-4-Scout TP 4 3.19 = 2.94 + 0.23 (within 0.02). Validation half: Qwen1.5-MoE-A2.7B 2.47 = 2.21 + 0.33
(0.07 over), Mixtral-8x7B TP 2 1.21 (forward-bound: 1.19 with this term on the sampler side).
"""

from __future__ import annotations

import math
import re

from llmhost.models.spec import ModelSpec

# vllm/envs.py VLLM_FUSED_MOE_CHUNK_SIZE default (tokens per fused-MoE call).
VLLM_FUSED_MOE_CHUNK_SIZE = 32768
# The first release whose default MoE path keeps its scratch space in the shared buffers (see above).
SHARED_BUFFERS_SINCE = (0, 12)
_NO_SHARED_WORKSPACE = ("mxfp4",)
_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)")


def _before(version: str | None, release: tuple[int, int]) -> bool:
    """True when `version` ("0.10.1.1", "v0.19.0", "0.6.5.dev1") is older than `release`; None: newest."""
    if version is None:
        return False
    match = _VERSION.match(version)
    if match is None:
        return False
    return (int(match.group(1)), int(match.group(2))) < release


def moe_quant_workspace_bytes(
    spec: ModelSpec,
    quantization: str,
    tensor_parallel_size: int,
    max_num_batched_tokens: int,
    version: str | None = None,
    *,
    act_bytes: int = 2,
) -> int:
    """Bytes per GPU of the fused-MoE shared workspace held through vLLM's profile run (module docstring).

    `quantization`: the planner's name for the weights as loaded ("bf16", "fp8", "awq", "gptq",
    "mxfp4", "compressed-tensors", ...). `version`: the vLLM release (None: the newest modelled).
    Expert parallelism is not modelled: every rank holds all experts, each sharded over TP.
    """
    moe = spec.moe
    if moe is None or max_num_batched_tokens <= 0:
        return 0
    if quantization in _NO_SHARED_WORKSPACE or _before(version, SHARED_BUFFERS_SINCE):
        return 0
    tp = max(tensor_parallel_size, 1)
    expert = moe.moe_intermediate_size or spec.intermediate_size or 4 * spec.hidden_size
    m = min(max_num_batched_tokens, VLLM_FUSED_MOE_CHUNK_SIZE)
    n = 2 * math.ceil(expert / tp)
    k = spec.hidden_size
    topk = moe.num_experts_per_tok
    workspace13 = m * topk * max(n // 2, k)
    workspace2 = m * topk * max(n, k)
    fused_out = m * k
    return (workspace13 + workspace2 + fused_out) * act_bytes
