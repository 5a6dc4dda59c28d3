"""Weights per quantization, vLLM's and llama.cpp's memory layouts, the roofline."""

from __future__ import annotations

import math

from llmhost.estimate import (
    Device,
    LlamaCppSettings,
    VllmSettings,
    compute_buffer_bytes,
    decode_roofline,
    llamacpp_memory,
    max_gpu_layers,
    max_gpu_memory_utilization,
    vllm_gpu_memory,
    weights_layout,
)
from llmhost.estimate.llamacpp import assign_layers
from llmhost.estimate.weights import hypothetical_layout, own_quantization
from support.llmhost_test_specs import GiB, MiB, deepseek_v3, dense_spec, h100, llama8b_q4km_gguf, machine


def test_own_quantization_is_exact_and_others_are_estimated() -> None:
    spec = dense_spec()
    own = weights_layout(spec, "bf16")
    assert own.exact and own.total_bytes == spec.weights_bytes
    fp8 = weights_layout(spec, "fp8")
    # fp8 halves the linear layers only; embeddings and lm_head stay 16-bit.
    assert fp8.embedding_bytes == own.embedding_bytes and fp8.output_bytes == own.output_bytes
    assert sum(fp8.layer_bytes) * 2 == sum(own.layer_bytes)
    awq = weights_layout(spec, "awq")
    assert math.isclose(
        sum(awq.layer_bytes) / sum(p for p in spec.layer_parameters), 4.15625 / 8, rel_tol=1e-6
    )


def test_q4_k_m_mix_matches_the_real_llama_8b_file() -> None:
    # Llama-3.1-8B-Instruct-Q4_K_M.gguf: 4.92 GB; llama.cpp puts 4403.49 MiB on the GPU and 281.81 MiB
    # (token_embd, Q4_K) on the CPU.
    layout = hypothetical_layout(dense_spec(), "Q4_K_M")
    on_gpu = layout.total_bytes - layout.embedding_bytes
    assert abs(on_gpu / MiB - 4403.49) / 4403.49 < 0.01
    assert abs(layout.embedding_bytes / MiB - 281.81) < 0.5
    sizes = [
        hypothetical_layout(dense_spec(), q).total_bytes
        for q in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
    ]
    assert sizes == sorted(sizes, reverse=True)


def test_gguf_variant_size_scales_the_estimate() -> None:
    from llmhost.models.spec import GGUFVariant, ModelFile

    variant = GGUFVariant(tag="Q8_0", files=[ModelFile(path="m-Q8_0.gguf")], size_bytes=8_540_000_000)
    spec = llama8b_q4km_gguf().model_copy(update={"gguf_variants": [variant]})
    assert own_quantization(spec) == "Q4_K_M"
    assert abs(weights_layout(spec, "Q8_0").total_bytes - 8_540_000_000) < 100  # rounding per layer


def test_vllm_utilization_is_a_share_of_total_memory() -> None:
    spec = dense_spec()
    total = int(79.19 * GiB)  # what torch reports for an H100 80GB
    s = VllmSettings(gpu_memory_utilization=0.95, max_num_seqs=1024, max_num_batched_tokens=8192)
    mem = vllm_gpu_memory(spec, weights_layout(spec, "bf16"), s, total)
    assert mem.requested_bytes == int(0.95 * total)
    # CUDA graphs are captured after the KV cache is sized: they do not come out of it.
    assert (
        mem.kv_cache_bytes
        == mem.requested_bytes - mem.weights_bytes - mem.activation_bytes - mem.non_torch_bytes
    )
    # vLLM 0.19, Llama-3.1-8B, H100, 0.95, 1024 seqs (benchmarks/data/vllm_startup_logs.json):
    # activation peak 1.89 GiB, available KV cache 58.11 GiB.
    assert abs(mem.activation_bytes / GiB - 1.89) < 0.05
    assert abs(mem.kv_cache_bytes / GiB - 58.11) / 58.11 < 0.02
    lower = vllm_gpu_memory(spec, weights_layout(spec, "bf16"), VllmSettings(0.5, 1024, 8192), total)
    assert lower.kv_cache_bytes == mem.kv_cache_bytes - (int(0.95 * total) - int(0.5 * total))
    # With few sequences the forward pass dominates and grows with max_num_batched_tokens.
    big = vllm_gpu_memory(spec, weights_layout(spec, "bf16"), VllmSettings(0.9, 16, 16384), total)
    small = vllm_gpu_memory(spec, weights_layout(spec, "bf16"), VllmSettings(0.9, 16, 2048), total)
    assert small.activation_bytes * 7 < big.activation_bytes


