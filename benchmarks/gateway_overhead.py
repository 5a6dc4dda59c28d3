"""What does `llmhost gateway` cost on the request path? The same engine, direct and through the gateway,
measured side by side in one run, plus the cold-load latency of a model the gateway has not loaded yet.

Setup: a gateway (`python -m llmhost.gateway`, the process `gateway --detach` starts) over the tiny
generated GGUF, pinned (`hot`: loaded at start, served by llama.cpp: llama-server when built), and the
same file as a second model (`cold`, TTL 2 s). "direct" is that very `hot` engine on its own loopback port
with its internal key; "gateway" is the gateway's port. Streamed chat completions (httpx, SSE), 64
output tokens each; short rounds (4 requests at concurrency 1, 32 at 32; 8 rounds) alternate direct /
gateway, the order swapped every round, so drift on a shared machine hits both alike.

- TTFT: request sent -> first content chunk, p50 and p99 over every request of a concurrency level.
- output tok/s: content chunks received / wall time of the round (all streams of it), summed per side;
  the ratio is gateway / direct (target >= 0.97 at concurrency 1 and 32; TTFT +2 ms p50 or less).
- gateway CPU per streamed token: the gateway process's user+system CPU time over its rounds / the
  content chunks it relayed.
- gateway RSS: at idle (hot loaded, no traffic) and the peak sampled every 50 ms under concurrency 32.
- cold load: request -> first token for `cold` while it is unloaded (the gateway plans, launches, waits
  for ready, relays), vs `llmhost serve MODEL --detach` (returns when ready) then the same request.

Loopback only, every loop bounded in count and time. It asserts nothing: these machines are shared and
noisy. `python benchmarks/gateway_overhead.py [--rounds N]` (`make bench` runs it with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

BIN = Path(sys.executable).parent
MAX_TOKENS = 64
PER_ROUND = {1: 4, 32: 32}  # requests per round at each concurrency: short rounds, finely alternated
COLD_ROUNDS = 3
REQUEST_TIMEOUT_S = 120.0
START_TIMEOUT_S = 180.0


def llmhost(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = BIN / "llmhost"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "llmhost"]
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=env, check=False, timeout=600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Side:
    """One target's figures at one concurrency."""

    ttft: list[float] = field(default_factory=list)
    tokens: int = 0
    wall: float = 0.0
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0


async def one_stream(
    client: httpx.AsyncClient, url: str, model: str, headers: dict[str, str]
) -> tuple[float, int]:
    """(TTFT s, content chunks) of one streamed chat completion."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
    }
    sent = time.perf_counter()
    ttft = None
    tokens = 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                tokens += 1
                if ttft is None:
                    ttft = time.perf_counter() - sent
    if ttft is None:
        raise RuntimeError("the stream carried no content")
    return ttft, tokens


async def run_round(url: str, model: str, headers: dict[str, str], concurrency: int, side: Side) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        gate = asyncio.Semaphore(concurrency)

        async def task() -> None:
            async with gate:
                try:
                    ttft, tokens = await one_stream(client, url, model, headers)
                except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                    side.failures += 1
                    side.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    return
                side.ttft.append(ttft)
                side.tokens += tokens

        started = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(PER_ROUND[concurrency])))
        side.wall += time.perf_counter() - started


class RssSampler:
    """Peak RSS of a process, sampled every 50 ms in a thread while active."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        self.peak = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.05)

    def stop(self) -> None:
        self._stop.set()


def wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def model_state(url: str, name: str) -> str:
    data = httpx.get(f"{url}/v1/models", timeout=10, trust_env=False).json()["data"]
    return str(next(m for m in data if m["id"] == name)["llmhost"]["state"])


def first_token(url: str, model: str, headers: dict[str, str]) -> float:
    """Seconds from sending one streamed request to its first content chunk."""

    async def go() -> float:
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, trust_env=False) as client:
            ttft, _ = await one_stream(client, url, model, headers)
            return ttft

    return asyncio.run(go())


def measure_overhead(
    gw_url: str, direct: tuple[str, str, str], gw_proc: psutil.Process, rounds: int
) -> tuple[dict[int, dict[str, Side]], float, int, int]:
    """Side-by-side rounds; (figures per concurrency and side, CPU s per token, RSS idle, RSS peak)."""
    direct_url, served, key = direct
    targets = {
        "direct": (direct_url, served, {"Authorization": f"Bearer {key}"}),
        "gateway": (gw_url, "hot", {}),
    }
    figures = {c: {"direct": Side(), "gateway": Side()} for c in PER_ROUND}
    idle_rss = gw_proc.memory_info().rss
    cpu_s = 0.0
    gw_tokens = 0
    sampler = RssSampler(gw_proc)

    async def all_rounds() -> None:
        nonlocal cpu_s, gw_tokens
        sampling = asyncio.create_task(sampler.run())
        for r in range(rounds):
            for concurrency in PER_ROUND:
                order = ["direct", "gateway"] if r % 2 == 0 else ["gateway", "direct"]
                for name in order:
                    url, model, headers = targets[name]
                    side = figures[concurrency][name]
                    before_tokens, before_cpu = side.tokens, gw_proc.cpu_times()
                    await run_round(url, model, headers, concurrency, side)
                    if name == "gateway":
                        after = gw_proc.cpu_times()
                        cpu_s += (after.user - before_cpu.user) + (after.system - before_cpu.system)
                        gw_tokens += side.tokens - before_tokens
        sampler.stop()
        await sampling

    # Warm-up: one short round each, not counted.
    warm = Side()
    for url, model, headers in targets.values():
        asyncio.run(run_round(url, model, headers, 1, warm))
    asyncio.run(all_rounds())
    return figures, (cpu_s / gw_tokens if gw_tokens else 0.0), idle_rss, sampler.peak


