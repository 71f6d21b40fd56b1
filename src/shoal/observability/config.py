"""Turning observability on: which sinks every run's trace events go to.

:func:`configure` adds the sinks asked for (library metrics on by default; the audit log,
tracing and alerts when given) and remembers them: calling it again replaces the sinks it
added before, so it is safe to call at every start. :func:`configure_from_env` reads the
settings from the environment (``shoal`` commands and ``shoal serve`` call it at start):

- ``SHOAL_AUDIT_LOG``: path of the audit log; ``off`` or empty: no audit log; unset: the
  default, :func:`default_audit_path` (``<data dir>/audit.jsonl``).
- ``SHOAL_TRACING``: ``console`` (spans to stderr), ``json`` or ``json:PATH`` (one span per
  line to a file, default ``<data dir>/traces.jsonl``), ``otlp`` (OTLP/HTTP to
  ``OTEL_EXPORTER_OTLP_ENDPOINT``), ``off`` or unset: none. Needs ``shoal[otel]``.
- ``SHOAL_METRICS``: ``off`` turns the library metrics sink off.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal.exceptions import UserError
from shoal.observability.alerts import AlertHook, AlertRule, AlertSink
from shoal.observability.audit import AuditLog, AuditSink
from shoal.observability.metrics import MetricsSink
from shoal.observability.otel import Exporter
from shoal.observability.recorder import Sink, add_sink, remove_sink
from shoal.settings import data_dir

__all__ = [
    "Observability",
    "configure",
    "configure_from_env",
    "current",
    "default_audit_path",
    "parse_tracing",
]

_OFF = frozenset({"", "off", "none", "0", "false", "no"})


def default_audit_path() -> Path:
    """``<data dir>/audit.jsonl`` (``$SHOAL_HOME`` or the XDG data dir)."""
    return data_dir() / "audit.jsonl"


@dataclass(frozen=True)
class Observability:
    """The sinks :func:`configure` added (None: that one is off)."""

    metrics: MetricsSink | None = None
    audit: AuditSink | None = None
    tracing: Sink | None = None
    alerts: AlertSink | None = None

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return tuple(s for s in (self.metrics, self.audit, self.tracing, self.alerts) if s)

    @property
    def audit_log(self) -> AuditLog | None:
        return self.audit.log if self.audit else None


_current = Observability()
_lock = threading.Lock()


def current() -> Observability:
    """What the last :func:`configure` set up."""
    return _current


def parse_tracing(value: str) -> tuple[Exporter, str | None] | None:
    """``SHOAL_TRACING`` as (exporter, path): ``console``, ``json[:PATH]``, ``otlp``; None: off."""
    text = value.strip()
    if text.lower() in _OFF:
        return None
    name, _, rest = text.partition(":")
    name = name.lower()
    if name == "json":
        return "json", rest or None
    if name == "console" and not rest:
        return "console", None
    if name == "otlp" and not rest:
        return "otlp", None
    raise UserError(
        f"SHOAL_TRACING={value!r} is not a tracing setting: use console, json, json:PATH, "
        "otlp or off"
    )


def configure(
    *,
    audit_log: str | os.PathLike[str] | None = None,
    tracing: str | None = None,
    otlp_endpoint: str | None = None,
    metrics: bool = True,
    alerts: Sequence[AlertRule] = (),
    alert_hook: AlertHook | None = None,
) -> Observability:
    """Send every run's trace events to the sinks asked for, replacing the ones an earlier
    call added (an earlier audit log is flushed and closed, a tracer provider shut down).

    ``tracing``: ``console``, ``json``, ``json:PATH`` or ``otlp`` (see
    :func:`~shoal.observability.otel.enable_tracing`); None or ``off``: no tracing.
    """
    global _current
    parsed = parse_tracing(tracing) if tracing is not None else None
    tracing_sink: Sink | None = None
    if parsed is not None:  # first, so a missing package changes nothing
        from shoal.observability.otel import enable_tracing

        exporter, path = parsed
        tracing_sink = enable_tracing(exporter, endpoint=otlp_endpoint, path=path, register=False)
    new = Observability(
        metrics=MetricsSink() if metrics else None,
        audit=AuditSink(AuditLog(audit_log)) if audit_log is not None else None,
        tracing=tracing_sink,
        alerts=AlertSink(alerts, alert_hook) if alerts else None,
    )
    with _lock:
        old, _current = _current, new
        for sink in old.sinks:
            remove_sink(sink)
        for sink in new.sinks:
            add_sink(sink)
    _retire(old)
    return new


def configure_from_env(*, default_audit: bool = True) -> Observability:
    """:func:`configure` from ``SHOAL_AUDIT_LOG``, ``SHOAL_TRACING``,
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` and ``SHOAL_METRICS`` (see the module docstring).
    ``default_audit``: with ``SHOAL_AUDIT_LOG`` unset, write :func:`default_audit_path`."""
    env = os.environ
    audit_text = env.get("SHOAL_AUDIT_LOG")
    audit: Path | None
    if audit_text is None:
        audit = default_audit_path() if default_audit else None
    elif audit_text.strip().lower() in _OFF:
        audit = None
    else:
        audit = Path(audit_text).expanduser()
    return configure(
        audit_log=audit,
        tracing=env.get("SHOAL_TRACING"),
        otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
        metrics=env.get("SHOAL_METRICS", "on").strip().lower() not in _OFF,
    )


def _retire(old: Observability) -> None:
    if old.audit is not None:
        old.audit.log.close()
    shutdown = getattr(old.tracing, "shutdown", None)
    if callable(shutdown):
        shutdown()
