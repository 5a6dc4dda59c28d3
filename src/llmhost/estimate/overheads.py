"""Fixed costs and engine defaults, each with where it comes from (see docs/estimator.md)."""

from __future__ import annotations

MiB = 1024**2
GiB = 1024**3

# llama.cpp on CUDA: what `llama-server` holds beyond its model/KV/compute buffers (CUDA context,
# cuBLAS handles, the CUDA pool). Measured on an H100 80GB: 8B Q4_K_M, -c 8192 -np 4 -> ~597 MiB
# unaccounted (/work/shared/gpu/README.md). ROCm is assumed to be similar.
LLAMACPP_GPU_CONTEXT_BYTES = 600 * MiB
# Metal shares the system memory; its runtime holds little beyond the buffers.
LLAMACPP_METAL_CONTEXT_BYTES = 128 * MiB
# Process, tokenizer and ggml contexts on the host.
LLAMACPP_HOST_OVERHEAD_BYTES = 128 * MiB
LLAMACPP_DEFAULT_N_BATCH = 2048
LLAMACPP_DEFAULT_N_UBATCH = 512
LLAMACPP_CTX_PAD = 256
# MLA: the no-RoPE part of each query head before absorption (qk_nope_head_dim). Not in the GGUF-derived
# spec (its key_length is the absorbed kv_lora_rank + rope); 128 in DeepSeek-V2/V2-Lite/V3/R1 and
# Kimi-K2 (their config.json).
LLAMACPP_MLA_QK_NOPE_HEAD_DIM = 128

