"""Census, Ollama area: `ollama:NAME` references and `inspect --ollama` against broken Ollama stores.

Each case gets its own store under one module-wide temporary directory (OLLAMA_MODELS must be known
when the case is declared; `{tmp}` is only substituted in argv), built by its `make` from the demo GGUF.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from .census import BadInput, ids, run_case

BASE = Path(tempfile.mkdtemp(prefix="llmhost-census-ollama-"))
TAG_PATH = "registry.ollama.ai/library/tiny/latest"


@pytest.fixture(scope="module", autouse=True)
def _remove_stores():
    yield
    shutil.rmtree(BASE, ignore_errors=True)


def _add(root: Path, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def store(case_id: str, damage: Callable[[Path, dict], None] | None = None) -> Callable[[Path], None]:
    """A `make` writing a one-model store at BASE/case_id, then letting `damage` break it."""

    def make(_work: Path) -> None:
        from llmhost.demo_model import ensure_demo_model

        root = BASE / case_id
        gguf = ensure_demo_model(BASE / "gguf").read_bytes()
        manifest = {
            "schemaVersion": 2,
            "layers": [
                _add(root, gguf, "application/vnd.ollama.image.model"),
                _add(root, b'{"num_ctx": 1024}', "application/vnd.ollama.image.params"),
            ],
        }
        if damage is not None:
            damage(root, manifest)
        path = root / "manifests" / TAG_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(json.dumps(manifest))

    return make


def _blob(root: Path, manifest: dict, index: int = 0) -> Path:
    return root / "blobs" / manifest["layers"][index]["digest"].replace(":", "-")


def _flip_last_byte(root: Path, manifest: dict) -> None:
    blob = _blob(root, manifest)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))


def _truncate(root: Path, manifest: dict) -> None:
    blob = _blob(root, manifest)
    blob.write_bytes(blob.read_bytes()[:-10])


def _not_gguf(root: Path, manifest: dict) -> None:
    _blob(root, manifest).unlink()
    manifest["layers"][0] = _add(root, b"\x7fELF" + bytes(60), "application/vnd.ollama.image.model")


def _params_list(root: Path, manifest: dict) -> None:
    manifest["layers"][1] = _add(root, b"[1, 2]", "application/vnd.ollama.image.params")


def _raw_manifest(text: str) -> Callable[[Path, dict], None]:
    def damage(root: Path, _manifest: dict) -> None:
        path = root / "manifests" / TAG_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return damage


def case(case_id: str, argv: list[str], damage: Callable[[Path, dict], None] | None = None) -> BadInput:
    env = {"OLLAMA_MODELS": str(BASE / case_id), "LLMHOST_CACHE_DIR": str(BASE / "cache")}
    return BadInput(case_id, argv, 2, make=store(case_id, damage), env=env)


ESCAPE = '{"schemaVersion": 2, "layers": [{"mediaType": "application/vnd.ollama.image.model",'
ESCAPE += ' "digest": "sha256:../../../../etc/passwd", "size": 1}]}'

CASES: list[BadInput] = [
    case("ollama-name-dotdot", ["inspect", "ollama:../tiny"]),
    case("ollama-name-absolute", ["inspect", "ollama:/etc/tiny"]),
    case("ollama-name-four-parts", ["plan", "ollama:a/b/c/d"]),
    case("ollama-name-empty-tag", ["inspect", "ollama:tiny:"]),
    BadInput(
        "ollama-no-store",
        ["inspect", "ollama:tiny"],
        2,
        env={"OLLAMA_MODELS": str(BASE / "nowhere"), "LLMHOST_CACHE_DIR": str(BASE / "cache")},
    ),
    BadInput(
        "ollama-list-no-store", ["inspect", "--ollama"], 2, env={"OLLAMA_MODELS": str(BASE / "nowhere")}
    ),
    case("ollama-list-with-model", ["inspect", "--ollama", "ollama:tiny"]),
    case("ollama-unknown-model", ["inspect", "ollama:tinny"]),
    case("ollama-unknown-tag", ["plan", "ollama:tiny:70b"]),
    case("ollama-missing-blob", ["plan", "ollama:tiny"], lambda root, m: _blob(root, m).unlink()),
    case("ollama-damaged-digest", ["inspect", "ollama:tiny"], _flip_last_byte),
    case("ollama-size-mismatch", ["serve", "ollama:tiny", "--dry-run"], _truncate),
    case("ollama-model-not-gguf", ["inspect", "ollama:tiny"], _not_gguf),
    case("ollama-params-not-object", ["inspect", "ollama:tiny"], _params_list),
    case("ollama-manifest-not-json", ["inspect", "ollama:tiny"], _raw_manifest("{")),
    case("ollama-manifest-array", ["inspect", "ollama:tiny"], _raw_manifest("[]")),
    case("ollama-manifest-escaping-digest", ["inspect", "ollama:tiny"], _raw_manifest(ESCAPE)),
    case("ollama-manifest-deep", ["inspect", "ollama:tiny"], _raw_manifest("[" * 100_000)),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    run_case(case, tmp_path, capsys, monkeypatch)
