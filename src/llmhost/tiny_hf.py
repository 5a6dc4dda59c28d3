"""A tiny llama-architecture Hugging Face checkpoint, generated locally (no download, no torch).

Tests and demos of the vLLM engine need a real HF directory that vLLM loads like any other:
`config.json`, `model.safetensors` (bf16), `tokenizer.json` (a byte-level BPE trained with `tokenizers`
on a few lines of text), `tokenizer_config.json` (with a chat template) and `generation_config.json`.
Weights are seeded random numbers, so the model's output is gibberish by construction; its loading,
memory, protocol and process behaviour are those of a real model.

The safetensors file is written directly (an 8-byte little-endian header length, a JSON header, then
the raw tensors), with bf16 made from float32 by rounding to the nearest even upper half. That keeps
this module free of torch, so it runs in llmhost's own environment.

`tiny_llama_checkpoint()` returns a cached copy keyed by the content that defines it, so it is made once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

GENERATOR_VERSION = 1

# Sized so vLLM's CPU build loads it in seconds; head_dim 64 is one the CPU attention kernels support.
TINY_LLAMA_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "vocab_size": 512,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "initializer_range": 0.02,
    "torch_dtype": "bfloat16",
    "dtype": "bfloat16",
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
}

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"]

TRAINING_TEXT = [
    "llmhost plans, launches and supervises open-weight language models.",
    "The quick brown fox jumps over the lazy dog.",
    "A tiny model with random weights answers in gibberish, but it answers over real HTTP.",
    "Hello! How are you today? I am a small test model.",
    "system user assistant: the chat template joins the roles and their messages.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation , . ; : ! ? ( ) [ ] { } ' \" - _",
]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

SEED = 1234


def _content_key() -> str:
    """A digest of everything that defines the checkpoint: change any of it and a new one is made."""
    payload = json.dumps(
        {
            "version": GENERATOR_VERSION,
            "config": TINY_LLAMA_CONFIG,
            "special": SPECIAL_TOKENS,
            "text": TRAINING_TEXT,
            "template": CHAT_TEMPLATE,
            "seed": SEED,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even like torch does."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def tensor_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The tensors of a `LlamaForCausalLM` checkpoint and their shapes, as transformers names them."""
    hidden = int(config["hidden_size"])
    inter = int(config["intermediate_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config["num_key_value_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    vocab = int(config["vocab_size"])
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for layer in range(int(config["num_hidden_layers"])):
        prefix = f"model.layers.{layer}"
        shapes.update(
            {
                f"{prefix}.input_layernorm.weight": (hidden,),
                f"{prefix}.self_attn.q_proj.weight": (heads * head_dim, hidden),
                f"{prefix}.self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
                f"{prefix}.self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
                f"{prefix}.self_attn.o_proj.weight": (hidden, heads * head_dim),
                f"{prefix}.post_attention_layernorm.weight": (hidden,),
                f"{prefix}.mlp.gate_proj.weight": (inter, hidden),
                f"{prefix}.mlp.up_proj.weight": (inter, hidden),
                f"{prefix}.mlp.down_proj.weight": (hidden, inter),
            }
        )
    shapes["model.norm.weight"] = (hidden,)
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def write_safetensors_bf16(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write float32 arrays as a bf16 safetensors file (the format: u64 header size, JSON header, data)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        data = _bf16_bits(tensors[name]).tobytes()
        header[name] = {
            "dtype": "BF16",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for blob in blobs:
            handle.write(blob)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, Any] = json.loads(handle.read(length))
    return header


def _random_weights(config: dict[str, Any]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    std = float(config["initializer_range"])
    weights: dict[str, np.ndarray] = {}
    for name, shape in tensor_shapes(config).items():
        if name.endswith("norm.weight"):
            weights[name] = np.ones(shape, dtype=np.float32)
        else:
            weights[name] = rng.normal(0.0, std, size=shape).astype(np.float32)
    return weights


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TRAINING_TEXT * 4, trainer=trainer)
    return tokenizer


def write_tiny_llama_checkpoint(directory: Path | str) -> Path:
    """Write the tiny checkpoint into `directory` (created if needed) and return it."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    config = dict(TINY_LLAMA_CONFIG)
    tokenizer = _train_tokenizer(int(config["vocab_size"]))
    if tokenizer.get_vocab_size() > int(config["vocab_size"]):  # pragma: no cover - guarded by trainer
        raise RuntimeError("tokenizer vocabulary larger than the model's")
    for token, expected in zip(SPECIAL_TOKENS, ("bos", "eos", "pad"), strict=True):
        assert tokenizer.token_to_id(token) == config[f"{expected}_token_id"], token
    tokenizer.save(str(target / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL_TOKENS[0],
        "eos_token": SPECIAL_TOKENS[1],
        "pad_token": SPECIAL_TOKENS[2],
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    special_map = {
        "bos_token": SPECIAL_TOKENS[0],
        "eos_token": SPECIAL_TOKENS[1],
        "pad_token": SPECIAL_TOKENS[2],
    }
    (target / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {
        "bos_token_id": config["bos_token_id"],
        "eos_token_id": config["eos_token_id"],
        "pad_token_id": config["pad_token_id"],
        "do_sample": False,
    }
    (target / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    write_safetensors_bf16(target / "model.safetensors", _random_weights(config))
    return target


def tiny_models_dir() -> Path:
    from llmhost.cache import cache_dir

    return cache_dir() / "models"


def tiny_llama_checkpoint() -> Path:
    """The cached tiny checkpoint, generated on first use (written aside, then renamed into place)."""
    final = tiny_models_dir() / f"tiny-llama-hf-{_content_key()}"
    if (final / "model.safetensors").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tiny-llama-", dir=final.parent))
    try:
        write_tiny_llama_checkpoint(scratch)
        try:
            scratch.rename(final)
        except OSError:
            if not (final / "model.safetensors").exists():  # lost a race to nothing: re-raise
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return final
