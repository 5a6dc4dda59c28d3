"""What does `llmhost gateway` cost on the request path? The same engine, direct and through the gateway,
measured side by side in one run, plus the cold-load latency of a model the gateway has not loaded yet.

Setup: a gateway (`python -m llmhost.gateway`, the process `gateway --detach` starts) over the tiny
generated GGUF, pinned (`hot`: loaded at start, served by llama.cpp: llama-server when built), and the
same file as a second model (`cold`, TTL 2 s), and for the split-cores section a third (`split`, pinned,
as many engine threads as its cores). "direct" is that very engine on its own loopback port with its
internal key; "gateway" is the gateway's port. Streamed chat completions (httpx, SSE, greedy sampling so
both sides generate the same tokens; a new connection per request direct, since llama-server closes its
own after each stream, kept alive to the gateway, as the OpenAI clients' pools do), 64 output tokens
each. One phase per concurrency level, opened by an uncounted round per side; in it, short rounds (4
requests at concurrency 1, 32 at 32; 8 rounds) alternate direct / gateway, the order swapped every
round, so drift on a shared machine hits both alike. `--model tiny` (the default: the generated GGUF,
gibberish at ~2000 tok/s on 2 cores, so the gateway's per-token and per-request costs weigh far more
than beside any real model), `real` (Gemma 3 270M Q4_K_M, `llmhost demo-model --real`) or a GGUF path.

- TTFT: request sent -> first content chunk, p50 and p99 over every request of a concurrency level.
- output tok/s: content chunks received / wall time of the round (all streams of it), summed per side;
  the ratio is gateway / direct (target >= 0.97 at concurrency 1 and 32; TTFT +2 ms p50 or less);
  beside it the median and quartiles of the per-round ratios (a direct round and the gateway round next
  to it), which one slow round moves less than it moves the sums.
- gateway CPU per streamed token: the gateway process's user+system CPU time over its rounds / the
  content chunks it relayed.
- gateway RSS: at idle (hot loaded, no traffic) and the peak sampled every 50 ms under concurrency 32.
- cold load: request -> first token for `cold` while it is unloaded (the gateway plans, launches, waits
  for ready, relays), vs `llmhost serve MODEL --detach` (returns when ready) then the same request.

Two sections, each its own alternated rounds, both always printed:
- "shared cores": every process may run on every core. On a small CPU-only box the engine computes on
  the same cores the gateway relays on, so each microsecond of gateway CPU per token is taken from the
  engine: the ratio is then mostly the gateway's CPU per token, not its delay.
- "split cores" (`--split-cores auto`, the default, where at least 2 cores are usable; `on`/`off`): the
  engine's processes (supervisor, engine, every thread) on the first half of the usable cores, the
  gateway and this client on the other half (sched_setaffinity on each thread), as on a GPU server,
  where the engine's work is on the GPU and the gateway has cores of its own. The direct side runs
  under the same split (client on the second half), so the ratio is the proxy path's cost.
The header names the cores of each side, a 300-byte TCP echo's round trip on one core and across
cores (what each hop between the engine's cores and the gateway's costs on this machine: on a VM a
wake-up across cores is an interrupt to another virtual CPU), and the load average (1 min) before and
after each section.

Loopback only, every loop bounded in count and time. It asserts nothing: these machines are shared and
noisy. `python benchmarks/gateway_overhead.py [--rounds N] [--split-cores auto|on|off] [--model
tiny|real|PATH]` (`make bench` runs it with the defaults).
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


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def set_affinity(pids: list[int], cores: list[int], *, children: bool = False) -> int:
    """Every thread of these processes (and of their children) on `cores`; the threads set."""
    done = 0
    procs: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            procs += [proc, *(proc.children(recursive=True) if children else [])]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            for thread in proc.threads():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(thread.id, cores)
                    done += 1
    return done


def loopback_round_trip(server_core: int, client_core: int, n: int = 2000) -> float:
    """Microseconds per 300-byte TCP echo over loopback, an echo process on `server_core`, this one on
    `client_core`. Across cores each message wakes a sleeping core; on a VM that is an interrupt to
    another virtual CPU, which this prints next to the same-core figure (it prices every hop between the
    engine's cores and the gateway's)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        pid = os.fork()
        if pid == 0:  # the echo side: no threads exist yet in the parent (called first in main)
            try:
                os.sched_setaffinity(0, {server_core})
                conn, _ = srv.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while data := conn.recv(4096):
                    conn.sendall(data)
            finally:
                os._exit(0)
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {client_core})
        try:
            with socket.create_connection(srv.getsockname()) as conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                started = time.perf_counter()
                for _ in range(n):
                    conn.sendall(b"x" * 300)
                    conn.recv(4096)
                elapsed = time.perf_counter() - started
        finally:
            os.sched_setaffinity(0, before)
            os.waitpid(pid, 0)
    return elapsed / n * 1e6


