"""What the library reports about itself (L1): trace events of every run fanned out to sinks
(audit log, OpenTelemetry, alerts), and Prometheus metrics on a registry of its own."""

from shoal.observability.alerts import Alert, AlertRule, AlertSink
from shoal.observability.audit import AuditLog, AuditReport, AuditSink
from shoal.observability.audit import read as read_audit_log
from shoal.observability.audit import verify as verify_audit_log
from shoal.observability.config import (
    Observability,
    configure,
    configure_from_env,
    default_audit_path,
)
from shoal.observability.metrics import (
    LIBRARY_REGISTRY,
    MetricsSink,
    record_decision,
    routing_decisions,
    set_model_memory,
)
from shoal.observability.otel import OtelSink, enable_tracing
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
    "Alert",
    "AlertRule",
    "AlertSink",
    "AuditLog",
    "AuditReport",
    "AuditSink",
    "MetricsSink",
    "Observability",
    "OtelSink",
    "RunRecorder",
    "Sink",
    "Span",
    "TraceEvent",
    "active_sinks",
    "add_sink",
    "configure",
    "configure_from_env",
    "current_span",
    "default_audit_path",
    "enable_tracing",
    "read_audit_log",
    "record_decision",
    "remove_sink",
    "routing_decisions",
    "set_model_memory",
    "verify_audit_log",
]
