"""What each engine launches a candidate with: one typed model per engine (`Candidate.engine_options`).

The planner's candidate producers fill them in, each engine module's argv builder reads them, `plan`
renders them. They are a union tagged by the candidate's engine (`engine`, taken from the candidate when
a plan is read back, and left out of the JSON). A knob the plan leaves out is None and is left out of
the JSON too, so `plan --json` prints only what the plan set (tests/plan/test_engine_options_pinned.py
pins that text). Unknown knobs are refused (`extra="forbid"`).

Field order is the order `plan --json` prints them in.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, PositiveFloat, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

from llmhost.contract import Amount, Contract, Count, MemoryShare
from llmhost.engine_ids import LLAMACPP, MLX, VLLM, EngineName, Llamacpp, Mlx, Vllm

Scalar = str | int | float | bool


class Placement(Protocol):
    """What `layout` reads of a candidate besides its options (a `Candidate` is one)."""

    gpu_layers: int | None
    tensor_parallel_size: int
    pipeline_parallel_size: int
    nodes: int


class _EngineOptions(Contract):
    """The knobs one engine launches with. Code reads the typed fields; `opts["n_ctx"]`, `opts.get(...)`
    and `"x" in opts` read the knobs the plan set, as `plan --json` prints them."""

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        dumped = handler(self)
        if isinstance(dumped, dict):
            return {k: v for k, v in dumped.items() if v is not None}
        return dumped

    def set_knobs(self) -> dict[str, Scalar]:
        """The knobs the plan set, by name (what `plan --json` prints)."""
        return {
            name: value
            for name, value in self
            if value is not None and not type(self).model_fields[name].exclude
        }

    def __getitem__(self, key: str) -> Scalar:
        return self.set_knobs()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.set_knobs()

    def get(self, key: str, default: Scalar | None = None) -> Scalar | None:
        return self.set_knobs().get(key, default)

    @property
    def runs_on_cpu(self) -> bool:
        """The plan put the engine on the CPU only (vLLM's CPU build, MLX's CPU device, llama.cpp with no
        layer offloaded)."""
        return False

    @property
    def needs_conversion(self) -> bool:
        """The checkpoint must be converted (GGUF, MLX) before this candidate can be launched."""
        return False

    @property
    def cpu_build(self) -> bool:
        """The engine runs a CPU-only build or device of its own (`plan` says "vLLM CPU", "MLX LM CPU");
        llama.cpp has one build for every device, so a CPU plan is only a placement."""
        return self.runs_on_cpu

    def layout(self, placement: Placement) -> str:
        """How `plan`'s table describes where the candidate runs."""
        return "CPU" if self.runs_on_cpu else "GPU"

    @property
    def replicas(self) -> int:
        """Engine replicas one deployment runs, each with its own ranks and KV pool (vLLM's data
        parallelism); 1 for every engine that has no such thing."""
        return 1

    def replica_serve_args(self) -> list[str]:
        """`llmhost serve` flags that keep the replicas (and their expert split) when the plan is made
        again elsewhere (export); none with one replica."""
        return []


class LlamaCppOptions(_EngineOptions):
    engine: Llamacpp = Field(default=LLAMACPP, exclude=True)
    n_parallel: Count | None = Field(default=None, description="-np: parallel sequences (slots).")
    n_ctx: Count | None = Field(
        default=None, description="-c: the KV context over all slots (context x n_parallel)."
    )
    n_batch: Count | None = Field(default=None, description="-b: logical batch size.")
    n_ubatch: Count | None = Field(default=None, description="-ub: physical batch size.")
    flash_attn: bool | None = Field(default=None, description="-fa on/off (a quantized V cache needs it).")
    cache_type_k: str | None = None
    cache_type_v: str | None = None
    n_gpu_layers: Amount | None = Field(default=None, description="-ngl: layers offloaded to the GPUs.")
    threads: Count | None = Field(default=None, description="-t: CPU threads (the physical cores).")
    needs_gguf_conversion: bool | None = Field(
        default=None, description="True: the checkpoint is not a GGUF; convert it (or use a GGUF sibling)."
    )
    repack: bool | None = Field(
        default=None,
        description="False on an AMX CPU (plan/llamacpp_candidates.amx_host): llama-server runs with "
        "--no-repack. None: llama.cpp's default (repacked CPU weights).",
    )

    @property
    def runs_on_cpu(self) -> bool:
        """llama.cpp has one build for every device: no layer offloaded is a CPU-only plan."""
        return self.n_gpu_layers == 0

    @property
    def cpu_build(self) -> bool:
        return False

    def layout(self, placement: Placement) -> str:
        return f"ngl {placement.gpu_layers}" if placement.gpu_layers else "CPU"

    @property
    def needs_conversion(self) -> bool:
        return bool(self.needs_gguf_conversion)


