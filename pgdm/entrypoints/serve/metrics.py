"""The server's Prometheus metrics, in a registry of their own (one per app; nothing global)."""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServerMetrics", "ENDPOINTS"]

ENDPOINTS = ("/v1/restore", "/healthz", "/readyz", "/metrics")  # any other path is counted as "other"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    """Requests and errors by endpoint and status, request latency, engine batch sizes, queue depth, in-flight requests."""

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        labels = ("endpoint", "status")
        self.requests = Counter("pgdm_requests", "HTTP requests answered, by endpoint and status", labels, registry=self.registry)
        self.errors = Counter("pgdm_errors", "HTTP requests answered with a 4xx or 5xx status", labels, registry=self.registry)
        self.latency = Histogram(
            "pgdm_request_seconds", "Time from receiving a request to its answer", ("endpoint",), buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.batch_size = Histogram(
            "pgdm_batch_size", "Rows (images × samples) per batch run by the engine", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.in_flight = Gauge("pgdm_requests_in_flight", "Restore requests received and not yet answered", registry=self.registry)
        self.queue_depth = Gauge("pgdm_queue_depth", "Restore requests waiting for a batch", registry=self.registry)
        self.queue_depth.set_function(queue_depth)

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        endpoint = path if path in ENDPOINTS else "other"
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
