"""What the library reports about itself: Prometheus metrics on a registry of its own (L1)."""

from shoal.observability.metrics import LIBRARY_REGISTRY, record_decision, routing_decisions

__all__ = ["LIBRARY_REGISTRY", "record_decision", "routing_decisions"]
