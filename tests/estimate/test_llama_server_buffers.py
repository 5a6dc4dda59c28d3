"""The estimator against the real native `llama-server` (CPU backend): the buffers it reports at load.

llama-server prints `model buffer size`, `KV buffer size`, `output buffer size` and `compute buffer
size` before it starts listening; the test reads those lines from a generated GGUF, stops the server
(its own process group) and compares them with `llmhost.estimate.llamacpp_memory` on the same settings.
Skipped, with the reason, only when the binary is not built (`llmhost engines install llama-server`).
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from llmhost.engines.llamacpp import find_llama_server
from llmhost.estimate import Device, LlamaCppSettings, llamacpp_memory, own_quantization, weights_layout
from llmhost.models import resolve
from support.machine import amx_cpu, native_llama_server_marks

pytestmark = native_llama_server_marks()

MiB = 1024**2
BUFFER = re.compile(r"(?P<dev>\S+)\s+(?P<kind>model|KV|output|compute) buffer size =\s+(?P<mib>[\d.]+) MiB")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmhost.demo_model import write_llama_gguf

    return write_llama_gguf(
        tmp_path_factory.mktemp("llama-server-buffers") / "m.gguf",
        n_layer=8, n_embd=512, n_head=8, n_head_kv=2, n_ff=1024, n_vocab=32000, n_ctx_train=32768,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reported_buffers(model: Path, args: list[str]) -> dict[str, float]:
    """MiB per buffer kind, read from llama-server's start-up log; the server is stopped right after."""
    binary = find_llama_server()
    assert binary is not None
    argv = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(_free_port()), "-lv", "4"]
    proc = subprocess.Popen(
        argv + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True
    )
    found: dict[str, float] = {}
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while "compute" not in found and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                continue
            line = proc.stdout.readline()
            if not line:
                break
            if m := BUFFER.search(line):
                found[m["kind"]] = found.get(m["kind"], 0.0) + float(m["mib"])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "compute" in found, f"llama-server printed no compute buffer line: {found}"
    return found


@pytest.mark.parametrize(
    ("ctx", "n_par", "flash"),
    [(8192, 4, True), (8192, 4, False), (32768, 1, True)],
)
def test_llama_server_cpu_buffers_match_the_estimate(model: Path, ctx: int, n_par: int, flash: bool) -> None:
    args = ["-c", str(ctx), "-np", str(n_par), "-ngl", "0", "-t", "2", "-b", "2048", "-ub", "512"]
    amx = amx_cpu()  # llmhost runs llama.cpp with --no-repack there, and plans for it
    reported = _reported_buffers(model, [*args, "-fa", "on" if flash else "off", *(["--no-repack"] * amx)])
    spec = resolve(str(model))
    settings = LlamaCppSettings(
        n_ctx_seq=ctx // n_par, n_parallel=n_par, flash_attn=flash, cpu_repack=not amx
    )
    (cpu,) = llamacpp_memory(
        spec, weights_layout(spec, own_quantization(spec)), settings, [], Device("cpu", "cpu", 1 << 40)
    )
    predicted = {
        "model": cpu.model_bytes / MiB,
        "KV": cpu.kv_bytes / MiB,
        "output": cpu.overhead_bytes / MiB,
        "compute": cpu.compute_bytes / MiB,
    }
    for kind in ("model", "KV", "output"):
        assert abs(predicted[kind] - reported[kind]) <= max(0.01 * reported[kind], 0.02), (
            kind,
            predicted,
            reported,
        )
    assert abs(predicted["compute"] - reported["compute"]) / reported["compute"] < 0.05, (predicted, reported)
