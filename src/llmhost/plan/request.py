"""Checking a `PlanRequest` against the model: bad input raises `UsageError` (exit 2)."""

from __future__ import annotations

from llmhost.errors import UsageError
from llmhost.estimate.dtypes import LLAMACPP_KV_TYPES, VLLM_KV_TYPES, normalize_kv_dtype
from llmhost.estimate.vllm_versions import parse_version
from llmhost.estimate.weights import normalize_gguf_tag, quality_score
from llmhost.hardware.models import Hardware
from llmhost.models.spec import ModelSpec
from llmhost.plan.common import DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_FLOOR, Target
from llmhost.plan.models import PlanRequest


def validate_request(spec: ModelSpec, request: PlanRequest, hardware: Hardware) -> Target:
    if request.concurrency < 1:
        raise UsageError("--concurrency must be at least 1.", hint="Try `--concurrency 1`.")
    if request.context is not None and request.context < 16:
        raise UsageError(
            f"--context {request.context} is too small.", hint="Give a context of at least 16 tokens."
        )
    if request.context is not None and request.context > spec.max_context:
        raise UsageError(
            # The context may come from --context or from a profile's `context:`; name both.
            f"A context of {request.context} tokens is longer than {spec.name}'s maximum "
            f"({spec.max_context}).",
            hint=f"Use `--context {spec.max_context}` or less (or lower `context:` in the profile).",
        )
    util = request.gpu_memory_utilization
    if util is not None and not 0 < util <= 1:
        raise UsageError(
            f"--gpu-memory-utilization {util} is out of range.",
            hint="Give a share of total memory in (0, 1].",
        )
    if request.kv_cache_dtype is not None:
        kv = normalize_kv_dtype(request.kv_cache_dtype)
        if kv not in LLAMACPP_KV_TYPES and kv not in VLLM_KV_TYPES and kv != "auto":
            raise UsageError(
                f"Unknown --kv-cache-dtype {request.kv_cache_dtype!r}.",
                hint="Use f16, bf16, fp8 (vLLM), q8_0, q5_1, q5_0, q4_1 or q4_0 (llama.cpp).",
            )
    for flag, value in (
        ("--max-num-seqs", request.max_num_seqs),
        ("--max-num-batched-tokens", request.max_num_batched_tokens),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value} is out of range.", hint=f"Give {flag} 1 or more.")
    seqs, tokens = request.max_num_seqs, request.max_num_batched_tokens
    if seqs is not None and tokens is not None and tokens < seqs:
        # vLLM's SchedulerConfig refuses it at start-up (max_num_batched_tokens >= max_num_seqs).
        raise UsageError(
            f"--max-num-batched-tokens {tokens} is smaller than --max-num-seqs {seqs}; vLLM refuses that.",
            hint=f"Give --max-num-batched-tokens {seqs} or more, or a lower --max-num-seqs.",
        )
    if request.vllm_version is not None:
        parse_version(request.vllm_version)  # a bad version is a usage error (exit 2)
    tp = request.tensor_parallel_size
    if tp is not None and tp < 1:
        raise UsageError("--tensor-parallel-size must be at least 1.", hint="Pass --tp 1 or more.")
    gpus = len(hardware.gpus)
    dp = request.data_parallel_size
    if dp is not None and dp < 1:
        raise UsageError("--data-parallel-size must be at least 1.", hint="Pass --dp 1 or more.")
    if dp is not None and dp > 1 and request.nodes > 1:
        raise UsageError(
            "--data-parallel-size is planned on one node only; --nodes plans TP inside, PP across.",
            hint="Drop --nodes, or drop --dp.",
        )
    if dp is not None and dp * (tp or 1) > max(gpus, 1):
        # vLLM runs TP x DP ranks, one per GPU.
        where = "the --hardware given has" if hardware.source == "catalog" else "this machine has"
        need = dp * (tp or 1)
        raise UsageError(
            f"--data-parallel-size {dp} x --tensor-parallel-size {tp or 1} needs {need} GPUs; "
            f"{where} {gpus}.",
            hint=f"Pass a smaller --dp, or plan for more GPUs with --hardware NAME:{need}.",
        )
    if tp is not None and tp > max(gpus, 1):
        # One rank per GPU: a plan for more ranks than GPUs has nothing to run on (it planned nothing).
        where = "the --hardware given has" if hardware.source == "catalog" else "this machine has"
        raise UsageError(
            f"--tensor-parallel-size {tp} needs {tp} GPUs; {where} {gpus}.",
            hint=f"Pass --tp {max(gpus, 1)} or less, or plan for more GPUs with --hardware NAME:{tp}.",
        )
    if request.context is not None:
        return Target(request.context, request.context, True, request.concurrency)
    cap = min(spec.max_context, DEFAULT_CONTEXT_CAP)
    if spec.ollama is not None and spec.ollama.context_hint:
        # An Ollama model's num_ctx is the context its user has been running it with: plan for that.
        cap = min(spec.max_context, spec.ollama.context_hint)
    return Target(cap, min(spec.max_context, DEFAULT_CONTEXT_FLOOR, cap), False, request.concurrency)


def requested_quant(spec: ModelSpec, request: PlanRequest) -> str | None:
    if request.quantization is None:
        return None
    q = request.quantization.strip()
    low = q.lower()
    if low in ("bf16", "bfloat16"):
        return "bf16" if spec.quantization.method != "gguf" else "BF16"
    if low in ("fp16", "float16", "f16"):
        return "fp16" if spec.quantization.method != "gguf" else "F16"
    if low in ("fp8", "awq", "gptq"):
        return low
    if low.startswith("mlx-") and quality_score(low) != 50:  # MLX LM's mlx-8bit, mlx-4bit...
        return low
    tag = normalize_gguf_tag(q)
    if quality_score(tag) == 50 and tag not in {normalize_gguf_tag(v.tag) for v in spec.gguf_variants}:
        raise UsageError(
            f"Unknown quantization {request.quantization!r}.",
            hint="Use bf16, fp16, fp8, awq, gptq, mlx-8bit, mlx-4bit (MLX LM) or a GGUF type "
            "(Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q3_K_M, Q2_K).",
        )
    return tag
