"""resolve() against a fake Hub through the real huggingface_hub client (HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from gguf import GGMLQuantizationType

from llmhost.errors import ModelError, NetworkError
from llmhost.models import find_quantized_variants, resolve
from support.hubserver import VALID_TOKEN, FakeHub, HubFile
from support.model_makers import hub_safetensors_repo, llama_tensors, safetensors_header, write_gguf

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"


def _config(name: str) -> dict[str, Any]:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def safetensors_repo(config: dict[str, Any], shards: int, dtype: str = "BF16") -> dict[str, HubFile | bytes]:
    """config.json + index + `shards` virtual safetensors files whose headers list the real tensor table."""
    files = hub_safetensors_repo(config, shards, dtype)
    files["generation_config.json"] = b'{"bos_token_id": 128000}'
    files["README.md"] = b"# a model card"
    return files


def test_70b_repo_reads_under_2mb_and_counts_exactly(fake_hub: FakeHub) -> None:
    cfg = _config("meta-llama--Llama-3.1-70B-Instruct")
    fake_hub.add_repo("meta-llama/Llama-3.1-70B-Instruct", safetensors_repo(cfg, shards=30))
    spec = resolve("meta-llama/Llama-3.1-70B-Instruct")
    assert spec.kind == "hf_repo" and spec.parameters_source == "tensors"
    assert spec.parameters == 70_553_706_496
    assert spec.weights_bytes == 2 * 70_553_706_496 == spec.bytes_by_dtype["BF16"]
    assert spec.attention.num_kv_heads == [8] * 80 and len(spec.files) == 30
    assert sum(f.size_bytes or 0 for f in spec.files) > 140e9  # the repo really is 141 GB
    assert fake_hub.bytes_served < 2 * 1024 * 1024
    assert spec.bytes_read <= fake_hub.bytes_served
    ranges = [r for _, path, r in fake_hub.requests if path.endswith(".safetensors")]
    assert len(ranges) >= 30 and all(r is not None for r in ranges)  # never a whole-file GET
    print(f"70B repo: {fake_hub.bytes_served} bytes served in {len(fake_hub.requests)} requests")


def test_second_resolve_uses_the_cache_and_offline_works(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config("meta-llama--Llama-3.1-8B-Instruct")
    fake_hub.add_repo("meta-llama/Llama-3.1-8B-Instruct", safetensors_repo(cfg, shards=4))
    first = resolve("meta-llama/Llama-3.1-8B-Instruct")
    fake_hub.reset_counters()
    again = resolve("meta-llama/Llama-3.1-8B-Instruct")
    assert again.parameters == first.parameters == 8_030_261_248
    assert not [p for _, p, _ in fake_hub.requests if p.endswith(".safetensors")]  # headers came from cache
    fake_hub.reset_counters()
    offline = resolve("meta-llama/Llama-3.1-8B-Instruct", offline=True)
    assert offline.parameters == first.parameters and offline.parameters_source == "tensors"
    assert fake_hub.requests == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("meta-llama/Llama-3.1-8B-Instruct").weights_bytes == first.weights_bytes
    assert fake_hub.requests == []


def test_offline_cold_cache_is_a_clear_error(fake_hub: FakeHub) -> None:
    fake_hub.add_repo("org/never-fetched", safetensors_repo(_config("Qwen--Qwen3-8B"), shards=1))
    with pytest.raises(ModelError, match="offline mode is on") as err:
        resolve("org/never-fetched", offline=True)
    assert "unset HF_HUB_OFFLINE" in str(err.value)
    assert fake_hub.requests == []


def test_gated_repo_needs_a_token(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config("meta-llama--Llama-3.2-1B-Instruct")
    fake_hub.add_repo("meta-llama/Llama-3.2-1B-Instruct", safetensors_repo(cfg, shards=1), gated=True)
    with pytest.raises(ModelError, match="gated") as err:
        resolve("meta-llama/Llama-3.2-1B-Instruct")
    assert "HF_TOKEN" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(ModelError, match="gated"):
        resolve("meta-llama/Llama-3.2-1B-Instruct")
    monkeypatch.setenv("HF_TOKEN", VALID_TOKEN)
    spec = resolve("meta-llama/Llama-3.2-1B-Instruct")
    assert spec.parameters == 1_235_814_400 and spec.tied_embeddings and spec.output_parameters == 0


def test_missing_repo_and_revision(fake_hub: FakeHub) -> None:
    with pytest.raises(ModelError, match="not found") as err:
        resolve("nobody/does-not-exist")
    assert "HF_TOKEN" in str(err.value)
    repo = fake_hub.add_repo("org/model", safetensors_repo(_config("Qwen--Qwen3-8B"), shards=2))
    with pytest.raises(ModelError, match="no such revision"):
        resolve("org/model@v9")
    assert resolve(f"org/model@{repo.sha}").revision == repo.sha
    assert resolve("org/model", revision=repo.sha).parameters == 8_190_735_360


def test_network_down_is_a_network_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    with pytest.raises(NetworkError, match="Cannot reach") as err:
        resolve("org/model")
    assert "HF_HUB_OFFLINE" in str(err.value) and err.value.exit_code == 7


def _gguf_bytes(tmp_path: Path, name: str, *, split: int = 1, **kw: Any) -> list[bytes]:
    return [p.read_bytes() for p in write_gguf(tmp_path / name, split=split, **kw)]


def test_gguf_repo_tag_reads_only_headers(fake_hub: FakeHub, tmp_path: Path) -> None:
    kw: dict[str, Any] = {"layers": 4, "hidden": 256, "heads": 4, "kv_heads": 2, "ff": 512, "vocab": 2000}
    q4 = _gguf_bytes(tmp_path, "q4.gguf", qtype=GGMLQuantizationType.Q4_K, file_type=15, **kw)[0]
    q8 = _gguf_bytes(tmp_path, "q8.gguf", qtype=GGMLQuantizationType.Q8_0, file_type=7, split=2, **kw)
    pad = 3 * 1024**3  # pretend each file is several GB: only the header prefix may be read
    files: dict[str, HubFile | bytes] = {
        "Tiny-Q4_K_M.gguf": HubFile(q4, size=len(q4) + pad, lfs=True),
        "Q8_0/Tiny-Q8_0-00001-of-00002.gguf": HubFile(q8[0], size=len(q8[0]) + pad, lfs=True),
        "Q8_0/Tiny-Q8_0-00002-of-00002.gguf": HubFile(q8[1], size=len(q8[1]) + pad, lfs=True),
        "mmproj-Tiny-F16.gguf": HubFile(b"GGUF" + bytes(100), lfs=True),
        "README.md": b"card",
    }
    fake_hub.add_repo("someone/Tiny-GGUF", files)
    spec = resolve("someone/Tiny-GGUF:Q8_0")
    assert spec.kind == "gguf_repo" and spec.quantization.gguf_file_type == "Q8_0"
    assert [f.path for f in spec.files] == [
        "Q8_0/Tiny-Q8_0-00001-of-00002.gguf",
        "Q8_0/Tiny-Q8_0-00002-of-00002.gguf",
    ]
    assert {v.tag for v in spec.gguf_variants} == {"Q4_K_M", "Q8_0"}  # mmproj is not a variant
    sizes = {v.tag: v.size_bytes for v in spec.gguf_variants}
    assert sizes["Q8_0"] == len(q8[0]) + len(q8[1]) + 2 * pad
    assert fake_hub.bytes_served < 2 * 1024 * 1024 + 50_000  # two 1 MiB header reads + listing
    local = resolve(str(write_gguf(tmp_path / "ref.gguf", qtype=GGMLQuantizationType.Q8_0, **kw)[0]))
    assert spec.parameters == local.parameters and spec.weights_bytes == local.weights_bytes
    default = resolve("someone/Tiny-GGUF")  # no tag: llama.cpp's default Q4_K_M
    assert default.quantization.gguf_file_type == "Q4_K_M" and len(default.files) == 1
    with pytest.raises(ModelError, match="no Q2_K file") as err:
        resolve("someone/Tiny-GGUF:Q2_K")
    assert "Q4_K_M, Q8_0" in str(err.value) or "Q8_0, Q4_K_M" in str(err.value)


def test_gguf_header_larger_than_first_read_grows(fake_hub: FakeHub, tmp_path: Path) -> None:
    # a 300k-token vocabulary makes a ~3.5 MB header: needs 1 -> 2 -> 4 MiB reads
    (data,) = _gguf_bytes(tmp_path, "big.gguf", vocab=300_000, hidden=64)
    fake_hub.add_repo("someone/BigVocab-GGUF", {"BigVocab-F16.gguf": HubFile(data, lfs=True)})
    spec = resolve("someone/BigVocab-GGUF:F16")
    assert spec.vocab_size == 300_000
    header_reads = [r for _, p, r in fake_hub.requests if p.endswith(".gguf")]
    assert len(header_reads) >= 2
    assert spec.bytes_read < len(data)


def test_gguf_url(fake_hub: FakeHub, tmp_path: Path) -> None:
    (data,) = _gguf_bytes(tmp_path, "u.gguf", layers=3)
    repo = fake_hub.add_repo(
        "someone/U-GGUF", {"u-F16.gguf": HubFile(data, size=len(data) + 10**9, lfs=True)}
    )
    url = f"{fake_hub.url}/someone/U-GGUF/resolve/{repo.sha}/u-F16.gguf"
    spec = resolve(url)
    assert spec.kind == "gguf_url" and spec.attention.num_layers == 3
    assert fake_hub.bytes_served <= 1024 * 1024
    fake_hub.reset_counters()
    assert resolve(url, offline=True).parameters == spec.parameters  # cached header
    assert fake_hub.requests == []


def test_corrupt_remote_gguf_is_a_model_error(fake_hub: FakeHub) -> None:
    bad = b"GGUF" + (3).to_bytes(4, "little") + (2**40).to_bytes(8, "little") + bytes(8) + bytes(1000)
    fake_hub.add_repo("someone/Bad-GGUF", {"Bad-Q4_K_M.gguf": HubFile(bad, size=10**10, lfs=True)})
    with pytest.raises(ModelError, match="not a valid GGUF"):
        resolve("someone/Bad-GGUF:Q4_K_M")
    assert fake_hub.bytes_served <= 1024 * 1024 + 10_000


def test_quantized_checkpoint_counts_logical_parameters(fake_hub: FakeHub) -> None:
    """AWQ int32 packing (8 weights per int32 at 4 bits); scales and zeros are not parameters."""
    cfg = {**_config("Qwen--Qwen2.5-7B-Instruct-AWQ"), "num_hidden_layers": 2}
    dense = llama_tensors(cfg, "F16")
    packed: list[tuple[str, str, tuple[int, ...]]] = []
    for name, dtype, shape in dense:
        if name.endswith("proj.weight"):
            out_f, in_f = shape
            base = name.removesuffix(".weight")
            packed += [
                (base + ".qweight", "I32", (in_f, out_f // 8)),
                (base + ".qzeros", "I32", (in_f // 128, out_f // 8)),
                (base + ".scales", "F16", (in_f // 128, out_f)),
            ]
        else:
            packed.append((name, dtype, shape))
    header, size = safetensors_header(packed)
    files: dict[str, HubFile | bytes] = {
        "config.json": json.dumps(cfg).encode(),
        "model.safetensors": HubFile(header, size=len(header) + size, lfs=True),
    }
    fake_hub.add_repo("Qwen/Tiny-AWQ", files)
    spec = resolve("Qwen/Tiny-AWQ")
    import math

    assert spec.parameters == sum(math.prod(s) for _, _, s in dense)
    assert spec.quantization.method == "awq" and spec.bytes_by_dtype["I32"] > 0
    assert spec.embedding_bytes == 2 * spec.embedding_parameters  # 16-bit embeddings stay 16-bit
    # 4-bit weights + a 16-bit scale and a 4-bit zero per 128: ~0.28 of the fp16 size per block
    assert spec.layer_bytes[0] < 0.3 * 2 * spec.layer_parameters[0]


def test_find_quantized_variants(fake_hub: FakeHub) -> None:
    base = "Qwen/Qwen3-8B"
    fake_hub.add_repo(base, {"config.json": b"{}"})
    fake_hub.add_repo(
        "Qwen/Qwen3-8B-AWQ", {"config.json": b"{}"}, tags=[f"base_model:quantized:{base}", "awq"]
    )
    fake_hub.add_repo("x/Qwen3-8B-GGUF", {"a.gguf": b""}, tags=[f"base_model:quantized:{base}", "gguf"])
    fake_hub.add_repo("x/unrelated-AWQ", {"config.json": b"{}"}, tags=["base_model:quantized:other/model"])
    found = {v.repo_id: v.method for v in find_quantized_variants(base)}
    assert found == {"Qwen/Qwen3-8B-AWQ": "awq", "x/Qwen3-8B-GGUF": "gguf"}
    assert find_quantized_variants(base, offline=True) == []


def test_offline_with_only_a_cached_config_uses_the_architecture(fake_hub: FakeHub) -> None:
    """config.json fetched by another tool (here hf_hub_download itself) is enough offline."""
    from huggingface_hub import hf_hub_download

    fake_hub.add_repo("Qwen/Qwen3-8B", safetensors_repo(_config("Qwen--Qwen3-8B"), shards=2))
    hf_hub_download("Qwen/Qwen3-8B", "config.json")
    fake_hub.reset_counters()
    spec = resolve("Qwen/Qwen3-8B", offline=True)
    assert spec.parameters_source == "config" and spec.parameters == 8_190_735_360
    assert fake_hub.requests == []
