"""A low-rate 1-token completion probe: catches an engine that is alive, says healthy, and serves nothing.

vLLM's `/health` only asks the API server whether the engine core has *died* (vllm#36960: it answers 200
after a GPU fault; vllm#38157: it can take 30-40 s under load). An engine core that is stuck - a hung
kernel, a deadlocked collective, a stopped process - keeps `/health` at 200 while every request hangs.
GPUStack answers this with an opt-in inference health check; llmhost does the same for engines that ask
for it (`LaunchSpec.completion_probe_interval_s`): once the deployment is ready, a background thread sends
`max_tokens=1` completions at a low rate, and after `completion_probe_failures` failures in a row the
probe reports the engine wedged; the supervisor then restarts it like a crash.

A failure is: no answer within the timeout, a 5xx, a connection error, or `/health` not 200. A 4xx other
than 401/403 (e.g. the model refusing the prompt) still proves the engine answers and is not counted.
A busy engine is not a wedged one: when a probe times out but the engine's generated-token counter
(`/metrics`) moved since the previous probe, the probe waited in a full queue and does not count.
"""

from __future__ import annotations

import threading
import time

import httpx

from llmhost.engines.base import LaunchSpec
from llmhost.net import root_url
from llmhost.prometheus import parse_prometheus
from llmhost.supervise.health import TOKEN_COUNTERS, first_counter

PROBE_PROMPT = "ping"


class CompletionProbe:
    """Runs in its own thread from `start()` to `stop()`; the supervisor reads `wedged` and `reason`."""

    def __init__(
        self, spec: LaunchSpec, api_key: str | None, *, interval_s: float, timeout_s: float, failures: int
    ):
        self.spec = spec
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.failures_to_wedge = max(1, failures)
        self.consecutive_failures = 0
        self.probes_sent = 0
        self.reason = ""
        self._tokens_seen: int | None = None
        self._wedged = threading.Event()
        self._stop = threading.Event()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=root_url(spec.base_url),
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            trust_env=False,
        )
        self._thread = threading.Thread(target=self._loop, name="llmhost-completion-probe", daemon=True)

    @classmethod
    def for_launch(cls, spec: LaunchSpec, api_key: str | None) -> CompletionProbe | None:
        """A started probe for this launch spec, or None when the spec asks for none."""
        interval = spec.completion_probe_interval_s
        if not interval or interval <= 0:
            return None
        probe = cls(
            spec,
            api_key,
            interval_s=interval,
            timeout_s=spec.completion_probe_timeout_s,
            failures=spec.completion_probe_failures,
        )
        probe.start()
        return probe

    @property
    def wedged(self) -> bool:
        return self._wedged.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._client.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def check_once(self) -> str | None:
        """One probe: None if the engine answered, else why not."""
        self.probes_sent += 1
        started = time.monotonic()
        try:
            health = self._client.get(self.spec.health_path)
            if health.status_code != 200:
                return f"{self.spec.health_path} answered {health.status_code}"
            body = {"model": self.spec.served_model_name or "", "prompt": PROBE_PROMPT, "max_tokens": 1}
            reply = self._client.post("/v1/completions", json=body)
        except httpx.TimeoutException:
            if self._tokens_advanced():
                return None  # queued behind real work: busy, not wedged
            return f"no answer to a 1-token completion within {self.timeout_s:.0f}s"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__} after {time.monotonic() - started:.1f}s"
        if reply.status_code >= 500 or reply.status_code in (401, 403):
            return f"1-token completion answered {reply.status_code}"
        self._tokens_advanced()  # remember the counter, so the next timeout can tell busy from stuck
        return None

    def _tokens_advanced(self) -> bool:
        """True if the engine generated tokens since the last look (False when it has no metrics)."""
        if not self.spec.metrics_path:
            return False
        try:
            resp = self._client.get(self.spec.metrics_path, timeout=5.0)
        except httpx.HTTPError:
            return False
        if resp.status_code != 200:
            return False
        tokens = first_counter(parse_prometheus(resp.text), TOKEN_COUNTERS)
        previous, self._tokens_seen = self._tokens_seen, tokens
        return tokens is not None and previous is not None and tokens > previous

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                problem = self.check_once()
            except RuntimeError:  # the client was closed by stop() mid-request
                return
            if self._stop.is_set():
                return
            if problem is None:
                self.consecutive_failures = 0
                continue
            self.consecutive_failures += 1
            self.reason = problem
            if self.consecutive_failures >= self.failures_to_wedge:
                self.reason = f"{problem} ({self.consecutive_failures} probes in a row)"
                self._wedged.set()
                return
