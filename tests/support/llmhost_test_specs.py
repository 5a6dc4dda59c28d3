"""ModelSpec / Hardware builders for estimator and planner tests (real published model shapes).

Shapes are the models' own config.json values; byte counts are what their tensor headers sum to.
"""

from __future__ import annotations

from llmhost.hardware.models import CPU, GPU, GPUProcess, Hardware
from llmhost.models.spec import Attention, GGUFVariant, ModelFile, ModelSpec, MoE, Quantization

GiB = 1024**3
MiB = 1024**2


def dense_spec(
    *,
    name: str = "Llama-3.1-8B-Instruct",
    layers: int = 32,
    hidden: int = 4096,
    heads: int = 32,
    kv_heads: int | list[int] = 8,
    head_dim: int = 128,
    head_dim_v: int | None = None,
    intermediate: int = 14336,
    vocab: int = 128256,
    max_context: int = 131072,
    tied: bool = False,
    kinds: list[str] | None = None,
    sliding_window: int | None = None,
    dtype: str = "bfloat16",
    quant: Quantization | None = None,
    bytes_per_param: float = 2.0,
    kind: str = "hf_repo",
    ref: str | None = None,
    variants: list[GGUFVariant] | None = None,
    recurrent_state: int = 0,
    moe: MoE | None = None,
    layer_params_override: int | None = None,
) -> ModelSpec:
    kv_list = kv_heads if isinstance(kv_heads, list) else [kv_heads] * layers
    hv = head_dim_v or head_dim
    attn_params = hidden * heads * head_dim + hidden * max(kv_list) * (head_dim + hv) + heads * hv * hidden
    ffn_params = 3 * hidden * intermediate
    if moe is not None:
        ffn_params = (
            3
            * hidden
            * (moe.moe_intermediate_size or intermediate)
            * (moe.num_experts + moe.num_shared_experts)
        )
        ffn_params += hidden * moe.num_experts
    layer_params = layer_params_override or (attn_params + ffn_params + 2 * hidden)
    emb = vocab * hidden
    out = 0 if tied else vocab * hidden
    total = emb + out + layers * layer_params + hidden
    active = total
    if moe is not None:
        inactive = (
            3
            * hidden
            * (moe.moe_intermediate_size or intermediate)
            * (moe.num_experts - moe.num_experts_per_tok)
        )
        active = total - layers * inactive
    b = bytes_per_param
    return ModelSpec(
        ref=ref or f"org/{name}",
        kind=kind,  # type: ignore[arg-type]
        name=name,
        repo_id=f"org/{name}" if kind in ("hf_repo", "gguf_repo") else None,
        architecture="LlamaForCausalLM",
        parameters=total,
        active_parameters=active,
        parameters_source="tensors",
        hidden_size=hidden,
        intermediate_size=intermediate,
        vocab_size=vocab,
        max_context=max_context,
        torch_dtype=dtype,
        tied_embeddings=tied,
        attention=Attention(
            num_layers=layers,
            num_attention_heads=heads,
            num_kv_heads=kv_list,
            head_dim_k=head_dim,
            head_dim_v=hv,
            layer_kinds=kinds or ["full"] * layers,  # type: ignore[arg-type]
            sliding_window=sliding_window,
            recurrent_state_bytes_per_seq=recurrent_state,
        ),
        moe=moe,
        quantization=quant or Quantization(),
        weights_bytes=round(total * b),
        embedding_parameters=emb,
        embedding_bytes=round(emb * b),
        output_parameters=out,
        output_bytes=round(out * b),
        layer_parameters=[layer_params] * layers,
        layer_bytes=[round(layer_params * b)] * layers,
        other_bytes=round(hidden * b),
        gguf_variants=variants or [],
        files=[ModelFile(path="model.gguf")] if kind in ("local_gguf", "gguf_repo") else [],
    )


