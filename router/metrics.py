"""Prometheus metrics of the router, on its own registry (served at /metrics).

With several uvicorn workers each process keeps its own counters; scrape each pod (one worker per pod is the
Kubernetes default: scale with replicas, not workers).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "audio_score_router_requests_total",
            "POST /score requests by model and HTTP status",
            ["model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "audio_score_router_request_seconds",
            "POST /score end-to-end seconds",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decode = Histogram(
            "audio_score_router_decode_seconds",
            "upload decode seconds",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictor = Histogram(
            "audio_score_router_predictor_seconds",
            "V2 call to the predictor, seconds",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
