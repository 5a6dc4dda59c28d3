"""Readiness and metrics probes over HTTP (httpx, no proxies: the engine is local or on our host).

Ready = the health endpoint answers 200 AND the models endpoint lists the served name. A refused
connection is "loading" (engines bind late or refuse while loading); whether the process still lives
is the supervisor's half of the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import httpx

from llmhost.engines.base import LaunchSpec
from llmhost.net import root_url
from llmhost.prometheus import parse_prometheus

ProbeState = Literal["refused", "loading", "ready", "unauthorized"]


@dataclass(frozen=True)
class ProbeResult:
    state: ProbeState
    detail: str = ""


class Prober:
    def __init__(self, spec: LaunchSpec, api_key: str | None) -> None:
        self.spec = spec
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=root_url(spec.base_url),
            headers=headers,
            timeout=httpx.Timeout(3.0, connect=0.5),
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def check(self) -> ProbeResult:
        try:
            if self.spec.health_path != self.spec.models_path:
                health = self._client.get(self.spec.health_path)
                if health.status_code in (401, 403):
                    return ProbeResult(
                        "unauthorized", f"{self.spec.health_path} answered {health.status_code}"
                    )
                if health.status_code != 200:
                    return ProbeResult("loading", f"{self.spec.health_path} answered {health.status_code}")
            models = self._client.get(self.spec.models_path)
        except httpx.ConnectError:
            return ProbeResult("refused")
        except httpx.HTTPError as exc:  # timeouts, resets while the server starts
            return ProbeResult("loading", type(exc).__name__)
        if models.status_code in (401, 403):
            return ProbeResult("unauthorized", f"{self.spec.models_path} answered {models.status_code}")
        if models.status_code != 200:
            return ProbeResult("loading", f"{self.spec.models_path} answered {models.status_code}")
        try:
            ids = [str(m.get("id")) for m in models.json().get("data", [])]
        except (ValueError, AttributeError):
            return ProbeResult("loading", "models endpoint returned no JSON list")
        wanted = self.spec.served_model_name
        if wanted is not None and wanted not in ids:
            return ProbeResult("loading", f"{wanted!r} not yet listed (listed: {ids})")
        return ProbeResult("ready")

    def metrics(self) -> dict[str, float]:
        """Prometheus samples summed by metric name (labels dropped); {} if unavailable."""
        if not self.spec.metrics_path:
            return {}
        try:
            resp = self._client.get(self.spec.metrics_path)
        except httpx.HTTPError:
            return {}
        if resp.status_code != 200:
            return {}
        return parse_prometheus(resp.text)


# Counters that mean "requests served" / "tokens generated" across engines (names per engine docs).
REQUEST_COUNTERS = ("vllm:request_success_total",)
TOKEN_COUNTERS = ("vllm:generation_tokens_total", "llamacpp:tokens_predicted_total")


def first_counter(samples: dict[str, float], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in samples:
            return int(samples[name])
    return None
