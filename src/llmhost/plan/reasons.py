"""Why the plan decided what it did: a `Reason` is a code and its fields; its sentence is rendered from them.

Every code has one entry in `REGISTRY`: its level, the fields it carries (name -> type, or the strings
allowed), and the template its English sentence comes from. A `Reason` checks its fields against that
entry when it is built (or read back from `plan --json`), so a code always carries what its consumers
read: `advice` takes a GGUF sibling's repo id from `needs_gguf_sibling`'s `repo` field, and tests assert
codes, not phrases. The idea is GPUStack's scheduler messages (docs/scheduler.md there: each filtering
policy says which workers it dropped and why); here each reason also has a machine-readable code.

Levels: `info` (how the candidate runs), `warning` (it runs, at a cost: offload, lowered settings),
`blocker` (it does not run as planned: does not fit, needs a conversion, would fail at start-up).
To add a code: a `ReasonCode` member, a `REGISTRY` entry, a row in docs/planning.md (a test checks it).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import model_validator

from llmhost.contract import FrozenContract
from llmhost.engine_ids import ENGINE_IDS, title
from llmhost.units import format_bytes

Level = Literal["info", "warning", "blocker"]
Scalar = str | int | float | bool | None
Fields = Mapping[str, Scalar]
# A field's type: one of these, a tuple of them (e.g. `(str, NONE)` for optional), or a frozenset of the
# strings it may be.
NONE = type(None)
FieldType = type | tuple[type, ...] | frozenset[str]

ENGINES = frozenset(ENGINE_IDS)


class ReasonCode(StrEnum):
    # How the plan chose (ranking.why_chosen).
    CHOSEN_FOR_QUALITY = "chosen_for_quality"
    CHOSEN_FOR_LATENCY = "chosen_for_latency"
    CHOSEN_FOR_THROUGHPUT = "chosen_for_throughput"
    # Every engine.
    CONTEXT_LOWERED = "context_lowered"
    # llama.cpp.
    LLAMA_CPP_PYTHON_ONE_REQUEST = "llama_cpp_python_one_request"
    PARTIAL_OFFLOAD = "partial_offload"
    ALL_LAYERS_ON_GPU = "all_layers_on_gpu"
    CPU_ONLY = "cpu_only"
    COMPUTE_MEASURED = "compute_measured"
    DOES_NOT_FIT_WITH_OFFLOAD = "does_not_fit_with_offload"
    NEEDS_GGUF_SIBLING = "needs_gguf_sibling"
    NEEDS_GGUF_CONVERSION = "needs_gguf_conversion"
    OFFLOAD_SPEED = "offload_speed"
    # vLLM on GPUs.
    PRE_QUANTIZED_SIBLING = "pre_quantized_sibling"
    GPU_MEMORY_UTILIZATION_LOWERED = "gpu_memory_utilization_lowered"
    # The ways vLLM fails at start-up (estimate/vllm.start_failure), each as vLLM says it.
    VLLM_UTILIZATION_EXCEEDS_FREE = "utilization_exceeds_free"
    VLLM_WEIGHTS_EXCEED_BUDGET = "weights_exceed_budget"
    VLLM_NO_KV_MEMORY = "no_kv_memory"
    VLLM_MAX_LEN_EXCEEDS_KV = "max_len_exceeds_kv"
    VLLM_CUDA_GRAPHS_AFTER_KV = "cuda_oom_after_kv"
    MAX_NUM_SEQS_BELOW_CONCURRENCY = "max_num_seqs_below_concurrency"
    KV_CACHE_FEWER_SEQUENCES = "kv_cache_fewer_sequences"
    KV_CACHE_SEQUENCES = "kv_cache_sequences"
    TENSOR_PARALLEL_MLA = "tensor_parallel_mla"
    TENSOR_PARALLEL_KV_REPLICATED = "tensor_parallel_kv_replicated"
    TENSOR_PARALLEL = "tensor_parallel"
    PIPELINE_PARALLEL = "pipeline_parallel"
    DATA_PARALLEL = "data_parallel"
    FP8_ONLINE = "fp8_online"
    # vLLM's CPU build.
    VLLM_CPU_KV_CACHE = "vllm_cpu_kv_cache"
    NEEDS_RAM = "needs_ram"
    # MLX LM.
    MLX_ON_METAL = "mlx_on_metal"
    MLX_ON_CPU = "mlx_on_cpu"
    MLX_KV_CACHE = "mlx_kv_cache"
    NEEDS_MLX_CONVERSION = "needs_mlx_conversion"
    MLX_QUANTIZED_CHECKPOINT = "mlx_quantized_checkpoint"
    MLX_LOADS_AS_IS = "mlx_loads_as_is"
    MLX_DOES_NOT_FIT = "mlx_does_not_fit"
    # Several nodes.
    MULTINODE_LAYOUT = "multinode_layout"
    MULTINODE_DECODE_ESTIMATE = "multinode_decode_estimate"
    ONE_NODE_PREFERRED = "one_node_preferred"
    ONE_NODE_SUFFICES = "one_node_suffices"
    # serve: the chosen engine cannot run here.
    ENGINE_FALLBACK = "engine_fallback"
    # Advice (Plan.advice_detail): what would fit when nothing does.
    ADVICE_MLX_CONVERSION = "advice_mlx_conversion"
    ADVICE_GGUF_CONVERSION = "advice_gguf_conversion"
    ADVICE_SHORTER_CONTEXT = "advice_shorter_context"
    ADVICE_FP8_KV_CACHE = "advice_fp8_kv_cache"
    ADVICE_Q8_0_KV_CACHE = "advice_q8_0_kv_cache"
    ADVICE_SMALLER_QUANTIZATION = "advice_smaller_quantization"
    ADVICE_MORE_GPUS = "advice_more_gpus"
    ADVICE_EXCEEDS_MACHINE = "advice_exceeds_machine"
    ADVICE_PREQUANTIZED_INT4 = "advice_prequantized_int4"
    # Advice when there is no candidate at all.
    NO_LLAMACPP_KV_TYPE = "no_llamacpp_kv_type"
    NO_VLLM_KV_TYPE = "no_vllm_kv_type"
    GGUF_NEEDS_LLAMACPP = "gguf_needs_llamacpp"
    NO_ENGINE_FOR_QUANTIZATION = "no_engine_for_quantization"
    QUANTIZED_NEEDS_VLLM_GPU = "quantized_needs_vllm_gpu"
    VLLM_CANNOT_RUN_HERE = "vllm_cannot_run_here"
    NO_ENGINE = "no_engine"


class _Formatter(string.Formatter):
    """str.format, plus `{n:gib}` (bytes as "1.5 GiB") and `{n:size}` (GiB, or MiB under one GiB: a small
    model's KV cache must not read as "0.0 GiB")."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec == "gib":
            return format_bytes(value, ".1f", units=("GiB",))
        if format_spec == "size":
            return format_bytes(value, ".1f")
        return format(value, format_spec)


_FORMAT = _Formatter()
Render = str | Callable[[Fields], str]


@dataclass(frozen=True)
class ReasonSpec:
    level: Level
    fields: Mapping[str, FieldType]
    render: Render
    about: str = ""  # for docs/planning.md, where `render` is a function: the sentence, with its variants

    @property
    def sentence(self) -> str:
        """The sentence as docs/planning.md shows it: the template, or `about`."""
        return self.render if isinstance(self.render, str) else self.about

    def message(self, fields: Fields) -> str:
        if isinstance(self.render, str):
            return _FORMAT.format(self.render, **fields)
        return self.render(fields)


def template_fields(template: str) -> set[str]:
    """The field names a str template refers to."""
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in _FORMAT.parse(template) if name}


