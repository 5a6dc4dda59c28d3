"""`ollama:NAME[:TAG]` against a store laid out as Ollama writes it, around a real generated GGUF."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmhost.errors import ExitCode, ModelError
from llmhost.models import resolve
from llmhost.models.ollama import list_store, parse_name

TEMPLATE = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ .Prompt }}"
PARAMS = {"stop": ["<|im_end|>"], "num_ctx": 2048, "temperature": 0.7}


def _blob(root: Path, data: bytes, media_type: str) -> dict:
    hexdigest = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{hexdigest}").write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{hexdigest}", "size": len(data)}


def make_store(root: Path, gguf: Path, name: str = "registry.ollama.ai/library/tiny/latest") -> Path:
    """Write a model into `root` the way `ollama pull` does: blobs by digest, one manifest per tag."""
    layers = [
        _blob(root, gguf.read_bytes(), "application/vnd.ollama.image.model"),
        _blob(root, TEMPLATE.encode(), "application/vnd.ollama.image.template"),
        _blob(root, json.dumps(PARAMS).encode(), "application/vnd.ollama.image.params"),
        _blob(root, b"MIT License", "application/vnd.ollama.image.license"),
    ]
    config = _blob(root, b'{"model_format":"gguf"}', "application/vnd.docker.container.image.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": config,
        "layers": layers,
    }
    path = root / "manifests" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def model_blob(manifest: Path) -> Path:
    layer = json.loads(manifest.read_text())["layers"][0]
    return manifest.parents[4] / "blobs" / layer["digest"].replace(":", "-")


@pytest.fixture
def store(tmp_path: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ollama-models"
    make_store(root, tiny_gguf)
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    monkeypatch.setenv("LLMHOST_CACHE_DIR", str(tmp_path / "cache"))  # the verified-blob memo
    return root


def test_names_follow_ollamas_defaults() -> None:
    assert parse_name("ollama:qwen3").full == "registry.ollama.ai/library/qwen3:latest"
    assert parse_name("ollama:qwen3:8b-q4_K_M").tag == "8b-q4_K_M"
    assert parse_name("ollama:me/mine:v1").full == "registry.ollama.ai/me/mine:v1"
    assert parse_name("ollama:hf.co/org/x-GGUF:Q4_K_M").short == "hf.co/org/x-GGUF:Q4_K_M"


@pytest.mark.parametrize(
    "ref",
    [
        "ollama:",
        "ollama:../x",
        "ollama:a/../b",
        "ollama:/etc/x",
        "ollama:a/b/c/d",
        "ollama:x:",
        "ollama:x:..",
    ],
)
def test_names_that_could_leave_the_store_are_bad_input(ref: str) -> None:
    with pytest.raises(ModelError, match="not a valid Ollama model name"):
        resolve(ref)


def test_resolves_the_blob_in_place_with_template_and_params(store: Path) -> None:
    spec = resolve("ollama:tiny")
    blob = model_blob(store / "manifests/registry.ollama.ai/library/tiny/latest")
    assert spec.files[0].path == str(blob.resolve())  # the blob itself: no copy
    assert spec.kind == "local_gguf" and spec.architecture == "llama" and spec.name == "tiny"
    assert spec.ollama is not None
    assert spec.ollama.template == TEMPLATE and spec.ollama.template_syntax == "go"
    assert spec.ollama.params == PARAMS and spec.ollama.context_hint == 2048
    assert spec.ollama.digest_verified
    assert any("num_ctx is 2048" in n for n in spec.notes)


def test_user_namespace_and_full_names(tmp_path: Path, store: Path, tiny_gguf: Path) -> None:
    make_store(store, tiny_gguf, "registry.ollama.ai/me/mine/v2")
    make_store(store, tiny_gguf, "hf.co/org/x-GGUF/Q4_K_M")
    assert resolve("ollama:me/mine:v2").name == "mine-v2"
    assert resolve("ollama:hf.co/org/x-GGUF:Q4_K_M").ollama.name == "hf.co/org/x-GGUF:Q4_K_M"  # type: ignore[union-attr]


def test_store_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="holds no manifests/ directory") as info:
        resolve("ollama:tiny")
    assert info.value.exit_code == ExitCode.BAD_INPUT and "OLLAMA_MODELS" in str(info.value.hint)
    monkeypatch.delenv("OLLAMA_MODELS")
    monkeypatch.setattr("llmhost.models.ollama.candidate_roots", lambda: [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ModelError, match=r"No Ollama model store found \(looked in .*a, .*b\)"):
        resolve("ollama:tiny")


def test_unknown_model_or_tag_names_close_ones(store: Path) -> None:
    with pytest.raises(ModelError, match="No Ollama model tinny:latest") as info:
        resolve("ollama:tinny")
    assert "ollama:tiny:latest" in str(info.value.hint)
    with pytest.raises(ModelError, match="No Ollama model tiny:7b") as info:
        resolve("ollama:tiny:7b")
    assert "ollama:tiny:latest" in str(info.value.hint)


def test_missing_blob(store: Path) -> None:
    model_blob(store / "manifests/registry.ollama.ai/library/tiny/latest").unlink()
    with pytest.raises(ModelError, match=r"blob .*sha256-[0-9a-f]{64} is missing .*ollama pull"):
        resolve("ollama:tiny")


def test_damaged_digest_and_size(store: Path) -> None:
    blob = model_blob(store / "manifests/registry.ollama.ai/library/tiny/latest")
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte of tensor data changed: only the digest can tell
    blob.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its digest"):
        resolve("ollama:tiny")
    blob.write_bytes(bytes(data[:-1]))
    with pytest.raises(ModelError, match="the manifest says"):
        resolve("ollama:tiny")


def test_a_verified_blob_is_hashed_again_once_it_changes(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmhost.models.ollama as ollama

    hashed: list[int] = []
    real = ollama._sha256_stream
    monkeypatch.setattr(ollama, "_sha256_stream", lambda fh: hashed.append(1) or real(fh))
    resolve("ollama:tiny")  # verified and remembered by identity
    resolve("ollama:tiny")
    assert len(hashed) == 1  # the unchanged blob was not read again
    blob = model_blob(store / "manifests/registry.ollama.ai/library/tiny/latest")
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    st = blob.stat()
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a coarse clock cannot hide the rewrite
    with pytest.raises(ModelError, match="does not match its digest"):
        resolve("ollama:tiny")
    assert len(hashed) == 2


def test_model_layer_that_is_not_gguf(tmp_path: Path, store: Path) -> None:
    fake = tmp_path / "fake.bin"
    fake.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    make_store(store, fake, "registry.ollama.ai/library/zip/latest")
    with pytest.raises(ModelError, match=r"is not a GGUF file \(starts with b'PK"):
        resolve("ollama:zip")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "not an Ollama manifest"),
        ('{"schemaVersion": 2, "layers": [{"mediaType": "m", "digest": "x", "size": "3"}]}', "layers.0.size"),
        ('{"schemaVersion": 2, "layers": [], "extra": 1}', "extra"),
        ('{"schemaVersion": 2, "layers": []}', "0 model layers"),
        (  # a safetensors-based model: tensor layers (server/layer.go's TensorMeta), no GGUF to serve
            '{"schemaVersion": 2, "layers": [{"mediaType": "application/vnd.ollama.image.tensor", "digest":'
            ' "sha256:' + "0" * 64 + '", "size": 8, "name": "w", "dtype": "BF16", "shape": [2, 2]}]}',
            "0 model layers.*safetensors imports are not supported",
        ),
        (
            '{"schemaVersion": 2, "layers": [{"mediaType": "application/vnd.ollama.image.model",'
            ' "digest": "sha256:../../../etc/passwd", "size": 3}]}',
            "is not sha256:<64 hex digits>",
        ),
    ],
)
def test_malformed_manifests(store: Path, text: str, match: str) -> None:
    (store / "manifests/registry.ollama.ai/library/tiny/latest").write_text(text)
    with pytest.raises(ModelError, match=match):
        resolve("ollama:tiny")


def test_listing_shows_good_and_broken_models(store: Path, tiny_gguf: Path) -> None:
    make_store(store, tiny_gguf, "registry.ollama.ai/me/mine/v2")
    (store / "manifests/registry.ollama.ai/library/broken").mkdir()
    (store / "manifests/registry.ollama.ai/library/broken/latest").write_text("{")
    root, entries = list_store()
    by_name = {e.name: e for e in entries}
    assert root == store and set(by_name) == {"tiny:latest", "me/mine:v2", "broken:latest"}
    tiny = by_name["tiny:latest"]
    manifest = json.loads((store / "manifests/registry.ollama.ai/library/tiny/latest").read_text())
    assert tiny.size_bytes == sum(layer["size"] for layer in [*manifest["layers"], manifest["config"]])
    assert tiny.digest == manifest["layers"][0]["digest"] and tiny.error is None
    assert tiny.quantization is not None  # from the GGUF header's general.file_type
    assert by_name["broken:latest"].error and "not valid JSON" in by_name["broken:latest"].error


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmhost", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **env},
        check=False,
    )


def test_cli_plan_and_inspect(
    store: Path, llmhost_here: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    env = {"OLLAMA_MODELS": str(store)}
    # In this process (tests/conftest.py), but for the refusal: a process of its own, as a user sees it.
    listed = llmhost_here("inspect", "--ollama", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["store"] == str(store) and [m["name"] for m in data["models"]] == ["tiny:latest"]
    plan = llmhost_here("plan", "ollama:tiny", "--json", env=env)
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    chosen = planned["candidates"][planned["chosen"]]
    assert chosen["context_length"] == 2048  # Ollama's num_ctx, below the model's 4096
    assert chosen["gguf_file"] == str(model_blob(store / "manifests/registry.ollama.ai/library/tiny/latest"))
    wider = json.loads(llmhost_here("plan", "ollama:tiny", "--context", "4096", "--json", env=env).stdout)
    assert wider["candidates"][wider["chosen"]]["context_length"] == 4096  # --context still wins
    bad = _cli("inspect", "ollama:nope", env=env)
    assert bad.returncode == ExitCode.BAD_INPUT
    assert "No Ollama model nope:latest" in bad.stderr and "Traceback" not in bad.stderr
