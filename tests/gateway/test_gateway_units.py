"""Gateway parts that need no engine: GPU use measured per engine process (NVML, on a recorded H100
reading) and how placement counts it, `embeddings: true` reaching the engine's argv, and the response's
`model` rewritten to the name the client asked for, however the engine's stream is cut into chunks, and
the planner's advice for a model that never fits its budget (a real gateway process; no engine starts)."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmhost.engines.base import ServeOptions
from llmhost.engines.llamacpp import ENGINE
from llmhost.gateway import deploy
from llmhost.gateway.config import GatewayConfig, ModelEntry
from llmhost.gateway.metrics import GatewayMetrics
from llmhost.gateway.placement import Need, Resident, place
from llmhost.gateway.pool import Pool
from llmhost.gateway.server import _Lines, _renamer
from llmhost.hardware import nvidia
from llmhost.plan.models import Candidate, MemoryBreakdown
from support.gateway_helpers import GatewayProc, planned_needs

GiB = 1 << 30
ENGINE_PID, OTHER_PID = 4242, 999

_spec = importlib.util.spec_from_file_location(
    "hardware_fakes", Path(__file__).resolve().parents[1] / "hardware" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
hardware_fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hardware_fakes)


def _nvml_with(processes: dict[int, int]) -> Any:
    """The recorded H100 reading with these compute processes (pid -> bytes) holding its memory."""
    reading = hardware_fakes.h100_reading()
    device = reading["devices"][0]
    device["compute_processes"] = [{"pid": p, "usedGpuMemory": b} for p, b in processes.items()]
    device["graphics_processes"] = []
    total, reserved = device["memory_info"]["total"], device["memory_info"]["used"]
    used = reserved + sum(processes.values())
    device["memory_info"].update(used=used, free=total - used)
    device["memory_info_v2"].update(used=used - reserved, free=total - used)
    return hardware_fakes.FakeNvml(reading)


def test_placement_counts_an_engines_gpu_use_as_nvml_measures_it_per_process(monkeypatch):
    monkeypatch.setattr(
        nvidia, "load_nvml", lambda: (_nvml_with({ENGINE_PID: 30 * GiB, OTHER_PID: 10 * GiB}), None)
    )
    measured = deploy._gpu_use({ENGINE_PID})
    assert measured == {"cuda:0": 30 * GiB}  # the engine's own process only, not the other program's
    assert deploy._gpu_use({12345}) == {}
    pool = Pool(GatewayConfig(), GatewayMetrics(), warn=lambda _m: None)
    (gpu,) = [d for d in pool.devices() if d.is_gpu]
    assert gpu.name == "cuda:0" and gpu.capacity_bytes == 85520809984
    assert gpu.used_bytes == 503316480 + 40 * GiB
    # The engine was planned at 20 GiB but holds 30: the larger counts. 79.6 GiB - 10.5 (the other
    # program, the reserve) - 30 leaves 39.1: a 35 GiB model fits beside it, a 45 GiB one once it goes.
    seen = Resident("a", planned={"cuda:0": 20 * GiB}, measured=measured, last_used=1.0)
    assert place(Need("b", {"cuda:0": 35 * GiB}), [gpu], [seen], now=100.0).evict == []
    decision = place(Need("b", {"cuda:0": 45 * GiB}), [gpu], [seen], now=100.0)
    assert decision.fits and decision.evict == ["a"]
    # Unmeasured, the engine's 30 GiB would be another program's: nothing the gateway could evict.
    unseen = Resident("a", planned={"cuda:0": 20 * GiB}, last_used=1.0)
    blind = place(Need("b", {"cuda:0": 45 * GiB}), [gpu], [unseen], now=100.0)
    assert not blind.fits and blind.never_fits
    monkeypatch.setattr(nvidia, "load_nvml", lambda: (None, "no pynvml"))
    assert deploy._gpu_use({ENGINE_PID}) == {} and not any(d.is_gpu for d in pool.devices())


def _candidate(path: str) -> Candidate:
    mem = MemoryBreakdown(weights_bytes=1, kv_cache_bytes=1, compute_bytes=1, overhead_bytes=1, total_bytes=4)
    return Candidate(
        engine="llamacpp", quantization="F16", kv_cache_dtype="f16", context_length=512, concurrency=1,
        fits=True, memory=mem, kv_bytes_per_token=1, max_context=512, max_concurrency=1,
        decode_tokens_per_s=None, model_source=path, gguf_file=path, gpu_layers=0,
    )  # fmt: skip


def test_embeddings_true_reaches_the_engines_argv(tmp_path: Path, tiny_gguf: Path, state_dir: Path):
    request, _ = deploy.build_request("embed", ModelEntry(model=str(tiny_gguf), embeddings=True))
    assert request.embeddings and request.name == "gw-embed"
    plain, _ = deploy.build_request("chat", ModelEntry(model=str(tiny_gguf)))
    assert not plain.embeddings
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    opts = dict(name="x", served_model_name="s", port=8123, engine_bin=str(binary))
    server = ENGINE.build_launch(_candidate("/m.gguf"), ServeOptions(**opts, embeddings=True)).argv
    assert "--embeddings" in server
    assert "--embeddings" not in ENGINE.build_launch(_candidate("/m.gguf"), ServeOptions(**opts)).argv
    if importlib.util.find_spec("llama_cpp") is not None:
        python = ENGINE.build_launch(
            _candidate("/m.gguf"),
            ServeOptions(
                name="x", served_model_name="s", port=8123, runtime="llama-cpp-python", embeddings=True
            ),
        ).argv
        assert dict(itertools.pairwise(python))["--embedding"] == "True"
    # Through the gateway's own planning of the entry (a dry run: nothing starts).
    ready = deploy.plan_model(
        "embed", ModelEntry(model=str(tiny_gguf), context=512, embeddings=True), warn=print
    )
    argv = ready.prepared.deployment.launch.argv
    assert "--embeddings" in argv or dict(itertools.pairwise(argv)).get("--embedding") == "True", argv


def _sse(model: str, n: int) -> bytes:
    events = [
        {"id": f"c{i}", "object": "chat.completion.chunk", "model": model,
         "choices": [{"index": 0, "delta": {"content": f'"model":"{model}" {i}'}}]}
        for i in range(n)
    ]  # fmt: skip
    body = b"".join(b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events)
    return body + b"data: [DONE]\n\n"


@pytest.mark.parametrize("cut", [1, 7, 50, 10_000])
def test_a_streamed_answer_carries_the_requested_name_however_it_is_chunked(cut: int):
    stream = _sse("served-model.gguf", 5)
    lines = _Lines(_renamer("served-model.gguf", "gpt-4o-mini") or (lambda b: b))
    out = b"".join(lines.feed(stream[i : i + cut]) for i in range(0, len(stream), cut)) + lines.flush()
    assert out.count(b"data:") == 6 and out.endswith(b"data: [DONE]\n\n")
    events = [json.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: {")]
    assert [e["model"] for e in events] == ["gpt-4o-mini"] * 5
    # Text the model generated is JSON-escaped in the stream: never rewritten.
    assert events[0]["choices"][0]["delta"]["content"] == '"model":"served-model.gguf" 0'


def test_a_plain_answer_is_renamed_and_the_same_name_is_left_alone():
    body = json.dumps({"model": "served", "choices": [], "usage": {}}).encode()  # ", " and ": " separators
    rename = _renamer("served", "chat")
    assert rename is not None and json.loads(rename(body))["model"] == "chat"
    assert _renamer("chat", "chat") is None
    assert _Lines(lambda b: b.upper()).flush() == b""


def test_a_model_that_never_fits_its_budget_gets_the_planners_advice(
    tiny_models: dict[str, Path], tmp_path, llmhost_here
):
    """`gateway plan` and the gateway's 503 both carry the planner's advice for the budget (here: a
    shorter context, or a q8_0 KV cache), planned as if the budget were all the machine had. The CLI
    calls run in this process (tests/conftest.py); the gateway runs in its own."""
    state = tmp_path / "state"
    env = {"LLMHOST_STATE_DIR": str(state)}
    body = f"models:\n  big: {{model: {tiny_models['big']}, context: 4096}}\n"
    config = tmp_path / "gw.yaml"
    config.write_text(body)
    need = planned_needs(config, state)["big"]["cpu"]
    config.write_text(body + f"memory_budget: {{cpu: {need - (1 << 20)}}}\n")  # 1 MiB short
    planned = llmhost_here("gateway", "plan", "--config", str(config), "--json", env=env)
    (row,) = json.loads(planned.stdout)["models"]
    assert "even with nothing else loaded" in row["error"] and "--context" in row["error"], row
    gw = GatewayProc(config, state).start()
    try:
        reply = httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": "big", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=120,
        )
        assert reply.status_code == 503 and reply.headers["Retry-After"], reply.text
        message = reply.json()["error"]["message"]
        assert "even with nothing else loaded" in message and "--context" in message, message
        assert "quant:, context: in the models file" in message
        assert gw.models()["big"]["state"] == "failed"
    finally:
        gw.stop()
    assert json.loads(llmhost_here("ps", "--json", env=env).stdout) == []  # nothing was launched


def test_embeddings_true_launches_vllm_as_a_pooling_model_by_its_version():
    from llmhost.engines import vllm_argv

    assert vllm_argv.embedding_flags("0.32.0") == ["--runner", "pooling"]
    assert vllm_argv.embedding_flags("0.10.1") == ["--runner", "pooling"]
    assert vllm_argv.embedding_flags("0.9.2") == ["--task", "embed"]
    assert vllm_argv.embedding_flags(None) == ["--runner", "pooling"]  # not installed: the pinned release
    from llmhost.plan.options import VllmOptions

    candidate = _candidate("/ckpt").model_copy(
        update={"engine": "vllm", "model_source": "/ckpt", "gguf_file": None, "engine_options": VllmOptions()}
    )
    opts = dict(name="x", served_model_name="emb", port=8123)
    embed = vllm_argv.build_argv("python", candidate, ServeOptions(**opts, embeddings=True), version="0.32.0")
    assert dict(itertools.pairwise(embed))["--runner"] == "pooling" and "--task" not in embed
    old = vllm_argv.build_argv("python", candidate, ServeOptions(**opts, embeddings=True), version="0.8.5")
    assert dict(itertools.pairwise(old))["--task"] == "embed" and "--runner" not in old
    plain = vllm_argv.build_argv("python", candidate, ServeOptions(**opts), version="0.32.0")
    assert "--runner" not in plain and "--task" not in plain
    # Through the engine's launch: a pooling model generates nothing, so no completion probe for it.
    from llmhost.engines.vllm import ENGINE as VLLM_ENGINE

    launch = VLLM_ENGINE.build_launch(candidate, ServeOptions(**opts, embeddings=True))
    assert "--runner" in launch.argv or "--task" in launch.argv
    assert not launch.completion_probe_interval_s
    assert VLLM_ENGINE.build_launch(candidate, ServeOptions(**opts)).completion_probe_interval_s


def _two_h100s(used: dict[int, int]) -> Any:
    """The recorded H100 reading as two such GPUs, `used` bytes held (by compute processes) on each."""
    reading = hardware_fakes.h100_reading()
    first = reading["devices"][0]
    devices = []
    for index in (0, 1):
        device = copy.deepcopy(first)
        device["index"] = index
        device["uuid"] = first["uuid"][:-1] + str(index)
        device["compute_processes"], device["graphics_processes"] = [], []
        total, reserved = device["memory_info"]["total"], first["memory_info"]["used"]
        held = reserved + used.get(index, 0)
        device["memory_info"].update(used=held, free=total - held)
        device["memory_info_v2"].update(used=held - reserved, free=total - held)
        devices.append(device)
    reading["devices"], reading["device_count"] = devices, 2
    return hardware_fakes.FakeNvml(reading)


def test_pack_spread_and_a_devices_pin_on_two_recorded_h100s(monkeypatch, tiny_gguf: Path, state_dir: Path):
    """The pool's devices read through NVML (two copies of the recorded H100), the models file's policy
    and `devices:` pin, placement's choice, and the launch it gives (CUDA_VISIBLE_DEVICES)."""
    monkeypatch.setattr(nvidia, "load_nvml", lambda: (_two_h100s({0: 30 * GiB}), None))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    devices = Pool(GatewayConfig(), GatewayMetrics(), warn=lambda _m: None).devices()
    gpus = [d for d in devices if d.is_gpu]
    assert [(g.name, g.capacity_bytes) for g in gpus] == [("cuda:0", 85520809984), ("cuda:1", 85520809984)]
    assert gpus[0].used_bytes - gpus[1].used_bytes == 30 * GiB
    a = Resident("a", planned={"cuda:0": 30 * GiB}, measured={"cuda:0": 30 * GiB}, last_used=1.0)
    need = Need("b", {"cuda:0": 20 * GiB, "cpu": 1 * GiB})
    for policy, gpu in (("pack", "cuda:0"), ("spread", "cuda:1")):
        config = GatewayConfig.model_validate({"placement": policy})
        decision = place(need, devices, [a], now=100.0, policy=config.placement)
        assert decision.fits and decision.evict == [] and decision.gpus == [gpu], (policy, decision)
    # `devices: [cuda:1]` wins over pack; `devices: [cuda:0]` for more than is left there evicts `a`.
    for pin, size, evict in (("cuda:1", 20, []), ("cuda:0", 60, ["a"])):
        entry = ModelEntry(model=str(tiny_gguf), devices=[pin])
        pinned = Need("b", {"cuda:0": size * GiB}, allowed=frozenset(entry.devices or []))
        decision = place(pinned, devices, [a], now=100.0, policy="pack")
        assert decision.fits and decision.gpus == [pin] and decision.evict == evict, (pin, decision)
    # Tensor parallel over both: only with `a` gone from GPU 0.
    tp = place(Need("tp", {"cuda:0": 60 * GiB, "cuda:1": 60 * GiB}), devices, [a], now=100.0)
    assert tp.fits and tp.evict == ["a"] and sorted(tp.gpus) == ["cuda:0", "cuda:1"]
    # The launch runs on the GPU placement chose, seen by the engine as its device 0.
    ready = deploy.plan_model("b", ModelEntry(model=str(tiny_gguf), context=512), warn=print)
    launch = deploy.on_devices(ready, ["cuda:1"]).prepared.deployment.launch
    assert launch.env["CUDA_VISIBLE_DEVICES"] == "1"