def resolve_model(choice: str, env: dict[str, str]) -> str | None:
    """The GGUF to serve: `tiny` (the generated demo model), `real` (Gemma 3 270M Q4_K_M from the
    package registry, `llmhost demo-model --real`), or a path. None (with a message) when unavailable."""
    if choice in ("tiny", "real"):
        out = llmhost("demo-model", *(["--real"] if choice == "real" else []), env=env)
        if out.returncode != 0:
            print(f"--model {choice}: {out.stderr.strip() or 'demo-model failed'}: skipped")
            return None
        return out.stdout.strip()
    if not Path(choice).is_file():
        print(f"--model {choice}: no such file", file=sys.stderr)
        return None
    return str(Path(choice).resolve())


@dataclass
class Split:
    """Which cores the engine's side and the proxy's side (gateway + this client) run on."""

    engine: list[int]
    proxy: list[int]

    @classmethod
    def halves(cls, cores: list[int]) -> Split:
        half = len(cores) // 2
        return cls(engine=cores[:half], proxy=cores[half:])


def load_1m() -> float:
    return os.getloadavg()[0]


@dataclass
class Side:
    """One target's figures at one concurrency."""

    ttft: list[float] = field(default_factory=list)
    tokens: int = 0
    wall: float = 0.0
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    round_tok_s: list[float] = field(default_factory=list)  # one per round, in the order they ran

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
        "temperature": 0,  # greedy: both sides generate the same tokens, so the same counts
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


async def run_round(
    url: str, model: str, headers: dict[str, str], keepalive: bool, concurrency: int, side: Side
) -> None:
    # Each side as a real client meets it. llama-server closes its connection after each streamed
    # answer (though it announces keep-alive): a client pooling it fails the next request unanswered
    # ("Server disconnected"), so direct, every request opens a connection. The gateway keeps its
    # client connections alive, as the OpenAI clients' pools use them.
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency if keepalive else 0
    )
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
        tokens_before = side.tokens
        await asyncio.gather(*(task() for _ in range(PER_ROUND[concurrency])))
        elapsed = time.perf_counter() - started
        side.wall += elapsed
        side.round_tok_s.append((side.tokens - tokens_before) / elapsed)


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
    gw_url: str, name: str, direct: tuple[str, str, str], gw_proc: psutil.Process, rounds: int
) -> tuple[dict[int, dict[str, Side]], float, int, int]:
    """Side-by-side rounds on model `name`; (figures per concurrency and side, CPU s per token, RSS
    idle, RSS peak)."""
    direct_url, served, key = direct
    targets = {
        "direct": (direct_url, served, {"Authorization": f"Bearer {key}"}, False),
        "gateway": (gw_url, name, {}, True),
    }
    figures = {c: {"direct": Side(), "gateway": Side()} for c in PER_ROUND}
    idle_rss = gw_proc.memory_info().rss
    cpu_s = 0.0
    gw_tokens = 0
    sampler = RssSampler(gw_proc)

    async def all_rounds() -> None:
        nonlocal cpu_s, gw_tokens
        sampling = asyncio.create_task(sampler.run())
        # One phase per concurrency level, each opened by an uncounted round per side: the first
        # requests after a 32-stream round wait on the engine settling (TTFT 100-170 ms against 9 ms
        # here), and with 4 requests a round one such wait moves a c=1 ratio by 10%, on either side.
        for concurrency in PER_ROUND:
            for target in targets.values():
                await run_round(*target, concurrency, Side())
            for r in range(rounds):
                order = ["direct", "gateway"] if r % 2 == 0 else ["gateway", "direct"]
                for name in order:
                    side = figures[concurrency][name]
                    before_tokens, before_cpu = side.tokens, gw_proc.cpu_times()
                    await run_round(*targets[name], concurrency, side)
                    if name == "gateway":
                        after = gw_proc.cpu_times()
                        cpu_s += (after.user - before_cpu.user) + (after.system - before_cpu.system)
                        gw_tokens += side.tokens - before_tokens
        sampler.stop()
        await sampling

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


