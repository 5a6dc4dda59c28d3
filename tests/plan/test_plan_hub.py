"""`llmhost plan` end to end against a fake Hub (real huggingface_hub client, HTTP on 127.0.0.1).

The Hub fixture and model makers are the shared ones in tests/support.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from support.hub_fixture import fake_hub  # the fixture, imported so pytest finds it in this module
from support.hubserver import FakeHub, HubFile
from support.model_makers import llama_tensors, safetensors_header

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"

__all__ = ["fake_hub"]


def _repo(config: dict[str, Any]) -> dict[str, HubFile | bytes]:
    tensors = llama_tensors(config, "BF16")
    header, size = safetensors_header(tensors)
    return {
        "config.json": json.dumps(config).encode(),
        "model.safetensors": HubFile(header, size=len(header) + size, lfs=True),
    }


def test_plan_a_hub_repo_with_a_quantized_sibling(
    fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmhost.cli import main

    base = "Qwen/Qwen2.5-7B-Instruct"
    config = json.loads((CONFIGS / "Qwen--Qwen2.5-7B-Instruct.json").read_text())
    fake_hub.add_repo(base, _repo(config))
    fake_hub.add_repo(
        "Qwen/Qwen2.5-7B-Instruct-AWQ", {"config.json": b"{}"}, tags=[f"base_model:quantized:{base}", "awq"]
    )
    fake_hub.add_repo(
        "x/Qwen2.5-7B-Instruct-GGUF", {"a.gguf": b""}, tags=[f"base_model:quantized:{base}", "gguf"]
    )
    # 15 GB of bf16 weights do not fit a 16 GB T4 (no bf16, no fp8 there): the AWQ sibling does.
    rc = main(["plan", base, "--hardware", "t4-16gb", "--context", "8192", "--json"])
    assert rc == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["model"]["parameters"] == 7_615_616_512
    chosen = plan["candidates"][plan["chosen"]]
    assert chosen["engine"] == "vllm" and chosen["quantization"] == "awq"
    assert chosen["model_source"] == "Qwen/Qwen2.5-7B-Instruct-AWQ"
    assert chosen["engine_options"]["dtype"] == "float16"  # compute capability 7.5 has no bf16
    reasons = [r for c in plan["candidates"] if c["engine"] == "llamacpp" for r in c["reasons"]]
    assert any("x/Qwen2.5-7B-Instruct-GGUF:" in r for r in reasons)
    repos = {
        r["fields"]["repo"]
        for c in plan["candidates"]
        for r in c["reasons_detail"]
        if r["code"] == "needs_gguf_sibling"
    }
    assert repos == {"x/Qwen2.5-7B-Instruct-GGUF"}
    assert ("GET", "/api/models", None) in fake_hub.requests  # the model tree search
    # --offline never asks the Hub for siblings (the repo's own files are cached by now).
    fake_hub.reset_counters()
    rc = main(["plan", base, "--hardware", "t4-16gb", "--context", "8192", "--json", "--offline"])
    plan = json.loads(capsys.readouterr().out)
    # Without the sibling, vLLM's bf16 does not fit and nothing launches as is (exit 3); a GGUF this repo
    # would need converted is the advice, not the choice (serve runs the choice).
    assert rc == 3 and plan["chosen"] is None
    assert all(c["model_source"] == base for c in plan["candidates"])
    assert any("GGUF of it would fit with llama.cpp" in a for a in plan["advice"])
    assert "advice_gguf_conversion" in [a["code"] for a in plan["advice_detail"]]
    assert not fake_hub.requests


def _header_only(path: Path) -> HubFile:
    """The file as the Hub lists it, but only its header can be read: the rest reads as zeros."""
    import gguf

    data = path.read_bytes()
    return HubFile(data[: gguf.GGUFReader(path).data_offset], size=len(data), lfs=True)


@pytest.mark.engine
def test_plan_a_gguf_repo_asks_llama_cpp_about_the_header_it_read(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU machine, a GGUF on the Hub gets llama.cpp's own compute figure: llama.cpp reads a
    replica made of the header bytes `plan` fetched, and nothing more is downloaded."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (llmhost[llamacpp])")
    from llmhost.cli import main
    from llmhost.demo_model import write_llama_gguf

    monkeypatch.setenv("LLMHOST_CACHE_DIR", str(tmp_path / "cache"))
    shape = dict(n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_vocab=2048)
    one = write_llama_gguf(tmp_path / "one" / "Tiny-F16.gguf", **shape)
    split = write_llama_gguf(tmp_path / "split" / "Tiny-Q8.gguf", **shape, split_max_tensors=8)
    shards = sorted(split.parent.iterdir())
    files: dict[str, HubFile | bytes] = {"Tiny-F16.gguf": _header_only(one)}
    files.update({f"Q8_0/{p.name.replace('Tiny-Q8', 'Tiny-Q8_0')}": _header_only(p) for p in shards})
    fake_hub.add_repo("someone/Tiny-GGUF", files)

    def plan(*args: str) -> dict[str, Any]:
        assert main(["plan", *args, "--engine", "llamacpp", "--context", "2048", "--json"]) == 0
        chosen: dict[str, Any] = json.loads(capsys.readouterr().out)["candidates"][0]
        return chosen

    local = plan(str(one))
    remote = plan("someone/Tiny-GGUF:F16")
    assert local["compute_source"] == remote["compute_source"] == "llama.cpp dry run"
    assert remote["memory"]["compute_bytes"] == local["memory"]["compute_bytes"]
    assert len(shards) == 3
    sharded = plan("someone/Tiny-GGUF:Q8_0")  # llama.cpp finds shards 2 and 3 next to the first
    assert sharded["compute_source"] == "llama.cpp dry run"
    assert sharded["memory"]["compute_bytes"] == local["memory"]["compute_bytes"]  # same graph
    assert not list(Path(tempfile.gettempdir()).glob("llmhost-gguf-replica-*")), "replicas left behind"
