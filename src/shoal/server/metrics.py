"""Prometheus metrics of one server (``GET /metrics``), on a registry of its own.

A registry per app (not the process-global one) keeps two servers in one process (tests) apart.
Route labels are route *templates* (``/v1/threads/{thread_id}``), so ids never make new series.

The residency series (which models are loaded, their memory, loads and unloads, the budget) are
read from the residency manager when ``/metrics`` is scraped
(:meth:`ServerMetrics.watch_residency`), so memory is measured at that moment and the manager
stays the one record of loads and unloads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shoal.models.residency import UNLOAD_REASONS, ResidencySnapshot
from shoal.observability import LIBRARY_REGISTRY

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
            "Model lifecycle events (load, ready, failed, crash, restart, unload)",
            ["model", "event"],
            registry=r,
        )
        self.model_ready = Gauge(
            "shoal_model_ready", "1 when the model is loaded and serving", ["model"], registry=r
        )

    def watch_residency(self, snapshot: Callable[[], ResidencySnapshot]) -> None:
        """Report the residency series from ``snapshot()`` (model labels: its model names)."""
        self.registry.register(_ResidencyCollector(snapshot))

    def render(self) -> bytes:
        """The server's series, then the library's (:mod:`shoal.observability.metrics`)."""
        return generate_latest(self.registry) + generate_latest(LIBRARY_REGISTRY)


class _ResidencyCollector:
    """The residency series, built from a fresh snapshot at every scrape."""

    def __init__(self, snapshot: Callable[[], ResidencySnapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        loaded = GaugeMetricFamily(
            "shoal_model_loaded", "1 while the model is loaded in memory", labels=["model"]
        )
        memory = GaugeMetricFamily(
            "shoal_model_memory_bytes",
            "Memory the model takes: measured (a worker's RSS), else estimated; 0 unloaded",
            labels=["model"],
        )
        loads = CounterMetricFamily(
            "shoal_model_loads", "Loads of the model by the residency manager", labels=["model"]
        )
        unloads = CounterMetricFamily(
            "shoal_model_unloads",
            "Unloads by reason (idle: keep-alive; lru: max loaded models; budget: max memory; "
            "shutdown)",
            labels=["model", "reason"],
        )
        for model in snap.models:
            loaded.add_metric([model.name], 1.0 if model.loaded else 0.0)
            memory.add_metric([model.name], float(model.resident_bytes if model.loaded else 0))
            loads.add_metric([model.name], float(model.loads))
            for reason in UNLOAD_REASONS:
                unloads.add_metric([model.name, reason], float(model.unloads.get(reason, 0)))
        yield from (loaded, memory, loads, unloads)
        if snap.max_memory_bytes is not None:
            yield GaugeMetricFamily(
                "shoal_residency_budget_bytes",
                "Memory the loaded models may take together (absent: no budget)",
                value=float(snap.max_memory_bytes),
            )
        yield GaugeMetricFamily(
            "shoal_models_loaded", "Models loaded now", value=float(snap.loaded_models)
        )
