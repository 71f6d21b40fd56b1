"""OpenTelemetry traces of agent runs, model requests and tool calls (optional).

The only module of Shoal that imports ``opentelemetry`` (``pip install 'shoal[otel]'``), and
only when tracing is turned on: :class:`OtelSink` and :func:`enable_tracing` import it, and
without the packages they raise :class:`~shoal.exceptions.UserError` with the install command.

:class:`OtelSink` is a trace sink: each span a run records (see
:mod:`shoal.observability.recorder`) becomes an OpenTelemetry span with the same parent, the
same start time and duration, named and attributed after the OpenTelemetry GenAI semantic
conventions (development status; the attributes of the latest conventions are used):

=================  ===========================  ================================================
Shoal span         OpenTelemetry span (kind)    attributes
=================  ===========================  ================================================
``run``            ``invoke_agent {agent}``     ``gen_ai.operation.name=invoke_agent``,
                   (INTERNAL)                   ``gen_ai.agent.name``, ``gen_ai.request.model``,
                                                ``gen_ai.conversation.id`` (the thread),
                                                ``gen_ai.usage.input_tokens`` /
                                                ``output_tokens`` (the run's sums)
``model.request``  ``chat {model}`` (CLIENT)    ``gen_ai.operation.name=chat``,
                                                ``gen_ai.request.model``,
                                                ``gen_ai.usage.input_tokens``,
                                                ``gen_ai.usage.output_tokens``,
                                                ``gen_ai.response.finish_reasons``
``tool.call``      ``execute_tool {tool}``      ``gen_ai.operation.name=execute_tool``,
                   (INTERNAL)                   ``gen_ai.tool.name``, ``gen_ai.tool.call.id``,
                                                ``gen_ai.tool.type=function``
other spans        ``{kind} {name}``            ``shoal.*``
=================  ===========================  ================================================

Every span carries ``gen_ai.provider.name=shoal`` and ``shoal.run_id``, ``shoal.kind``; the other
data of the event as ``shoal.<key>`` (plain values only). Content (messages, answers, tool
arguments and results) is opt-in, as in the conventions: ``OtelSink(capture_content=True)``
adds ``gen_ai.tool.call.arguments``, ``gen_ai.tool.call.result`` and ``shoal.message``,
``shoal.text``, ``shoal.output``. A span that ended with an
exception (and a tool call that failed, timed out or was invalid) has status ERROR and
``error.type``. Point events (a guard verdict, a route, an approval) become span events on
their enclosing span, or zero-length spans when that span is not open.

:func:`enable_tracing` builds a tracer provider of Shoal's own (the application's global one is
left alone) exporting to the console (stderr), to a JSON Lines file (one span per line, for
offline use) or to an OTLP/HTTP endpoint, and registers the sink.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shoal.exceptions import UserError
from shoal.observability.recorder import TraceEvent, add_sink
from shoal.settings import data_dir

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.trace import TracerProvider as ApiTracerProvider

__all__ = ["PROVIDER_NAME", "Exporter", "OtelSink", "default_trace_path", "enable_tracing"]

Exporter = Literal["console", "json", "otlp"]

#: ``gen_ai.provider.name`` of every span
PROVIDER_NAME = "shoal"
_INSTALL = "pip install 'shoal[otel]'"
#: spans kept open at most (older ones are dropped if their end never comes)
_MAX_OPEN = 10_000
_FAILED_TOOL = frozenset({"failed", "timeout", "invalid"})
#: data keys holding content (what a user or model wrote): left out unless captured
_CONTENT_KEYS = ("message", "text", "output", "feedback", "arguments", "result")
#: data keys that name a span of another kind: ``{kind} {name}``
_NAME_KEYS = ("system", "pipeline", "name", "chain", "loop", "router", "agent")


def _require_otel() -> None:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"tracing needs the OpenTelemetry SDK, which is not installed: {_INSTALL}"
        ) from exc


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _value(value: Any) -> Any:
    """An attribute value: str/bool/int/float, a list of one of them, else JSON; None: skip."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and value:
        kinds = {type(v) for v in value}
        if len(kinds) == 1 and kinds <= {str, bool, int, float}:
            return list(value)
    try:
        return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


