"""Threshold alerts: latency, error rate and memory, with hysteresis and a user hook."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import pytest

from shoal.exceptions import UserError
from shoal.observability.alerts import Alert, AlertRule, AlertSink
from shoal.observability.metrics import set_model_memory, total_model_memory
from shoal.observability.recorder import RunRecorder, TraceEvent, add_sink, remove_sink


def run_event(
    *, seconds: float = 0.1, stop: str = "final", error: str | None = None, agent: str = "a"
) -> TraceEvent:
    return TraceEvent(
        kind="run",
        agent=agent,
        run_id="run_1",
        span_id="0" * 16,
        parent_id=None,
        thread_id=None,
        at=time.time(),
        data={"stop_reason": stop},
        duration=seconds,
        error=error,
    )


@pytest.fixture
def fired() -> list[Alert]:
    return []


def test_latency_fires_once_and_again_only_after_recovering(fired: list[Alert]) -> None:
    sink = AlertSink([AlertRule("slow", "latency", 2.0, window=1)], fired.append)
    for seconds in (0.5, 3.0, 5.0, 4.0):  # crosses once, stays above
        sink.end(run_event(seconds=seconds))
    assert [a.value for a in fired] == [3.0]
    assert sink.firing() == ["slow"]
    sink.end(run_event(seconds=1.0))  # recovered
    assert sink.firing() == []
    sink.end(run_event(seconds=2.5))  # fires again
    assert [a.value for a in fired] == [3.0, 2.5]
    alert = fired[0]
    assert alert.rule.name == "slow"
    assert alert.threshold == 2.0
    assert alert.at == pytest.approx(time.time(), abs=5)
    assert "3.00 s, above 2.00 s" in alert.message


def test_latency_is_the_mean_of_the_window(fired: list[Alert]) -> None:
    sink = AlertSink([AlertRule("slow", "latency", 2.0, window=3)], fired.append)
    for seconds in (1.0, 1.0, 5.0):  # one slow run among three: the mean is 2.33
        sink.end(run_event(seconds=seconds))
    assert len(fired) == 1
    assert fired[0].value == pytest.approx(7 / 3)


def test_error_rate_counts_errors_and_bad_stop_reasons(fired: list[Alert]) -> None:
    sink = AlertSink([AlertRule("errors", "error_rate", 0.5, window=4)], fired.append)
    sink.end(run_event(stop="max_steps"))  # too few samples to judge yet
    sink.end(run_event(error="ModelCrashedError: gone"))
    sink.end(run_event(stop="tool_calls"))
    assert fired == []
    sink.end(run_event(stop="approval"))  # 2 of 4 went wrong: 0.5 is not above 0.5
    assert fired == []
    sink.end(run_event(stop="max_steps"))  # window: error, ok, ok, bad -> still 0.5
    assert fired == []
    sink.end(run_event(stop="max_steps"))  # ok, ok, bad, bad -> 0.5
    sink.end(run_event(stop="max_steps"))  # ok, bad, bad, bad -> 0.75
    assert [a.value for a in fired] == [0.75]
    assert "75%" in fired[0].message


def test_rules_watch_their_kind_and_agent(fired: list[Alert]) -> None:
    rule = AlertRule("tools", "error_rate", 0.0, window=1, kind="tool.call", agent="b")
    sink = AlertSink([rule], fired.append)
    sink.end(run_event(error="boom", agent="b"))  # a run, not a tool call
    failing = TraceEvent(
        "tool.call", "a", "r", "1" * 16, None, None, time.time(), {"outcome": "failed"}, 0.1
    )
    sink.end(failing)  # agent a
    assert fired == []
    sink.end(replace(failing, agent="b"))
    assert len(fired) == 1


def test_memory_fires_from_a_value_or_when_model_memory_is_reported(fired: list[Alert]) -> None:
    sink = AlertSink([AlertRule("memory", "memory", 1 * 2**30)], fired.append)
    sink.check_memory(512 * 2**20)
    sink.check_memory(2 * 2**30)
    sink.check_memory(3 * 2**30)
    assert [a.value for a in fired] == [2 * 2**30]
    assert "2048 MB, above 1024 MB" in fired[0].message
    sink.check_memory(0)  # recovered
    assert sink.firing() == []


def test_memory_is_judged_on_the_gauge_when_a_model_reports(fired: list[Alert]) -> None:
    # Models loaded by other tests in this process may still be in the gauge: judge against
    # what is there now.
    before = total_model_memory()
    sink = AlertSink([AlertRule("memory", "memory", before + 2**30)], fired.append)
    set_model_memory("alerts-test-model", 5 * 2**30)  # judged on the gauge's sum at once
    try:
        assert len(fired) == 1
        assert fired[0].value == before + 5 * 2**30
        assert sink.firing() == ["memory"]
    finally:
        set_model_memory("alerts-test-model", 0)
    assert sink.firing() == []  # recovered when the model was unloaded


def test_alerts_are_logged_and_a_raising_hook_is_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def hook(alert: Alert) -> None:
        raise RuntimeError("pager is down")

    sink = AlertSink([AlertRule("slow", "latency", 0.05, window=1)], hook)
    add_sink(sink)
    try:
        with caplog.at_level(logging.INFO, logger="shoal.alerts"):
            rec = RunRecorder("a")
            with rec.span("run", model="m", role=None, message="x") as run:
                run.update(stop_reason="final")
                time.sleep(0.1)  # a slow run
            with rec.span("run", model="m", role=None, message="x") as run:
                run.update(stop_reason="final")
    finally:
        remove_sink(sink)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "shoal.alerts"]
    assert messages[0][0] == "WARNING"
    assert messages[0][1].startswith("alert slow: mean duration of the last 1 run spans is 0.1")
    assert messages[1][0] == "ERROR"
    assert "the alert hook failed for slow" in messages[1][1]
    assert messages[2][0] == "INFO"
    assert "recovered" in messages[2][1]
    assert rec.events[-1].data["stop_reason"] == "final"  # the run went on


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("x", "latency", -1.0), {}, "must not be negative"),
        (("x", "error_rate", 5.0), {}, "fraction from 0 to 1"),
        (("x", "cpu", 1.0), {}, "metric must be latency, error_rate or memory"),
        (("x", "latency", 1.0), {"window": 0}, "at least 1"),
        (("x", "error_rate", 0.5), {"window": 3, "min_samples": 4}, "min_samples"),
    ],
)
def test_bad_rules_are_user_errors(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        AlertRule(*args, **kwargs)
