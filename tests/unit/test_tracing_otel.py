"""OpenTelemetry spans from trace events: GenAI attributes, parent links, the JSON, console and
OTLP/HTTP exporters (the last against a small HTTP server on 127.0.0.1)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shoal.exceptions import UserError
from shoal.observability import config
from shoal.observability.otel import OtelSink, enable_tracing
from shoal.observability.recorder import RunRecorder, Sink, remove_sink


@pytest.fixture
def registered() -> Iterator[list[Sink]]:
    """Sinks a test adds; removed (and shut down) afterwards."""
    sinks: list[Sink] = []
    yield sinks
    for sink in sinks:
        remove_sink(sink)
        if isinstance(sink, OtelSink):
            sink.shutdown()


def _agent_run(thread_id: str | None = "thread_9") -> RunRecorder:
    rec = RunRecorder("support", thread_id=thread_id)
    with rec.span("run", model="smollm2-135m", role=None, message="order 7?") as run:
        with rec.span(
            "model.request", model="smollm2-135m", step=1, tool_choice="auto", tools=["lookup"]
        ) as req:
            req.update(prompt_tokens=120, completion_tokens=9, finish_reason="tool_calls", text="…")
        rec.event("guard", guard="PII", stage="tool_call", action="redact", reason="card")
        with rec.span(
            "tool.call", tool="lookup", call_id="call_1", arguments={"order_id": "7"}
        ) as call:
            call.update(outcome="ok", result="shipped", error=None)
        with rec.span("tool.call", tool="refund", call_id="call_2", arguments={}) as call:
            call.update(outcome="failed", result=None, error="ToolExecutionError: no money")
        run.update(stop_reason="final", steps=2, prompt_tokens=250, completion_tokens=19)
    return rec


def _spans(path: Path) -> dict[str, dict[str, Any]]:
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    return {span["name"]: span for span in spans}


@pytest.fixture
def json_spans(tmp_path: Path, registered: list[Sink]) -> dict[str, dict[str, Any]]:
    path = tmp_path / "traces" / "spans.jsonl"
    sink = enable_tracing("json", path=path)
    registered.append(sink)
    _agent_run()
    assert sink.force_flush()
    return _spans(path)


def test_spans_follow_the_genai_conventions(json_spans: dict[str, dict[str, Any]]) -> None:
    assert set(json_spans) == {
        "invoke_agent support",
        "chat smollm2-135m",
        "execute_tool lookup",
        "execute_tool refund",
    }
    run = json_spans["invoke_agent support"]
    assert run["kind"] == "SpanKind.INTERNAL"
    assert (
        run["attributes"]
        | {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support",
            "gen_ai.provider.name": "shoal",
            "gen_ai.request.model": "smollm2-135m",
            "gen_ai.conversation.id": "thread_9",
            "gen_ai.usage.input_tokens": 250,
            "gen_ai.usage.output_tokens": 19,
            "shoal.stop_reason": "final",
        }
        == run["attributes"]
    )
    chat = json_spans["chat smollm2-135m"]
    assert chat["kind"] == "SpanKind.CLIENT"
    assert chat["attributes"]["gen_ai.operation.name"] == "chat"
    assert chat["attributes"]["gen_ai.request.model"] == "smollm2-135m"
    assert chat["attributes"]["gen_ai.usage.input_tokens"] == 120
    assert chat["attributes"]["gen_ai.usage.output_tokens"] == 9
    assert chat["attributes"]["gen_ai.response.finish_reasons"] == ["tool_calls"]
    tool = json_spans["execute_tool lookup"]
    assert tool["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert tool["attributes"]["gen_ai.tool.name"] == "lookup"
    assert tool["attributes"]["gen_ai.tool.call.id"] == "call_1"
    assert tool["attributes"]["gen_ai.tool.type"] == "function"
    # content is opt-in
    assert "gen_ai.tool.call.arguments" not in tool["attributes"]
    assert "shoal.message" not in run["attributes"]
    assert "shoal.text" not in chat["attributes"]
    assert tool["status"]["status_code"] == "UNSET"


def test_spans_keep_their_parents_and_point_events(
    json_spans: dict[str, dict[str, Any]],
) -> None:
    run = json_spans["invoke_agent support"]
    assert run["parent_id"] is None
    trace_id = run["context"]["trace_id"]
    for name in ("chat smollm2-135m", "execute_tool lookup", "execute_tool refund"):
        assert json_spans[name]["parent_id"] == run["context"]["span_id"]
        assert json_spans[name]["context"]["trace_id"] == trace_id
    (guard,) = run["events"]
    assert guard["name"] == "guard"
    assert guard["attributes"]["shoal.guard"] == "PII"
    assert guard["attributes"]["shoal.action"] == "redact"


def test_failures_have_status_error(json_spans: dict[str, dict[str, Any]]) -> None:
    refund = json_spans["execute_tool refund"]
    assert refund["status"]["status_code"] == "ERROR"
    assert refund["attributes"]["error.type"] == "failed"


def test_a_span_that_raised_is_an_error_span(tmp_path: Path, registered: list[Sink]) -> None:
    path = tmp_path / "spans.jsonl"
    sink = enable_tracing("json", path=path)
    registered.append(sink)
    rec = RunRecorder("support")
    with pytest.raises(RuntimeError, match="boom"), rec.span("run", model="m", message="x"):
        raise RuntimeError("boom")
    run = _spans(path)["invoke_agent support"]
    assert run["status"]["status_code"] == "ERROR"
    assert run["status"]["description"] == "RuntimeError: boom"
    assert run["attributes"]["error.type"] == "RuntimeError"


def test_nested_runs_share_one_trace(tmp_path: Path, registered: list[Sink]) -> None:
    path = tmp_path / "spans.jsonl"
    sink = enable_tracing("json", path=path, capture_content=True)
    registered.append(sink)
    outer = RunRecorder("desk")
    with outer.span("system", system="desk", entry="triage", message="x"):
        outer.event("handoff", source="triage", target="support", reason="orders")
        _agent_run(thread_id=None)
    outer.event("note", text="after the system span")  # no open parent: a zero-length span
    spans = _spans(path)
    system = spans["system desk"]
    assert spans["invoke_agent support"]["parent_id"] == system["context"]["span_id"]
    assert spans["chat smollm2-135m"]["context"]["trace_id"] == system["context"]["trace_id"]
    assert [e["name"] for e in system["events"]] == ["handoff"]
    note = spans["note"]
    assert note["start_time"] == note["end_time"]
    assert note["attributes"]["shoal.text"] == "after the system span"
    tool = spans["execute_tool lookup"]
    assert json.loads(tool["attributes"]["gen_ai.tool.call.arguments"]) == {"order_id": "7"}
    assert tool["attributes"]["gen_ai.tool.call.result"] == "shipped"


def test_the_console_exporter_prints_to_stderr(
    registered: list[Sink], capsys: pytest.CaptureFixture[str]
) -> None:
    sink = enable_tracing("console")
    registered.append(sink)
    _agent_run()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert '"name": "invoke_agent support"' in captured.err
    assert '"gen_ai.operation.name": "execute_tool"' in captured.err


# -- OTLP/HTTP ------------------------------------------------------------------------------


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
    thread.join()


def _span_names(body: bytes) -> list[str]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest.FromString(body)
    return [
        span.name
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


def test_otlp_posts_protobuf_to_the_endpoint(
    collector: tuple[str, list[tuple[str, str, bytes]]], registered: list[Sink]
) -> None:
    url, received = collector
    sink = enable_tracing("otlp", endpoint=url)
    registered.append(sink)
    _agent_run()
    assert sink.force_flush(10_000)
    assert received
    path, content_type, _body = received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    names = [name for _, _, body in received for name in _span_names(body)]
    assert sorted(names) == sorted(
        ["invoke_agent support", "chat smollm2-135m", "execute_tool lookup", "execute_tool refund"]
    )


def test_configure_from_env_traces_to_the_otlp_endpoint(
    collector: tuple[str, list[tuple[str, str, bytes]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    url, received = collector
    monkeypatch.setenv("SHOAL_TRACING", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    monkeypatch.setenv("SHOAL_AUDIT_LOG", "off")
    setup = config.configure_from_env()
    try:
        assert setup.tracing is not None
        assert setup.audit is None
        assert setup.metrics is not None
        _agent_run()
        assert isinstance(setup.tracing, OtelSink)
        assert setup.tracing.force_flush(10_000)
    finally:
        config.configure(metrics=False)
    assert [path for path, _, _ in received] == ["/v1/traces"] * len(received)
    assert "invoke_agent support" in [n for _, _, body in received for n in _span_names(body)]


def test_configure_replaces_the_sinks_it_added_before(tmp_path: Path) -> None:
    first = config.configure(tracing=f"json:{tmp_path / 'a.jsonl'}")
    second = config.configure(tracing=f"json:{tmp_path / 'b.jsonl'}", metrics=False)
    try:
        from shoal.observability.recorder import active_sinks

        sinks = active_sinks()
        assert second.tracing in sinks
        assert first.tracing not in sinks
        assert first.metrics not in sinks
        _agent_run()
    finally:
        config.configure(metrics=False)
    assert second.tracing not in active_sinks()
    assert not (tmp_path / "a.jsonl").exists()
    assert "invoke_agent support" in _spans(tmp_path / "b.jsonl")


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("console", ("console", None)),
        ("json", ("json", None)),
        ("json:/tmp/x.jsonl", ("json", "/tmp/x.jsonl")),
        ("OTLP", ("otlp", None)),
        ("off", None),
        ("", None),
    ],
)
def test_tracing_settings(value: str, parsed: tuple[str, str | None] | None) -> None:
    assert config.parse_tracing(value) == parsed


def test_a_bad_tracing_setting_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_TRACING", "zipkin")
    with pytest.raises(UserError, match="SHOAL_TRACING='zipkin' is not a tracing setting"):
        config.configure_from_env()


# -- without the SDK ------------------------------------------------------------------------


def test_without_the_sdk_tracing_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # import fails
    with pytest.raises(UserError, match=r"pip install 'shoal\[otel\]'"):
        enable_tracing("console")
    with pytest.raises(UserError, match=r"pip install 'shoal\[otel\]'"):
        OtelSink()


def test_importing_shoal_observability_loads_no_opentelemetry() -> None:
    code = (
        "import sys, shoal, shoal.observability.config, shoal.observability.otel, "
        "shoal.observability.audit, shoal.cli.audit\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