class VllmOptions(_EngineOptions):
    engine: Vllm = Field(default=VLLM, exclude=True)
    device: Literal["cpu"] | None = Field(default=None, description='"cpu": vLLM\'s CPU build; None: GPUs.')
    cpu_kv_cache_gib: Count | PositiveFloat | None = Field(
        default=None,
        description="VLLM_CPU_KVCACHE_SPACE (whole GiB at launch; a fraction is rounded up).",
    )
    gpu_memory_utilization: MemoryShare | None = Field(
        default=None, description="--gpu-memory-utilization: a share of each GPU's total memory."
    )
    max_num_seqs: Count | None = None
    max_num_batched_tokens: Count | None = None
    max_model_len: Count | None = None
    enable_prefix_caching: bool | None = None
    dtype: str | None = Field(default=None, description='--dtype: "bfloat16", "float16", "auto".')
    kv_cache_dtype: str | None = Field(default=None, description='--kv-cache-dtype: "auto", "fp8"...')
    tensor_parallel_size: Count | None = None
    pipeline_parallel_size: Count | None = None
    data_parallel_size: Count | None = Field(
        default=None, description="--data-parallel-size: replicas, each with its own KV pool (set when > 1)."
    )
    enable_expert_parallel: bool | None = Field(
        default=None, description="--enable-expert-parallel: MoE experts split whole over TP x DP GPUs."
    )
    quantization: str | None = Field(default=None, description='"fp8", "awq", "gptq".')
    quantize_online: bool | None = Field(
        default=None,
        description="True: vLLM quantizes while loading (--quantization); False: the checkpoint declares "
        "its method in config.json and gets no flag.",
    )
    threads: Count | None = Field(default=None, description="CPU threads (vLLM's CPU build).")
    enforce_eager: bool | None = Field(default=None, description="--enforce-eager: no CUDA graphs.")

    @property
    def runs_on_cpu(self) -> bool:
        return self.device == "cpu"

    def layout(self, placement: Placement) -> str:
        tp, pp = placement.tensor_parallel_size, placement.pipeline_parallel_size
        if self.runs_on_cpu:
            return "CPU"
        if placement.nodes > 1:
            return f"TP {tp} x PP {pp}, {placement.nodes} nodes"
        if pp > 1:
            return f"PP {pp}"
        dp = self.data_parallel_size
        if dp is not None and dp > 1:
            ep = " EP" if self.enable_expert_parallel is True else ""
            return f"DP {dp} x TP {tp}{ep}"
        return f"TP {tp}" if tp > 1 else "1 GPU"

    @property
    def replicas(self) -> int:
        dp = self.data_parallel_size
        return dp if dp is not None and dp > 1 else 1

    def replica_serve_args(self) -> list[str]:
        if self.replicas <= 1:
            return []
        ep = ["--enable-expert-parallel"] if self.enable_expert_parallel else []
        return ["--data-parallel-size", str(self.replicas), *ep]


class MlxOptions(_EngineOptions):
    engine: Mlx = Field(default=MLX, exclude=True)
    device: Literal["metal", "cpu"] | None = None
    decode_concurrency: Count | None = Field(default=None, description="--decode-concurrency.")
    prompt_concurrency: Count | None = Field(default=None, description="--prompt-concurrency.")
    prompt_cache_bytes: Amount | None = Field(
        default=None, description="--prompt-cache-bytes: the KV budget."
    )
    q_bits: Count | None = Field(default=None, description="The checkpoint's (or conversion's) bits.")
    q_group_size: Count | None = None
    needs_mlx_conversion: bool | None = Field(
        default=None, description="True: run `mlx_lm.convert` first (convert_command says how)."
    )
    convert_command: str | None = None

    @property
    def runs_on_cpu(self) -> bool:
        return self.device == "cpu"

    @property
    def needs_conversion(self) -> bool:
        return bool(self.needs_mlx_conversion)

    def layout(self, placement: Placement) -> str:
        return "CPU" if self.runs_on_cpu else "Metal"


EngineOptions = Annotated[LlamaCppOptions | VllmOptions | MlxOptions, Field(discriminator="engine")]
OPTIONS_BY_ENGINE: dict[EngineName, type[LlamaCppOptions | VllmOptions | MlxOptions]] = {
    LLAMACPP: LlamaCppOptions,
    VLLM: VllmOptions,
    MLX: MlxOptions,
}
