"""The real mlx_lm.server (mlx-lm on mlx-cpu, from its engine virtualenv) served, used and stopped through
the llmhost CLI, on the tiny HF checkpoint; and the plan's 4-bit weights against a real `mlx_lm.convert`.

One deployment for the module (a start takes about 5 s here), in file order: the OpenAI API through the
real `openai` client, `ps` and `bench`, a SIGKILLed server restarted by the supervisor and serving again,
and `llmhost stop` leaving no process behind. What this cannot test here: Metal (mlx-metal needs a Mac).

Needs `make engines` (`llmhost engines install mlx`); skipped without it on a developer machine, a
failure in CI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from llmhost.engines import mlx_env
from llmhost.supervise.process import next_free_port

# The serve tests' helpers (tests/support/serve_helpers.py) run the real CLI in a subprocess.
from support.serve_helpers import alive as pid_alive
from support.serve_helpers import deployment, llmhost

pytestmark = [pytest.mark.mlx, pytest.mark.slow]

NAME = "mlx-e2e"
DEADLINE_S = 120.0


def status() -> dict[str, Any]:
    entry = deployment(NAME)
    assert entry is not None, f"{NAME} is not listed by `llmhost ps`"
    return entry


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if pid_alive(pid)]


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    log = llmhost("logs", NAME, "--supervisor").stdout[-3000:]
    raise AssertionError(f"timed out waiting for {what}; state: {status()}\nsupervisor log:\n{log}")


@pytest.fixture(scope="module")
def served(mlx_python: str, tiny_checkpoint: Path) -> Iterator[dict[str, Any]]:
    port = next_free_port("127.0.0.1", start=18800)
    done = llmhost(
        "serve", str(tiny_checkpoint), "--engine", "mlx", "--detach", "--name", NAME,
        "--context", "1024", "--concurrency", "2", "--port", str(port),
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"serve failed:\n{done.stdout}\n{done.stderr}"
    try:
        yield status()
    finally:
        llmhost("stop", NAME, timeout=60)


@pytest.fixture(scope="module")
def client(served: dict[str, Any]) -> Iterator[Any]:
    from openai import OpenAI

    # mlx_lm.server checks no key; the client needs some string.
    with OpenAI(base_url=served["base_url"], api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def test_completion_and_chat_through_the_openai_client(
    served: dict[str, Any], client: Any, tiny_checkpoint: Path
) -> None:
    assert (served["engine"], served["runtime"], served["state"]) == ("mlx", "mlx-lm", "ready")
    assert served["auth"] is False and served["host"] == "127.0.0.1"
    model = served["served_model_name"]
    assert model == str(tiny_checkpoint.resolve())  # the id mlx_lm lists and loads without a reload
    assert model in [m.id for m in client.models.list().data]
    completion = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=5)
    assert completion.usage.completion_tokens == 5 and completion.choices[0].finish_reason == "length"
    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello!"}], max_tokens=6, temperature=0
    )
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 6
    # The tiny tokenizer's chat template ("role: content\n") was applied by mlx_lm: 14 prompt tokens
    # for one short user turn, more than the bare text's.
    assert chat.usage.prompt_tokens > completion.usage.prompt_tokens
    chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=4, stream=True))  # fmt: skip
    assert len(chunks) >= 2 and chunks[-1].choices[0].finish_reason == "length"


def test_ps_and_bench_see_it_like_any_engine(served: dict[str, Any]) -> None:
    entry = status()
    assert entry["planned"]["kv_cache_bytes"] == 2 * 2 * 64 * 2 * 2 * 1024 * 2  # layers x kv x dim x KV x 2 B
    launch = entry["launch"]
    assert launch["argv"][launch["argv"].index("--prompt-cache-bytes") + 1] == str(
        entry["planned"]["kv_cache_bytes"]
    )
    assert entry["actual"]["raw"]["listening"] == f"127.0.0.1:{entry['port']}"
    done = llmhost(
        "bench", NAME, "-n", "4", "--input-tokens", "16", "--output-tokens", "8", "--json", timeout=180
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["summary"]["completed"], result["summary"]["failed"], result["incomplete"]) == (
        4,
        0,
        False,
    )
    # mlx_lm honours max_tokens and reports usage: bench raises no length flag on it.
    assert [(r["output_tokens"], r["output_tokens_source"]) for r in result["requests"]] == [(8, "usage")] * 4
    assert not [f for f in result["flags"] if "length" in f["code"]]
    logs = llmhost("logs", NAME)
    assert logs.returncode == 0 and "Starting httpd" in logs.stdout


def test_sigkilled_server_is_restarted_and_serves_again(served: dict[str, Any], client: Any) -> None:
    before = status()
    os.kill(before["engine_pid"], signal.SIGKILL)
    wait_for(
        lambda: (s := status())["restarts"] == before["restarts"] + 1 and s["state"] == "ready",
        "the restarted mlx_lm.server to be ready",
    )
    after = status()
    assert after["engine_pid"] != before["engine_pid"] and alive([before["engine_pid"]]) == []
    reply = client.completions.create(model=served["served_model_name"], prompt="again", max_tokens=2)
    assert reply.usage.completion_tokens == 2


def test_stop_leaves_no_process_and_frees_the_port(served: dict[str, Any]) -> None:
    entry = status()
    pids = [entry["engine_pid"], entry["supervisor_pid"]]
    assert alive(pids) == pids
    done = llmhost("stop", NAME, timeout=60)
    assert done.returncode == 0, done.stderr
    assert alive(pids) == []
    port_arg = f"--port {entry['port']}"
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline", "status"])
        if "mlx_lm" in " ".join(p.info["cmdline"] or [])
        and port_arg in " ".join(p.info["cmdline"] or [])
        and p.info["status"] != psutil.STATUS_ZOMBIE
    ]
    assert leftovers == []
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", entry["port"]))


def test_planned_4bit_weights_equal_a_real_mlx_lm_convert(
    mlx_python: str, tiny_checkpoint: Path, tmp_path: Path, apple: Any
) -> None:
    from llmhost.models import resolve
    from llmhost.plan import PlanRequest, make_plan

    out = tmp_path / "tiny-4bit"
    done = subprocess.run(
        [mlx_python, "-m", "mlx_lm", "convert", "--hf-path", str(tiny_checkpoint), "--mlx-path", str(out),
         "-q", "--q-bits", "4", "--q-group-size", "64"],
        capture_output=True, text=True, timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    mac = apple("m2_max_32gb", ram_available_gib=28)
    planned = make_plan(resolve(str(tiny_checkpoint)), mac, PlanRequest(quantization="mlx-4bit"))
    (estimate,) = planned.candidates
    converted = make_plan(resolve(str(out)), mac, PlanRequest()).chosen_candidate
    assert converted is not None and (converted.engine, converted.quantization) == ("mlx", "mlx-4bit")
    # The estimate for the 16-bit checkpoint is the converted checkpoint's header bytes, to the byte.
    assert estimate.memory.weights_bytes == converted.memory.weights_bytes
    assert converted.memory.weights_bytes < (out / "model.safetensors").stat().st_size


def test_install_is_cached_and_engines_lists_it(mlx_python: str) -> None:
    started = time.monotonic()
    done = llmhost("engines", "install", "mlx", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "already installed" in done.stderr and time.monotonic() - started < 30  # no pip run
    assert Path(done.stdout.strip(), "bin", "python") == Path(mlx_python)
    listed = llmhost("engines", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [e for e in json.loads(listed.stdout) if e["name"] == "mlx"]
    assert entry["installed"] and entry["usable"] and entry["version"] == mlx_env.MLX_LM_VERSION
    assert entry["location"] == done.stdout.strip() and "mlx-cpu" in entry["reason"]
