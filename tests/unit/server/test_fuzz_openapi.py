"""A fuzz run of the server's OpenAPI document with schemathesis: no 5xx, no crash.

Every operation the document lists at test time is fuzzed (schemathesis' examples, coverage
and fuzzing phases; positive and negative data) against a fresh in-process app whose models
are scripted (``weather_or_echo``). Requests go through schemathesis' ASGI transport, which
runs the app's lifespan in its own event loop thread; the fixture waits until the default
model is ready (so ``/health`` answers 200, not ``loading``) and stops the lifespan afterwards.

Most fuzzed bodies are refused early (a 400 from validation), so hooks steer part of the cases
deeper: path ids that exist (a thread with a user message, a stored response, a served model),
and bodies that end with a user message and name the default model. Streaming requests
(``"stream": true``) are fuzzed too: the transport reads the whole event stream.

The checks: no 5xx and no crash (below), and ``response_schema_conformance`` (a documented
status answers with a body its schema allows). Not checked, because the document does not
describe them: the error statuses (FastAPI documents 422 for validation errors; the server
answers 400, 404, 405, 413 in OpenAI's error shape) and the media types of ``/metrics`` (text)
and streams (``text/event-stream``).

A 5xx fails, except one: 502 ``model_behavior_error``, the documented answer when the model
cannot produce what the request demands; the scripted model cannot satisfy arbitrary fuzzed
schemas (``json_object`` answers, tool parameters it does not fill), so that 502 is the server
working as designed. A crash fails whatever its status: an unexpected exception is logged at
ERROR by the server (its 500 handler, or a stream that already started and reports in-band),
and every such record fails the case that caused it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from shoal.models import FunctionModel, Model
from shoal.server import ServerSettings, create_app
from shoal.threads import InMemoryThreadStore

from .conftest import weather_or_echo

USER = {"role": "user", "content": "What is the weather in Paris?"}


def _factory(reference: str) -> Model:
    return FunctionModel(weather_or_echo, name=reference)


def _app(database: Path) -> FastAPI:
    return create_app(
        ServerSettings(database=database), store=InMemoryThreadStore(), factory=_factory
    )


# The document of an app built only to be read (its lifespan never runs; its stores are in
# memory, so the database path is never opened). Each case is sent to the `app` fixture's app.
# (schemathesis.pytest.from_fixture, the lazy loader, fails on pytest 9: it sets Item._nodeid.)
schema = schemathesis.openapi.from_dict(_app(Path("unused.db")).openapi())

#: ids of the objects the ``app`` fixture made (a thread, a stored response, the default model)
_KNOWN: dict[str, str] = {}


class _Crashes(logging.Handler):
    """The server's ERROR records: unexpected exceptions (see ``errors.py``, the streams)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        taken, self.records = self.records, []
        formatter = logging.Formatter("%(name)s: %(message)s")
        return [formatter.format(record) for record in taken]


_crashes = _Crashes()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    """A fresh app per operation, its lifespan running, with a thread and a stored response."""
    app = _app(tmp_path / "server.db")
    logger = logging.getLogger("shoal")
    logger.addHandler(_crashes)
    _crashes.take()
    try:
        # (FastAPI's ASGI signature is wider than schemathesis' annotation of an ASGI app)
        with asgi.get_client(cast(Any, app)) as client:
            deadline = time.monotonic() + 10
            while (health := client.get("/health")).status_code != 200:
                assert time.monotonic() < deadline, f"the server never became ready: {health.text}"
                time.sleep(0.01)
            thread = client.post("/v1/threads", json={"messages": [USER]})
            assert thread.status_code == 200, thread.text
            response = client.post("/v1/responses", json={"input": "hello"})
            assert response.status_code == 200, response.text
            _KNOWN.update(
                thread_id=thread.json()["id"],
                response_id=response.json()["id"],
                model_id=health.json()["default_model"],
            )
        yield app
    finally:
        _KNOWN.clear()
        logger.removeHandler(_crashes)
        asgi.shutdown_lifespans()
    assert not _crashes.take(), "the server logged errors outside the fuzzed requests"


# -- steering: part of the cases get ids that exist and bodies that pass the first checks -----


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    known = {key: _KNOWN[key] for key in path_parameters or {} if key in _KNOWN}
    if not path_parameters or not known:
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, **known}])


def _named_tools(tools: Any, *, flat: bool) -> Any:
    """The fuzzed tools under valid, distinct names (their fuzzed parameters kept)."""
    if not isinstance(tools, list):
        return tools
    named = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            continue
        if flat:  # the Responses API: {"type": "function", "name": ..., "parameters": ...}
            named.append({**tool, "type": "function", "name": f"tool_{index}"})
        elif isinstance(tool.get("function"), dict):
            named.append({**tool, "function": {**tool["function"], "name": f"tool_{index}"}})
    return named


def _choice(choice: Any) -> Any:
    return choice if choice in ("auto", "none", "required") else None


def _steered_body(method: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """``body`` with the fields the server checks first made acceptable, or None."""
    if (method, path) == ("POST", "/v1/chat/completions"):
        messages = body.get("messages")
        kept = [
            m
            for m in (messages if isinstance(messages, list) else [])
            if isinstance(m, dict) and m.get("role") in ("system", "developer", "user")
        ]
        return {
            **body,
            "model": None,
            "messages": [*kept, USER],
            "n": 1,
            "tools": _named_tools(body.get("tools"), flat=False),
            "tool_choice": _choice(body.get("tool_choice")),
        }
    if (method, path) == ("POST", "/v1/responses"):
        items = body.get("input")
        kept = [
            item
            for item in (items if isinstance(items, list) else [])
            if isinstance(item, dict) and item.get("type") in (None, "message") and item.get("role")
        ]
        return {
            **body,
            "model": None,
            "input": [*kept, USER],
            "previous_response_id": _KNOWN.get("response_id"),
            "tools": _named_tools(body.get("tools"), flat=True),
            "tool_choice": _choice(body.get("tool_choice")),
        }
    if (method, path) == ("POST", "/v1/threads/{thread_id}/runs"):
        return {
            **body,
            "model": None,
            "assistant_id": None,
            "tools": _named_tools(body.get("tools"), flat=False),
            "tool_choice": _choice(body.get("tool_choice")),
        }
    return None


@schema.hook
def flatmap_body(context: Any, body: Any) -> Any:
    operation = context.operation
    if not isinstance(body, dict) or operation is None:
        return st.just(body)
    steered = _steered_body(operation.method.upper(), operation.path, body)
    return st.just(body) if steered is None else st.sampled_from([body, steered])


# -- the check --------------------------------------------------------------------------------


def _error_code(response: Any) -> str | None:
    try:
        error = response.json().get("error")
    except Exception:
        return None
    return error.get("code") if isinstance(error, dict) else None


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """``not_a_server_error``, but a 502 ``model_behavior_error`` (the scripted model cannot
    satisfy a fuzzed schema) is the server working; and no unexpected exception was logged."""
    crashes = _crashes.take()
    if crashes:
        raise AssertionError("the server logged an unexpected error:\n" + "\n".join(crashes))
    if response.status_code == 502 and _error_code(response) == "model_behavior_error":
        return None
    return not_a_server_error(ctx, response, case)


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    # one app per operation, shared by its examples, is the point of the `app` fixture
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors(case: Any, app: FastAPI) -> None:
    case.call_and_validate(app=app, checks=[no_server_error, response_schema_conformance])
