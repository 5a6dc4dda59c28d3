"""The `ModelSpec` contract: what `resolve` learns about a model without downloading its weights.

Filled from config.json + safetensors headers (HF repos and local dirs), from GGUF headers (local
files, repos with a quant tag, URLs), or from a bare config.json (parameter counts derived from the
architecture). `estimate` consumes it and never needs the files themselves.

Fields are additive: add what an estimator needs, do not rename or remove.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llmhost.contract import FrozenContract

SourceKind = Literal["hf_repo", "gguf_repo", "gguf_url", "local_dir", "local_config", "local_gguf"]
QuantMethod = Literal[
    "none", "gguf", "awq", "gptq", "fp8", "compressed-tensors", "bitsandbytes", "mxfp4", "other"
]
LayerKind = Literal["full", "sliding", "mla", "linear", "mamba", "none"]


# The one bound on a model's depth, for GGUF headers and config.json alike: llama.cpp itself refuses more
# than 512 layers (LLAMA_MAX_LAYERS in src/llama-hparams.h) and the deepest released models have ~130
# (Llama-3.1-405B: 126). Per-layer tables are built for every layer, and the llama.cpp offload search in
# plan/ grows faster than linearly with depth (512 layers plan in ~2 s, 1024 in ~17 s on a 30B MoE
# config), so a corrupt or hostile count is refused before either sees it.
MAX_LAYERS = 512


class ModelFile(FrozenContract):
    path: str = Field(description="Path inside the repo, or a local path / URL.")
    size_bytes: int | None = None
    url: str | None = None


class GGUFVariant(FrozenContract):
    """One quantization offered by a GGUF repo (possibly split into several files)."""

    tag: str = Field(description='Quant tag as llama.cpp/Ollama spell it, e.g. "Q4_K_M".')
    files: list[ModelFile]
    size_bytes: int


class Quantization(FrozenContract):
    method: QuantMethod = "none"
    bits: float | None = Field(default=None, description="Nominal bits per weight of quantized tensors.")
    gguf_file_type: str | None = Field(default=None, description='GGUF general.file_type, e.g. "Q4_K_M".')
    group_size: int | None = None
    raw: dict[str, Any] = Field(default_factory=dict, description="quantization_config as found.")


class Attention(FrozenContract):
    """Per-layer facts that decide the KV cache. Lists have one entry per transformer block."""

    num_layers: int
    num_attention_heads: int
    num_kv_heads: list[int] = Field(description="KV heads per layer; 0 for layers without a KV cache.")
    head_dim_k: int
    head_dim_v: int
    layer_kinds: list[LayerKind]
    sliding_window: int | None = None
    kv_lora_rank: int | None = Field(default=None, description="MLA latent rank (DeepSeek V2/V3, Kimi).")
    qk_rope_head_dim: int | None = None
    recurrent_state_bytes_per_seq: int = Field(
        default=0, description="Fixed state per sequence of linear/mamba layers (all layers together)."
    )


class MoE(FrozenContract):
    num_experts: int
    num_experts_per_tok: int
    num_shared_experts: int = 0
    moe_intermediate_size: int | None = None


class OllamaSource(FrozenContract):
    """What an `ollama:NAME[:TAG]` reference carried besides the GGUF blob (models/ollama.py)."""

    name: str = Field(description="Fully qualified Ollama name, host/namespace/model:tag.")
    manifest: str = Field(description="Path of the manifest file read.")
    model_digest: str = Field(description="sha256:<hex> of the GGUF blob (the model layer).")
    digest_verified: bool = Field(description="The blob was hashed and matched (now or cached by identity).")
    template: str | None = Field(
        default=None, description="Ollama's chat template: Go text/template, not Jinja."
    )
    template_syntax: Literal["go"] = "go"
    system: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="The params layer (stop, num_ctx, ...).")
    context_hint: int | None = Field(default=None, description="params.num_ctx: Ollama's default context.")
    projector: str | None = Field(default=None, description="Blob path of a vision projector layer, if any.")
    adapters: list[str] = Field(default_factory=list, description="Blob paths of LoRA adapter layers.")


class ModelSpec(FrozenContract):
    ref: str = Field(description="What the user typed.")
    kind: SourceKind
    name: str = Field(description="Short readable name, used as the served model name.")
    repo_id: str | None = None
    revision: str | None = None
    architecture: str = Field(description='HF architectures[0] or GGUF general.architecture, e.g. "llama".')
    model_type: str | None = None
    parameters: int = Field(description="Total parameter count (all experts).")
    active_parameters: int = Field(description="Parameters used per token (MoE: active experts only).")
    parameters_source: Literal["tensors", "config"]
    hidden_size: int
    intermediate_size: int | None = None
    vocab_size: int
    max_context: int = Field(description="Trained context length (max_position_embeddings / context_length).")
    torch_dtype: str | None = None
    tied_embeddings: bool = False
    attention: Attention
    moe: MoE | None = None
    quantization: Quantization = Field(default_factory=Quantization)
    # Weight sizes as stored in this checkpoint/file (exact when parameters_source == "tensors").
    weights_bytes: int
    embedding_parameters: int = 0
    embedding_bytes: int = 0
    output_parameters: int = Field(default=0, description="lm_head/output.weight; 0 when tied.")
    output_bytes: int = 0
    layer_parameters: list[int] = Field(default_factory=list, description="Per transformer block.")
    layer_bytes: list[int] = Field(default_factory=list, description="Per transformer block.")
    other_bytes: int = Field(default=0, description="Final norm and anything outside the blocks.")
    bytes_by_dtype: dict[str, int] = Field(default_factory=dict)
    files: list[ModelFile] = Field(default_factory=list)
    gguf_variants: list[GGUFVariant] = Field(default_factory=list)
    trust_remote_code: bool = Field(default=False, description="The config asks for custom code.")
    bytes_read: int = Field(default=0, description="Bytes fetched over the network to build this spec.")
    notes: list[str] = Field(default_factory=list)
    ollama: OllamaSource | None = Field(default=None, description="Set for ollama:NAME references.")
    has_chat_template: bool | None = Field(
        default=None,
        description="GGUF: whether tokenizer.chat_template is present (False: a base model, chat needs a "
        "template from the profile). None: not known from what was read.",
    )


class QuantizedVariant(FrozenContract):
    """A pre-quantized sibling found through the Hub's model tree (`base_model:quantized:<id>`)."""

    repo_id: str
    method: QuantMethod | None = Field(default=None, description="Guessed from the repo's tags and name.")
    downloads: int | None = None
