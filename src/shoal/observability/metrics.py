"""Library metrics: series any program using Shoal can scrape, server or not.

They live on :data:`LIBRARY_REGISTRY` (not the process-global default registry, so importing
Shoal never adds series to an application's own ``/metrics``); ``shoal serve`` exposes them next
to its own series. Expose them in your program with
``prometheus_client.generate_latest(LIBRARY_REGISTRY)``.

- ``shoal_routing_decisions_total{router, kind, model}``: each choice a wrapper model made
  (:class:`~shoal.models.base.RouteDecision`): a router's rule, classifier or default route, a
  fallback after an error, an escalation after a rejected answer, a balanced endpoint.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["LIBRARY_REGISTRY", "record_decision", "routing_decisions"]

LIBRARY_REGISTRY = CollectorRegistry()

routing_decisions = Counter(
    "shoal_routing_decisions",
    "Choices of wrapper models (router, fallback, escalation, balance) by router, kind and "
    "the model chosen",
    ["router", "kind", "model"],
    registry=LIBRARY_REGISTRY,
)


def record_decision(*, router: str, kind: str, model: str) -> None:
    """Count one routing decision."""
    routing_decisions.labels(router, kind, model).inc()