def _f(template: str, fields: Fields) -> str:
    return _FORMAT.format(template, **fields)


def _title(fields: Fields, key: str = "engine") -> str:
    return title(str(fields[key]))


def _speed_suffix(fields: Fields) -> str:
    speed = fields["speed"]
    return f" (~{speed:.0f} tok/s)" if isinstance(speed, int | float) and speed else ""


_CONTEXT_LIMITS = {
    "accelerator": "to keep every layer on the accelerator",
    "ram": "to fit in RAM",
    "kv_cache": "so the KV cache holds it",
    "kv_cache_ram": "so the KV cache fits in RAM",
    "memory": "to fit",
}
_NO_LENGTH_HELPS = (
    "; no --max-model-len helps. What would: smaller weights (a lower quantization), a higher "
    "--gpu-memory-utilization, or more GPUs (a larger --tp)"
)
_GGUF_HOW = "convert it with llama.cpp's convert_hf_to_gguf.py and llama-quantize, or plan a -GGUF repo"
Code = ReasonCode


def _one_request(f: Fields) -> str:
    asked = f["asked"]
    return (
        "llama-cpp-python's server runs one request at a time (concurrency 1, the whole context per "
        "request; others queue): the native llama-server serves several in parallel slots"
        + (f" (asked: {asked})" if isinstance(asked, int) and asked > 1 else "")
    )


