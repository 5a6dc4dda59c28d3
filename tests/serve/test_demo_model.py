"""The generated GGUF is a real model: the gguf reader sees llama metadata, llama.cpp loads and runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmhost.demo_model import (
    BOS_TOKEN,
    DEMO_SHAPE,
    EOS_TOKEN,
    bytes_to_unicode,
    ensure_demo_model,
    learn_merges,
    write_llama_gguf,
)
from llmhost.errors import UsageError


def _field(reader, key):
    field = reader.get_field(key)
    assert field is not None, key
    return field.contents()


def test_tiny_gguf_metadata(tiny_gguf: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(tiny_gguf)
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == DEMO_SHAPE.n_layer
    assert _field(reader, "llama.attention.head_count_kv") == DEMO_SHAPE.n_head_kv
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == DEMO_SHAPE.n_vocab
    assert set(bytes_to_unicode().values()) <= set(tokens)
    assert tokens[_field(reader, "tokenizer.ggml.bos_token_id")] == BOS_TOKEN
    assert tokens[_field(reader, "tokenizer.ggml.eos_token_id")] == EOS_TOKEN
    assert "<|im_start|>" in _field(reader, "tokenizer.chat_template")
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "blk.3.ffn_down.weight"} <= names
    q = next(t for t in reader.tensors if t.name == "blk.0.attn_k.weight")
    head_dim = DEMO_SHAPE.n_embd // DEMO_SHAPE.n_head
    assert list(q.shape) == [DEMO_SHAPE.n_embd, DEMO_SHAPE.n_head_kv * head_dim]
    assert tiny_gguf.stat().st_size < 5_000_000


def test_ensure_demo_model_is_content_keyed_and_reused(tmp_path: Path) -> None:
    first = ensure_demo_model(tmp_path)
    mtime = first.stat().st_mtime_ns
    again = ensure_demo_model(tmp_path)
    assert again == first and again.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp files left behind


def test_seed_changes_weights_not_shape(tmp_path: Path) -> None:
    kwargs = dict(n_layer=1, n_embd=32, n_head=2, n_head_kv=1, n_ff=64, n_vocab=300, file_type="F32")
    a = write_llama_gguf(tmp_path / "a.gguf", seed=1, **kwargs)
    b = write_llama_gguf(tmp_path / "b.gguf", seed=2, **kwargs)
    c = write_llama_gguf(tmp_path / "c.gguf", seed=1, **kwargs)
    assert a.read_bytes() == c.read_bytes()
    assert a.read_bytes() != b.read_bytes()
    assert a.stat().st_size == b.stat().st_size


def test_bad_shapes_are_usage_errors(tmp_path: Path) -> None:
    small = dict(n_layer=1, n_embd=32, n_head=4, n_head_kv=1, n_ff=8, n_vocab=300)
    with pytest.raises(UsageError, match="divisible"):
        write_llama_gguf(tmp_path / "x.gguf", **{**small, "n_embd": 30})
    with pytest.raises(UsageError, match="n_vocab"):
        write_llama_gguf(tmp_path / "x.gguf", **{**small, "n_vocab": 100})


def test_merges_are_deterministic_and_frequent_first() -> None:
    merges = learn_merges("the the the then", 3)
    assert merges == learn_merges("the the the then", 3)
    assert merges[0] in {("t", "h"), ("h", "e"), ("Ġ", "t")}


@pytest.mark.engine
def test_llama_cpp_python_loads_and_generates(tiny_gguf: Path) -> None:
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (llmhost[llamacpp])"
    )
    llm = llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=256, verbose=False)
    assert llm.tokenize(b"Hello world")  # byte-level BPE round-trips
    assert llm.detokenize(llm.tokenize(b"Hello world", add_bos=False)) == b"Hello world"
    out = llm.create_completion("Hello", max_tokens=8, temperature=0.0)
    assert out["usage"]["completion_tokens"] > 0
    chat = llm.create_chat_completion(messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert chat["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.engine
def test_control_tokens_can_never_be_sampled(tmp_path: Path) -> None:
    """The tiny model never stops early (llama-cpp-python ignores ignore_eos, so benches rely on this)."""
    import gguf
    import numpy as np

    llama_cpp = pytest.importorskip("llama_cpp")
    path = write_llama_gguf(
        tmp_path / "m.gguf", n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_vocab=512, seed=7
    )
    reader = gguf.GGUFReader(path)
    types = np.array(_field(reader, "tokenizer.ggml.token_type"))
    control = types == int(gguf.TokenType.CONTROL)
    assert control[_field(reader, "tokenizer.ggml.eos_token_id")]
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, verbose=False, logits_all=True)
    tokens = llm.tokenize("Write a poem: the sea is blue. 0 1 2 3 <|im_end|> éà 😀".encode(), add_bos=False)
    llm.eval(tokens)
    logits = np.array(llm.scores[: len(tokens)])
    # Softmax odds of the likeliest control token against the likeliest ordinary one, at every position.
    margin = logits[:, ~control].max(axis=1) - logits[:, control].max(axis=1)
    assert margin.min() > 20, margin.min()
    text = llm.create_completion("Hello", max_tokens=64, temperature=1.5, seed=3)
    assert text["choices"][0]["finish_reason"] == "length"
    assert text["usage"]["completion_tokens"] == 64


def test_a_full_disk_leaves_no_partial_model(tmp_path: Path) -> None:
    # Found in issue 13: a full disk left a partial .gguf behind (and was an internal error). The disk is
    # "full" for a child limited to 100 kB per file (RLIMIT_FSIZE; SIGXFSZ ignored so writes fail).
    import resource
    import signal
    import subprocess
    import sys

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    out = subprocess.run(
        [sys.executable, "-m", "llmhost", "demo-model", "-o", str(tmp_path / "new" / "models")],
        preexec_fn=small_files,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: --output ") and "cannot write it" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []  # neither the partial file nor the directories made for it


@pytest.mark.parametrize(
    ("where", "refusal"),
    [
        ("file", "is a file, not a directory"),  # was FileExistsError
        ("file/models", "cannot create it: Not a directory"),
        ("link", "is a dangling symbolic link"),
        ("x" * 300, "File name too long"),
    ],
)
def test_output_directories_that_cannot_take_the_model(tmp_path: Path, where: str, refusal: str) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    before = sorted(tmp_path.iterdir())
    with pytest.raises(UsageError, match=refusal):
        ensure_demo_model(tmp_path / where)
    assert sorted(tmp_path.iterdir()) == before


def test_output_under_proc_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"--output /proc/llmhost-demo: cannot create it"):
        ensure_demo_model(Path("/proc/llmhost-demo"))
