"""A tiny, real llama-architecture GGUF generated locally: the embedded default that needs no download.

`write_llama_gguf` writes a complete model file with the `gguf` package: the llama hyper-parameters,
a byte-level BPE vocabulary (the 256 GPT-2 byte symbols, merges learnt deterministically from a short
built-in text, special tokens), a ChatML chat template, and seeded random weights. llama.cpp (native
`llama-server` and llama-cpp-python) loads it like any downloaded model. Its output is gibberish by
construction; its speed, memory and protocol behaviour are real, which is what tests and the demo need.

`ensure_demo_model()` writes the default tiny model once into the cache (content-keyed file name, so a
change of generator or parameters yields a new file and never a stale one).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from llmhost.cache import cache_dir
from llmhost.errors import UsageError
from llmhost.outputs import check_directory_target, make_directory, remove_directories, write_atomically

GENERATOR_VERSION = 2  # 2: control tokens (EOS included) can no longer be sampled, see write_llama_gguf

# The residual-stream dimension that carries a constant, and how strongly control tokens are pushed down
# through it (measured: control logits below -25, ordinary ones within +-1).
_CONSTANT_DIM = 0
_CONSTANT_VALUE = 0.1
_CONTROL_TOKEN_WEIGHT = -30.0

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

BOS_TOKEN = "<|begin_of_text|>"  # noqa: S105 (a vocabulary token, not a secret)
EOS_TOKEN = "<|im_end|>"  # noqa: S105
SPECIAL_TOKENS = (BOS_TOKEN, "<|end_of_text|>", "<|im_start|>", EOS_TOKEN)

# Text the BPE merges are learnt from: any English-ish prose gives sensible-looking merges.
_MERGE_CORPUS = """
The quick brown fox jumps over the lazy dog. A tiny model is served by llama.cpp on the CPU, and the
supervisor checks that the server is healthy, that the model is listed, and that requests are answered.
Hello! How are you today? I am fine, thank you. What is the capital of France? The capital of France is
Paris. Write a short poem about the sea: the waves are blue and the wind is strong, the sailors sing
their song. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Self-hosting open-weight language models means
planning memory for the weights, the key-value cache and the compute buffers, then launching an engine
with the right flags, watching it, restarting it when it crashes, and measuring its throughput and
latency. This is a test. This is only a test. The end.
"""

FileType = Literal["F16", "F32"]


@dataclass(frozen=True)
class LlamaShape:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    file_type: FileType
    seed: int
    rope_freq_base: float
    rms_eps: float
    name: str


DEMO_SHAPE = LlamaShape(
    n_layer=4,
    n_embd=128,
    n_head=4,
    n_head_kv=2,
    n_ff=384,
    n_vocab=1024,
    n_ctx_train=4096,
    file_type="F16",
    seed=0,
    rope_freq_base=10000.0,
    rms_eps=1e-5,
    name="llmhost-tiny-demo",
)
DEMO_MODEL_NAME = DEMO_SHAPE.name


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes, strict=True)}


_PRETOKENIZE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")


def learn_merges(text: str, max_merges: int) -> list[tuple[str, str]]:
    """Deterministic byte-level BPE training (most frequent pair, ties broken lexicographically)."""
    byte_map = bytes_to_unicode()
    words: Counter[tuple[str, ...]] = Counter()
    for piece in _PRETOKENIZE.findall(text):
        words[tuple(byte_map[b] for b in piece.encode("utf-8"))] += 1
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for a, b in itertools.pairwise(word):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return merges


def build_vocab(n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges for a byte-level BPE vocabulary of exactly `n_vocab` entries."""
    import gguf

    n_fixed = 256 + len(SPECIAL_TOKENS)
    if n_vocab < n_fixed:
        raise UsageError(f"n_vocab must be at least {n_fixed} (256 bytes + special tokens), got {n_vocab}.")
    byte_tokens = list(bytes_to_unicode().values())
    merges = learn_merges(_MERGE_CORPUS, n_vocab - n_fixed)
    tokens: list[str] = list(byte_tokens)
    seen = set(tokens)
    kept_merges: list[str] = []
    for a, b in merges:
        if a + b in seen:
            continue
        tokens.append(a + b)
        seen.add(a + b)
        kept_merges.append(f"{a} {b}")
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    reserved = n_vocab - len(SPECIAL_TOKENS) - len(tokens)
    for i in range(reserved):
        tokens.append(f"<|reserved_{i}|>")
        types.append(int(gguf.TokenType.CONTROL))
    for special in SPECIAL_TOKENS:
        tokens.append(special)
        types.append(int(gguf.TokenType.CONTROL))
    assert len(tokens) == n_vocab
    return tokens, types, kept_merges