def _all_layers(f: Fields) -> str:
    gpus = f["gpus"]
    split = f"s ({gpus}, split by layer)" if isinstance(gpus, int) and gpus > 1 else ""
    return f"all {f['layers']} layers on the GPU{split}"


def _gguf_advice(f: Fields) -> str:
    how = f"`llmhost plan {f['repo']}:{f['quantization']}`" if f["repo"] else _GGUF_HOW
    return (
        f"This checkpoint cannot run here as is, but a {f['quantization']} GGUF of it would fit "
        f"with llama.cpp{_speed_suffix(f)}: {how}."
    )


def _mlx_kv(f: Fields) -> str:
    note = _f(
        "KV cache: 16-bit, grown in {step}-token steps: {tokens} tokens x {sequences} sequence(s) = "
        "{kv_cache_bytes:size}",
        f,
    )
    if f["sliding_layers"]:
        note += _f("; {sliding_layers} sliding-window layers keep a rotating cache of {window} tokens", f)
    return note


def _prequantized_int4(f: Fields) -> str:
    fit = (
        f"{f['concurrency']} x {f['context']} tokens of KV cache"
        if f["max_context"] is None
        else f"up to `--context {f['max_context']}`"
    )
    where = f"`base_model:quantized:{f['repo']}` on the Hub" if f["repo"] else "the Hub"
    return (
        _f(
            "An AWQ or GPTQ 4-bit checkpoint of this model would fit with vLLM at tensor parallel {tp} "
            "({weights_bytes:gib} of weights over {tp} GPU(s), ",
            f,
        )
        + f"{fit}); look for one under {where} and plan it."
    )


def _more_gpus(f: Fields) -> str:
    what_if = f" (try `--hardware {f['catalog_id']}:{f['count']}`)" if f["catalog_id"] else ""
    return _f(
        "More GPUs: about {need_bytes:gib} for {quantization} weights and KV needs {count}x {gpu}", f
    ) + (f"{what_if}.")


