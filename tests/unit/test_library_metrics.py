"""Library metrics fed by :class:`MetricsSink` from the trace events of runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shoal.observability import metrics
from shoal.observability.metrics import LIBRARY_REGISTRY, MetricsSink, set_model_memory
from shoal.observability.recorder import RunRecorder, add_sink, remove_sink


def value(name: str, **labels: str) -> float:
    return LIBRARY_REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def sink() -> Iterator[MetricsSink]:
    sink = MetricsSink()
    add_sink(sink)
    yield sink
    remove_sink(sink)


@pytest.fixture
def agent() -> str:
    """An agent name no other test uses, so counts start at zero."""
    return f"agent-{uuid.uuid4().hex[:8]}"


def _run(agent: str, *, stop: str = "final", tool: str = "lookup", outcome: str = "ok") -> None:
    rec = RunRecorder(agent, thread_id="thread_x")
    with rec.span("run", model="m1", role=None, message="hi") as run:
        with rec.span("model.request", model=f"{agent}-model", step=1, tools=[tool]) as req:
            req.update(prompt_tokens=100, completion_tokens=7, finish_reason="tool_calls")
        rec.event("retry", why="bad json")
        with rec.span("tool.call", tool=tool, call_id="c1", arguments={}) as call:
            call.update(outcome=outcome, result="r", error=None)
        with rec.span("model.request", model=f"{agent}-model", step=2, tools=[tool]) as req:
            req.update(prompt_tokens=150, completion_tokens=12, finish_reason="stop")
        run.update(stop_reason=stop, steps=2, prompt_tokens=250, completion_tokens=19)


def test_runs_steps_tokens_and_latency_are_counted(sink: MetricsSink, agent: str) -> None:
    _run(agent)
    _run(agent, stop="max_steps")
    assert value("shoal_agent_runs_total", agent=agent, stop_reason="final") == 1
    assert value("shoal_agent_runs_total", agent=agent, stop_reason="max_steps") == 1
    assert value("shoal_agent_steps_total", agent=agent) == 4
    assert value("shoal_agent_tokens_total", agent=agent, direction="prompt") == 500
    assert value("shoal_agent_tokens_total", agent=agent, direction="completion") == 38
    assert value("shoal_retries_total", agent=agent) == 2
    assert value("shoal_run_seconds_count", agent=agent) == 2
    assert value("shoal_run_seconds_sum", agent=agent) > 0
    assert value("shoal_model_request_seconds_count", model=f"{agent}-model") == 4


def test_tool_calls_are_counted_by_tool_and_outcome(sink: MetricsSink, agent: str) -> None:
    tool = f"tool-{agent}"
    _run(agent, tool=tool)
    _run(agent, tool=tool, outcome="timeout")
    _run(agent, tool=tool, outcome="timeout")
    assert value("shoal_agent_tool_calls_total", tool=tool, outcome="ok") == 1
    assert value("shoal_agent_tool_calls_total", tool=tool, outcome="timeout") == 2
    assert value("shoal_tool_call_seconds_count", tool=tool) == 3


def test_a_run_that_raised_counts_as_error(sink: MetricsSink, agent: str) -> None:
    rec = RunRecorder(agent)
    with (
        pytest.raises(ValueError, match="boom"),
        rec.span("run", model="m", role=None, message="x"),
    ):
        raise ValueError("boom")
    assert value("shoal_agent_runs_total", agent=agent, stop_reason="error") == 1


def test_escalations_and_guard_verdicts_are_counted(sink: MetricsSink, agent: str) -> None:
    rec = RunRecorder(agent)
    router = f"esc-{agent}"
    rec.event("route", router=router, kind="escalation", model="big", reason="rejected")
    rec.event("route", router=router, kind="rule", model="small", reason="short")
    rec.event("guard", guard=f"pii-{agent}", stage="output", action="redact", reason="card")
    rec.event("guard", guard=f"pii-{agent}", stage="output", action="redact", reason="card")
    rec.event("guard", guard=f"pii-{agent}", stage="input", action="allow", reason="")
    assert value("shoal_escalations_total", router=router, model="big") == 1
    assert value("shoal_escalations_total", router=router, model="small") == 0
    guard = {"guard": f"pii-{agent}"}
    assert value("shoal_guard_verdicts_total", **guard, stage="output", action="redact") == 2
    assert value("shoal_guard_verdicts_total", **guard, stage="input", action="allow") == 0


def test_model_memory_is_a_gauge_others_set(agent: str) -> None:
    set_model_memory(agent, 512 * 2**20)
    assert value("shoal_loaded_model_memory_bytes", model=agent) == 512 * 2**20
    set_model_memory(agent, None)  # unloaded
    assert value("shoal_loaded_model_memory_bytes", model=agent) == 0


def test_label_values_from_models_are_capped(
    sink: MetricsSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model inventing tool names cannot grow the series without bound."""
    monkeypatch.setattr(metrics, "_seen", {"tool": {f"t{i}" for i in range(3)}})
    monkeypatch.setattr(metrics, "MAX_LABEL_VALUES", 3)
    rec = RunRecorder("capped")
    for i in range(5):
        with rec.span("tool.call", tool=f"invented-{i}", call_id=str(i), arguments={}) as call:
            call.update(outcome="invalid")
    assert value("shoal_agent_tool_calls_total", tool="_other", outcome="invalid") >= 5
    assert value("shoal_agent_tool_calls_total", tool="invented-0", outcome="invalid") == 0


def test_no_label_carries_an_id(sink: MetricsSink, agent: str) -> None:
    _run(agent)
    families = text_string_to_metric_families(generate_latest(LIBRARY_REGISTRY).decode())
    labels = {name for f in families for s in f.samples for name in s.labels}
    assert labels <= {
        "agent", "stop_reason", "tool", "outcome", "router", "model", "kind",
        "direction", "guard", "stage", "action", "le",
    }  # fmt: skip


def test_library_names_do_not_clash_with_the_servers() -> None:
    """``/metrics`` renders the server's registry and the library's in one page."""
    from shoal.server.metrics import ServerMetrics

    server = {m.name for m in ServerMetrics().registry.collect()}
    library = {m.name for m in LIBRARY_REGISTRY.collect()}
    assert not server & library