def test_vllm_max_context_and_concurrency() -> None:
    spec = dense_spec()
    mem = vllm_gpu_memory(spec, weights_layout(spec, "bf16"), VllmSettings(0.9, 256, 8192), 80 * GiB)
    per_token = 131072
    assert mem.max_concurrency(8192) == mem.kv_cache_bytes // (8192 * per_token)
    assert mem.max_context(131072) == 131072  # 16 GiB of KV holds a full 128k request
    tiny = vllm_gpu_memory(spec, weights_layout(spec, "bf16"), VllmSettings(0.9, 256, 2048), 24 * GiB)
    ctx = tiny.max_context(131072)
    assert ctx < 131072 and tiny.request_bytes(ctx) <= tiny.kv_cache_bytes < tiny.request_bytes(ctx + 16)


def test_vllm_tensor_parallel_splits_weights() -> None:
    spec = dense_spec()
    one = vllm_gpu_memory(spec, weights_layout(spec, "bf16"), VllmSettings(0.9, 256, 8192, 1), 80 * GiB)
    two = vllm_gpu_memory(spec, weights_layout(spec, "bf16"), VllmSettings(0.9, 256, 8192, 2), 80 * GiB)
    assert two.weights_bytes == math.ceil(one.weights_bytes / 2)
    assert two.kv.bytes_per_token == one.kv.bytes_per_token // 2


def test_max_utilization_when_other_processes_hold_memory() -> None:
    total = 80 * GiB
    assert max_gpu_memory_utilization(total, total) >= 0.99
    # 20 GiB held elsewhere: 0.9 no longer starts; 0.74 does (CUDA context counted on top).
    cap = max_gpu_memory_utilization(total, total - 20 * GiB)
    assert 0.73 <= cap <= 0.75


def test_llamacpp_reference_h100_buffers() -> None:
    """/work/shared/gpu/README.md: 8B Q4_K_M, -c 8192 -np 4, -ngl 99 on an H100."""
    spec = llama8b_q4km_gguf()
    layout = weights_layout(spec, "Q4_K_M")
    gpu = Device("cuda:0", "cuda", 80 * GiB, 600 * MiB)
    host = Device("cpu", "cpu", 100 * GiB, 128 * MiB)
    for flash, compute_mib in ((True, 110), (False, 168)):
        s = LlamaCppSettings(n_ctx_seq=2048, n_parallel=4, gpu_layers=33, flash_attn=flash)
        cuda, cpu = llamacpp_memory(spec, layout, s, [gpu], host)
        assert abs(cuda.model_bytes / MiB - 4403.49) < 0.01
        assert cuda.kv_bytes == 1024 * MiB
        assert abs(cuda.compute_bytes / MiB - compute_mib) / compute_mib < 0.05
        assert abs(cpu.model_bytes / MiB - 281.81) < 0.01  # token_embd stays on the CPU
        # Reference total on the device: buffers + ~597 MiB of CUDA context.
        measured = 4403.49 + 1024 + compute_mib + 597
        assert abs(cuda.total_bytes / MiB - measured) / measured < 0.02


def test_llamacpp_output_layer_is_offloaded_first() -> None:
    assert assign_layers(4, 1, [Device("g", "cuda", 1)]) == [-1, -1, -1, -1, 0]
    assert assign_layers(4, 3, [Device("g", "cuda", 1)]) == [-1, -1, 0, 0, 0]
    split = assign_layers(4, 5, [Device("a", "cuda", 1), Device("b", "cuda", 1)])
    assert split == [0, 0, 0, 1, 1]