REGISTRY: dict[ReasonCode, ReasonSpec] = {
    Code.CHOSEN_FOR_QUALITY: ReasonSpec(
        "info",
        {"quantization": str},
        "chosen for quality: {quantization} is the highest precision that fits the requested context",
    ),
    Code.CHOSEN_FOR_LATENCY: ReasonSpec(
        "info",
        {"speed": float, "engine": ENGINES},
        lambda f: (
            _f("chosen for latency: fastest decode (~{speed:.0f} tok/s) among fitting ", f)
            + f"{_title(f)} options"
        ),
        about="chosen for latency: fastest decode (~{speed} tok/s) among fitting {engine} options",
    ),
    Code.CHOSEN_FOR_THROUGHPUT: ReasonSpec(
        "info",
        {"sequences": int, "engine": ENGINES},
        lambda f: f"chosen for throughput: {f['sequences']} concurrent sequences with {_title(f)}",
        about="chosen for throughput: {sequences} concurrent sequences with {engine}",
    ),
    Code.CONTEXT_LOWERED: ReasonSpec(
        "warning",
        {"context": int, "limit": frozenset(_CONTEXT_LIMITS)},
        lambda f: f"context lowered to {f['context']} {_CONTEXT_LIMITS[str(f['limit'])]}",
        about=(
            "context lowered to {context} to keep every layer on the accelerator (limit `accelerator`) / "
            "to fit in RAM (`ram`) / so the KV cache holds it (`kv_cache`) / so the KV cache fits in RAM "
            "(`kv_cache_ram`) / to fit (`memory`)"
        ),
    ),
    Code.LLAMA_CPP_PYTHON_ONE_REQUEST: ReasonSpec(
        "warning",
        {"asked": int},
        _one_request,
        about=(
            "llama-cpp-python's server runs one request at a time (...) [(asked: {asked}) when more than 1]"
        ),
    ),
    Code.PARTIAL_OFFLOAD: ReasonSpec(
        "warning",
        {"gpu_layers": int, "layers": int},
        "partial offload: {gpu_layers} of {layers} layers (and the output layer) on the GPU, the rest on the "
        "CPU",
    ),
    Code.ALL_LAYERS_ON_GPU: ReasonSpec(
        "info",
        {"layers": int, "gpus": int},
        _all_layers,
        about="all {layers} layers on the GPU [s ({gpus}, split by layer) with several]",
    ),
    Code.CPU_ONLY: ReasonSpec("info", {}, "CPU only"),
    Code.COMPUTE_MEASURED: ReasonSpec(
        "info", {}, "compute buffer measured by the installed llama.cpp (no-alloc dry run, as --fit does)"
    ),
    Code.DOES_NOT_FIT_WITH_OFFLOAD: ReasonSpec(
        "blocker",
        {"shortfall": str},
        lambda f: (
            f"does not fit even with CPU offload: {f['shortfall']}" if f["shortfall"] else "does not fit"
        ),
        about="does not fit even with CPU offload: {shortfall} (each short device: needs X of Y)",
    ),
    Code.NEEDS_GGUF_SIBLING: ReasonSpec(
        "blocker",
        {"quantization": str, "repo": str},
        "needs a {quantization} GGUF: `llmhost plan {repo}:{quantization}` (a GGUF sibling on the Hub)",
    ),
    Code.NEEDS_GGUF_CONVERSION: ReasonSpec(
        "blocker",
        {"quantization": str},
        "needs a {quantization} GGUF of this model (convert with llama.cpp or pick a -GGUF repo)",
    ),
    Code.OFFLOAD_SPEED: ReasonSpec(
        "warning", {"speed": float}, "CPU offload costs speed: ~{speed:.0f} tok/s"
    ),
    Code.PRE_QUANTIZED_SIBLING: ReasonSpec(
        "info",
        {"quantization": str, "repo": str},
        "pre-quantized {quantization} checkpoint {repo} (found through the Hub's model tree)",
    ),
    Code.GPU_MEMORY_UTILIZATION_LOWERED: ReasonSpec(
        "warning",
        {"held_bytes": int, "device": str, "planned": float, "lowered": float},
        "other processes hold {held_bytes:gib} on {device}: gpu_memory_utilization lowered from "
        "{planned:.2f} to {lowered:.2f} (it is a share of TOTAL memory)",
    ),
    Code.VLLM_UTILIZATION_EXCEEDS_FREE: ReasonSpec(
        "blocker",
        {
            "free_bytes": int,
            "device": str,
            "held_bytes": int,
            "at_most": float,
            "utilization": float,
            "total_bytes": int,
        },
        "[utilization_exceeds_free] vLLM would refuse to start: free memory {free_bytes:gib} on {device} is "
        "less than gpu_memory_utilization {utilization:.2f} x {total_bytes:gib} (other processes hold "
        "{held_bytes:gib}); "
        "at most {at_most:.2f} starts",
    ),
    Code.VLLM_WEIGHTS_EXCEED_BUDGET: ReasonSpec(
        "blocker",
        {"weights_bytes": int, "utilization": float, "total_bytes": int},
        "[weights_exceed_budget] vLLM would fail at start-up (No available memory for the cache blocks): "
        "the weights alone ({weights_bytes:gib} per GPU) exceed {utilization:.2f} x {total_bytes:gib}"
        + _NO_LENGTH_HELPS,
    ),
    Code.VLLM_NO_KV_MEMORY: ReasonSpec(
        "blocker",
        {"weights_bytes": int, "activation_bytes": int, "utilization": float, "total_bytes": int},
        "[no_kv_memory] vLLM would fail at start-up (No available memory for the cache blocks): "
        "weights ({weights_bytes:gib} per GPU) plus activations ({activation_bytes:gib}) and non-torch "
        "memory leave no room in {utilization:.2f} x {total_bytes:gib}" + _NO_LENGTH_HELPS,
    ),
    Code.VLLM_MAX_LEN_EXCEEDS_KV: ReasonSpec(
        "blocker",
        {"context": int, "request_bytes": int, "kv_cache_bytes": int, "max_context": int},
        "[max_len_exceeds_kv] vLLM would fail at start-up: max seq len ({context}) needs "
        "{request_bytes:gib} of KV cache, larger than the {kv_cache_bytes:gib} available; the estimated "
        "maximum model length is {max_context}: `--max-model-len {max_context}` would work",
    ),
    Code.VLLM_CUDA_GRAPHS_AFTER_KV: ReasonSpec(
        "blocker",
        {"cudagraph_bytes": int, "utilization": float, "total_bytes": int},
        "[cuda_oom_after_kv] vLLM would run out of memory capturing CUDA graphs ({cudagraph_bytes:gib}) "
        "after the KV cache: this vLLM captures them outside {utilization:.2f} x {total_bytes:gib}; a lower "
        "--gpu-memory-utilization leaves them room",
    ),
    Code.MAX_NUM_SEQS_BELOW_CONCURRENCY: ReasonSpec(
        "blocker",
        {"max_num_seqs": int, "asked": int},
        "max_num_seqs {max_num_seqs} schedules fewer than the {asked} sequences asked",
    ),
    Code.KV_CACHE_FEWER_SEQUENCES: ReasonSpec(
        "blocker",
        {"sequences": int, "context": int, "asked": int},
        "KV cache holds {sequences} sequences of {context} tokens, fewer than the {asked} asked",
    ),
    Code.KV_CACHE_SEQUENCES: ReasonSpec(
        "info",
        {"kv_cache_bytes": int, "sequences": int, "context": int},
        "KV cache {kv_cache_bytes:gib} per GPU: {sequences} sequences of {context} tokens at once",
    ),
    Code.TENSOR_PARALLEL_MLA: ReasonSpec(
        "info",
        {"tp": int},
        "tensor parallel {tp}: weights split, the MLA latent cache is replicated on every GPU",
    ),
    Code.TENSOR_PARALLEL_KV_REPLICATED: ReasonSpec(
        "warning",
        {"tp": int, "kv_heads": int, "replicas": int},
        "tensor parallel {tp} > {kv_heads} KV heads: KV heads replicated {replicas}x",
    ),
    Code.TENSOR_PARALLEL: ReasonSpec(
        "info", {"tp": int}, "tensor parallel {tp}: weights and KV heads split over {tp} GPUs"
    ),
    Code.DATA_PARALLEL: ReasonSpec(
        "info",
        {"dp": int, "gpus": int, "experts": frozenset({"whole", "sliced", "none"})},
        lambda f: (
            f"data parallel {f['dp']}: {f['dp']} engine replicas, each with the whole attention and "
            "its own KV cache"
            + {
                "whole": f"; MoE experts split whole over all {f['gpus']} GPUs (--enable-expert-parallel)",
                "sliced": f"; every MoE expert sliced over all {f['gpus']} GPUs",
                "none": "",
            }[str(f["experts"])]
        ),
        about="data parallel {dp}: {dp} engine replicas, each with the whole attention and its own KV cache; "
        "MoE experts split whole over all {gpus} GPUs (--enable-expert-parallel), or every expert sliced "
        "over them",
    ),
    Code.PIPELINE_PARALLEL: ReasonSpec(
        "info",
        {"pp": int},
        "pipeline parallel {pp}: each GPU holds about 1/{pp} of the layers and their KV cache "
        "(tensor parallelism cannot divide the attention heads over this many GPUs)",
    ),
    Code.FP8_ONLINE: ReasonSpec(
        "info", {}, "fp8 weights quantized online by vLLM (GPU compute capability >= 8.9)"
    ),
    Code.VLLM_CPU_KV_CACHE: ReasonSpec(
        "info",
        {"kv_cache_gib": int},
        "vLLM CPU build: VLLM_CPU_KVCACHE_SPACE={kv_cache_gib} GiB of RAM for the KV cache",
    ),
    Code.NEEDS_RAM: ReasonSpec(
        "blocker",
        {"need_bytes": int, "available_bytes": int},
        "needs {need_bytes:gib} of RAM, {available_bytes:gib} available",
    ),
    Code.MLX_ON_METAL: ReasonSpec(
        "info",
        {"working_set_bytes": int, "rule": (str, NONE)},
        lambda f: (
            _f(
                "MLX LM on Metal: weights, KV and activations within the {working_set_bytes:gib} Metal "
                "working-set limit",
                f,
            )
            + (f" ({f['rule']})" if f["rule"] else "")
        ),
        about=(
            "MLX LM on Metal: weights, KV and activations within the {working_set_bytes} Metal "
            "working-set limit [({rule})]"
        ),
    ),
    Code.MLX_ON_CPU: ReasonSpec(
        "warning",
        {},
        "MLX LM on the CPU (mlx-cpu, forced with --engine mlx): the same mlx_lm as on a Mac, without "
        "Metal; llama.cpp or vLLM run faster here",
    ),
    Code.MLX_KV_CACHE: ReasonSpec(
        "info",
        {
            "step": int,
            "tokens": int,
            "sequences": int,
            "kv_cache_bytes": int,
            "sliding_layers": int,
            "window": (int, NONE),
        },
        _mlx_kv,
        about=(
            "KV cache: 16-bit, grown in {step}-token steps: {tokens} tokens x {sequences} sequence(s) = "
            "{kv_cache_bytes} [; {sliding_layers} sliding-window layers keep a rotating cache of {window} "
            "tokens]"
        ),
    ),
    Code.NEEDS_MLX_CONVERSION: ReasonSpec(
        "blocker",
        {"bits": int, "command": str},
        "needs an MLX {bits}-bit conversion first: `{command}`",
    ),
    Code.MLX_QUANTIZED_CHECKPOINT: ReasonSpec(
        "info",
        {"bits": int, "group_size": (int, NONE)},
        "MLX {bits}-bit checkpoint (group size {group_size}): weights from its safetensors headers",
    ),
    Code.MLX_LOADS_AS_IS: ReasonSpec(
        "info", {}, "llama.cpp Metal would need a GGUF of this checkpoint; MLX LM loads it as is"
    ),
    Code.MLX_DOES_NOT_FIT: ReasonSpec(
        "blocker",
        {"need_bytes": int, "available_bytes": int},
        "does not fit: needs {need_bytes:size}, {available_bytes:size} available",
    ),
    Code.MULTINODE_LAYOUT: ReasonSpec(
        "info",
        {"nodes": int, "tp": int, "stage_layers": int, "hop_bytes": int},
        "{nodes} nodes x {tp} GPUs: tensor parallel {tp} inside a node over NVLink, pipeline parallel "
        "{nodes} across nodes, each node one stage of ~{stage_layers} layers; a stage boundary sends "
        "{hop_bytes} bytes per token over the network",
    ),
    Code.MULTINODE_DECODE_ESTIMATE: ReasonSpec(
        "warning",
        {},
        "decode estimate: the bandwidth roofline of one stage times the stages in turn; network "
        "latency between nodes and TP all-reduce time are not modelled",
    ),
    Code.ONE_NODE_PREFERRED: ReasonSpec(
        "info",
        {"engine": ENGINES, "quantization": str, "tp": int},
        "one node suffices ({engine}, {quantization}, TP {tp}): preferred over spanning nodes",
    ),
    Code.ONE_NODE_SUFFICES: ReasonSpec("info", {"nodes": int}, "one node suffices: no need to span {nodes}"),
    Code.ENGINE_FALLBACK: ReasonSpec(
        "warning",
        {"engine": ENGINES, "why": str, "fallback": ENGINES},
        "{engine} cannot run here ({why}); using {fallback}",
    ),
    Code.ADVICE_MLX_CONVERSION: ReasonSpec(
        "info",
        {"quantization": str, "speed": (float, NONE), "command": str},
        lambda f: (
            f"This checkpoint cannot run here as is, but its {f['quantization']} MLX conversion would "
            f"fit with MLX LM{_speed_suffix(f)}. Convert it first: `{f['command']}`, then serve DIR."
        ),
        about=(
            "This checkpoint cannot run here as is, but its {quantization} MLX conversion would fit with "
            "MLX LM [(~{speed} tok/s)]. Convert it first: `{command}`, then serve DIR."
        ),
    ),
    Code.ADVICE_GGUF_CONVERSION: ReasonSpec(
        "info",
        {"quantization": str, "speed": (float, NONE), "repo": (str, NONE)},
        _gguf_advice,
        about=(
            "This checkpoint cannot run here as is, but a {quantization} GGUF of it would fit with "
            "llama.cpp [(~{speed} tok/s)]: `llmhost plan {repo}:{quantization}` (or how to convert it, "
            "without a sibling)."
        ),
    ),
    Code.ADVICE_SHORTER_CONTEXT: ReasonSpec(
        "info",
        {"quantization": str, "engine": ENGINES, "context": int, "one_sequence": bool},
        lambda f: (
            f"Shorter context: {f['quantization']} on {_title(f)} fits `--context {f['context']}`"
            + (" with one sequence" if f["one_sequence"] else "")
            + "."
        ),
        about="Shorter context: {quantization} on {engine} fits `--context {context}` [with one sequence].",
    ),
    Code.ADVICE_FP8_KV_CACHE: ReasonSpec(
        "info", {}, "An fp8 KV cache halves its size and fits: `--kv-cache-dtype fp8` (vLLM)."
    ),
    Code.ADVICE_Q8_0_KV_CACHE: ReasonSpec(
        "info", {}, "A q8_0 KV cache fits: `--kv-cache-dtype q8_0` (llama.cpp)."
    ),
    Code.ADVICE_SMALLER_QUANTIZATION: ReasonSpec(
        "info", {"quantization": str}, "A smaller quantization fits: `--quant {quantization}`."
    ),
    Code.ADVICE_MORE_GPUS: ReasonSpec(
        "info",
        {"need_bytes": int, "quantization": str, "count": int, "gpu": str, "catalog_id": (str, NONE)},
        _more_gpus,
        about=(
            "More GPUs: about {need_bytes} for {quantization} weights and KV needs {count}x {gpu} [(try "
            "`--hardware {catalog_id}:{count}`)]."
        ),
    ),
    Code.ADVICE_PREQUANTIZED_INT4: ReasonSpec(
        "info",
        {
            "tp": int,
            "weights_bytes": int,
            "concurrency": int,
            "context": int,
            "max_context": (int, NONE),
            "repo": (str, NONE),
        },
        _prequantized_int4,
        about=(
            "An AWQ or GPTQ 4-bit checkpoint of this model would fit with vLLM at tensor parallel {tp} "
            "({weights_bytes} of weights over {tp} GPU(s), {concurrency} x {context} tokens of KV cache, "
            "or up to `--context {max_context}`); look for one under `base_model:quantized:{repo}`."
        ),
    ),
    Code.ADVICE_EXCEEDS_MACHINE: ReasonSpec(
        "blocker",
        {"quantization": str, "weights_bytes": int, "capacity_bytes": int},
        "Even {quantization} weights ({weights_bytes:gib}) exceed this machine's free RAM and GPU memory "
        "together ({capacity_bytes:gib}).",
    ),
    Code.NO_LLAMACPP_KV_TYPE: ReasonSpec(
        "blocker", {"kv": str}, "llama.cpp has no {kv} KV cache; use `--kv-cache-dtype q8_0` (or q4_0, f16)."
    ),
    Code.NO_VLLM_KV_TYPE: ReasonSpec(
        "blocker", {"kv": str}, "vLLM has no {kv} KV cache; use `--kv-cache-dtype fp8` (or bf16)."
    ),
    Code.GGUF_NEEDS_LLAMACPP: ReasonSpec(
        "blocker",
        {},
        "llmhost runs GGUF files with llama.cpp; use `--engine llamacpp` (or the original checkpoint).",
    ),
    Code.NO_ENGINE_FOR_QUANTIZATION: ReasonSpec(
        "blocker",
        {"model": str, "quantization": str},
        "No engine here runs {model} as {quantization}; drop `--quant` to see every option.",
    ),
    Code.QUANTIZED_NEEDS_VLLM_GPU: ReasonSpec(
        "blocker",
        {"quantization": str},
        "A {quantization} checkpoint needs vLLM on an NVIDIA or AMD GPU under Linux; here, use the original "
        "16-bit model or a GGUF version of it with llama.cpp.",
    ),
    Code.VLLM_CANNOT_RUN_HERE: ReasonSpec(
        "blocker",
        {},
        "vLLM needs Linux with an NVIDIA/AMD GPU (or an x86 CPU without GPUs) and a safetensors "
        "checkpoint; try `--engine llamacpp`.",
    ),
    Code.NO_ENGINE: ReasonSpec(
        "blocker", {}, "No engine can run this model here; try another quantization or `--engine`."
    ),
}


