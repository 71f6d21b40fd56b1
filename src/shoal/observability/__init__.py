"""What the library reports about itself (L1): trace events of every run fanned out to sinks
(audit log, OpenTelemetry, alerts), and Prometheus metrics on a registry of its own."""

from shoal.observability.metrics import LIBRARY_REGISTRY, record_decision, routing_decisions
from shoal.observability.recorder import (
    KINDS,
    RunRecorder,
    Sink,
    Span,
    TraceEvent,
    active_sinks,
    add_sink,
    current_span,
    remove_sink,
)

__all__ = [
    "KINDS",
    "LIBRARY_REGISTRY",
    "RunRecorder",
    "Sink",
    "Span",
    "TraceEvent",
    "active_sinks",
    "add_sink",
    "current_span",
    "record_decision",
    "remove_sink",
    "routing_decisions",
]