def test_llamacpp_partial_offload_fits_a_small_gpu() -> None:
    spec = llama8b_q4km_gguf()
    layout = weights_layout(spec, "Q4_K_M")
    host = Device("cpu", "cpu", 64 * GiB, 128 * MiB)
    s = LlamaCppSettings(n_ctx_seq=8192)
    assert max_gpu_layers(spec, layout, s, [Device("cuda:0", "cuda", 12 * GiB, 600 * MiB)], host) == 33
    ngl = max_gpu_layers(spec, layout, s, [Device("cuda:0", "cuda", 3 * GiB, 600 * MiB)], host)
    assert ngl is not None and 0 < ngl < 33
    buffers = llamacpp_memory(
        spec,
        layout,
        LlamaCppSettings(n_ctx_seq=8192, gpu_layers=ngl),
        [Device("cuda:0", "cuda", 3 * GiB, 600 * MiB)],
        host,
    )
    assert buffers[0].total_bytes <= 3 * GiB and buffers[1].layers  # the rest runs on the CPU
    # Op offload stages one CPU layer's weights in the GPU compute buffer.
    full = llamacpp_memory(
        spec,
        layout,
        LlamaCppSettings(n_ctx_seq=8192, gpu_layers=33),
        [Device("cuda:0", "cuda", 12 * GiB)],
        host,
    )
    assert buffers[0].compute_bytes == full[0].compute_bytes + layout.layer_bytes[0]


def test_compute_buffer_grows_with_ubatch_and_context_without_flash_attention() -> None:
    spec = dense_spec()
    base = compute_buffer_bytes(spec, LlamaCppSettings(n_ctx_seq=8192, flash_attn=False))
    assert compute_buffer_bytes(spec, LlamaCppSettings(n_ctx_seq=32768, flash_attn=False)) > 3 * base
    assert (
        compute_buffer_bytes(spec, LlamaCppSettings(n_ctx_seq=8192, n_ubatch=1024, flash_attn=False))
        > 1.9 * base
    )
    # llama-cpp-python reserves logits for a whole ubatch: n_vocab x 512 x 4 bytes.
    wide = compute_buffer_bytes(spec, LlamaCppSettings(n_ctx_seq=4096, n_outputs_max=512))
    assert wide >= 128256 * 512 * 4


def test_roofline_reads_active_experts_only() -> None:
    hw = machine([h100()])
    dense = dense_spec()
    speed = decode_roofline(dense, hw, 0)
    assert speed is not None and abs(speed - 3.35e12 / (dense.weights_bytes - dense.embedding_bytes)) < 1
    moe = deepseek_v3()
    moe_speed = decode_roofline(moe, hw, 0)
    assert moe_speed is not None
    # 37B of 671B parameters active: about 18x faster than reading every expert.
    all_experts = 3.35e12 / (moe.weights_bytes - moe.embedding_bytes)
    assert 12 < moe_speed / all_experts < 20
    # Longer context reads more KV per token.
    assert decode_roofline(dense, hw, 32768) < speed  # type: ignore[operator]
    assert (
        decode_roofline(
            dense,
            machine([]).model_copy(
                update={"cpu": hw.cpu.model_copy(update={"memory_bandwidth_bytes_per_s": None})}
            ),
            0,
        )
        is None
    )


def test_cpu_repack_and_tied_output_copy() -> None:
    """Recorded llama.cpp CPU buffers: Q4_K blocks are repacked (CPU_REPACK) on top of the mapped file;
    a tied token_embd gets a second copy only when the output layer sits on a GPU."""
    spec = llama8b_q4km_gguf()
    layout = weights_layout(spec, "Q4_K_M")
    host = Device("cpu", "cpu", 100 * GiB)
    (cpu,) = llamacpp_memory(spec, layout, LlamaCppSettings(n_ctx_seq=4096), [], host)
    assert cpu.model_bytes == layout.total_bytes + round(sum(layout.layer_bytes) * 0.885)
    # What must stay resident counts the repacked weights once.
    assert cpu.resident_bytes == cpu.total_bytes - round(sum(layout.layer_bytes) * 0.885)
    (plain,) = llamacpp_memory(spec, layout, LlamaCppSettings(n_ctx_seq=4096, cpu_repack=False), [], host)
    assert plain.model_bytes == layout.total_bytes
    tied = dense_spec(tied=True)
    tied_layout = weights_layout(tied, "bf16")
    (cpu_only,) = llamacpp_memory(tied, tied_layout, LlamaCppSettings(n_ctx_seq=4096), [], host)
    assert cpu_only.model_bytes == tied_layout.total_bytes
    gpu = Device("cuda:0", "cuda", 80 * GiB)
    on_gpu, host_side = llamacpp_memory(
        tied, tied_layout, LlamaCppSettings(n_ctx_seq=4096, gpu_layers=33), [gpu], host
    )
    assert on_gpu.model_bytes + host_side.model_bytes == tied_layout.total_bytes + tied_layout.embedding_bytes