def _type_ok(value: Scalar, expected: FieldType) -> bool:
    if isinstance(expected, frozenset):
        return isinstance(value, str) and value in expected
    allowed = expected if isinstance(expected, tuple) else (expected,)
    for t in allowed:
        if t is NONE and value is None:
            return True
        if t is bool and isinstance(value, bool):
            return True
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if t is str and isinstance(value, str):
            return True
    return False


def check_fields(code: ReasonCode, fields: Fields) -> None:
    """Raise ValueError unless `fields` are exactly what `code` carries, each of its type."""
    spec = REGISTRY[code]
    missing = sorted(set(spec.fields) - set(fields))
    unknown = sorted(set(fields) - set(spec.fields))
    if missing or unknown:
        raise ValueError(f"reason {code}: missing fields {missing}, unknown fields {unknown}")
    for name, expected in spec.fields.items():
        if not _type_ok(fields[name], expected):
            raise ValueError(f"reason {code}: field {name}={fields[name]!r} is not {expected}")


class Reason(FrozenContract):
    """One reason: `Reason.of(ReasonCode.CPU_ONLY)`, `Reason.of(ReasonCode.TENSOR_PARALLEL, tp=2)`.

    `level` and `message` come from the code's registry entry; given (a plan read back from JSON), they
    must be what the entry renders."""

    code: ReasonCode
    level: Level
    fields: dict[str, Scalar]
    message: str

    @model_validator(mode="before")
    @classmethod
    def render_from_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "code" not in data:
            return data
        try:
            code = ReasonCode(data["code"])
        except ValueError:
            return data  # pydantic reports the unknown code
        fields = data.get("fields", {})
        if not isinstance(fields, dict):
            return data
        check_fields(code, fields)
        spec = REGISTRY[code]
        return {"level": spec.level, "message": spec.message(fields), **data}

    @model_validator(mode="after")
    def check_rendered(self) -> Self:
        spec = REGISTRY[self.code]
        if self.level != spec.level or self.message != spec.message(self.fields):
            raise ValueError(f"reason {self.code}: level or message is not what its fields render")
        return self

    @classmethod
    def of(cls, code: ReasonCode, **fields: Scalar) -> Reason:
        return cls(code=code, fields=fields)  # type: ignore[call-arg]  # level, message: rendered


def messages(reasons: list[Reason]) -> list[str]:
    return [r.message for r in reasons]


def first(reasons: list[Reason], code: ReasonCode) -> Reason | None:
    """The first reason with this code, if any."""
    return next((r for r in reasons if r.code == code), None)
