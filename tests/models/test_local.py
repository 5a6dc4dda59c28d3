"""resolve() on local inputs: GGUF files (single, split, corrupt), model directories, bare configs."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType

from llmhost.errors import ModelError
from llmhost.models import resolve
from support.model_makers import llama_tensors, tiny_llama_config, write_gguf, write_safetensors


def test_local_gguf_counts_every_tensor_exactly(tmp_path: Path) -> None:
    (path,) = write_gguf(tmp_path / "tiny.gguf", layers=3, hidden=64, heads=4, kv_heads=2, ff=128, vocab=256)
    spec = resolve(str(path))
    # embeddings + output (untied) + per layer (q, k, v, o, gate, up, down, 2 norms) + final norm
    per_layer = 64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 128 * 64 + 2 * 64
    assert spec.parameters == 2 * 256 * 64 + 3 * per_layer + 64
    assert spec.layer_parameters == [per_layer] * 3
    assert spec.weights_bytes == 2 * (spec.parameters - 7 * 64) + 4 * 7 * 64  # F16 matrices, F32 norms
    assert spec.kind == "local_gguf" and spec.parameters_source == "tensors"
    assert spec.attention.num_kv_heads == [2, 2, 2]
    assert spec.attention.head_dim_k == 16 and spec.vocab_size == 256 and spec.max_context == 4096
    assert spec.quantization.gguf_file_type == "F16" and not spec.tied_embeddings


def test_quantized_gguf_uses_ggml_block_sizes(tmp_path: Path) -> None:
    (path,) = write_gguf(
        tmp_path / "q.gguf", hidden=256, heads=4, kv_heads=4, ff=512, vocab=512,
        qtype=GGMLQuantizationType.Q4_K, file_type=15, tied=True,
    )  # fmt: skip
    spec = resolve(str(path))
    assert spec.quantization.gguf_file_type == "Q4_K_M"
    assert spec.tied_embeddings and spec.output_parameters == 0
    q4k = spec.bytes_by_dtype["Q4_K"]
    matrices = spec.parameters - (2 * 2 + 1) * 256  # minus F32 norms
    assert q4k == matrices // 256 * 144  # Q4_K: 144 bytes per 256 weights
    assert spec.quantization.bits is not None and 4.5 <= spec.quantization.bits < 4.6


def test_per_layer_kv_heads_and_key_value_lengths(tmp_path: Path) -> None:
    (path,) = write_gguf(
        tmp_path / "var.gguf", layers=4, kv_heads=[2, 0, 2, 0],
        extra={"llama.attention.key_length": 32, "llama.attention.value_length": 24},
    )  # fmt: skip
    spec = resolve(str(path))
    assert spec.attention.num_kv_heads == [2, 0, 2, 0]
    assert spec.attention.layer_kinds == ["full", "mamba", "full", "mamba"]
    assert (spec.attention.head_dim_k, spec.attention.head_dim_v) == (32, 24)


def test_gemma3_gguf_sliding_layers_follow_llama_cpp_pattern(tmp_path: Path) -> None:
    (path,) = write_gguf(
        tmp_path / "g3.gguf", arch="gemma3", layers=12, extra={"gemma3.attention.sliding_window": 1024}
    )
    spec = resolve(str(path))
    assert spec.attention.sliding_window == 1024
    assert spec.attention.layer_kinds == (["sliding"] * 5 + ["full"]) * 2


def test_split_gguf_sums_all_shards_from_any_shard(tmp_path: Path) -> None:
    (single,) = write_gguf(tmp_path / "one.gguf", layers=4)
    shards = write_gguf(tmp_path / "many.gguf", layers=4, split=3)
    whole = resolve(str(single))
    for shard in shards:
        spec = resolve(str(shard))
        assert spec.parameters == whole.parameters
        assert spec.weights_bytes == whole.weights_bytes
        assert len(spec.files) == 3 and spec.name == "many"
    shards[2].unlink()
    with pytest.raises(ModelError, match=r"missing many-00003-of-00003\.gguf"):
        resolve(str(shards[0]))


def test_truncated_gguf_is_a_clean_error(tmp_path: Path) -> None:
    (path,) = write_gguf(tmp_path / "t.gguf")
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:300])
    with pytest.raises(ModelError, match="not a valid GGUF file"):
        resolve(str(cut))


def test_garbage_file_is_a_clean_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model at all, just text\n" * 100)
    with pytest.raises(ModelError, match="not a valid GGUF file"):
        resolve(str(junk))


def _gguf_prefix(tensor_count: int, kv_count: int) -> bytes:
    return b"GGUF" + struct.pack("<I", 3) + struct.pack("<QQ", tensor_count, kv_count)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_gguf_prefix(2**40, 0) + bytes(4096), "claims 1099511627776 tensors"),
        (_gguf_prefix(0, 2**40) + bytes(4096), "metadata entries"),
        # one key whose length says 1 TB
        (_gguf_prefix(0, 1) + struct.pack("<Q", 2**40) + bytes(4096), "truncated or corrupt"),
        # an array of 2^50 strings
        (
            _gguf_prefix(0, 1) + struct.pack("<Q", 3) + b"key" + struct.pack("<IIQ", 9, 8, 2**50) + bytes(64),
            "array claims",
        ),
    ],
)
def test_absurd_header_claims_fail_fast(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "absurd.gguf"
    path.write_bytes(payload)
    start = time.monotonic()
    with pytest.raises(ModelError, match=message):
        resolve(str(path))
    assert time.monotonic() - start < 5


def _tiny_config(**over: object) -> dict[str, object]:
    return tiny_llama_config(**{"vocab_size": 300, "tie_word_embeddings": False, **over})


def test_local_directory_reads_safetensors_headers(tmp_path: Path) -> None:
    cfg = _tiny_config()
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    tensors = llama_tensors(cfg)
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", tensors[:10])
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", tensors[10:])
    spec = resolve(str(tmp_path))
    expected = sum(int(__import__("math").prod(shape)) for _, _, shape in tensors)
    assert spec.kind == "local_dir" and spec.parameters_source == "tensors"
    assert spec.parameters == expected
    assert spec.weights_bytes == 2 * expected == spec.bytes_by_dtype["BF16"]
    assert spec.embedding_parameters == spec.output_parameters == 300 * 64
    # a bare config of the same model gives the same count
    only = resolve(str(tmp_path / "config.json"))
    assert only.kind == "local_config" and only.parameters_source == "config"
    assert only.parameters == expected
    assert only.attention == spec.attention


def test_directory_without_model_files_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no config\.json and no \.gguf"):
        resolve(str(tmp_path))


def test_missing_path_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="No such file"):
        resolve(str(tmp_path / "nope.gguf"))
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        resolve(str(bad))
    bad.write_text('{"foo": 1}')  # valid JSON, no model shape: the error says what to pass instead
    with pytest.raises(ModelError, match="no 'num_hidden_layers'") as err:
        resolve(str(bad))
    assert err.value.hint and ".gguf" in err.value.hint


def test_moe_and_mla_gguf(tmp_path: Path) -> None:
    """Expert tensors count fully in `parameters`, only experts_per_tok of them in `active_parameters`."""
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "moe.gguf"
    w = GGUFWriter(str(path), "deepseek2")
    n_layers, hidden, experts, used, ff = 2, 64, 8, 2, 32
    w.add_block_count(n_layers)
    w.add_embedding_length(hidden)
    w.add_head_count(4)
    w.add_head_count_kv(1)
    w.add_context_length(8192)
    w.add_uint32("deepseek2.attention.kv_lora_rank", 32)
    w.add_uint32("deepseek2.rope.dimension_count", 16)
    w.add_uint32("deepseek2.attention.key_length", 48)
    w.add_uint32("deepseek2.attention.value_length", 32)
    w.add_expert_count(experts)
    w.add_expert_used_count(used)
    w.add_uint32("deepseek2.expert_shared_count", 1)
    w.add_token_list([f"t{i}".encode() for i in range(100)])
    w.add_tensor("token_embd.weight", np.zeros((100, hidden), np.float16))
    for i in range(n_layers):
        w.add_tensor(f"blk.{i}.attn_kv_a_mqa.weight", np.zeros((48, hidden), np.float16))
        for name in ("ffn_gate_exps", "ffn_up_exps"):
            w.add_tensor(f"blk.{i}.{name}.weight", np.zeros((experts, ff, hidden), np.float16))
        w.add_tensor(f"blk.{i}.ffn_down_exps.weight", np.zeros((experts, hidden, ff), np.float16))
        w.add_tensor(f"blk.{i}.ffn_gate_shexp.weight", np.zeros((ff, hidden), np.float16))
    w.add_tensor("output.weight", np.zeros((100, hidden), np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    spec = resolve(str(path))
    att = spec.attention
    assert att.layer_kinds == ["mla", "mla"] and (att.kv_lora_rank, att.qk_rope_head_dim) == (32, 16)
    assert spec.moe is not None and (spec.moe.num_experts, spec.moe.num_experts_per_tok) == (8, 2)
    expert_params = n_layers * 3 * experts * ff * hidden
    assert spec.active_parameters == spec.parameters - expert_params * (experts - used) // experts


def _count(tensors: list[tuple[str, str, tuple[int, ...]]]) -> int:
    import math

    return sum(math.prod(shape) for _, _, shape in tensors)


@pytest.mark.parametrize("scheme", ["fp8_block", "compressed_int4", "mxfp4"])
def test_quantized_safetensors_logical_parameters(tmp_path: Path, scheme: str) -> None:
    """Packed/8-bit weights count as the weights they hold; scales are bytes, not parameters."""
    qcfg: dict[str, object] = {
        "fp8_block": {"quant_method": "fp8", "weight_block_size": [128, 128]},
        "compressed_int4": {
            "quant_method": "compressed-tensors",
            "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 128}}},
        },
        "mxfp4": {"quant_method": "mxfp4"},
    }[scheme]
    cfg = _tiny_config(hidden_size=256, intermediate_size=512, quantization_config=qcfg)
    dense = llama_tensors(cfg)
    stored: list[tuple[str, str, tuple[int, ...]]] = []
    for name, dtype, shape in dense:
        if not name.endswith("proj.weight"):
            stored.append((name, dtype, shape))
            continue
        out_f, in_f = shape
        base = name.removesuffix(".weight")
        if scheme == "fp8_block":
            stored += [
                (name, "F8_E4M3", shape),
                (base + ".weight_scale_inv", "F32", (out_f // 128, in_f // 128)),
            ]
        elif scheme == "compressed_int4":
            stored += [
                (base + ".weight_packed", "I32", (out_f, in_f // 8)),
                (base + ".weight_scale", "BF16", (out_f, in_f // 128)),
                (base + ".weight_shape", "I32", (2,)),
            ]
        else:  # gpt-oss layout: 32 fp4 values per 16-byte block, one E8M0 scale per block
            stored += [
                (base + "_blocks", "U8", (out_f, in_f // 32, 16)),
                (base + "_scales", "U8", (out_f, in_f // 32)),
            ]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    write_safetensors(tmp_path / "model.safetensors", stored)
    spec = resolve(str(tmp_path))
    assert spec.parameters == _count(dense)
    expected_bits = {"fp8_block": 8.0, "compressed_int4": 4.0, "mxfp4": 4.25}[scheme]
    assert spec.quantization.bits == expected_bits
    # quantized blocks are much smaller than their 16-bit size
    assert spec.layer_bytes[0] < 0.6 * 2 * spec.layer_parameters[0]


def test_large_vocabulary_arrays_are_skipped_but_counted_and_bounds_checked(tmp_path: Path) -> None:
    """Token lists, types and scores of a big vocabulary are read for their length only (the stock
    reader builds one numpy view per item: seconds for 150k tokens); a cut inside them still errors."""
    from llmhost.demo_model import write_llama_gguf

    path = write_llama_gguf(
        tmp_path / "bigvocab.gguf", n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_vocab=20000
    )
    from llmhost.models.gguf_header import read_local_header

    header = read_local_header(path)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
        assert header.array_lengths[key] == 20000
        assert header.fields.get(key) is None  # not decoded item by item
    assert header.fields["llama.block_count"] == 2  # short fields are still decoded
    spec = resolve(str(path))
    assert spec.vocab_size == 20000
    assert spec.embedding_parameters == 20000 * 64
    data = path.read_bytes()
    # Cut inside the token-type array (int32 values right after the token strings).
    marker = data.find(b"tokenizer.ggml.token_type")
    assert marker > 0
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: marker + 60])
    with pytest.raises(ModelError, match="not a valid GGUF file"):
        resolve(str(cut))