def _shoal_attributes(data: Mapping[str, Any], skip: Sequence[str] = ()) -> dict[str, Any]:
    """Plain values of ``data`` as ``shoal.<key>`` (nested data left out)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in skip or value is None:
            continue
        if isinstance(value, (str, bool, int, float)):
            out[f"shoal.{key}"] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            out[f"shoal.{key}"] = list(value)
    return out


class OtelSink:
    """Sends trace events to OpenTelemetry (see the module docstring).

    ``tracer_provider``: where spans go; None uses the application's global provider.
    ``capture_content``: add tool arguments and results to the spans.
    """

    def __init__(
        self,
        tracer_provider: ApiTracerProvider | None = None,
        *,
        capture_content: bool = False,
    ) -> None:
        _require_otel()
        from opentelemetry import trace

        self._trace = trace
        self.provider = tracer_provider
        self.tracer: Tracer = trace.get_tracer("shoal", tracer_provider=tracer_provider)
        self.capture_content = capture_content
        self._open: OrderedDict[str, Span] = OrderedDict()
        self._lock = threading.Lock()
        #: whether :meth:`shutdown` stops the provider (one :func:`enable_tracing` built)
        self.owns_provider = False

    def __repr__(self) -> str:
        return f"OtelSink({self.provider!r})"

    # -- the sink protocol ------------------------------------------------------------------

    def start(self, event: TraceEvent) -> None:
        span = self._start_span(event)
        with self._lock:
            self._open[event.span_id] = span
            while len(self._open) > _MAX_OPEN:
                self._open.popitem(last=False)

    def end(self, event: TraceEvent) -> None:
        with self._lock:
            span = self._open.pop(event.span_id, None)
        if span is None:  # the sink was added while the span ran
            span = self._start_span(event)
        span.set_attributes(self._end_attributes(event))
        self._set_status(span, event)
        span.end(end_time=_ns(event.at + (event.duration or 0.0)))

    def emit(self, event: TraceEvent) -> None:
        attributes = {"shoal.agent": event.agent, **self._attributes(event.data)}
        with self._lock:
            parent = self._open.get(event.parent_id or "")
        if parent is not None and parent.is_recording():
            parent.add_event(event.kind, attributes=attributes, timestamp=_ns(event.at))
            return
        span = self._start_span(event)
        span.end(end_time=_ns(event.at))

    # -- flushing ---------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export the spans that ended so far (a provider without ``force_flush``: True)."""
        flush = getattr(self.provider, "force_flush", None)
        return bool(flush(timeout_millis)) if callable(flush) else True

    def shutdown(self) -> None:
        """Flush and stop the provider (only one :func:`enable_tracing` made)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if callable(shutdown) and self.owns_provider:
            shutdown()

    # -- mapping ----------------------------------------------------------------------------

    def _attributes(self, data: Mapping[str, Any], skip: Sequence[str] = ()) -> dict[str, Any]:
        """``shoal.<key>`` attributes; content (messages, answers) only if captured."""
        if not self.capture_content:
            skip = (*skip, *_CONTENT_KEYS)
        return _shoal_attributes(data, skip)

    def _start_span(self, event: TraceEvent) -> Span:
        trace = self._trace
        name, kind, attributes = self._describe(event)
        with self._lock:
            parent = self._open.get(event.parent_id or "")
        context = trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(
            name,
            context=context,
            kind=kind,
            attributes=attributes,
            start_time=_ns(event.at),
        )

    def _describe(self, event: TraceEvent) -> tuple[str, Any, dict[str, Any]]:
        """The span's name, kind and start attributes."""
        SpanKind = self._trace.SpanKind
        d = event.data
        base: dict[str, Any] = {
            "gen_ai.provider.name": PROVIDER_NAME,
            "shoal.kind": event.kind,
            "shoal.run_id": event.run_id,
        }
        if event.thread_id:
            base["gen_ai.conversation.id"] = event.thread_id
        if event.kind == "run":
            attributes = {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": event.agent,
                **self._attributes(d, skip=("model",)),
            }
            if isinstance(d.get("model"), str):
                attributes["gen_ai.request.model"] = d["model"]
            return f"invoke_agent {event.agent}", SpanKind.INTERNAL, base | attributes
        if event.kind == "model.request":
            model = str(d.get("model") or "")
            attributes = {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model,
                "shoal.agent": event.agent,
                **self._attributes(d, skip=("model",)),
            }
            return f"chat {model}".strip(), SpanKind.CLIENT, base | attributes
        if event.kind == "tool.call":
            tool = str(d.get("tool") or "")
            attributes = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool,
                "gen_ai.tool.type": "function",
                "shoal.agent": event.agent,
            }
            if d.get("call_id"):
                attributes["gen_ai.tool.call.id"] = str(d["call_id"])
            if self.capture_content and "arguments" in d:
                attributes["gen_ai.tool.call.arguments"] = _value(d["arguments"])
            return f"execute_tool {tool}".strip(), SpanKind.INTERNAL, base | attributes
        label = next((str(d[k]) for k in _NAME_KEYS if isinstance(d.get(k), str)), "")
        attributes = {"shoal.agent": event.agent, **self._attributes(d)}
        return f"{event.kind} {label}".strip(), SpanKind.INTERNAL, base | attributes

    def _end_attributes(self, event: TraceEvent) -> dict[str, Any]:
        d = event.data
        out: dict[str, Any] = {}
        if event.kind in ("run", "model.request"):
            if isinstance(d.get("prompt_tokens"), int):
                out["gen_ai.usage.input_tokens"] = d["prompt_tokens"]
            if isinstance(d.get("completion_tokens"), int):
                out["gen_ai.usage.output_tokens"] = d["completion_tokens"]
            out |= self._attributes(d, skip=("model", "prompt_tokens", "completion_tokens"))
        if event.kind == "model.request" and d.get("finish_reason"):
            out["gen_ai.response.finish_reasons"] = [str(d["finish_reason"])]
        elif event.kind == "tool.call":
            out |= self._attributes(d, skip=("arguments", "result", "error", "tool"))
            if self.capture_content and d.get("result") is not None:
                out["gen_ai.tool.call.result"] = _value(d["result"])
        elif event.kind != "run":
            out |= self._attributes(d)
        return {k: v for k, v in out.items() if v is not None}

    def _set_status(self, span: Span, event: TraceEvent) -> None:
        from opentelemetry.trace import Status, StatusCode

        outcome = event.data.get("outcome") if event.kind == "tool.call" else None
        if event.error:
            span.set_attribute("error.type", event.error.split(":", 1)[0].strip() or "_OTHER")
            span.set_status(Status(StatusCode.ERROR, event.error))
        elif outcome in _FAILED_TOOL:
            span.set_attribute("error.type", str(outcome))
            description = str(event.data.get("error") or outcome)
            span.set_status(Status(StatusCode.ERROR, description))


