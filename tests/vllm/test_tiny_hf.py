"""The tiny HF checkpoint generator: a normal HF directory that transformers' tokenizer and vLLM load."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from llmhost import tiny_hf


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_hf.write_tiny_llama_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


def test_directory_has_the_files_of_a_hf_checkpoint(checkpoint: Path) -> None:
    names = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "generation_config.json" in names
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["torch_dtype"] == "bfloat16"


def test_safetensors_header_lists_every_llama_tensor_in_bf16(checkpoint: Path) -> None:
    header = tiny_hf.read_safetensors_header(checkpoint / "model.safetensors")
    header.pop("__metadata__")
    expected = tiny_hf.tensor_shapes(tiny_hf.TINY_LLAMA_CONFIG)
    assert {k: tuple(v["shape"]) for k, v in header.items()} == expected
    assert {v["dtype"] for v in header.values()} == {"BF16"}
    # Offsets tile the data section exactly, 2 bytes per element.
    spans = sorted((v["data_offsets"][0], v["data_offsets"][1], v["shape"]) for v in header.values())
    assert spans[0][0] == 0
    for (start, end, shape), (nxt, _, _) in zip(spans, [*spans[1:], (spans[-1][1], 0, [])], strict=True):
        assert end - start == 2 * int(np.prod(shape)) and end == nxt
    with open(checkpoint / "model.safetensors", "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
    assert length % 8 == 0
    assert (checkpoint / "model.safetensors").stat().st_size == 8 + length + spans[-1][1]


def test_bf16_rounding_matches_torch_semantics() -> None:
    values = np.array([1.0, -2.0, 0.1, 3.140625, 1.00390625, 1.01171875], dtype=np.float32)
    bits = tiny_hf._bf16_bits(values)
    assert bits[0] == 0x3F80 and bits[1] == 0xC000
    assert bits[2] == 0x3DCD  # 0.1 rounds up (0x3DCCCCCD)
    assert bits[3] == 0x4049  # exactly representable
    assert bits[4] == 0x3F80  # a tie rounds to even (down)
    assert bits[5] == 0x3F82  # a tie rounds to even (up)


def test_tokenizer_round_trips_and_the_chat_template_renders(checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    assert tokenizer.bos_token == "<|begin_of_text|>" and tokenizer.eos_token_id == 1
    assert len(tokenizer) <= tiny_hf.TINY_LLAMA_CONFIG["vocab_size"]
    text = "Hello world, the quick fox! Ünïcödé too."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: any text round-trips
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|begin_of_text|>user: Hi\nassistant: "


def test_cached_checkpoint_is_made_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMHOST_CACHE_DIR", str(tmp_path))
    first = tiny_hf.tiny_llama_checkpoint()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = tiny_hf.tiny_llama_checkpoint()
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert first.parent == tmp_path / "models" and first.name.startswith("tiny-llama-hf-")
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tiny-llama-")]  # no scratch left
