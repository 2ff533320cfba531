"""Prometheus metrics, one registry per application instance (so tests stay isolated)."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.application.tools.ports import ToolRunObservation

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Tools may run up to their own time limit (at most 600 s).
_TOOL_BUCKETS = (*_LATENCY_BUCKETS, 120, 300, 600)
# The `tool` label of a call naming no registered tool (a model's or a caller's invention):
# not a valid tool name, so it never collides with one, and it keeps the label set bounded.
UNKNOWN_TOOL = "<unknown>"


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
        self.upstream_latency = Histogram(
            "agent_api_upstream_request_duration_seconds",
            "Time from sending a chat completion upstream to its end, by public model and status.",
            ("model", "status"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "agent_api_time_to_first_token_seconds",
            "Time from request to the first streamed chunk, by public model.",
            ("model",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "agent_api_tokens_total",
            "Tokens used, by public model and kind (prompt, completion).",
            ("model", "kind"),
            registry=self.registry,
        )
        self.active_streams = Gauge(
            "agent_api_active_streams",
            "Chat completion streams currently open.",
            registry=self.registry,
        )
        self.upstream_retries = Counter(
            "agent_api_upstream_retries_total",
            "Upstream attempts retried (connect errors, 429, 5xx before the first byte).",
            ("upstream",),
            registry=self.registry,
        )
        self.upstream_malformed_chunks = Counter(
            "agent_api_upstream_malformed_chunks_total",
            "Stream events from an upstream that were not JSON objects (skipped).",
            ("upstream",),
            registry=self.registry,
        )
        self.usage_records_dropped = Counter(
            "agent_api_usage_records_dropped_total",
            "Usage records that could not be queued or written.",
            registry=self.registry,
        )
        self.usage_records_written = Counter(
            "agent_api_usage_records_written_total",
            "Usage records written to the database.",
            registry=self.registry,
        )
        self.rate_limit_rejections = Counter(
            "agent_api_rate_limit_rejections_total",
            "Requests refused by a rate limit or quota (429), by limiter and limit.",
            ("limiter", "limit"),
            registry=self.registry,
        )
        self.rate_limit_fallbacks = Counter(
            "agent_api_rate_limit_fallbacks_total",
            "Rate-limit decisions taken without Redis (by the failure policy), by limiter and policy.",
            ("limiter", "policy"),
            registry=self.registry,
        )
        self.rate_limit_backend_errors = Counter(
            "agent_api_rate_limit_backend_errors_total",
            "Failed or skipped Redis calls of the rate limiter, by operation and error type.",
            ("operation", "error"),
            registry=self.registry,
        )
        self.rate_limit_degraded = Gauge(
            "agent_api_rate_limit_degraded",
            "1 while the rate limiter's Redis is unreachable and the failure policy decides.",
            registry=self.registry,
        )
        self.tool_runs = Counter(
            "agent_api_tool_runs_total",
            "Tool call outcomes by tool and status (success, error, rejected, not_permitted), on every"
            " path: /v1/tools/execute, /v1/tools/batch, conversation runs and server tools.",
            ("tool", "status"),
            registry=self.registry,
        )
        self.tool_run_duration = Histogram(
            "agent_api_tool_run_duration_seconds",
            "Time a tool's code ran, by tool and status (calls that were refused, rejected or"
            " cancelled before an outcome are not observed).",
            ("tool", "status"),
            buckets=_TOOL_BUCKETS,
            registry=self.registry,
        )
        self.agent_runs_unsettled = Gauge(
            "agent_api_agent_runs_unsettled",
            "Agent runs that ended while the database was down, whose end this process is still"
            " retrying to store (they look 'running' in the database until then).",
            registry=self.registry,
        )


class MeteredToolRuns:
    """The `ToolRunObserver` adapter: counts every tool call outcome, times executed ones.

    `known` is the tool registry: a name outside it is labelled `UNKNOWN_TOOL` (callers and
    models may send any name; the label set must stay bounded). The labelled children are
    looked up once per (tool, status): `labels()` takes a lock and builds a tuple each call.
    """

    def __init__(self, metrics: Metrics, known: Container[str]) -> None:
        self._metrics = metrics
        self._known = known
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def observe(self, run: ToolRunObservation) -> None:
        tool = run.name if run.name in self._known else UNKNOWN_TOOL
        key = (tool, run.status.value)
        children = self._children.get(key)
        if children is None:
            children = (
                self._metrics.tool_runs.labels(*key),
                self._metrics.tool_run_duration.labels(*key),
            )
            self._children[key] = children
        counter, duration = children
        counter.inc()
        if run.executed:
            duration.observe(run.duration_ms / 1000)
