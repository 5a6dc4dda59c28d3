"""`make demo`: the whole path on a fresh machine, with nothing downloaded.

1. generate the tiny llama GGUF (`llmhost demo-model`),
2. `llmhost serve` it with llama.cpp on the CPU, detached, and wait until it is ready,
3. send a chat completion through the real `openai` client,
4. run a short `llmhost bench` against it (when the bench command is installed),
5. print what happened, and stop the server whatever happened before.
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


def main() -> int:
    os.environ.setdefault("NO_COLOR", "1")
    model = llmhost("demo-model").stdout.strip()
    print(f"tiny model: {model} ({Path(model).stat().st_size / 1e6:.1f} MB; random weights, so gibberish)\n")
    started = time.monotonic()
    ours = False  # stop only the server this run started, not one a name clash refused to replace
    try:
        dep = json.loads(
            llmhost(
                "serve", model, "--detach", "--name", NAME, "--engine", "llamacpp", *SLOTS, "--json"
            ).stdout
        )
        ours = True
        print(
            f"\nserving {dep['served_model_name']} with {dep['engine']}/{dep['runtime']} "
            f"at {dep['base_url']} (ready in {time.monotonic() - started:.1f}s, "
            f"supervisor PID {dep['supervisor']['pid']})\n"
        )
        from openai import OpenAI

        client = OpenAI(base_url=dep["base_url"], api_key="none", max_retries=0)
        t0 = time.monotonic()
        reply = client.chat.completions.create(
            model=dep["served_model_name"],
            messages=[{"role": "user", "content": "Hello! Who are you?"}],
            max_tokens=24,
        )
        took = time.monotonic() - t0
        print(f"openai chat completion in {took * 1000:.0f} ms:")
        print(f"  reply  : {reply.choices[0].message.content!r}")
        print(f"  tokens : {reply.usage.prompt_tokens} prompt, {reply.usage.completion_tokens} completion\n")

        bench_help = llmhost("bench", "--help", check=False)
        if bench_help.returncode == 0:
            llmhost("bench", NAME, "-n", "8", "-c", "2", "--input-tokens", "32", "--output-tokens", "16",
                    check=False, capture=False)  # fmt: skip
        else:
            print("(llmhost bench is not available in this build; skipped)")
        ps = llmhost("ps").stdout
        print(ps)
        return 0
    finally:
        if ours:
            llmhost("stop", NAME, check=False)
            print("demo finished; the server is stopped.")


if __name__ == "__main__":
    sys.exit(main())