def write_llama_gguf(
    path: str | os.PathLike[str],
    *,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_head_kv: int,
    n_ff: int,
    n_vocab: int,
    n_ctx_train: int = 4096,
    file_type: FileType = "F16",
    seed: int = 0,
    rope_freq_base: float = 10000.0,
    rms_eps: float = 1e-5,
    name: str = "llmhost-generated-llama",
    chat_template: str = CHATML_TEMPLATE,
    split_max_tensors: int = 0,
) -> Path:
    """Write a llama-architecture GGUF with a byte-level BPE vocabulary and seeded random weights.

    Shapes follow llama.cpp's llama loader: q/o are `n_embd x n_embd`, k/v are `n_embd x (n_head_kv *
    head_dim)`, the SwiGLU feed-forward has gate/up `n_embd -> n_ff` and down `n_ff -> n_embd`. Norm
    weights are F32 (as llama.cpp's converters write them); matrices use `file_type`.

    The model never ends a reply on its own and never emits a control token: a benchmark or a test that
    asks for N tokens gets N, on every engine, even where the engine ignores `ignore_eos`
    (llama-cpp-python's server). Random weights alone gave the two end-of-generation tokens of a
    1024-token vocabulary about a 1-in-500 chance per step, so a handful of 16-token requests ended early
    about a third of the time. How: residual dimension 0 holds a constant (every embedding row has it,
    and no attention or feed-forward output writes to it), so after the final RMSNorm it is always
    positive, and the output rows of control tokens weigh it strongly negative.
    """
    import gguf

    if n_embd % n_head:
        raise UsageError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head}).")
    if n_head % n_head_kv:
        raise UsageError(f"n_head ({n_head}) must be divisible by n_head_kv ({n_head_kv}).")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    head_dim = n_embd // n_head
    dtype = np.float16 if file_type == "F16" else np.float32
    rng = np.random.default_rng(seed)

    def matrix(rows: int, cols: int) -> np.ndarray:
        # numpy (rows, cols) becomes ggml ne = [cols, rows]: input dimension first.
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(dtype)

    def norm(size: int) -> np.ndarray:
        return np.ones(size, dtype=np.float32)

    tokens, types, merges = build_vocab(n_vocab)
    arch = "llama"
    # split_max_tensors > 0 writes llama.cpp's split layout (`<stem>-00001-of-0000N.gguf`, ...); the
    # returned path is then the first shard.
    writer = gguf.GGUFWriter(str(out), arch, split_max_tensors=split_max_tensors)
    writer.add_name(name)
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope_freq_base)
    writer.add_layer_norm_rms_eps(rms_eps)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(
        int(gguf.LlamaFileType.MOSTLY_F16 if file_type == "F16" else gguf.LlamaFileType.ALL_F32)
    )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index(BOS_TOKEN))
    writer.add_eos_token_id(tokens.index(EOS_TOKEN))
    writer.add_add_bos_token(False)
    writer.add_chat_template(chat_template)

    embeddings = matrix(n_vocab, n_embd)
    embeddings[:, _CONSTANT_DIM] = _CONSTANT_VALUE

    def writes_residual(rows: int, cols: int) -> np.ndarray:
        out_proj = matrix(rows, cols)
        out_proj[_CONSTANT_DIM, :] = 0  # keeps the constant dimension constant through every layer
        return out_proj

    lm_head = matrix(n_vocab, n_embd)
    lm_head[:, _CONSTANT_DIM] = 0
    control = np.array(types) == int(gguf.TokenType.CONTROL)
    lm_head[control, _CONSTANT_DIM] = _CONTROL_TOKEN_WEIGHT

    writer.add_tensor("token_embd.weight", embeddings)
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm(n_embd))
        writer.add_tensor(f"blk.{i}.attn_q.weight", matrix(n_head * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", matrix(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", matrix(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", writes_residual(n_embd, n_head * head_dim))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm(n_embd))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", writes_residual(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", norm(n_embd))
    writer.add_tensor("output.weight", lm_head)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    shards = sorted(out.parent.glob(f"{out.stem}-00001-of-*.gguf")) if split_max_tensors else []
    return shards[0] if shards else out


def shape_key(shape: LlamaShape) -> str:
    payload = json.dumps({"generator": GENERATOR_VERSION, **asdict(shape)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def ensure_model(shape: LlamaShape, directory: Path | None = None) -> Path:
    """Write the model for `shape` once (atomically) and return its path; later calls reuse the file.

    A directory that cannot be created or written (a file in the way, /proc, a full disk) is a
    UsageError naming it; the directories created for it and the partial file are removed."""
    what = "--output" if directory is not None else "the cache directory (LLMHOST_CACHE_DIR)"
    directory = directory or cache_dir() / "models"
    check_directory_target(what, directory)
    target = directory / f"{shape.name}-{shape_key(shape)}.gguf"
    if target.is_file():
        return target
    created = make_directory(what, directory)
    try:
        write_atomically(what, target, lambda tmp: write_llama_gguf(tmp, **asdict(shape)))
    except UsageError:
        remove_directories(created)
        raise
    return target


def ensure_demo_model(directory: Path | None = None) -> Path:
    """The tiny default model (about 2 MB, 4 layers, 1024-token vocabulary), written once into the cache."""
    return ensure_model(DEMO_SHAPE, directory)
