"""Prometheus metrics, one registry per application instance (so tests stay isolated)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "agent_api_http_requests_total",
            "HTTP requests by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "agent_api_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template.",
            ("route", "method"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.api_key_last_used_dropped = Counter(
            "agent_api_api_key_last_used_dropped_total",
            "last_used_at stamps dropped because the background queue was full.",
            registry=self.registry,
        )
        self.unhandled_errors = Counter(
            "agent_api_unhandled_errors_total",
            "Unexpected exceptions turned into 500 responses.",
            registry=self.registry,
        )
