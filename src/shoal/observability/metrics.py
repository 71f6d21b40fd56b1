"""Library metrics: series any program using Shoal can scrape, server or not.

They live on :data:`LIBRARY_REGISTRY` (not the process-global default registry, so importing
Shoal never adds series to an application's own ``/metrics``); ``shoal serve`` exposes them next
to its own series. Expose them in your program with
``prometheus_client.generate_latest(LIBRARY_REGISTRY)``.

Most series are fed by :class:`MetricsSink`, a trace sink (``shoal.observability.config``
adds it), from the events every run records:

- ``shoal_routing_decisions_total{router, kind, model}``: each choice a wrapper model made
  (:class:`~shoal.models.base.RouteDecision`): a router's rule, classifier or default route, a
  fallback after an error, an escalation after a rejected answer, a balanced endpoint. Counted
  by the wrapper models themselves (:func:`record_decision`), sink or not.
- ``shoal_agent_runs_total{agent, stop_reason}``: ended runs (``stop_reason`` ``error`` when
  the run raised);
- ``shoal_agent_steps_total{agent}``: loop steps (model turns) of ended runs;
- ``shoal_agent_tool_calls_total{tool, outcome}``: tool calls (``ok``, ``invalid``, ``failed``,
  ``timeout``, ``repeated``, ``blocked``, ...);
- ``shoal_retries_total{agent}``: model outputs sent back for correction (``retry`` events);
- ``shoal_escalations_total{router, model}``: escalations to a stronger model (``route``
  events of kind ``escalation``);
- ``shoal_agent_tokens_total{agent, direction}``: tokens of model requests (``prompt`` or
  ``completion``);
- ``shoal_guard_verdicts_total{guard, stage, action}``: guard verdicts that were not "allow";
- histograms ``shoal_run_seconds{agent}``, ``shoal_model_request_seconds{model}``,
  ``shoal_tool_call_seconds{tool}``;
- gauge ``shoal_loaded_model_memory_bytes{model}``: memory a loaded model takes, as reported
  through :func:`set_model_memory` (0 once unloaded); memory alerts
  (:mod:`shoal.observability.alerts`) are judged on its sum at every report.

Names differ from the server's own series (``shoal_tool_calls_total``, ``shoal_tokens_total``,
``shoal_model_memory_bytes``) because ``/metrics`` shows both registries in one page.

Labels never carry ids (threads, runs, calls). Names that come from models (a tool name the
model made up) are capped: past :data:`MAX_LABEL_VALUES` distinct values of one label, new
values are reported as ``_other``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shoal.observability.recorder import TraceEvent

__all__ = [
    "LIBRARY_REGISTRY",
    "MAX_LABEL_VALUES",
    "MetricsSink",
    "agent_runs",
    "agent_steps",
    "agent_tokens",
    "escalations",
    "guard_verdicts",
    "model_memory",
    "model_request_seconds",
    "record_decision",
    "retries",
    "routing_decisions",
    "run_seconds",
    "set_model_memory",
    "tool_call_seconds",
    "tool_calls",
    "total_model_memory",
    "watch_memory",
]

LIBRARY_REGISTRY = CollectorRegistry()

#: distinct values one label of one series may take before new ones become ``_other``
MAX_LABEL_VALUES = 200
_OTHER = "_other"

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
_TOOL_SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)

routing_decisions = Counter(
    "shoal_routing_decisions",
    "Choices of wrapper models (router, fallback, escalation, balance) by router, kind and "
    "the model chosen",
    ["router", "kind", "model"],
    registry=LIBRARY_REGISTRY,
)
agent_runs = Counter(
    "shoal_agent_runs",
    "Ended agent runs by agent and stop reason (error: the run raised)",
    ["agent", "stop_reason"],
    registry=LIBRARY_REGISTRY,
)
agent_steps = Counter(
    "shoal_agent_steps",
    "Loop steps (model turns) of ended agent runs",
    ["agent"],
    registry=LIBRARY_REGISTRY,
)
tool_calls = Counter(
    "shoal_agent_tool_calls",
    "Tool calls made by agents, by tool and outcome",
    ["tool", "outcome"],
    registry=LIBRARY_REGISTRY,
)
retries = Counter(
    "shoal_retries",
    "Model outputs that could not be used and were sent back for correction",
    ["agent"],
    registry=LIBRARY_REGISTRY,
)
escalations = Counter(
    "shoal_escalations",
    "Escalations to the next tier after a rejected answer, by router and the model escalated to",
    ["router", "model"],
    registry=LIBRARY_REGISTRY,
)
agent_tokens = Counter(
    "shoal_agent_tokens",
    "Tokens of agents' model requests by direction (prompt, completion)",
    ["agent", "direction"],
    registry=LIBRARY_REGISTRY,
)
guard_verdicts = Counter(
    "shoal_guard_verdicts",
    "Guard verdicts other than allow, by guard, stage and action",
    ["guard", "stage", "action"],
    registry=LIBRARY_REGISTRY,
)
run_seconds = Histogram(
    "shoal_run_seconds",
    "Duration of agent runs",
    ["agent"],
    buckets=_SECONDS,
    registry=LIBRARY_REGISTRY,
)
model_request_seconds = Histogram(
    "shoal_model_request_seconds",
    "Duration of agents' model requests",
    ["model"],
    buckets=_SECONDS,
    registry=LIBRARY_REGISTRY,
)
tool_call_seconds = Histogram(
    "shoal_tool_call_seconds",
    "Duration of tool calls",
    ["tool"],
    buckets=_TOOL_SECONDS,
    registry=LIBRARY_REGISTRY,
)
model_memory = Gauge(
    "shoal_loaded_model_memory_bytes",
    "Memory a loaded model takes (measured, else estimated); 0 once unloaded",
    ["model"],
    registry=LIBRARY_REGISTRY,
)


def record_decision(*, router: str, kind: str, model: str) -> None:
    """Count one routing decision."""
    routing_decisions.labels(router, kind, model).inc()


class MemoryWatcher(Protocol):
    def check_memory(self, memory_bytes: float | None = None) -> None: ...


_watchers: weakref.WeakSet[Any] = weakref.WeakSet()
_log = logging.getLogger("shoal.observability")


def watch_memory(watcher: MemoryWatcher) -> None:
    """Call ``watcher.check_memory()`` after every :func:`set_model_memory` (held weakly)."""
    _watchers.add(watcher)


def set_model_memory(model: str, memory_bytes: int | float | None) -> None:
    """Report the memory ``model`` takes now (None or 0: unloaded); memory alerts are judged."""
    model_memory.labels(_bounded("model", model)).set(float(memory_bytes or 0))
    for watcher in list(_watchers):
        try:
            watcher.check_memory()
        except Exception:
            _log.exception("checking memory alerts failed")


def total_model_memory() -> float:
    """The sum of ``shoal_loaded_model_memory_bytes`` over every model."""
    return sum(
        sample.value
        for metric in model_memory.collect()
        for sample in metric.samples
        if sample.name == "shoal_loaded_model_memory_bytes"
    )


_seen: dict[str, set[str]] = {}
_seen_lock = threading.Lock()


def _bounded(label: str, value: Any) -> str:
    """``value`` as a label value, or ``_other`` once ``label`` has too many distinct ones."""
    text = "" if value is None else str(value)
    with _seen_lock:
        seen = _seen.setdefault(label, set())
        if text in seen:
            return text
        if len(seen) >= MAX_LABEL_VALUES:
            return _OTHER
        seen.add(text)
        return text


def _count(value: Any) -> int:
    """A non-negative int from event data (anything else counts as 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return max(int(value), 0)


class MetricsSink:
    """Updates the library series from trace events (see the module docstring)."""

    def __repr__(self) -> str:
        return "MetricsSink()"

    def start(self, event: TraceEvent) -> None:
        """Nothing is counted when a span starts."""

    def end(self, event: TraceEvent) -> None:
        d = event.data
        seconds = max(event.duration or 0.0, 0.0)
        if event.kind == "run":
            agent = _bounded("agent", event.agent)
            stop = "error" if event.error else (d.get("stop_reason") or "unknown")
            agent_runs.labels(agent, _bounded("stop_reason", stop)).inc()
            agent_steps.labels(agent).inc(_count(d.get("steps")))
            run_seconds.labels(agent).observe(seconds)
        elif event.kind == "model.request":
            agent = _bounded("agent", event.agent)
            agent_tokens.labels(agent, "prompt").inc(_count(d.get("prompt_tokens")))
            agent_tokens.labels(agent, "completion").inc(_count(d.get("completion_tokens")))
            model_request_seconds.labels(_bounded("model", d.get("model"))).observe(seconds)
        elif event.kind == "tool.call":
            tool = _bounded("tool", d.get("tool"))
            outcome = d.get("outcome") or ("failed" if event.error else "ok")
            tool_calls.labels(tool, _bounded("outcome", outcome)).inc()
            tool_call_seconds.labels(tool).observe(seconds)

    def emit(self, event: TraceEvent) -> None:
        d = event.data
        if event.kind == "retry":
            retries.labels(_bounded("agent", event.agent)).inc()
        elif event.kind == "route" and d.get("kind") == "escalation":
            escalations.labels(
                _bounded("router", d.get("router")), _bounded("model", d.get("model"))
            ).inc()
        elif event.kind == "guard" and d.get("action", "allow") != "allow":
            guard_verdicts.labels(
                _bounded("guard", d.get("guard")),
                _bounded("stage", d.get("stage")),
                _bounded("action", d.get("action")),
            ).inc()
