"""`plan` asks the installed llama.cpp for its compute buffer (a no-alloc dry run) for a local GGUF on the
CPU, and keeps its own estimate everywhere else. Real llama-cpp-python, real child processes."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from llmhost.cli import main
from llmhost.engines.llamacpp_dryrun import ComputeProbe, context_params
from llmhost.estimate import LlamaCppSettings, compute_buffer_bytes
from llmhost.models import resolve

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
def _needs_llama_cpp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (llmhost[llamacpp])")
    monkeypatch.setenv("LLMHOST_CACHE_DIR", str(tmp_path / "cache"))


def _children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()]


def _plan(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code = main(["plan", *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_plan_uses_llama_cpps_own_figure_on_the_cpu(tiny_gguf: Path, capsys) -> None:
    plan = _plan(capsys, str(tiny_gguf), "--context", "2048", "--concurrency", "2")
    chosen = plan["candidates"][plan["chosen"]]
    assert chosen["engine"] == "llamacpp" and chosen["compute_source"] == "llama.cpp dry run"
    assert any("dry run" in r for r in chosen["reasons"])
    assert "compute_measured" in [r["code"] for r in chosen["reasons_detail"]]
    opts = chosen["engine_options"]
    settings = LlamaCppSettings(
        n_ctx_seq=opts["n_ctx"] // opts["n_parallel"],
        n_parallel=opts["n_parallel"],
        n_batch=opts["n_batch"],
        n_ubatch=opts["n_ubatch"],
        flash_attn=opts["flash_attn"],
        cache_type_k=opts["cache_type_k"],
        cache_type_v=opts["cache_type_v"],
    )
    with ComputeProbe.for_file(tiny_gguf, disk_cache=False) as probe:
        measured = probe(settings)
    assert measured is not None and measured > 0
    assert chosen["memory"]["compute_bytes"] == measured
    # ... which is llama.cpp's number, not the analytic one (they differ by the allocator's reuse).
    assert measured != compute_buffer_bytes(resolve(str(tiny_gguf)), settings)
    assert not _children()


def test_what_if_hardware_and_the_switch_keep_the_estimate(tiny_gguf: Path, capsys, monkeypatch) -> None:
    what_if = _plan(capsys, str(tiny_gguf), "--hardware", "h100-80gb", "--engine", "llamacpp")
    assert {c["compute_source"] for c in what_if["candidates"]} == {"estimate"}
    monkeypatch.setenv("LLMHOST_LLAMACPP_DRY_RUN", "0")
    off = _plan(capsys, str(tiny_gguf))
    assert {c["compute_source"] for c in off["candidates"]} == {"estimate"}


def test_answers_are_cached_by_file_and_settings(tiny_gguf: Path) -> None:
    settings = [LlamaCppSettings(n_ctx_seq=c, n_parallel=p) for c in (512, 1024) for p in (1, 2)]
    with ComputeProbe.for_file(tiny_gguf) as first:
        answers = [first(s) for s in settings]
        assert first.children_started == 1  # one child answers every setting
    assert all(a is not None for a in answers)
    assert answers[0] <= answers[1] and answers[0] <= answers[2]  # more cells, more mask
    with ComputeProbe.for_file(tiny_gguf) as second:
        assert [second(s) for s in settings] == answers
        assert second.children_started == 0
        second(LlamaCppSettings(n_ctx_seq=4096))  # a new setting starts a child again
        assert second.children_started == 1
    assert not _children()


def test_a_file_llama_cpp_cannot_load_gives_no_answer(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with ComputeProbe.for_file(bad) as probe:
        assert probe(LlamaCppSettings(n_ctx_seq=512)) is None
        assert probe(LlamaCppSettings(n_ctx_seq=1024)) is None
        assert probe.children_started == 1  # a failed child is not restarted for every question
    assert not _children()


def test_settings_map_to_what_llama_server_creates() -> None:
    params = context_params(
        LlamaCppSettings(n_ctx_seq=4096, n_parallel=4, cache_type_v="q8_0", flash_attn=False)
    )
    assert params["n_ctx"] == 16384 and params["n_seq_max"] == 4
    assert params["n_outputs_max"] == 4  # llama-server: one output per slot
    assert params["flash_attn"] is True  # a quantized V cache needs flash attention
    python_server = context_params(LlamaCppSettings(n_ctx_seq=512, n_outputs_max=2048))
    assert python_server["n_outputs_max"] == 2048


def test_the_child_starts_before_resolve_unless_the_cache_answers(tiny_gguf: Path) -> None:
    from llmhost.engines.llamacpp_dryrun import compute_probes
    from llmhost.hardware import detect

    machine = detect().model_copy(update={"gpus": []})
    with compute_probes(str(tiny_gguf), machine, what_if=False) as probes_for:
        (probe,) = probes_for(resolve(str(tiny_gguf))).values()
        assert probe.children_started == 1  # llama.cpp was loading while the header was parsed
        assert probe(LlamaCppSettings(n_ctx_seq=512)) is not None
    with compute_probes(str(tiny_gguf), machine, what_if=False) as probes_for:
        (probe,) = probes_for(resolve(str(tiny_gguf))).values()
        assert probe.children_started == 0  # answers on disk: no child unless a new question comes
    with compute_probes(str(tiny_gguf), machine, what_if=True) as probes_for:
        assert probes_for(resolve(str(tiny_gguf))) == {}
    assert not _children()


def test_the_child_loads_a_vocabless_replica_of_the_header(tiny_gguf: Path, tmp_path: Path) -> None:
    """The dry run loads the header without its tokenizer (the vocabulary's size kept): what the graph
    depends on is unchanged, and the 187 recorded loads stay exact (tests/accuracy)."""
    from llmhost.engines._llamacpp_dryrun_child import vocabless_replica
    from llmhost.models.gguf_header import read_local_header

    replica = vocabless_replica(str(tiny_gguf), str(tmp_path))
    assert replica is not None
    full, slim = read_local_header(tiny_gguf), read_local_header(replica)
    assert slim.fields["tokenizer.ggml.model"] == "none"
    assert not any(k.startswith("tokenizer.") and k != "tokenizer.ggml.model" for k in slim.fields)
    n_vocab = full.array_lengths["tokenizer.ggml.tokens"]
    assert slim.arch_field("vocab_size") == n_vocab
    assert slim.tensors == full.tensors
    assert slim.header_bytes < full.header_bytes  # the tensor data: as long, a sparse hole
    assert slim.file_size - slim.header_bytes == full.file_size - full.header_bytes
    assert {k: v for k, v in slim.fields.items() if not k.startswith("tokenizer.")} == {
        k: v for k, v in full.fields.items() if not k.startswith("tokenizer.") and k != "llama.vocab_size"
    } | {"llama.vocab_size": n_vocab}
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"GGML" + b"\0" * 64)
    assert vocabless_replica(str(not_gguf), str(tmp_path)) is None
    from llmhost.demo_model import write_llama_gguf

    shape = dict(n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_vocab=300)
    first = write_llama_gguf(tmp_path / "split" / "m.gguf", **shape, split_max_tensors=8)  # type: ignore[arg-type]
    # llama.cpp finds the other shards next to the first by name: a split model is loaded as it is.
    assert vocabless_replica(str(first), str(tmp_path)) is None
