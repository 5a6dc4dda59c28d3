"""MLX LM planning on recorded Apple hardware: weights and KV from the checkpoint, the Metal limit, the
choice against llama.cpp Metal, and no MLX on Linux unless forced.

Expected figures are computed here from the checkpoint itself (its safetensors header, its config), not
copied from the planner's output.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from llmhost.errors import UsageError
from llmhost.models import resolve
from llmhost.plan import PlanRequest, make_plan
from llmhost.plan.models import Candidate, Plan
from llmhost.plan.ranking import launchable
from llmhost.plan.reasons import ReasonCode
from llmhost.tiny_hf import TINY_LLAMA_CONFIG, read_safetensors_header

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
GIB = 1024**3


def mlx(plan: Plan, quant: str) -> Candidate:
    (found,) = [c for c in plan.candidates if c.engine == "mlx" and c.quantization == quant]
    return found


def tensor_bytes(directory: Path) -> dict[str, tuple[list[int], int]]:
    """name -> (shape, bytes) from the checkpoint's safetensors header."""
    header = read_safetensors_header(directory / "model.safetensors")
    return {
        name: (meta["shape"], meta["data_offsets"][1] - meta["data_offsets"][0])
        for name, meta in header.items()
        if name != "__metadata__"
    }


def converted_bytes(directory: Path, bits: int, group: int = 64) -> int:
    """What `mlx_lm.convert -q --q-bits bits` makes of each tensor: matrices whose rows split into groups
    become bits/8 bytes per weight + a bf16 scale and bias per group; 1-D tensors stay bf16."""
    total = 0
    for shape, _ in tensor_bytes(directory).values():
        n = math.prod(shape)
        if len(shape) == 2 and shape[-1] % group == 0:
            total += n * bits // 8 + (n // group) * 2 * 2
        else:
            total += n * 2
    return total


def test_bf16_checkpoint_on_an_m2_max_runs_on_mlx_with_kv_as_mlx_allocates_it(tiny_checkpoint, apple):
    hardware = apple("m2_max_32gb", ram_available_gib=28)
    plan = make_plan(resolve(str(tiny_checkpoint)), hardware, PlanRequest(context=1000, concurrency=3))
    chosen = plan.chosen_candidate
    assert chosen is not None and (chosen.engine, chosen.quantization) == ("mlx", "bf16")
    # Weights: the checkpoint as stored, every tensor's bytes from the safetensors header.
    assert chosen.memory.weights_bytes == sum(b for _, b in tensor_bytes(tiny_checkpoint).values())
    # KV: K and V rows (kv_heads x head_dim, 16-bit) per layer, 1000 tokens rounded up to 4 x 256 steps,
    # one cache per sequence.
    cfg = TINY_LLAMA_CONFIG
    row = cfg["num_key_value_heads"] * cfg["head_dim"] * 2 * 2
    assert chosen.memory.kv_cache_bytes == cfg["num_hidden_layers"] * row * 1024 * 3
    assert chosen.engine_options["prompt_cache_bytes"] == chosen.memory.kv_cache_bytes
    assert chosen.engine_options["decode_concurrency"] == 3
    # Bounded by the Metal working set the hardware module computed for a 32 GB M2 Max (2/3 of RAM).
    (device,) = chosen.per_device
    assert device.device == "metal:0" and device.capacity_bytes == hardware.gpus[0].memory_total_bytes
    assert abs(device.capacity_bytes - 32 * GIB * 2 / 3) < 1024**2
    assert any("Metal working-set limit" in r and "2/3 of RAM" in r for r in chosen.reasons)
    (metal,) = [r for r in chosen.reasons_detail if r.code == ReasonCode.MLX_ON_METAL]
    assert metal.fields["working_set_bytes"] == device.capacity_bytes
    # Weighed against llama.cpp Metal: its candidates need a GGUF of this checkpoint, MLX loads it as is.
    llama = [c for c in plan.candidates if c.engine == "llamacpp"]
    assert llama and not any(launchable(c) for c in llama)
    assert any("llama.cpp Metal would need a GGUF" in r for r in chosen.reasons)
    assert chosen.reasons[0].startswith("chosen for quality")
    assert chosen.reason_codes[0] == ReasonCode.CHOSEN_FOR_QUALITY
    assert ReasonCode.MLX_LOADS_AS_IS in chosen.reason_codes


