"""The exported Ray Serve config loaded by Ray's own models: `ServeDeploySchema` (what `serve deploy`
reads) and Ray Serve LLM's `LLMConfig` for each model.

Ray Serve LLM's config models import vLLM, so they run on the vLLM engine's interpreter with Ray's
packages (a virtualenv of their own: Ray pins versions llmhost's environment must not take) on its path.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmhost.cache import cache_dir
from llmhost.engines import vllm_env
from llmhost.export import ExportSource, render
from support.ci import IN_CI

RAY_VENV = Path(os.environ.get("LLMHOST_RAY_VENV", cache_dir() / "tools" / "ray"))
INSTALL = "make test-tools"
SITE = sorted(RAY_VENV.glob("lib/python3*/site-packages"))

HAVE_RAY = bool(SITE) and (SITE[0] / "ray").is_dir()
# In CI Ray must be there (`make test-tools`): a missing one fails instead of skipping.
assert HAVE_RAY or not IN_CI, f"CI needs Ray for the export tests: {INSTALL}"
pytestmark = pytest.mark.skipif(not HAVE_RAY, reason=f"Ray is not installed for the tests: {INSTALL}")

SCRIPT = r"""
import json, sys
from ray.serve.schema import ServeDeploySchema
from ray.serve.llm import LLMConfig
out = []
for doc in json.load(sys.stdin):
    try:
        ServeDeploySchema.model_validate(doc)
        for app in doc["applications"]:
            for cfg in app["args"]["llm_configs"]:
                LLMConfig(**cfg)
        out.append("")
    except Exception as exc:
        out.append(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
print(json.dumps(out))
"""


def _ray_validate(docs: list[dict[str, Any]]) -> list[str]:
    runtime = vllm_env.find_runtime()
    if runtime is None:
        pytest.skip("Ray Serve LLM's models import vLLM: `llmhost engines install vllm`")
    done = subprocess.run(
        [runtime.python, "-c", SCRIPT],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(SITE[0])},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow  # Ray's own config models, from its virtualenv: a minute here (make test runs it)
def test_ray_serve_exports_load_in_rays_own_models(plans: dict[str, ExportSource]) -> None:
    from .conftest import source
    from .test_multinode import LLAMA_405B, NODE

    cluster = source(
        LLAMA_405B, hardware=NODE, nodes=2, quant="bf16", hub_id="meta-llama/Llama-3.1-405B-Instruct"
    )
    docs = [
        yaml.safe_load(render("ray-serve", [s], max_replicas=2)[0].text)
        for s in (plans["70b-2xh100"], cluster)
    ]
    # Negative control: an accelerator Ray does not know fails LLMConfig.
    bad = json.loads(json.dumps(docs[0]))
    bad["applications"][0]["args"]["llm_configs"][0]["accelerator_type"] = "H101"
    results = _ray_validate([*docs, bad])
    assert results[:2] == ["", ""], results
    assert "accelerator" in results[2].lower()
