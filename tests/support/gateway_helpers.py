"""A real `llmhost gateway` in a subprocess for the gateway tests (`python -m llmhost.gateway`, the
same entry `gateway --detach` starts), with helpers to read its /v1/models, /metrics and event log."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from support.hostile_server import free_port


class GatewayProc:
    def __init__(self, config: Path, state: Path, *, key: str | None = None, port: int | None = None) -> None:
        self.config = config
        self.state = state
        self.key = key
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.with_suffix(".log")

    def start(self, timeout: float = 60) -> GatewayProc:
        env = {k: v for k, v in os.environ.items() if k != "LLMHOST_API_KEY"}
        env["LLMHOST_STATE_DIR"] = str(self.state)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "llmhost.gateway"),
                    *("--config", str(self.config), "--port", str(self.port)),
                ],
                stdout=log, stderr=log, env=env, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gateway exited: {self.log.read_text()}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gateway did not start: {self.log.read_text()}")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def models(self) -> dict[str, dict[str, Any]]:
        reply = httpx.get(f"{self.url}/v1/models", headers=self.headers, timeout=30)
        assert reply.status_code == 200, reply.text
        return {m["id"]: m["llmhost"] for m in reply.json()["data"]}

    def wait_state(self, model: str, state: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        card: dict[str, Any] = {}
        while time.monotonic() < deadline:
            card = self.models()[model]
            if card["state"] == state:
                return card
            time.sleep(0.2)
        raise AssertionError(f"{model} never became {state}: {card}")

    def metric(self, name: str, **labels: str) -> float:
        """The sample `name{labels}` of /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", headers=self.headers, timeout=30).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                got = line[len(name) :].split(" ")[0].strip("{}")
                if all(part in got.split(",") for part in want.split(",") if part):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.proc = None


def stop_everything(state: Path) -> list[str]:
    """Stop what a failed test may have left in `state` (the session's own safety net sees only its dir)."""
    from llmhost.app.deployments import stop_all

    saved = os.environ.get("LLMHOST_STATE_DIR")
    os.environ["LLMHOST_STATE_DIR"] = str(state)
    try:
        return [d.name for d in stop_all()]
    finally:
        if saved is None:
            os.environ.pop("LLMHOST_STATE_DIR", None)
        else:
            os.environ["LLMHOST_STATE_DIR"] = saved


def events(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "gateway" / "events.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def access_log(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "gateway" / "access.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def planned_needs(config: Path, state: Path) -> dict[str, dict[str, int]]:
    """`gateway plan --json` of `config`: each model's planned bytes per device (launches nothing)."""
    from support.serve_helpers import llmhost

    plan = llmhost(
        "gateway", "plan", "--config", str(config), "--json", env={"LLMHOST_STATE_DIR": str(state)}
    )
    assert plan.returncode == 0, plan.stderr
    return {m["name"]: m["need"] for m in json.loads(plan.stdout)["models"]}


@contextlib.contextmanager
def gateway_running(config: Path, state: Path, *, key: str | None = None) -> Iterator[GatewayProc]:
    """A started gateway; on exit it is stopped (SIGTERM) and nothing it started may be left running."""
    gw = GatewayProc(config, state, key=key).start()
    try:
        yield gw
    finally:
        gw.stop()
        left = stop_everything(state)
        assert not left, f"the gateway left deployments running: {left}"