def start_gateway(
    model: str, state: str, env: dict[str, str], split_threads: int | None = None
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The gateway over `hot` (the planner's thread count: the shared-cores section), `cold`, and with
    `split_threads`, `split`: the same model with as many engine threads as the engine's cores (llama.cpp
    threads that outnumber their cores wait on each other's time slices: a collapse, not a figure)."""
    root = Path(state)
    config = root / "gw.yaml"
    split = (
        f"  split: {{model: {model}, context: 4096, concurrency: 32, pin: true, "
        f"extra_args: [-t, '{split_threads}']}}\n"
        if split_threads
        else ""
    )
    config.write_text(
        "models:\n"
        f"  hot: {{model: {model}, context: 4096, concurrency: 32, pin: true}}\n"
        f"  cold: {{model: {model}, context: 512, ttl: 2s}}\n"
        f"{split}"
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
    pinned = ["hot", "split"] if split_threads else ["hot"]
    try:
        for name in pinned:
            wait_until(lambda: model_state(url, name) == "loaded", START_TIMEOUT_S, f"the gateway's {name}")
    except RuntimeError:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        raise RuntimeError(f"the gateway did not load its model: {log.read_text()[-2000:]}") from None
    return proc, url, log


def direct_target(state: str, name: str) -> tuple[str, str, str]:
    """(base URL, served name, internal key) of the gateway's own engine for model `name`."""
    os.environ["LLMHOST_STATE_DIR"] = state
    from llmhost.gateway.deploy import upstream_key
    from llmhost.supervise.state import read_deployment

    dep = read_deployment(f"gw-{name}")
    if dep is None:
        raise RuntimeError(f"the gateway's deployment gw-{name} is missing")
    return dep.base_url.removesuffix("/v1"), dep.served_model_name, upstream_key(f"gw-{name}")


def report_section(
    title: str, figures: dict[int, dict[str, Side]], cpu_per_token: float, rss: tuple[int, int]
) -> None:
    mib = 1 << 20
    print(f"{title:<26} {'direct':>10} {'gateway':>10} {'added/ratio':>12}")
    for concurrency, sides in figures.items():
        d, g = sides["direct"], sides["gateway"]
        n = len(g.ttft)
        for label, q in (("p50", 0.5), ("p99", 0.99)):
            dv, gv = percentile(d.ttft, q) * 1e3, percentile(g.ttft, q) * 1e3
            print(f"{f'TTFT {label} c={concurrency} (ms)':<26} {dv:>10.2f} {gv:>10.2f} {gv - dv:>+12.2f}")
        ratio = g.tok_s / d.tok_s if d.tok_s else 0.0
        print(f"{f'output tok/s c={concurrency}':<26} {d.tok_s:>10.1f} {g.tok_s:>10.1f} {ratio:>11.3f}x")
        paired = sorted(gv / dv for dv, gv in zip(d.round_tok_s, g.round_tok_s, strict=True) if dv)
        if paired:
            q1, q3 = percentile(paired, 0.25), percentile(paired, 0.75)
            print(
                f"{'  per round pair':<26} {'median':>10} {statistics.median(paired):>10.3f}x  "
                f"(quartiles {q1:.3f}-{q3:.3f}, {len(paired)} pairs)"
            )
        print(f"{'  requests, failures':<26} {len(d.ttft):>6}, {d.failures:<3} {n:>6}, {g.failures:<3}")
        for name, side in (("direct", d), ("gateway", g)):
            if side.errors:
                print(f"  {name}: first failure: {side.errors[0]}")
    print(f"gateway CPU per streamed token: {cpu_per_token * 1e6:.0f} us")
    print(f"gateway RSS: idle {rss[0] / mib:.1f} MiB, under load (c=32 peak) {rss[1] / mib:.1f} MiB")


def report_cold(cold: tuple[list[float], list[float]]) -> None:
    gw, serve = cold
    print(
        f"cold load -> first token (median of {len(gw)}): gateway {statistics.median(gw):.2f} s, "
        f"serve --detach + request {statistics.median(serve):.2f} s"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="side-by-side rounds per concurrency")
    parser.add_argument(
        "--split-cores",
        choices=("auto", "on", "off"),
        default="auto",
        help="also measure with the engine and the gateway + client on separate cores (auto: on where "
        "at least 2 cores are usable); the shared-cores section is always measured",
    )
    parser.add_argument(
        "--model",
        default="tiny",
        help="tiny (the generated demo GGUF: gibberish, far faster than any real model, so the gateway's "
        "per-token cost weighs most), real (Gemma 3 270M Q4_K_M from the package registry) or a GGUF path",
    )
    args = parser.parse_args(argv)
    # SIGTERM (a `timeout` around the run) unwinds like Ctrl-C: the gateway and its engines are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cores = usable_cores()
    split = None
    if args.split_cores == "on" or (args.split_cores == "auto" and len(cores) >= 2):
        if len(cores) < 2:
            print("--split-cores on needs at least 2 usable cores (sched_setaffinity)", file=sys.stderr)
            return 2
        split = Split.halves(cores)
    # First, before any thread or child exists (it forks): what one wake-up across cores costs here.
    wakeups = (
        (
            loopback_round_trip(split.proxy[0], split.proxy[0]),
            loopback_round_trip(split.engine[0], split.proxy[0]),
        )
        if split is not None
        else None
    )
    state = tempfile.mkdtemp(prefix="llmhost-bench-gw-")
    env = {**os.environ, "LLMHOST_STATE_DIR": state, "NO_COLOR": "1"}
    env.pop("LLMHOST_API_KEY", None)
    model = resolve_model(args.model, env)
    if model is None:
        return 0 if args.model in ("tiny", "real") else 2
    engines = json.loads(llmhost("engines", "--json", env=env).stdout or "[]")
    if not any(e["name"] == "llamacpp" and e["usable"] for e in engines):
        print("no llama.cpp runtime installed: skipped (pip install 'llmhost[llamacpp]')")
        return 0
    proc, url, log = start_gateway(model, state, env, len(split.engine) if split is not None else None)
    try:
        ps = {d["name"]: d for d in json.loads(llmhost("ps", "--json", env=env).stdout)}
        hot = ps["gw-hot"]
        engine_pids = [p for d in ps.values() for p in (d.get("supervisor_pid"), d.get("engine_pid")) if p]
        print(
            f"model: {model} ({hot.get('runtime')}); {MAX_TOKENS} output tokens a request, "
            f"{args.rounds} rounds a section"
        )
        print(f"cores usable: {len(cores)} {cores}; python {sys.version.split()[0]}")
        if split is not None:
            print(
                f"split cores: engine (supervisor + engine, model `split`: -t {len(split.engine)}) on "
                f"{split.engine}, gateway + client on {split.proxy}"
            )
        else:
            print("split cores: off")
        if wakeups is not None:
            print(
                f"loopback TCP round trip (300 B echo): same core {wakeups[0]:.1f} us, "
                f"across cores {wakeups[1]:.1f} us"
            )
        sections = [("shared cores", "hot", None)]
        sections += [("split cores", "split", split)] if split is not None else []
        results = []
        everything = [proc.pid, os.getpid(), *engine_pids]
        for title, name, placement in sections:
            before = load_1m()
            if placement is not None:
                set_affinity(engine_pids, placement.engine, children=True)
                set_affinity([proc.pid, os.getpid()], placement.proxy)
            try:
                gw = psutil.Process(proc.pid)
                measured = measure_overhead(url, name, direct_target(state, name), gw, args.rounds)
            finally:
                set_affinity(everything, cores, children=True)
            results.append((f"{title} (load {before:.2f} -> {load_1m():.2f})", measured))
        cold = cold_loads(url, model, env)
        print()
        for title, (figures, cpu_per_token, idle, peak) in results:
            report_section(title, figures, cpu_per_token, (idle, peak))
            print()
        report_cold(cold)
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
