"""What does supervision cost at start-up? `llmhost serve --detach` to ready versus the same engine command
started by hand, measured side by side in one run on the tiny generated GGUF.

- by hand:      spawn the exact argv/env `llmhost serve --dry-run --json` prints, poll /v1/models every
                10 ms until the served name is listed (what a careful script would do).
- llmhost:      wall time of `llmhost serve MODEL --detach` (returns when ready), minus nothing.
- planning:     wall time of the same command with `--dry-run` (CLI start-up, resolve, detect, plan),
                which `serve` pays before it launches anything.
- supervision:  llmhost - planning - by hand: what the supervisor itself adds (re-exec, state files,
                readiness polling). Target: under 0.5 s.

Runs each runtime that is installed (llama-cpp-python; native llama-server when built), 3 rounds each,
alternating, and prints medians. It asserts nothing: these machines are shared and noisy.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROUNDS = 3
BIN = Path(sys.executable).parent


def llmhost(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = BIN / "llmhost"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "llmhost"]
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=env, check=False)


def by_hand(prepared: dict, env: dict[str, str]) -> float:
    launch = prepared["deployment"]["launch"]
    full_env = {k: v for k, v in env.items() if not k.startswith("LLAMA_ARG_")}
    full_env.update(launch["env"])
    url = f"http://127.0.0.1:{launch['port']}{launch['models_path']}"
    started = time.perf_counter()
    proc = subprocess.Popen(
        launch["argv"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"engine exited with {proc.returncode}")
                try:
                    resp = client.get(url)
                    ids = [m["id"] for m in resp.json().get("data", [])] if resp.status_code == 200 else []
                    if launch["served_model_name"] in ids:
                        return time.perf_counter() - started
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    state = tempfile.mkdtemp(prefix="llmhost-bench-state-")
    env = {**os.environ, "LLMHOST_STATE_DIR": state, "NO_COLOR": "1"}
    env.pop("LLMHOST_API_KEY", None)
    model = llmhost("demo-model", env=env).stdout.strip()
    engines = json.loads(llmhost("engines", "--json", env=env).stdout or "[]")
    runtimes = [e["runtime"] for e in engines if e["name"] == "llamacpp" and e["usable"]]
    if not runtimes:
        print("no llama.cpp runtime installed: skipped (pip install 'llmhost[llamacpp]')")
        return 0
    print(f"model: {model}\n")
    print(f"{'runtime':<18} {'by hand':>9} {'llmhost':>9} {'planning':>9} {'supervision':>12}   (medians, s)")
    for runtime in runtimes:
        hand, total, plan = [], [], []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            dry = llmhost("serve", model, "--engine", runtime, "--dry-run", "--json", env=env)
            plan.append(time.perf_counter() - t0)
            if dry.returncode != 0:
                print(f"{runtime}: dry run failed: {dry.stderr.strip()}")
                break
            hand.append(by_hand(json.loads(dry.stdout), env))
            t0 = time.perf_counter()
            out = llmhost("serve", model, "--engine", runtime, "--detach", "--name", "overhead", env=env)
            total.append(time.perf_counter() - t0)
            llmhost("stop", "overhead", env=env)
            if out.returncode != 0:
                print(f"{runtime}: serve failed: {out.stderr.strip()}")
                break
        if not total:
            continue
        h, t, p = statistics.median(hand), statistics.median(total), statistics.median(plan)
        print(f"{runtime:<18} {h:>9.2f} {t:>9.2f} {p:>9.2f} {t - p - h:>12.2f}")
    print(
        "\nsupervision = llmhost - planning - by hand (re-exec of the supervisor, state files, readiness "
        "polling every 50 ms); target < 0.5 s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