def test_8_and_4_bit_options_of_a_16_bit_checkpoint_say_how_to_convert(tiny_checkpoint, apple):
    hardware = apple("m2_max_32gb", ram_available_gib=28)
    plan = make_plan(resolve(str(tiny_checkpoint)), hardware, PlanRequest(context=512))
    for bits in (8, 4):
        option = mlx(plan, f"mlx-{bits}bit")
        assert option.memory.weights_bytes == converted_bytes(tiny_checkpoint, bits)
        assert option.engine_options["needs_mlx_conversion"] is True and not launchable(option)
        assert any(f"-q --q-bits {bits} --q-group-size 64" in r for r in option.reasons)
        (convert,) = [r for r in option.reasons_detail if r.code == ReasonCode.NEEDS_MLX_CONVERSION]
        assert convert.level == "blocker" and convert.fields["bits"] == bits
    # The 4-bit weights are 4.5 bits per weight for every matrix: 0.5625 bytes vs 2 in bf16.
    assert mlx(plan, "mlx-4bit").memory.weights_bytes < mlx(plan, "mlx-8bit").memory.weights_bytes


def _write_mlx_4bit_checkpoint(
    directory: Path, *, blocks: tuple[str, ...] = ("quantization", "quantization_config")
) -> int:
    """A checkpoint in mlx_lm's quantized layout (packed uint32 weights, bf16 scales and biases per 64
    weights, config `quantization` block); returns the bytes of its tensors."""
    cfg = dict(TINY_LLAMA_CONFIG)
    for block in blocks:
        cfg[block] = {"group_size": 64, "bits": 4, "mode": "affine"}
    h, inter, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"] * cfg["head_dim"]
    matrices = {"model.embed_tokens": (cfg["vocab_size"], h), "lm_head": (cfg["vocab_size"], h)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        matrices |= {
            f"{p}.self_attn.q_proj": (h, h), f"{p}.self_attn.k_proj": (kv, h),
            f"{p}.self_attn.v_proj": (kv, h), f"{p}.self_attn.o_proj": (h, h),
            f"{p}.mlp.gate_proj": (inter, h), f"{p}.mlp.up_proj": (inter, h),
            f"{p}.mlp.down_proj": (h, inter),
        }  # fmt: skip
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, (rows, cols) in matrices.items():
        tensors[f"{name}.weight"] = ("U32", (rows, cols * 4 // 32))
        tensors[f"{name}.scales"] = ("BF16", (rows, cols // 64))
        tensors[f"{name}.biases"] = ("BF16", (rows, cols // 64))
    for i in range(cfg["num_hidden_layers"]):
        tensors[f"model.layers.{i}.input_layernorm.weight"] = ("BF16", (h,))
        tensors[f"model.layers.{i}.post_attention_layernorm.weight"] = ("BF16", (h,))
    tensors["model.norm.weight"] = ("BF16", (h,))
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * (4 if dtype == "U32" else 2)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    directory.mkdir()
    with open(directory / "model.safetensors", "wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw + np.zeros(offset, dtype=np.uint8).tobytes())
    (directory / "config.json").write_text(json.dumps(cfg))
    return offset


@pytest.mark.parametrize("blocks", [("quantization", "quantization_config"), ("quantization",)])
def test_an_mlx_quantized_checkpoint_is_planned_from_its_headers(tmp_path, apple, blocks):
    # Current mlx_lm writes both blocks; older mlx-community checkpoints carry `quantization` alone.
    directory = tmp_path / "tiny-4bit-mlx"
    stored = _write_mlx_4bit_checkpoint(directory, blocks=blocks)
    plan = make_plan(resolve(str(directory)), apple("m3_max_36gb", ram_available_gib=30), PlanRequest())
    chosen = plan.chosen_candidate
    assert chosen is not None and (chosen.engine, chosen.quantization) == ("mlx", "mlx-4bit")
    assert [c.quantization for c in plan.candidates if c.engine == "mlx"] == ["mlx-4bit"]
    assert chosen.memory.weights_bytes == stored
    assert chosen.engine_options["q_bits"] == 4 and chosen.engine_options["q_group_size"] == 64
    assert "needs_mlx_conversion" not in chosen.engine_options
    assert any("group size 64" in r and "safetensors headers" in r for r in chosen.reasons)
    (stored,) = [r for r in chosen.reasons_detail if r.code == ReasonCode.MLX_QUANTIZED_CHECKPOINT]
    assert stored.fields == {"bits": 4, "group_size": 64}


def test_another_tools_quantization_block_is_not_taken_for_mlx(tmp_path, apple):
    directory = tmp_path / "gptq-like"
    _write_mlx_4bit_checkpoint(directory)
    cfg = json.loads((directory / "config.json").read_text())
    cfg["quantization_config"] = {"bits": 4, "group_size": 128, "desc_act": False, "sym": True}
    (directory / "config.json").write_text(json.dumps(cfg))
    plan = make_plan(resolve(str(directory)), apple("m3_max_36gb", ram_available_gib=30), PlanRequest())
    assert not [c for c in plan.candidates if c.engine == "mlx"]


def test_sliding_window_layers_keep_a_rotating_cache_of_the_window(apple):
    # Gemma 3 12B: 48 layers, 5 sliding-window (1024 tokens) layers per global one, 8 KV heads x 256.
    spec = resolve(str(CONFIGS / "google--gemma-3-12b-it.json"))
    kinds = spec.attention.layer_kinds
    assert (kinds.count("sliding"), kinds.count("full"), spec.attention.sliding_window) == (40, 8, 1024)
    row = 8 * 256 * 2 * 2
    hardware = apple("m1_max_64gb", ram_available_gib=60)
    long = mlx(make_plan(spec, hardware, PlanRequest(context=8192, concurrency=2)), "bf16")
    assert long.memory.kv_cache_bytes == (8 * 8192 + 40 * 1024) * row * 2
    assert any("40 sliding-window layers keep a rotating cache of 1024 tokens" in r for r in long.reasons)
    (kv,) = [r for r in long.reasons_detail if r.code == ReasonCode.MLX_KV_CACHE]
    assert (kv.fields["sliding_layers"], kv.fields["window"]) == (40, 1024)
    assert kv.fields["kv_cache_bytes"] == long.memory.kv_cache_bytes
    short = mlx(make_plan(spec, hardware, PlanRequest(context=600)), "bf16")
    assert short.memory.kv_cache_bytes == 48 * 768 * row  # 600 tokens: three 256-token steps, every layer


def test_the_metal_working_set_bounds_the_plan(tiny_checkpoint, apple):
    spec = resolve(str(CONFIGS / "google--gemma-3-12b-it.json"))
    small = apple("m2_max_32gb", ram_available_gib=28)  # 21.3 GiB working set: bf16 Gemma 3 12B is 23 GiB
    plan = make_plan(spec, small, PlanRequest(context=4096))
    bf16 = mlx(plan, "bf16")
    assert not bf16.fits and any("does not fit" in r for r in bf16.reasons)
    assert ReasonCode.MLX_DOES_NOT_FIT in bf16.reason_codes
    assert bf16.memory.weights_bytes > small.gpus[0].memory_total_bytes
    four = mlx(plan, "mlx-4bit")
    assert four.fits and not launchable(four)  # fits once converted
    assert any("mlx_lm.convert" in a for a in plan.advice)
    (advice,) = [a for a in plan.advice_detail if a.code == ReasonCode.ADVICE_MLX_CONVERSION]
    assert str(advice.fields["command"]).startswith("mlx_lm.convert ")


def test_no_mlx_for_a_gguf_on_a_mac(tiny_gguf, apple):
    plan = make_plan(resolve(str(tiny_gguf)), apple("m1_max_64gb", ram_available_gib=60), PlanRequest())
    assert plan.candidates and {c.engine for c in plan.candidates} == {"llamacpp"}


def test_linux_gets_mlx_only_when_forced_and_then_on_the_cpu(tiny_checkpoint):
    from llmhost.hardware.catalog import hardware_from_spec
    from llmhost.hardware.detect import detect

    spec = resolve(str(tiny_checkpoint))
    for hardware in (detect(), hardware_from_spec("h100-80gb")):
        assert hardware.os == "linux"
        assert not [c for c in make_plan(spec, hardware, PlanRequest()).candidates if c.engine == "mlx"]
    forced = make_plan(spec, detect(), PlanRequest(engine="mlx", context=1024))
    assert {c.engine for c in forced.candidates} == {"mlx"}
    chosen = forced.chosen_candidate
    assert chosen is not None and chosen.per_device[0].device == "cpu"
    assert chosen.engine_options["device"] == "cpu" and "mlx-cpu" in chosen.reasons[1]
    assert chosen.reason_codes[1] == ReasonCode.MLX_ON_CPU


def test_quant_names_mlx_formats(tiny_checkpoint, apple):
    spec = resolve(str(tiny_checkpoint))
    hardware = apple("m2_max_32gb", ram_available_gib=28)
    plan = make_plan(spec, hardware, PlanRequest(quantization="mlx-8bit"))
    assert [(c.engine, c.quantization) for c in plan.candidates] == [("mlx", "mlx-8bit")]
    with pytest.raises(UsageError, match="mlx-4bit"):
        make_plan(spec, hardware, PlanRequest(quantization="mlx-4bits"))