# vLLM. The CUDA context is created before vLLM's baseline memory snapshot, so it is held on top of
# `gpu_memory_utilization x total` (vllm/v1/worker/gpu_worker.py: requested_memory vs init_snapshot).
VLLM_CUDA_CONTEXT_BYTES = 512 * MiB
# Memory allocated outside PyTorch during profiling (cuBLAS workspace; NCCL and custom all-reduce
# buffers with TP > 1). vLLM 0.19 on H100 (llm-d-planner sweep in benchmarks/data/vllm_startup_logs.json):
# 0.24-0.27 GiB at TP=1, 2.06-2.21 GiB at TP=2/4.
VLLM_NON_TORCH_BYTES = 256 * MiB
VLLM_NON_TORCH_TP_EXTRA_BYTES = 1870 * MiB
# The same two terms (TP 1, extra with TP/PP > 1) per version range (estimate/vllm_versions.py), each
# from the CALIBRATION half of the start-up records only (benchmarks/data/README.md):
# - v0: the V0 profile's non-torch memory, median of the calibration V0 records at TP 1 (0.06, 0.35,
#   0.35, 1.79 GiB: vllm-17327 v0, vllm-10517 x2, vllm-pr10511) and the TP-2 increase of vllm-pr10511
#   (3.58 - 1.79 GiB);
# - v1-early (<= 0.11): dennislee22 gpt-oss-120b TP 4 on A100 (v0.10.1.1) leaves 0.38 GiB beside the
#   sampler peak, where v0.19's 2.1 GiB of TP buffers would leave the KV pool 1.7 GiB short;
# - v1 / v1-graphs: the v0.19 sweep as above.
VLLM_NON_TORCH_BY_RANGE: dict[str, tuple[int, int]] = {
    "v0": (358 * MiB, 1833 * MiB),
    "v1-early": (VLLM_NON_TORCH_BYTES, 128 * MiB),
    "v1": (VLLM_NON_TORCH_BYTES, VLLM_NON_TORCH_TP_EXTRA_BYTES),
    "v1-graphs": (VLLM_NON_TORCH_BYTES, VLLM_NON_TORCH_TP_EXTRA_BYTES),
}
# vLLM <= 0.11 (accounting "v1-early"), fitted on the CALIBRATION half only
# (benchmarks/vllm_validation.py prints both fits and their checks):
# - the MoE forward peak, median of the calibration records where the forward pass sets the peak:
#   vllm-23278 (gpt-oss-120b, one H100, v0.10.1, 8192 batched tokens, a -2.14 GiB budget) 8.21x and
#   dennislee22 gpt-oss-120b TP 4 on A100 (v0.10.1.1, 2048 tokens) 6.05x 0.19's fused-MoE term;
# - the CUDA-graph pool: dennislee22 gpt-oss-120b TP 4 on A100 (v0.10.1.1) captured 1.88 GiB where
#   0.19's estimate for 36 layers is 0.88 GiB.
VLLM_EARLY_V1_MOE_ACTIVATION_FACTOR = 7.13
VLLM_EARLY_V1_CUDAGRAPH_FACTOR = 2.14
# What vLLM loads of an MXFP4 (gpt-oss) checkpoint over its bytes on disk: its MoE kernels keep the experts
# in a padded, swizzled layout (vllm/model_executor/layers/fused_moe/oracle/mxfp4.py,
# `mxfp4_round_up_hidden_size_and_intermediate_size`: 2880 rounded up to 3072 for Marlin, TRT-LLM and ROCm
# kernels) plus per-backend scale layouts. Median of "Model loading took" over the rank's checkpoint bytes
# on the calibration records (gpt-oss-20b: 1.0705 A100, 1.0643 H100, 1.0939 and 1.0939 TP 2;
# gpt-oss-120b: 1.1336 TP 4 A100, 1.0855 H100); benchmarks/_vllm_heldout.fit_mxfp4_loaded_factor.
VLLM_MXFP4_LOADED_FACTOR = 1.09
# TP non-torch memory without NVSwitch (PCIe and GeForce cards: no NVLink-SHARP buffers). The calibration
# records on such GPUs: dennislee22 gpt-oss-120b TP 4 on A100 (v0.10.1.1) leaves 0.38 GiB beside the
# sampler peak at TP 4 -> 0.13 GiB above TP 1's 0.25 GiB.
VLLM_NON_TORCH_TP_PCIE_EXTRA_BYTES = 128 * MiB
# torch.cuda.mem_get_info()'s total (what vLLM sizes its budget from) is below NVML's total by memory
# the driver reserves. Median of (catalog NVML total - total vLLM printed) over the CALIBRATION
# records that print it: H100 80GB 0.46 / 0.43 GiB (v0.19 sweep, vllm-pr10511), RTX 3090 0.42 /
# 0.44 GiB (vllm-10517, vllm-17327), L40S 0.57 GiB (vllm-pr17122) -> 0.44 GiB
# (benchmarks/vllm_validation.py prints the fit and the validation check).
VLLM_TORCH_RESERVED_BYTES = 450 * MiB
# CUDA graph capture. vLLM 0.19 prints it as an estimate and does not take it out of the KV budget
# (available KV = requested - weights - activations - non-torch matches every record of the sweep),
# so the graphs come on top of `gpu_memory_utilization x total`. Same sweep: 0.52-1.82 GiB, growing
# with the number of layers: 0.35 GiB + 15 MiB per layer fits most records within 0.3 GiB.
VLLM_CUDAGRAPH_BASE_BYTES = 358 * MiB
VLLM_CUDAGRAPH_PER_LAYER_BYTES = 15 * MiB
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.90
VLLM_DEFAULT_MAX_NUM_SEQS = 256
# vllm/engine/arg_utils.py: 8192 batched tokens on GPUs with >= 70 GiB (except A100), else 2048.
VLLM_LARGE_GPU_MNBT = 8192
VLLM_SMALL_GPU_MNBT = 2048
VLLM_LARGE_GPU_BYTES = 70 * GiB
# Sampler peak per (request x vocabulary entry) in the profile run (fp32 logits, probabilities and
# top-k/top-p sort buffers): 14.8-15.5 bytes in the vLLM 0.19 sweep with max_num_seqs 1024
# (Llama-3.1-8B 1.89 GiB, Qwen2.5-7B 2.21 GiB, Gemma-2 3.62 GiB, Gemma-3 3.89 GiB).
VLLM_SAMPLER_BYTES_PER_LOGIT = 15.25
# vLLM CPU: VLLM_CPU_KVCACHE_SPACE default (GiB) and runtime overhead (torch, oneDNN, process).
VLLM_CPU_DEFAULT_KV_GIB = 4
VLLM_CPU_RUNTIME_BYTES = 1 * GiB
VLLM_CPU_MNBT = 4096

# Keep this much RAM free for the OS and everything else on the host.
HOST_RESERVE_BYTES = 1 * GiB
