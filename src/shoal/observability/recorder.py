"""One run's trace, and the sinks every trace event is fanned out to.

A run (an agent's, or an orchestration's) keeps a :class:`RunRecorder`. What happens in it is a
list of :class:`TraceEvent`: *spans* (an agent run, a model request, a tool call: they have a
start, a duration and maybe an error) and *point events* (a route taken, a guard's verdict, an
approval asked for). Each event names its agent, its run, its thread and its enclosing span, so
a trace can be drawn as a tree and stored with its thread.

The span being recorded is held in a context variable: a recorder made inside another's span (an
agent run inside an orchestration step, each task of a fan-out) nests under it by itself.

Every event also goes to the *sinks* registered with :func:`add_sink`: the audit log, the
OpenTelemetry exporter, library metrics, alerts. A sink must be cheap; whatever it raises is
logged once and swallowed, so observing a run can never break it.

Kinds and their data keys are listed in :data:`KINDS`.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

__all__ = [
    "KINDS",
    "RunRecorder",
    "Sink",
    "Span",
    "TraceEvent",
    "active_sinks",
    "add_sink",
    "current_span",
    "remove_sink",
]

logger = logging.getLogger("shoal.observability")

#: event kinds Shoal records (spans marked with *), with the keys of their data
KINDS: dict[str, str] = {
    "run": "* an agent run: model, role, message; at the end stop_reason, steps, tokens, output",
    "model.request": "* model, step, tool_choice, tools; at the end tokens, finish_reason, text",
    "tool.call": "* tool, call_id, arguments; at the end outcome, result, error",
    "route": "router, kind, model, reason (a wrapper model's decision)",
    "guard": "guard, stage, action, reason, tool",
    "approval.requested": "tool, call_id, arguments",
    "approval.decided": "tool, call_id, approved, reason",
    "retry": "why",
    "note": "text",
    "system": "* system, entry, message",
    "handoff": "source, target, reason",
    "agent.route": "router, target, by, reason",
    "pipeline.step": "* pipeline, index, agent",
    "fanout": "* name, branches, limit",
    "critic.round": "loop, round, verdict, feedback",
    "chain.step": "* chain, step",
}


@dataclass(frozen=True)
class TraceEvent:
    """One thing that happened in a run: a span (with ``duration``) or a point event."""

    kind: str
    agent: str
    run_id: str
    span_id: str
    parent_id: str | None
    thread_id: str | None
    #: when it happened (a span: when it started), seconds since the epoch
    at: float
    data: dict[str, Any] = field(default_factory=dict)
    #: seconds, for an ended span; None for a point event or a span that has just started
    duration: float | None = None
    #: the exception a span ended with
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "agent": self.agent,
            "run_id": self.run_id,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "thread_id": self.thread_id,
            "at": self.at,
            "data": self.data,
            "duration": self.duration,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TraceEvent:
        return cls(
            kind=str(data["kind"]),
            agent=str(data.get("agent", "")),
            run_id=str(data.get("run_id", "")),
            span_id=str(data.get("span_id", "")),
            parent_id=data.get("parent_id"),
            thread_id=data.get("thread_id"),
            at=float(data.get("at", 0.0)),
            data=dict(data.get("data") or {}),
            duration=data.get("duration"),
            error=data.get("error"),
        )


class Sink(Protocol):
    """Where trace events go besides the run's own trace. Methods must not block."""

    def start(self, event: TraceEvent) -> None:
        """A span began (``duration`` is None)."""

    def end(self, event: TraceEvent) -> None:
        """The span ended: same ``span_id``, its data merged, ``duration`` set."""

    def emit(self, event: TraceEvent) -> None:
        """A point event."""


_sinks: tuple[Sink, ...] = ()
_sinks_lock = threading.Lock()
_failed_sinks: set[int] = set()


def add_sink(sink: Sink) -> None:
    """Send every trace event from now on to ``sink`` too (once, however often added)."""
    global _sinks
    with _sinks_lock:
        if all(s is not sink for s in _sinks):
            _sinks = (*_sinks, sink)


def remove_sink(sink: Sink) -> None:
    global _sinks
    with _sinks_lock:
        _sinks = tuple(s for s in _sinks if s is not sink)


def active_sinks() -> tuple[Sink, ...]:
    return _sinks


def _fan_out(method: str, event: TraceEvent) -> None:
    for sink in _sinks:
        try:
            getattr(sink, method)(event)
        except Exception as exc:  # a sink must never break a run
            if id(sink) not in _failed_sinks:
                _failed_sinks.add(id(sink))
                logger.warning("trace sink %r failed (%s: %s)", sink, type(exc).__name__, exc)


#: (recorder's run id, span id) of the span being recorded in this context
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "shoal_current_span", default=None
)


def current_span() -> str | None:
    """The id of the span being recorded in this context (None outside any)."""
    return _current.get()


def _new_id() -> str:
    return os.urandom(8).hex()


class Span:
    """A span being recorded; :meth:`update` adds data that the end event carries."""

    def __init__(self, event: TraceEvent) -> None:
        self.event = event
        self.data: dict[str, Any] = dict(event.data)

    @property
    def span_id(self) -> str:
        return self.event.span_id

    def update(self, **data: Any) -> None:
        self.data.update(data)


class RunRecorder:
    """The trace of one run (see the module docstring)."""

    def __init__(
        self, agent: str, *, thread_id: str | None = None, run_id: str | None = None
    ) -> None:
        self.agent = agent
        self.thread_id = thread_id
        self.run_id = run_id or "run_" + uuid.uuid4().hex[:24]
        #: point events and ended spans, in the order they were emitted or ended
        self.events: list[TraceEvent] = []

    def _make(self, kind: str, data: dict[str, Any]) -> TraceEvent:
        return TraceEvent(
            kind=kind,
            agent=self.agent,
            run_id=self.run_id,
            span_id=_new_id(),
            parent_id=_current.get(),
            thread_id=self.thread_id,
            at=time.time(),
            data=data,
        )

    def event(self, kind: str, /, **data: Any) -> TraceEvent:
        """Record a point event."""
        event = self._make(kind, data)
        self.events.append(event)
        _fan_out("emit", event)
        return event

    @contextmanager
    def span(self, kind: str, /, **data: Any) -> Iterator[Span]:
        """Record a span around the ``with`` block; an exception ends it with ``error`` set
        and goes on."""
        start = self._make(kind, data)
        span = Span(start)
        _fan_out("start", start)
        token = _current.set(start.span_id)
        began = time.perf_counter()
        error: str | None = None
        try:
            yield span
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            try:
                _current.reset(token)
            except ValueError:  # ended in another context (an async generator moved on)
                _current.set(start.parent_id)
            ended = replace(
                start, data=span.data, duration=time.perf_counter() - began, error=error
            )
            self.events.append(ended)
            _fan_out("end", ended)
