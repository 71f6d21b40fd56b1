"""Prometheus metrics of one server (``GET /metrics``), on a registry of its own.

A registry per app (not the process-global one) keeps two servers in one process (tests) apart.
Route labels are route *templates* (``/v1/threads/{thread_id}``), so ids never make new series.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
_RATE_BUCKETS = (1, 2, 5, 10, 20, 40, 80, 160, 320, 640)


class ServerMetrics:
    """Every series the server reports. Names start with ``shoal_``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "shoal_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "shoal_http_request_seconds",
            "HTTP request latency by route template (streams: until the last byte)",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "shoal_tokens",
            "Tokens by model and direction (in: prompt, out: completion)",
            ["model", "direction"],
            registry=r,
        )
        self.cached_tokens = Counter(
            "shoal_cached_prompt_tokens",
            "Prompt tokens the engine reused from its cache instead of evaluating",
            ["model"],
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "shoal_generation_tokens_per_second",
            "Completion tokens per second of model time, per request",
            ["model"],
            buckets=_RATE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "shoal_queue_depth", "Requests waiting for a model", ["model"], registry=r
        )
        self.active = Gauge(
            "shoal_active_requests", "Requests running on a model", ["model"], registry=r
        )
        self.rejected = Counter(
            "shoal_rejected_requests",
            "Requests refused before running, by reason (queue_full, deadline)",
            ["model", "reason"],
            registry=r,
        )
        self.tool_calls = Counter(
            "shoal_tool_calls",
            "Tool calls by outcome (ok, invalid, failed, timeout, repeated, pending: returned "
            "to the client to run)",
            ["outcome"],
            registry=r,
        )
        self.model_events = Counter(
            "shoal_model_events",
            "Model lifecycle events (load, ready, failed, crash, restart)",
            ["model", "event"],
            registry=r,
        )
        self.model_ready = Gauge(
            "shoal_model_ready", "1 when the model is loaded and serving", ["model"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
