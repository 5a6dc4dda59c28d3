"""`llmhost serve org/repo-GGUF:TAG` downloads the planned GGUF file through huggingface_hub into the HF
cache, then serves it. The Hub is the one edge we cannot reach: the fake Hub from tests/support (a real
HTTP server speaking the Hub's protocol) stands in for it, serving the tiny generated GGUF."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# fake_hub: the shared in-process Hub fixture (HF_ENDPOINT and huggingface_hub's import-time constants).
from support.hub_fixture import fake_hub
from support.hubserver import FakeHub, HubFile
from support.serve_helpers import llmhost, serve_detached

pytestmark = [pytest.mark.engine]
__all__ = ["fake_hub"]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[FakeHub, dict[str, str]]]:
    fake = FakeHub().start()
    env = {
        "HF_ENDPOINT": fake.url,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    try:
        yield fake, env
    finally:
        fake.stop()


def test_serve_downloads_the_planned_gguf_into_the_hf_cache(hub, tiny_gguf: Path) -> None:
    pytest.importorskip("llama_cpp")
    fake, env = hub
    fake.add_repo("llmhost/tiny-GGUF", {"tiny-F16.gguf": HubFile(tiny_gguf.read_bytes(), lfs=True)})
    dry = llmhost("serve", "llmhost/tiny-GGUF:F16", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "tiny-F16.gguf" in dry.stdout
    assert not Path(env["HF_HOME"], "hub").exists() or not any(Path(env["HF_HOME"], "hub").rglob("*.gguf"))

    dep = serve_detached(Path("llmhost/tiny-GGUF:F16"), "dl", "--engine", "llama-cpp-python", env=env)
    try:
        model_path = Path(dep["launch"]["model_path"])
        assert model_path.is_file()
        assert str(model_path).startswith(env["HF_HOME"])  # the HF cache, not a private copy
        assert model_path.read_bytes() == tiny_gguf.read_bytes()
        assert dep["state"] == "ready"
    finally:
        llmhost("stop", "dl", env=env)


def test_unreachable_hub_is_a_network_error(tmp_path: Path) -> None:
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    out = llmhost(
        "serve", "llmhost/nothing-GGUF:Q4_K_M", "--detach", "--name", "dl-net", env=env, timeout=120
    )
    assert out.returncode == 7, out.stderr  # ExitCode.NETWORK
    assert "HF_ENDPOINT" in out.stderr
    assert "Traceback" not in out.stderr


def test_refuses_to_download_what_the_disk_cannot_hold(
    fake_hub: FakeHub, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    from llmhost.app import serve as deploy
    from llmhost.errors import UsageError

    fake_hub.add_repo("llmhost/tiny-GGUF", {"tiny-F16.gguf": HubFile(tiny_gguf.read_bytes(), lfs=True)})
    spec, _, plan = deploy.resolve_and_plan(deploy.ServeRequest(model="llmhost/tiny-GGUF:F16"))
    candidate = plan.chosen_candidate
    assert candidate is not None and deploy.missing_model_files(spec, candidate) == ["tiny-F16.gguf"]
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(UsageError, match="Not enough disk space"):
        deploy.download_model_files(spec, candidate)
    assert not list(Path(os.environ["HF_HOME"]).rglob("*.gguf"))
