"""A quantized checkpoint's bytes from config.json alone equal the bytes of its real tensor layout.

Each tensor table below is written from the checkpoint's documented layout (names, dtypes, shapes as
its safetensors headers list them) and goes through the tensor path (`models.tensors.summarize`, the path
a Hub repo takes); the same model's bare config.json goes through the config-only path
(`config_params` + `build._layer_bytes`). The two must agree, and the gpt-oss-20b table must reproduce
the real checkpoint:

- openai/gpt-oss-20b (mxfp4): per block `self_attn.{q,k,v,o}_proj.{weight,bias}` BF16 (q 4096x2880,
  k/v 512x2880, o 2880x4096), `self_attn.sinks` BF16 [64], `mlp.router.{weight,bias}` BF16 [32,2880]/[32],
  `mlp.experts.gate_up_proj_{blocks,scales,bias}` U8 [32,5760,90,16] / U8 [32,5760,90] / BF16 [32,5760],
  `mlp.experts.down_proj_{blocks,scales,bias}` U8 [32,2880,90,16] / U8 [32,2880,90] / BF16 [32,2880],
  two RMSNorms; `model.embed_tokens`, `lm_head` BF16 [201088,2880], `model.norm`. 459 tensors, 13,761 MB:
  experts 10,166 MB, embeddings + lm_head 2,316 MB, attention 1,274 MB, router/norm/bias ~5 MB (a
  metadata-only audit of the repo's safetensors headers, found through code search; the blocks/scales
  shapes are also vLLM's `Mxfp4MoEMethod.create_weights`). The quantization_config keeps
  `self_attn`, `mlp.router`, `embed_tokens` and `lm_head` unconverted (`modules_to_not_convert`).
- FP8 with `weight_block_size` [128,128] (Qwen3-8B-FP8, DeepSeek-V3): `weight` F8_E4M3 [out,in] +
  `weight_scale_inv` F32 [ceil(out/128), ceil(in/128)]; norms, embeddings, lm_head, router BF16.
- AWQ GEMM (Qwen2.5-7B-Instruct-AWQ, 4-bit, group 128): `qweight` I32 [in, out/8], `qzeros` I32
  [in/128, out/8], `scales` F16 [in/128, out]; q/k/v biases F16.
- GPTQ (TheBloke/Llama-2-7B-Chat-GPTQ, 4-bit, group 128): `qweight` I32 [in/8, out], `qzeros` I32
  [in/128, out/8], `scales` F16 [in/128, out], `g_idx` I32 [in].
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmhost.models import resolve
from llmhost.models.build import spec_from_hf
from llmhost.models.spec import ModelSpec
from llmhost.models.tensors import SAFETENSORS_DTYPE_BYTES, TensorRecord

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
Shape = tuple[int, ...]


def _t(name: str, dtype: str, *shape: int) -> TensorRecord:
    return TensorRecord(name, dtype, shape, int(math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype]))


def _tensor_spec(name: str, tensors: list[TensorRecord]) -> ModelSpec:
    config = json.loads((CONFIGS / f"{name}.json").read_text())
    return spec_from_hf(ref=name, kind="local_dir", name=name, config=config, tensors=tensors, files=[])


def _gpt_oss_20b() -> list[TensorRecord]:
    h, e, i, v = 2880, 32, 2880, 201_088
    out = [_t("model.embed_tokens.weight", "BF16", v, h), _t("lm_head.weight", "BF16", v, h)]
    out.append(_t("model.norm.weight", "BF16", h))
    for n in range(24):
        p = f"model.layers.{n}."
        for proj, rows, cols in (("q", 4096, h), ("k", 512, h), ("v", 512, h), ("o", h, 4096)):
            out += [_t(f"{p}self_attn.{proj}_proj.weight", "BF16", rows, cols)]
            out += [_t(f"{p}self_attn.{proj}_proj.bias", "BF16", rows)]
        out.append(_t(f"{p}self_attn.sinks", "BF16", 64))
        out += [
            _t(f"{p}input_layernorm.weight", "BF16", h),
            _t(f"{p}post_attention_layernorm.weight", "BF16", h),
        ]
        out += [_t(f"{p}mlp.router.weight", "BF16", e, h), _t(f"{p}mlp.router.bias", "BF16", e)]
        for proj, rows, cols in (("gate_up", 2 * i, h), ("down", h, i)):
            out.append(_t(f"{p}mlp.experts.{proj}_proj_blocks", "U8", e, rows, cols // 32, 16))
            out.append(_t(f"{p}mlp.experts.{proj}_proj_scales", "U8", e, rows, cols // 32))
            out.append(_t(f"{p}mlp.experts.{proj}_proj_bias", "BF16", e, rows))
    return out


def test_gpt_oss_20b_tensor_layout_is_the_real_checkpoint() -> None:
    tensors = _gpt_oss_20b()
    assert len(tensors) == 459
    spec = _tensor_spec("openai--gpt-oss-20b", tensors)
    assert spec.parameters == 20_914_757_184  # the Hub's total
    assert spec.weights_bytes == 13_761_264_768  # 13,761 MB
    experts = sum(t.n_bytes for t in tensors if ".experts." in t.name)
    attention = sum(t.n_bytes for t in tensors if ".self_attn." in t.name)
    # The audit's MB figures (rounded there, so within 1 MB here).
    assert abs(experts / 1e6 - 10_166) < 1
    assert abs(attention / 1e6 - 1_274) < 1
    assert abs((spec.embedding_bytes + spec.output_bytes) / 1e6 - 2_316) < 1


def test_gpt_oss_20b_config_only_bytes_equal_the_tensor_layout() -> None:
    # Before: every block weight at 4.25 bits + a second scale per 32 (4.75 bits), attention included:
    # 14.05 GB, 2.1% over; two errors that partly cancelled.
    config_only = resolve(str(CONFIGS / "openai--gpt-oss-20b.json"))
    tensor_path = _tensor_spec("openai--gpt-oss-20b", _gpt_oss_20b())
    assert config_only.parameters_source == "config"
    assert config_only.weights_bytes == tensor_path.weights_bytes == 13_761_264_768
    assert config_only.layer_bytes == tensor_path.layer_bytes
    assert (config_only.embedding_bytes, config_only.output_bytes) == (
        tensor_path.embedding_bytes,
        tensor_path.output_bytes,
    )


def _llama_like(
    layers: int, h: int, inter: int, heads: int, kv: int, hd: int, proj: str, *, qkv_bias: bool, qk_norm: bool
) -> list[TensorRecord]:
    """Blocks of a Llama/Qwen-style model, each linear `proj`-quantized; norms BF16."""
    out: list[TensorRecord] = []
    for n in range(layers):
        p = f"model.layers.{n}."
        linears = [
            ("self_attn.q_proj", heads * hd, h),
            ("self_attn.k_proj", kv * hd, h),
            ("self_attn.v_proj", kv * hd, h),
            ("self_attn.o_proj", h, heads * hd),
            ("mlp.gate_proj", inter, h),
            ("mlp.up_proj", inter, h),
            ("mlp.down_proj", h, inter),
        ]
        for name, rows, cols in linears:
            out += _quantized(p + name, rows, cols, proj)
            if qkv_bias and name.split(".")[-1] in ("q_proj", "k_proj", "v_proj"):
                out.append(_t(f"{p}{name}.bias", "F16" if proj in ("awq", "gptq") else "BF16", rows))
        out += [
            _t(f"{p}input_layernorm.weight", "BF16", h),
            _t(f"{p}post_attention_layernorm.weight", "BF16", h),
        ]
        if qk_norm:
            out += [
                _t(f"{p}self_attn.q_norm.weight", "BF16", hd),
                _t(f"{p}self_attn.k_norm.weight", "BF16", hd),
            ]
    return out


def _quantized(name: str, rows: int, cols: int, proj: str) -> list[TensorRecord]:
    if proj == "fp8":
        scale_inv = (-(-rows // 128), -(-cols // 128))
        return [
            _t(f"{name}.weight", "F8_E4M3", rows, cols),
            _t(f"{name}.weight_scale_inv", "F32", *scale_inv),
        ]
    groups = cols // 128
    if proj == "awq":
        qweight: Shape = (cols, rows // 8)
    else:
        qweight = (cols // 8, rows)
    out = [
        _t(f"{name}.qweight", "I32", *qweight),
        _t(f"{name}.qzeros", "I32", groups, rows // 8),
        _t(f"{name}.scales", "F16", groups, rows),
    ]
    if proj == "gptq":
        out.append(_t(f"{name}.g_idx", "I32", cols))
    return out


def _ends(v: int, h: int, *, tied: bool) -> list[TensorRecord]:
    out = [_t("model.embed_tokens.weight", "BF16", v, h), _t("model.norm.weight", "BF16", h)]
    return out if tied else [*out, _t("lm_head.weight", "BF16", v, h)]


CASES = {
    # name: (tensor table, published total parameters)
    "Qwen--Qwen3-8B-FP8": (
        lambda: (
            _llama_like(36, 4096, 12288, 32, 8, 128, "fp8", qkv_bias=False, qk_norm=True)
            + _ends(151_936, 4096, tied=False)
        ),
        8_190_735_360,
    ),
    "Qwen--Qwen2.5-7B-Instruct-AWQ": (
        lambda: (
            _llama_like(28, 3584, 18944, 28, 4, 128, "awq", qkv_bias=True, qk_norm=False)
            + _ends(152_064, 3584, tied=False)
        ),
        7_615_616_512,
    ),
    "TheBloke--Llama-2-7B-Chat-GPTQ": (
        lambda: (
            _llama_like(32, 4096, 11008, 32, 32, 128, "gptq", qkv_bias=False, qk_norm=False)
            + _ends(32_000, 4096, tied=False)
        ),
        6_738_415_616,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_only_bytes_equal_the_tensor_layout(name: str) -> None:
    build, published = CASES[name]
    tensor_path = _tensor_spec(name, build())
    config_only = resolve(str(CONFIGS / f"{name}.json"))
    assert tensor_path.parameters == published
    assert config_only.parameters == published
    # Exact but for the 16-bit pricing of what the config path cannot see (biases stored F16 vs BF16:
    # the same size), so equal to the byte.
    assert config_only.layer_bytes == tensor_path.layer_bytes
    assert config_only.weights_bytes == tensor_path.weights_bytes


def test_fp8_block_scales_are_priced_per_128x128_block() -> None:
    spec = resolve(str(CONFIGS / "Qwen--Qwen3-8B-FP8.json"))
    # Block 0: q 4096x4096 (1024 scales), k/v 1024x4096 (256 each), o 4096x4096 (1024), gate/up
    # 12288x4096 (3072 each), down 4096x12288 (3072): 11,776 fp32 scales; 1 byte per weight; norms 16-bit.
    weights = 4096 * 4096 * 2 + 1024 * 4096 * 2 + 12288 * 4096 * 3
    scales = 1024 * 2 + 256 * 2 + 3072 * 3
    norms = 4096 * 2 + 128 * 2
    assert spec.layer_bytes[0] == weights + 4 * scales + 2 * norms


def test_deepseek_v3_counts_the_router_score_correction_bias() -> None:
    # modeling_deepseek.py (deepseek-ai/DeepSeek-V3) MoEGate: topk_method "noaux_tc" adds
    # `e_score_correction_bias` [n_routed_experts] to every MoE layer's gate: 58 layers x 256 experts
    # (61 layers, the first 3 dense), in the checkpoint as model.layers.N.mlp.gate.e_score_correction_bias.
    config = json.loads((CONFIGS / "deepseek-ai--DeepSeek-V3.json").read_text())
    with_bias = spec_from_hf(ref="v3", kind="local_config", name="v3", config=config, tensors=None, files=[])
    without = dict(config, topk_method="greedy")
    plain = spec_from_hf(ref="v3", kind="local_config", name="v3", config=without, tensors=None, files=[])
    assert with_bias.parameters - plain.parameters == 58 * 256
    assert with_bias.layer_parameters[3] - plain.layer_parameters[3] == 256
    assert with_bias.layer_parameters[2] == plain.layer_parameters[2]  # a dense layer has no router
