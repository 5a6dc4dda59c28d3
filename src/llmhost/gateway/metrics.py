"""The gateway's `/metrics`, through `prometheus_client` (its own registry, not the process-global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LOAD_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        model, by = ["model"], "llmhost_gateway_"
        self.requests = Counter(
            by + "requests",
            "Requests answered, by model, status and key name.",
            [*model, "status", "key"],
            registry=r,
        )
        self.ttft = Histogram(
            by + "ttft_seconds",
            "Request to first byte of answer.",
            model,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            by + "request_duration_seconds",
            "Request to end of answer.",
            model,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            by + "tokens", "Tokens the engines reported, by kind.", [*model, "kind"], registry=r
        )
        self.queue_depth = Gauge(
            by + "queue_depth", "Requests waiting for the model to load.", model, registry=r
        )
        self.in_flight = Gauge(by + "in_flight", "Requests being answered by the model.", model, registry=r)
        self.loads = Counter(
            by + "loads", "Model loads, by result (ok, failed).", [*model, "result"], registry=r
        )
        self.unloads = Counter(
            by + "unloads",
            "Model unloads, by reason (evicted, ttl, shutdown).",
            [*model, "reason"],
            registry=r,
        )
        self.load_seconds = Histogram(
            by + "load_seconds",
            "Time to load a model (plan, launch, ready).",
            model,
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.resident_bytes = Gauge(
            by + "resident_bytes",
            "Memory a resident model holds (max of planned, measured).",
            [*model, "device"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
