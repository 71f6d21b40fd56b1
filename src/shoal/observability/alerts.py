"""Threshold alerts on latency, error rate and memory, that log and can call a hook.

An :class:`AlertRule` watches one value:

- ``latency``: the mean duration in seconds of the last ``window`` ended spans of ``kind``
  (``run`` by default; ``model.request`` or ``tool.call`` work too). ``window=1`` alerts on a
  single slow run.
- ``error_rate``: the fraction (0..1) of the last ``window`` ended spans of ``kind`` that went
  wrong: they raised, or (a run) stopped for another reason than ``final``, ``tool_calls`` or
  ``approval``, or (a tool call) failed, timed out or was invalid. It is judged once
  ``min_samples`` spans ended (default: ``window`` or 5, whichever is smaller), so the first
  failure of the day does not read as 100 %.
- ``memory``: bytes: the sum of the ``shoal_loaded_model_memory_bytes`` gauge, judged each
  time a model's memory is reported (:func:`~shoal.observability.metrics.set_model_memory`),
  or a number passed to :meth:`AlertSink.check_memory`.

:class:`AlertSink` is a trace sink evaluating its rules as spans end. A rule *fires* when its
value goes above the threshold: an :class:`Alert` is logged as a warning on the
``shoal.alerts`` logger and passed to the hook. It does not fire again while the value stays
above; once the value is back at or below the threshold the rule has *recovered* (logged at
info level) and may fire again. Whatever the hook raises is logged, never raised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Literal

from shoal.exceptions import UserError
from shoal.observability.metrics import total_model_memory, watch_memory
from shoal.observability.recorder import TraceEvent

__all__ = ["OK_STOP_REASONS", "Alert", "AlertHook", "AlertMetric", "AlertRule", "AlertSink"]

logger = logging.getLogger("shoal.alerts")

AlertMetric = Literal["latency", "error_rate", "memory"]

#: run stop reasons that are not errors
OK_STOP_REASONS = frozenset({"final", "tool_calls", "approval"})
_FAILED_TOOL = frozenset({"failed", "timeout", "invalid"})


@dataclass(frozen=True)
class AlertRule:
    """Fire when ``metric`` goes above ``threshold`` (see the module docstring)."""

    name: str
    metric: AlertMetric
    threshold: float
    _: KW_ONLY
    #: how many of the latest spans the value is computed over (latency, error_rate)
    window: int = 20
    #: which spans are watched (latency, error_rate)
    kind: str = "run"
    #: only spans of this agent (None: every agent)
    agent: str | None = None
    #: error_rate: spans needed before it is judged (None: min(window, 5))
    min_samples: int | None = None

    def __post_init__(self) -> None:
        if self.metric not in ("latency", "error_rate", "memory"):
            raise UserError(
                f"alert {self.name!r}: metric must be latency, error_rate or memory, "
                f"not {self.metric!r}"
            )
        if self.threshold < 0:
            raise UserError(f"alert {self.name!r}: the threshold must not be negative")
        if self.metric == "error_rate" and self.threshold > 1:
            raise UserError(
                f"alert {self.name!r}: an error rate is a fraction from 0 to 1, "
                f"not {self.threshold}"
            )
        if self.window < 1:
            raise UserError(f"alert {self.name!r}: the window must be at least 1")
        if self.min_samples is not None and not 1 <= self.min_samples <= self.window:
            raise UserError(f"alert {self.name!r}: min_samples must be from 1 to the window")

    @property
    def needed(self) -> int:
        """Spans needed before the rule is judged."""
        if self.metric != "error_rate":
            return 1
        return self.min_samples if self.min_samples is not None else min(self.window, 5)


@dataclass(frozen=True)
class Alert:
    """A rule that fired."""

    rule: AlertRule
    value: float
    threshold: float
    #: when it fired, seconds since the epoch
    at: float
    message: str


AlertHook = Callable[[Alert], None]


@dataclass
class _State:
    samples: deque[float] = field(default_factory=deque)
    firing: bool = False


class AlertSink:
    """Evaluates ``rules`` as spans end; ``hook`` is called with each :class:`Alert`."""

    def __init__(self, rules: Sequence[AlertRule], hook: AlertHook | None = None) -> None:
        self.rules = tuple(rules)
        self.hook = hook
        self._states = {id(rule): _State(deque(maxlen=rule.window)) for rule in self.rules}
        self._lock = threading.Lock()
        if any(rule.metric == "memory" for rule in self.rules):
            watch_memory(self)

    def __repr__(self) -> str:
        return f"AlertSink({[r.name for r in self.rules]!r})"

    def firing(self) -> list[str]:
        """Names of the rules firing now."""
        with self._lock:
            return [r.name for r in self.rules if self._states[id(r)].firing]

    # -- the sink protocol ------------------------------------------------------------------

    def start(self, event: TraceEvent) -> None:
        """Nothing is judged when a span starts."""

    def emit(self, event: TraceEvent) -> None:
        """Point events are not judged."""

    def end(self, event: TraceEvent) -> None:
        for rule in self.rules:
            if rule.metric == "memory" or rule.kind != event.kind:
                continue
            if rule.agent is not None and rule.agent != event.agent:
                continue
            if rule.metric == "latency":
                sample = max(event.duration or 0.0, 0.0)
            else:
                sample = 1.0 if _went_wrong(event) else 0.0
            with self._lock:
                state = self._states[id(rule)]
                state.samples.append(sample)
                if len(state.samples) < rule.needed:
                    continue
                value = sum(state.samples) / len(state.samples)
            self._judge(rule, value)

    # -- memory -----------------------------------------------------------------------------

    def check_memory(self, memory_bytes: float | None = None) -> None:
        """Judge the memory rules on ``memory_bytes``, or else on the sum of the
        ``shoal_loaded_model_memory_bytes`` gauge."""
        value = float(memory_bytes) if memory_bytes is not None else total_model_memory()
        for rule in self.rules:
            if rule.metric == "memory":
                self._judge(rule, value)

    # -- firing -----------------------------------------------------------------------------

    def _judge(self, rule: AlertRule, value: float) -> None:
        with self._lock:
            state = self._states[id(rule)]
            above = value > rule.threshold
            fire = above and not state.firing
            recovered = state.firing and not above
            state.firing = above
        if recovered:
            logger.info(
                "alert %s recovered: %s %s is back at or below %s",
                rule.name,
                rule.metric,
                _show(rule, value),
                _show(rule, rule.threshold),
            )
        if not fire:
            return
        alert = Alert(rule, value, rule.threshold, time.time(), _message(rule, value))
        logger.warning("alert %s: %s", rule.name, alert.message)
        if self.hook is None:
            return
        try:
            self.hook(alert)
        except Exception:
            logger.exception("the alert hook failed for %s", rule.name)


def _went_wrong(event: TraceEvent) -> bool:
    if event.error:
        return True
    if event.kind == "run":
        return event.data.get("stop_reason") not in OK_STOP_REASONS
    if event.kind == "tool.call":
        return event.data.get("outcome") in _FAILED_TOOL
    return False


def _show(rule: AlertRule, value: float) -> str:
    if rule.metric == "latency":
        return f"{value:.2f} s"
    if rule.metric == "error_rate":
        return f"{value:.0%}"
    return f"{value / 2**20:.0f} MB"


def _message(rule: AlertRule, value: float) -> str:
    where = f" of {rule.agent}" if rule.agent else ""
    if rule.metric == "latency":
        what = f"mean duration of the last {rule.window} {rule.kind} spans{where}"
    elif rule.metric == "error_rate":
        what = f"error rate of the last {rule.window} {rule.kind} spans{where}"
    else:
        what = "model memory"
    return f"{what} is {_show(rule, value)}, above {_show(rule, rule.threshold)}"
