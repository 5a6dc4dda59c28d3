"""The `Plan` contract: what `plan` decides and `serve`/engines consume. `--json` prints `Plan`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, computed_field, model_validator

from llmhost.contract import Contract
from llmhost.engine_ids import EngineName, LlamaCppRuntime
from llmhost.hardware.models import Hardware
from llmhost.plan.options import EngineOptions
from llmhost.plan.reasons import Reason, ReasonCode, messages

Goal = Literal["quality", "throughput", "latency"]


class MemoryBreakdown(Contract):
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int = Field(description="Activations / compute buffers / CUDA graphs.")
    overhead_bytes: int = Field(description="Runtime context, non-torch memory, output buffers.")
    total_bytes: int


class DeviceMemory(Contract):
    device: str = Field(description='"cuda:0", "cpu", "metal:0"...')
    breakdown: MemoryBreakdown
    capacity_bytes: int = Field(description="What the engine may use on this device.")
    decode_read_bytes: int | None = Field(
        default=None,
        description="Weight bytes this device reads per decoded token (active experts only, no "
        "embedding table); the roofline speed uses it.",
    )


class PlanModel(Contract):
    """The model as the plan saw it (a digest of ModelSpec)."""

    ref: str
    name: str
    architecture: str
    parameters: int
    active_parameters: int
    max_context: int
    quantization: str
    weights_bytes: int
    has_chat_template: bool | None = Field(
        default=None, description="False: a base model's GGUF without tokenizer.chat_template."
    )


class _RendersReasons(Contract):
    """A contract with a list of `Reason`s (`DETAIL`) and their messages as a computed field (`RENDERED`).

    Read back (`plan --json` into `Plan.model_validate`), the rendered list must be the details' messages;
    `model_copy` refuses an update of it, which it would otherwise drop without a word (it does not
    validate, and the computed field wins)."""

    RENDERED: ClassVar[str] = ""
    DETAIL: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def read_back_rendered(cls, data: Any) -> Any:
        if not isinstance(data, dict) or cls.RENDERED not in data:
            return data
        data = dict(data)
        given = data.pop(cls.RENDERED)
        details = [r if isinstance(r, Reason) else Reason.model_validate(r) for r in data.get(cls.DETAIL, [])]
        if given != messages(details):
            raise ValueError(f"{cls.RENDERED} must be the messages of {cls.DETAIL}")
        data[cls.DETAIL] = details
        return data

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        if update and self.RENDERED in update:
            raise TypeError(f"{self.RENDERED} is rendered from {self.DETAIL}: update {self.DETAIL} instead")
        return super().model_copy(update=update, deep=deep)


class Candidate(_RendersReasons):
    RENDERED: ClassVar[str] = "reasons"
    DETAIL: ClassVar[str] = "reasons_detail"

    engine: EngineName
    quantization: str = Field(description='"bf16", "fp16", "fp8", "awq", "gptq", "Q4_K_M"...')
    kv_cache_dtype: str = Field(description='"f16", "bf16", "fp8", "q8_0", "q4_0"...')
    context_length: int
    concurrency: int
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    nodes: int = Field(default=1, description="Machines the candidate spans (TP inside a node, PP across).")
    gpu_layers: int | None = Field(default=None, description="llama.cpp -ngl; None for vLLM.")
    fits: bool
    memory: MemoryBreakdown
    per_device: list[DeviceMemory] = Field(default_factory=list)
    kv_bytes_per_token: int
    max_context: int
    max_concurrency: int
    decode_tokens_per_s: float | None
    reasons_detail: list[Reason] = Field(
        default_factory=list,
        description="Why the plan shaped this candidate as it did: code, level, fields, message "
        "(`reasons` is their messages).",
    )
    # What the engine module needs to launch this candidate.
    model_source: str = Field(description="Repo id, local dir or GGUF file/tag the engine should load.")
    gguf_file: str | None = Field(default=None, description="For llama.cpp: the GGUF file (first split).")
    engine_options: EngineOptions = Field(
        description="Planned engine knobs, typed per engine (plan/options.py: LlamaCppOptions, VllmOptions, "
        "MlxOptions): gpu_memory_utilization, max_num_seqs, n_parallel, n_batch, threads, cpu_kv_cache_gib..."
        " Knobs the plan leaves to the engine are left out."
    )
    compute_source: Literal["estimate", "llama.cpp dry run"] = Field(
        default="estimate",
        description="Where compute_bytes comes from: llmhost's model of the engine, or (llama.cpp on the "
        "CPU) the installed llama.cpp's own no-alloc reservation of its graph.",
    )

    @model_validator(mode="before")
    @classmethod
    def tag_engine_options(cls, data: Any) -> Any:
        """Options given as a mapping (a plan read back, a state file) are the candidate's engine's."""
        if not isinstance(data, dict) or "engine" not in data:
            return data
        options = data.get("engine_options", {})
        if isinstance(options, Mapping) and "engine" not in options:
            data = {**data, "engine_options": {**options, "engine": data["engine"]}}
        return data

    @model_validator(mode="after")
    def options_are_the_engines(self) -> Self:
        if self.engine_options.engine != self.engine:
            raise ValueError(
                f"engine_options are {self.engine_options.engine}'s, the candidate is {self.engine}'s"
            )
        return self

    @computed_field(description="The reasons' English sentences (`reasons_detail`'s messages).")  # type: ignore[prop-decorator]
    @property
    def reasons(self) -> list[str]:
        return messages(self.reasons_detail)

    @property
    def reason_codes(self) -> list[ReasonCode]:
        return [r.code for r in self.reasons_detail]


class Plan(_RendersReasons):
    RENDERED: ClassVar[str] = "advice"
    DETAIL: ClassVar[str] = "advice_detail"

    model: PlanModel
    hardware: Hardware
    goal: Goal = "quality"
    requested_context: int | None = None
    requested_concurrency: int = 1
    nodes: int = Field(default=1, description="Nodes of `hardware`'s type the plan may span (--nodes).")
    candidates: list[Candidate]
    chosen: int | None
    advice_detail: list[Reason] = Field(
        default_factory=list, description="What would fit when nothing does (`advice` is their messages)."
    )

    @computed_field(description="What would fit when nothing does (`advice_detail`'s messages).")  # type: ignore[prop-decorator]
    @property
    def advice(self) -> list[str]:
        return messages(self.advice_detail)

    vllm_version: str | None = Field(
        default=None,
        description="The vLLM release the vLLM candidates were planned for (its memory accounting and "
        "scheduler defaults); None when no vLLM GPU candidate was planned.",
    )
    vllm_version_source: Literal["--vllm-version", "installed", "newest modelled"] | None = None

    @property
    def chosen_candidate(self) -> Candidate | None:
        return None if self.chosen is None else self.candidates[self.chosen]


class PlanRequest(Contract):
    """What the user asked `plan` for (CLI options / profile)."""

    context: int | None = Field(default=None, description="Requested context; None = engine/model default.")
    concurrency: int = 1
    goal: Goal = "quality"
    engine: EngineName | None = None
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    data_parallel_size: int | None = Field(
        default=None,
        description="vLLM --data-parallel-size: engine replicas (each TP GPUs, its own KV cache and "
        "max_num_seqs); None = 1.",
    )
    enable_expert_parallel: bool = Field(
        default=False, description="vLLM --enable-expert-parallel: MoE experts split whole over TP x DP GPUs."
    )
    max_num_seqs: int | None = Field(default=None, description="vLLM --max-num-seqs; None = vLLM's default.")
    max_num_batched_tokens: int | None = Field(
        default=None, description="vLLM --max-num-batched-tokens; None = vLLM's default for the GPU."
    )
    vllm_version: str | None = Field(
        default=None,
        description="Plan vLLM candidates for this vLLM release (X.Y.Z); None = the newest modelled.",
    )
    vllm_version_source: Literal["--vllm-version", "installed", "newest modelled"] | None = Field(
        default=None, description="Where vllm_version came from (filled in by the app layer)."
    )
    nodes: int = Field(default=1, description="Nodes of the hardware's type to plan over (vLLM on GPUs).")
    llamacpp_runtime: LlamaCppRuntime | None = Field(
        default=None,
        description="The llama.cpp runtime that will serve (None = the native llama-server). "
        "llama-cpp-python reserves logits for a whole batch, which grows its compute buffer.",
    )
