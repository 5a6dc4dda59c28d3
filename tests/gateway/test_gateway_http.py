"""The gateway's HTTP surface where no engine has to run: a real gateway process (no model loaded)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from support.gateway_helpers import GatewayProc


def test_a_model_is_retrieved_by_name_or_alias_as_openai_clients_do(tiny_models: dict[str, Path], tmp_path):
    # `client.models.retrieve(name)` is GET /v1/models/{name}: it was a 404 "Not Found" for every model.
    config = tmp_path / "gw.yaml"
    config.write_text(f"models:\n  chat: {{model: {tiny_models['small']}, aliases: [gpt-4o-mini]}}\n")
    gw = GatewayProc(config, tmp_path / "state").start()
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        card = client.models.retrieve("chat")
        assert card.id == "chat" and card.object == "model" and card.owned_by == "llmhost"
        assert card.model_extra and card.model_extra["llmhost"]["state"] == "unloaded"  # nothing loaded
        assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"  # the name asked for
        with pytest.raises(openai.NotFoundError) as err:
            client.models.retrieve("nope")
        assert err.value.code == "model_not_found" and "chat" in err.value.message
        reply = httpx.get(f"{gw.url}/v1/models/nope", timeout=10)
        assert reply.status_code == 404 and reply.json()["error"]["code"] == "model_not_found"
        assert gw.models()["chat"]["state"] == "unloaded"  # a lookup loads nothing
    finally:
        gw.stop()