def cold_loads(gw_url: str, model: str, env: dict[str, str]) -> tuple[list[float], list[float]]:
    """(gateway request -> first token for an unloaded model, serve --detach + first token), per round."""
    via_gateway, via_serve = [], []
    for _ in range(COLD_ROUNDS):
        wait_until(lambda: model_state(gw_url, "cold") == "unloaded", 60, "cold to unload (TTL 2 s)")
        via_gateway.append(first_token(gw_url, "cold", {}))
        started = time.perf_counter()
        out = llmhost(
            "serve", model, "--detach", "--name", "bench-cold", "--context", "512", "--json", env=env
        )
        if out.returncode != 0:
            raise RuntimeError(f"serve failed: {out.stderr.strip()}")
        try:
            dep = json.loads(out.stdout)
            first_token(dep["base_url"].removesuffix("/v1"), dep["served_model_name"], {})
            via_serve.append(time.perf_counter() - started)
        finally:
            llmhost("stop", "bench-cold", env=env)
    return via_gateway, via_serve


def start_gateway(model: str, state: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    root = Path(state)
    config = root / "gw.yaml"
    config.write_text(
        "models:\n"
        f"  hot: {{model: {model}, context: 4096, concurrency: 32, pin: true}}\n"
        f"  cold: {{model: {model}, context: 512, ttl: 2s}}\n"
        "min_residence: 0s\n"
    )
    port = free_port()
    log = root / "gateway.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmhost.gateway", "--config", str(config), "--port", str(port)],
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: model_state(url, "hot") == "loaded", START_TIMEOUT_S, "the gateway's hot model")
    except RuntimeError:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        raise RuntimeError(f"the gateway did not load its model: {log.read_text()[-2000:]}") from None
    return proc, url, log


def direct_target(state: str) -> tuple[str, str, str]:
    """(base URL, served name, internal key) of the gateway's own `hot` engine."""
    os.environ["LLMHOST_STATE_DIR"] = state
    from llmhost.gateway.deploy import upstream_key
    from llmhost.supervise.state import read_deployment

    dep = read_deployment("gw-hot")
    if dep is None:
        raise RuntimeError("the gateway's deployment gw-hot is missing")
    return dep.base_url.removesuffix("/v1"), dep.served_model_name, upstream_key("gw-hot")


def report(
    figures: dict[int, dict[str, Side]],
    cpu_per_token: float,
    rss: tuple[int, int],
    cold: tuple[list[float], list[float]],
) -> None:
    mib = 1 << 20
    print(f"{'':<26} {'direct':>10} {'gateway':>10} {'added/ratio':>12}")
    for concurrency, sides in figures.items():
        d, g = sides["direct"], sides["gateway"]
        n = len(g.ttft)
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            dv, gv = percentile(d.ttft, q) * 1e3, percentile(g.ttft, q) * 1e3
            print(f"{f'TTFT {label} c={concurrency} (ms)':<26} {dv:>10.2f} {gv:>10.2f} {gv - dv:>+12.2f}")
        ratio = g.tok_s / d.tok_s if d.tok_s else 0.0
        print(f"{f'output tok/s c={concurrency}':<26} {d.tok_s:>10.1f} {g.tok_s:>10.1f} {ratio:>11.3f}x")
        print(f"{'  requests, failures':<26} {len(d.ttft):>6}, {d.failures:<3} {n:>6}, {g.failures:<3}")
        for name, side in (("direct", d), ("gateway", g)):
            if side.errors:
                print(f"  {name}: first failure: {side.errors[0]}")
    print(f"gateway CPU per streamed token: {cpu_per_token * 1e6:.0f} us")
    print(f"gateway RSS: idle {rss[0] / mib:.1f} MiB, under load (c=32 peak) {rss[1] / mib:.1f} MiB")
    gw, serve = cold
    print(
        f"cold load -> first token (median of {len(gw)}): gateway {statistics.median(gw):.2f} s, "
        f"serve --detach + request {statistics.median(serve):.2f} s"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="side-by-side rounds per concurrency")
    args = parser.parse_args(argv)
    state = tempfile.mkdtemp(prefix="llmhost-bench-gw-")
    env = {**os.environ, "LLMHOST_STATE_DIR": state, "NO_COLOR": "1"}
    env.pop("LLMHOST_API_KEY", None)
    model = llmhost("demo-model", env=env).stdout.strip()
    engines = json.loads(llmhost("engines", "--json", env=env).stdout or "[]")
    if not any(e["name"] == "llamacpp" and e["usable"] for e in engines):
        print("no llama.cpp runtime installed: skipped (pip install 'llmhost[llamacpp]')")
        return 0
    proc, url, log = start_gateway(model, state, env)
    try:
        direct = direct_target(state)
        runtime = json.loads(llmhost("ps", "--json", env=env).stdout)[0].get("runtime")
        print(f"model: {model} ({runtime}); {MAX_TOKENS} output tokens a request, {args.rounds} rounds\n")
        figures, cpu_per_token, idle, peak = measure_overhead(
            url, direct, psutil.Process(proc.pid), args.rounds
        )
        cold = cold_loads(url, model, env)
        report(figures, cpu_per_token, (idle, peak), cold)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
        llmhost("stop", "--all", env=env)
    print(f"\n(gateway log: {log})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
