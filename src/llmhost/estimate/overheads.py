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

# vLLM. The CUDA context is created before vLLM's baseline memory snapshot, so it is held on top of
# `gpu_memory_utilization x total` (vllm/v1/worker/gpu_worker.py: requested_memory vs init_snapshot).
VLLM_CUDA_CONTEXT_BYTES = 512 * MiB
# Memory allocated outside PyTorch during profiling (cuBLAS workspace; NCCL buffers with TP>1).
# vLLM 0.8 logs show 0.20 GiB with TP=4 on 24 GB cards (vllm-project/vllm#14447).
VLLM_NON_TORCH_BYTES = 160 * MiB
VLLM_NON_TORCH_TP_EXTRA_BYTES = 256 * MiB
# CUDA graph capture: "Graph capturing finished ... took 0.5 GiB" is typical for 7-8B models
# (32 layers); capture memory grows with the number of layers captured.
VLLM_CUDAGRAPH_BASE_BYTES = 200 * MiB
VLLM_CUDAGRAPH_PER_LAYER_BYTES = 10 * MiB
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.90
VLLM_DEFAULT_MAX_NUM_SEQS = 256
# vllm/engine/arg_utils.py: 8192 batched tokens on GPUs with >= 70 GiB (except A100), else 2048.
VLLM_LARGE_GPU_MNBT = 8192
VLLM_SMALL_GPU_MNBT = 2048
VLLM_LARGE_GPU_BYTES = 70 * GiB
# Sampler peak per (request x vocab entry) in the profile run: fp32 logits, probabilities, sorted
# values (fp32) and indices (int64) for top-k/top-p.
VLLM_SAMPLER_BYTES_PER_LOGIT = 20
# vLLM CPU: VLLM_CPU_KVCACHE_SPACE default (GiB) and runtime overhead (torch, oneDNN, process).
VLLM_CPU_DEFAULT_KV_GIB = 4
VLLM_CPU_RUNTIME_BYTES = 1 * GiB
VLLM_CPU_MNBT = 4096

# Keep this much RAM free for the OS and everything else on the host.
HOST_RESERVE_BYTES = 1 * GiB
