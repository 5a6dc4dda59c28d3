"""A real Ray head on this machine (CPU): `ray start --head`, `ray status` sees its CPU, `ray stop` leaves
no Ray process behind. (vLLM's Ray executor refuses CPU platforms, vllm#21602: the multi-node vLLM path
is proven by vLLM's own argument parser in test_multinode.py; this proves the Ray commands the export
prints run as written.)"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from llmhost.cache import cache_dir
from llmhost.supervise.process import next_free_port, port_free
from support.ci import IN_CI

RAY_VENV = Path(os.environ.get("LLMHOST_RAY_VENV", cache_dir() / "tools" / "ray"))
RAY = RAY_VENV / "bin" / "ray"


def _ray_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if (
            proc.info["name"] in ("gcs_server", "raylet")
            or "ray/_private/" in cmdline
            or "ray start" in cmdline
        ):
            found.append(proc)
    return found


pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_ray_head_starts_reports_and_stops(tmp_path: Path) -> None:
    if not RAY.is_file():
        assert not IN_CI, f"CI needs Ray for this test: `make test-tools` installs it at {RAY_VENV}"
        pytest.skip(f"Ray is not installed for the tests (`make test-tools`, {RAY_VENV})")
    if _ray_processes():
        # `ray stop` stops every Ray process of this user: never someone else's cluster.
        assert not IN_CI, "a Ray cluster is already running on the CI machine"
        pytest.skip("another Ray cluster runs on this machine; `ray stop` would stop it too")
    port = next_free_port("127.0.0.1", start=46000)
    # Ray's socket paths live under the temp dir and AF_UNIX paths are short: not pytest's long tmp_path.
    temp = tempfile.mkdtemp(prefix="llmhost-ray-", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = [str(RAY), "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--num-cpus=1",
             "--include-dashboard=false", "--disable-usage-stats",
             "--object-store-memory=100000000"]  # fmt: skip
    try:
        started = subprocess.run(start, capture_output=True, text=True, timeout=180, env=env, check=False)
        assert started.returncode == 0, started.stdout + started.stderr
        # `ray start` returns before the autoscaler reports ("No cluster status. It may take a few seconds
        # for the Ray internal services to start up."): ask again until it answers, for a minute at most.
        deadline = time.monotonic() + 60
        while True:
            status = subprocess.run(
                [str(RAY), "status", "--address", f"127.0.0.1:{port}"],
                capture_output=True, text=True, timeout=60, env=env, check=False,
            )  # fmt: skip
            if (status.returncode == 0 and "1.0 CPU" in status.stdout) or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "1.0 CPU" in status.stdout and "Active:" in status.stdout, status.stdout
        assert _ray_processes(), "ray start returned but no Ray process runs"
    finally:
        stopped = subprocess.run(
            [str(RAY), "stop"], capture_output=True, text=True, timeout=120, env=env, check=False
        )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    _, alive = psutil.wait_procs(_ray_processes(), timeout=30)
    assert not alive, f"Ray processes left after `ray stop`: {[p.pid for p in alive]}"
    assert port_free("127.0.0.1", port), f"port {port} is still taken after `ray stop`"
