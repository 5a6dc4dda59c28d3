"""The `fake_hub` fixture: a real HTTP server on 127.0.0.1 serving fixture repos the way huggingface.co
does, with HF_ENDPOINT/HF_HOME pointed at it (see hubserver.py). Shared by tests/models, tests/plan...:
a conftest or test module imports it (`from support.hub_fixture import fake_hub`) to make it a fixture there.
"""

from __future__ import annotations

from collections.abc import Iterator

import huggingface_hub.constants as hf_constants
import pytest

from support.hubserver import FakeHub


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    """A running FakeHub with HF_ENDPOINT pointing at it and a fresh, empty HF_HOME.

    huggingface_hub reads some settings once at import (constants.ENDPOINT, HF_HUB_OFFLINE, cache
    paths), so those module constants are patched too. Add repos with `fake_hub.add_repo(...)`.
    """
    hub = FakeHub().start()
    home = tmp_path_factory.mktemp("hf_home")
    for var in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_CACHE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    try:
        yield hub
    finally:
        hub.stop()