def llama8b_q4km_gguf(**kw: object) -> ModelSpec:
    """Llama-3.1-8B Q4_K_M as llama.cpp loads it: 4403.49 MiB on the GPU + 281.81 MiB token_embd on CPU."""
    base = dense_spec(kind="local_gguf", ref="./Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", **kw)  # type: ignore[arg-type]
    gpu_bytes = round(4403.49 * MiB)
    emb = 128256 * 4096 * 144 // 256  # Q4_K token_embd
    out = 128256 * 4096 * 210 // 256  # Q6_K output
    other = 4096 * 4
    layer = (gpu_bytes - out - other) // 32
    return base.model_copy(
        update={
            "quantization": Quantization(method="gguf", gguf_file_type="Q4_K_M", bits=4.5),
            "torch_dtype": None,
            "embedding_bytes": emb,
            "output_bytes": out,
            "other_bytes": other,
            "layer_bytes": [layer] * 32,
            "weights_bytes": emb + out + other + 32 * layer,
        }
    )


def deepseek_v3() -> ModelSpec:
    layers = 61
    kinds = ["mla"] * layers
    spec = dense_spec(
        name="DeepSeek-V3",
        layers=layers,
        hidden=7168,
        heads=128,
        kv_heads=128,
        head_dim=192,
        head_dim_v=128,
        intermediate=18432,
        vocab=129280,
        max_context=163840,
        kinds=kinds,
        moe=MoE(num_experts=256, num_experts_per_tok=8, num_shared_experts=1, moe_intermediate_size=2048),
        layer_params_override=11_000_000_000,
        dtype="bfloat16",
        bytes_per_param=1.0,
        quant=Quantization(method="fp8", bits=8),
    )
    att = spec.attention.model_copy(update={"kv_lora_rank": 512, "qk_rope_head_dim": 64})
    return spec.model_copy(
        update={
            "attention": att,
            "parameters": 671_000_000_000,
            "active_parameters": 37_000_000_000,
            "weights_bytes": 688_000_000_000,
        }
    )


def cpu(bandwidth: float | None = 50e9, cores: int = 16, arch: str = "x86_64") -> CPU:
    return CPU(
        model_name="Test CPU",
        architecture=arch,
        physical_cores=cores,
        logical_cores=cores * 2,
        isa_flags=["avx2", "avx512f"],
        memory_bandwidth_bytes_per_s=bandwidth,
    )


def h100(index: int = 0, *, used: int = 0, processes: list[GPUProcess] | None = None) -> GPU:
    total = 81559 * MiB
    return GPU(
        index=index,
        vendor="nvidia",
        name="NVIDIA H100 80GB HBM3",
        catalog_id="h100-80gb",
        memory_total_bytes=total,
        memory_free_bytes=total - used,
        memory_used_bytes=used,
        compute_capability="9.0",
        memory_bandwidth_bytes_per_s=3.35e12,
        fp8_supported=True,
        processes=processes or [],
    )


def gpu(
    name: str,
    total_gib: float,
    *,
    index: int = 0,
    cc: str = "8.9",
    bw: float = 1.0e12,
    vendor: str = "nvidia",
) -> GPU:
    total = int(total_gib * GiB)
    return GPU(
        index=index,
        vendor=vendor,  # type: ignore[arg-type]
        name=name,
        memory_total_bytes=total,
        memory_free_bytes=total,
        compute_capability=cc if vendor == "nvidia" else None,
        memory_bandwidth_bytes_per_s=bw,
        fp8_supported=vendor == "nvidia" and tuple(int(x) for x in cc.split(".")) >= (8, 9),
    )


def machine(
    gpus: list[GPU] | None = None, *, ram_gib: float = 128, os: str = "linux", arch: str = "x86_64"
) -> Hardware:
    return Hardware(
        source="catalog",
        os=os,
        cpu=cpu(arch=arch),
        ram_total_bytes=int(ram_gib * GiB),
        ram_available_bytes=int(ram_gib * GiB * 0.9),
        gpus=gpus or [],
    )