# -- exporters ------------------------------------------------------------------------------


def _json_exporter(path: Path) -> SpanExporter:
    """A span exporter that appends each span as one line of JSON to ``path``."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class JsonLinesSpanExporter(SpanExporter):
        def __init__(self, target: Path) -> None:
            self.path = target
            self._lock = threading.Lock()

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
            try:
                with self._lock:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    with open(self.path, "a", encoding="utf-8") as handle:
                        handle.write(lines)
            except OSError:
                return SpanExportResult.FAILURE
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

    return JsonLinesSpanExporter(path)


def _otlp_endpoint(endpoint: str | None) -> str | None:
    """``endpoint`` as the traces URL: a base URL (like ``OTEL_EXPORTER_OTLP_ENDPOINT``) gets
    ``/v1/traces``; None leaves it to the exporter's environment variables."""
    if not endpoint:
        return None
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def default_trace_path() -> Path:
    """Where the ``json`` exporter writes without a path: ``<data dir>/traces.jsonl``."""
    return data_dir() / "traces.jsonl"


def enable_tracing(
    exporter: Exporter = "console",
    *,
    endpoint: str | None = None,
    path: str | os.PathLike[str] | None = None,
    capture_content: bool = False,
    register: bool = True,
) -> OtelSink:
    """Trace every run from now on to ``exporter``; returns the sink (``register=False``: not
    added yet, pass it to :func:`~shoal.observability.recorder.add_sink` yourself).

    - ``console``: each span printed to stderr as it ends;
    - ``json``: each span appended as one line of JSON to ``path`` (default
      :func:`default_trace_path`) as it ends;
    - ``otlp``: batches sent by OTLP/HTTP (protobuf) to ``endpoint`` (a base URL such as
      ``http://localhost:4318``), else to ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
      ``OTEL_EXPORTER_OTLP_ENDPOINT``, else ``http://localhost:4318``.
    """
    _require_otel()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "shoal"}
    provider: TracerProvider = TracerProvider(resource=Resource.create(attributes))
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    elif exporter == "json":
        target = Path(path).expanduser() if path else default_trace_path()
        provider.add_span_processor(SimpleSpanProcessor(_json_exporter(target)))
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise UserError(
                f"the otlp exporter needs opentelemetry-exporter-otlp-proto-http: {_INSTALL}"
            ) from exc
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=_otlp_endpoint(endpoint)))
        )
    else:
        raise UserError(f"unknown trace exporter {exporter!r}: use console, json or otlp")
    sink = OtelSink(provider, capture_content=capture_content)
    sink.owns_provider = True
    if register:
        add_sink(sink)
    return sink
