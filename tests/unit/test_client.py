"""shoal.client against scripted servers (httpx.MockTransport): configuration, requests and
their bodies, retries, replies, errors and metrics, for the sync and the async client."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shoal.client import (
    AgentReply,
    AsyncShoalClient,
    ClientConfig,
    ClientUsageError,
    PendingCall,
    ShoalAPIError,
    ShoalClient,
    ShoalClientError,
    ShoalConnectionError,
    ThreadInfo,
    _async,
    _flows,
    _sync,
)
from shoal.exceptions import ShoalError, UserError, exit_code_for

ENDPOINT = "http://shoal.test"

Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Script:
    """A server that answers each request with the next step (a response, or an exception
    raised as the transport's) and records what it was sent."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self.steps, f"unexpected request {request.method} {request.url}"
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return step(request)

    @property
    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.url.path) for r in self.requests]

    def body(self, index: int) -> Any:
        return json.loads(self.requests[index].content)


def ok(body: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def error(status: int, message: str, code: str | None = None, **headers: str) -> httpx.Response:
    body = {"error": {"message": message, "type": "x", "param": None, "code": code}}
    return httpx.Response(status, json=body, headers=headers)


def thread(thread_id: str = "thread_1", **extra: Any) -> httpx.Response:
    return ok({"id": thread_id, "object": "thread", "created_at": 1_700_000_000, **extra})


def message() -> httpx.Response:
    return ok({"id": "msg_1", "object": "thread.message", "role": "user"})


def run(
    *,
    status: str = "completed",
    output: Any = "Order 1042 ships today.",
    stop_reason: str = "final",
    tool_calls: list[dict[str, Any]] | None = None,
    required: list[dict[str, Any]] | None = None,
    usage: tuple[int, int] = (10, 5),
    thread_id: str = "thread_1",
) -> httpx.Response:
    action = None
    if required is not None:
        action = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": required}}
    return ok(
        {
            "id": "run_1",
            "object": "thread.run",
            "thread_id": thread_id,
            "assistant_id": "support",
            "model": "smollm2-135m",
            "status": status,
            "required_action": action,
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": sum(usage),
            },
            "shoal": {
                "output": output,
                "stop_reason": stop_reason,
                "tool_calls": tool_calls or [],
                "notes": [],
            },
        }
    )


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SHOAL_ENDPOINT", "SHOAL_API_KEY", "SHOAL_TIMEOUT", "SHOAL_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays both clients wait between attempts, recorded instead of slept."""
    waited: list[float] = []

    async def fake_async_sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(_sync, "_sleep", waited.append)
    monkeypatch.setattr(_async, "_sleep", fake_async_sleep)
    return waited


@pytest.fixture
def connect() -> Iterator[Callable[..., ShoalClient]]:
    """A sync client on a script; closed after the test."""
    clients: list[ShoalClient] = []

    def make(script: Script, **kwargs: Any) -> ShoalClient:
        kwargs.setdefault("endpoint", ENDPOINT)
        client = ShoalClient(transport=httpx.MockTransport(script), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# -- configuration ---------------------------------------------------------------------------


def test_config_from_env_reads_every_variable() -> None:
    config = ClientConfig.from_env(
        {
            "SHOAL_ENDPOINT": "http://127.0.0.1:8000/v1/",
            "SHOAL_API_KEY": "sk-1",
            "SHOAL_TIMEOUT": "2.5",
            "SHOAL_MAX_RETRIES": "0",
        }
    )
    assert config.endpoint == "http://127.0.0.1:8000"  # the OpenAI-style /v1 is dropped
    assert config.api_key == "sk-1"
    assert config.timeout == 2.5
    assert config.max_retries == 0


def test_config_defaults_and_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_ENDPOINT", "https://shoal.example.com/base")
    monkeypatch.setenv("SHOAL_API_KEY", "")  # empty counts as unset
    config = ClientConfig.from_env()
    assert config.endpoint == "https://shoal.example.com/base"
    assert config.api_key is None
    assert (config.timeout, config.max_retries) == (120.0, 3)


def test_missing_endpoint_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = (
        "no server endpoint: pass endpoint= or set SHOAL_ENDPOINT (e.g. http://127.0.0.1:8000)"
    )
    with pytest.raises(ClientUsageError) as info:
        ShoalClient()
    assert str(info.value) == expected
    # a configuration problem is a UserError (CLI exit code 2) and a ShoalClientError
    assert isinstance(info.value, UserError)
    assert isinstance(info.value, ShoalClientError)
    assert exit_code_for(info.value) == 2
    monkeypatch.setenv("SHOAL_ENDPOINT", "   ")
    with pytest.raises(ClientUsageError, match="no server endpoint"):
        ClientConfig.from_env()


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("SHOAL_TIMEOUT", "soon", "is not a number of seconds"),
        ("SHOAL_TIMEOUT", "0", "must be more than 0 seconds"),
        ("SHOAL_TIMEOUT", "-3", "must be more than 0 seconds"),
        ("SHOAL_TIMEOUT", "nan", "must be more than 0 seconds"),
        ("SHOAL_MAX_RETRIES", "-1", "must be 0 or more"),
        ("SHOAL_MAX_RETRIES", "2.5", "is not a whole number"),
        ("SHOAL_ENDPOINT", "ftp://files.example.com", "is not an http:// or https:// URL"),
        ("SHOAL_ENDPOINT", "http://", "is not an http:// or https:// URL"),
        ("SHOAL_ENDPOINT", "http://h:99999", "port 99999 is not between 1 and 65535"),
        ("SHOAL_ENDPOINT", "http://h:8000/?x=1", "must not have a query"),
    ],
)
def test_invalid_variables_are_named_with_the_problem(name: str, value: str, problem: str) -> None:
    env = {"SHOAL_ENDPOINT": "http://127.0.0.1:8000", name: value}
    with pytest.raises(ClientUsageError) as info:
        ClientConfig.from_env(env)
    assert str(info.value).startswith(f"{name}={value!r}")
    assert problem in str(info.value)


def test_an_endpoint_without_scheme_gets_a_suggestion() -> None:
    with pytest.raises(ClientUsageError, match=r"e\.g\. http://127\.0\.0\.1:8000\)"):
        ClientConfig.from_env({"SHOAL_ENDPOINT": "127.0.0.1:8000"})


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_ENDPOINT", "http://env.test")
    monkeypatch.setenv("SHOAL_API_KEY", "env-key")
    monkeypatch.setenv("SHOAL_TIMEOUT", "not a number")  # not read: the argument wins
    monkeypatch.setenv("SHOAL_MAX_RETRIES", "7")
    with ShoalClient(endpoint="http://arg.test", timeout=5) as client:
        assert client.config.endpoint == "http://arg.test"
        assert client.config.api_key == "env-key"
        assert client.config.timeout == 5
        assert client.config.max_retries == 7


def test_explicit_config_and_overrides() -> None:
    base = ClientConfig("http://a.test", api_key="k", max_retries=1)
    with ShoalClient(config=base, timeout=9) as client:
        assert client.config == ClientConfig("http://a.test", api_key="k", timeout=9, max_retries=1)
    with pytest.raises(ClientUsageError, match="max_retries must be 0 or more"):
        ClientConfig("http://a.test", max_retries=-1)
    with pytest.raises(ClientUsageError, match="timeout must be more than 0"):
        ClientConfig("http://a.test", timeout=0)
    with pytest.raises(ClientUsageError, match="max_retries must be a whole number"):
        ClientConfig("http://a.test", max_retries=True)


def test_repr_hides_the_api_key() -> None:
    config = ClientConfig("http://a.test", api_key="sk-secret")
    assert "sk-secret" not in repr(config)
    assert "'***'" in repr(config)


# -- requests --------------------------------------------------------------------------------


def test_api_key_is_sent_as_bearer_token(connect: Callable[..., ShoalClient]) -> None:
    script = Script(thread())
    connect(script, api_key="sk-1").create_thread()
    request = script.requests[0]
    assert request.headers["authorization"] == "Bearer sk-1"
    assert request.headers["user-agent"].startswith("shoal-client")

    script = Script(thread())
    connect(script).create_thread()
    assert "authorization" not in script.requests[0].headers


def test_create_thread_sends_metadata(connect: Callable[..., ShoalClient]) -> None:
    script = Script(thread("thread_9"))
    assert connect(script).create_thread(metadata={"purpose": "support"}) == "thread_9"
    assert script.calls == [("POST", "/v1/threads")]
    assert script.body(0) == {"metadata": {"purpose": "support"}}
    with pytest.raises(ClientUsageError, match="JSON-serialisable"):
        connect(Script()).create_thread(metadata={"when": datetime.now(UTC)})


def test_send_message_creates_a_thread_posts_and_runs(
    connect: Callable[..., ShoalClient],
) -> None:
    calls = [
        {"name": "lookup_order", "arguments": {"id": 1042}, "outcome": "ok", "content": "{}"},
        {"name": "bogus", "arguments": {}, "outcome": "invalid", "content": "unknown tool"},
        {"name": "lookup_order", "arguments": {"id": 1042}, "outcome": "repeated", "content": ""},
        {"name": "notify", "arguments": {}, "outcome": "failed", "content": "boom"},
        {"name": "lookup_order", "arguments": {"id": 7}, "outcome": "ok", "content": "{}"},
    ]
    script = Script(thread(), message(), run(tool_calls=calls))
    reply = connect(script).send_message(
        "Where is order 1042?", agent="support", instructions="Be brief."
    )
    assert script.calls == [
        ("POST", "/v1/threads"),
        ("POST", "/v1/threads/thread_1/messages"),
        ("POST", "/v1/threads/thread_1/runs"),
    ]
    assert script.body(1) == {"role": "user", "content": "Where is order 1042?"}
    assert script.body(2) == {"assistant_id": "support", "instructions": "Be brief."}
    assert reply.success is True
    assert reply.error is None
    assert reply.content == "Order 1042 ships today."
    assert (reply.thread_id, reply.agent, reply.model) == ("thread_1", "support", "smollm2-135m")
    assert reply.tools_used == ["lookup_order", "notify"]  # ran; first-use order, once each
    assert [c.outcome for c in reply.tool_calls] == ["ok", "invalid", "repeated", "failed", "ok"]
    assert reply.pending_calls == []
    assert reply.usage == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert (reply.run_id, reply.status, reply.stop_reason) == ("run_1", "completed", "final")
    assert reply.raise_for_error() is reply


def test_send_message_on_a_thread_with_client_tools(connect: Callable[..., ShoalClient]) -> None:
    required = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        }
    ]
    script = Script(
        message(),
        run(status="requires_action", output=None, stop_reason="tool_calls", required=required),
    )
    weather = {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    reply = connect(script).send_message("Weather in Oslo?", thread_id="thread_1", tools=[weather])
    assert script.calls == [
        ("POST", "/v1/threads/thread_1/messages"),
        ("POST", "/v1/threads/thread_1/runs"),
    ]
    # a bare function definition is wrapped as an OpenAI function tool
    assert script.body(1) == {"tools": [{"type": "function", "function": weather}]}
    assert reply.success is True
    assert reply.status == "requires_action"
    assert reply.content == ""
    assert reply.pending_calls == [
        PendingCall(id="call_1", name="get_weather", arguments={"city": "Oslo"})
    ]


def test_submit_tool_outputs_adds_results_and_runs_again(
    connect: Callable[..., ShoalClient],
) -> None:
    script = Script(message(), message(), run(output="Sunny in Oslo, 21 °C."))
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    reply = connect(script).submit_tool_outputs(
        "thread_1", {"call_1": "sunny", "call_2": {"temp_c": 21}}, tools=[weather]
    )
    assert script.calls == [
        ("POST", "/v1/threads/thread_1/messages"),
        ("POST", "/v1/threads/thread_1/messages"),
        ("POST", "/v1/threads/thread_1/runs"),
    ]
    assert script.body(0) == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert script.body(1) == {"role": "tool", "tool_call_id": "call_2", "content": '{"temp_c": 21}'}
    assert script.body(2) == {"tools": [weather]}
    assert reply.success is True
    assert reply.content == "Sunny in Oslo, 21 °C."
    with pytest.raises(ClientUsageError, match="outputs must be a non-empty mapping"):
        connect(Script()).submit_tool_outputs("thread_1", {})


def test_structured_output_is_json_text_and_a_value(connect: Callable[..., ShoalClient]) -> None:
    script = Script(message(), run(output={"order": 1042, "status": "shipped"}))
    reply = connect(script).send_message("Status?", thread_id="thread_1")
    assert json.loads(reply.content) == {"order": 1042, "status": "shipped"}
    assert reply.output == {"order": 1042, "status": "shipped"}


def test_a_failed_run_is_a_reply_not_an_exception(connect: Callable[..., ShoalClient]) -> None:
    crashed = error(503, "the engine of smollm2-135m died (killed)", "model_crashed_error")
    script = Script(message(), crashed)
    reply = connect(script, max_retries=0).send_message("hi", thread_id="thread_1", agent="a")
    assert reply.success is False
    assert reply.error == "503: the engine of smollm2-135m died (killed)"
    assert (reply.thread_id, reply.agent, reply.content, reply.usage) == ("thread_1", "a", "", {})
    assert isinstance(reply.exception, ShoalAPIError)
    assert reply.exception.code == "model_crashed_error"
    with pytest.raises(ShoalAPIError) as info:
        reply.raise_for_error()
    assert info.value.status == 503


def test_an_unreachable_server_is_a_failed_reply(
    connect: Callable[..., ShoalClient], sleeps: list[float]
) -> None:
    script = Script(*[httpx.ConnectError("connection refused")] * 3)
    reply = connect(script, max_retries=2).send_message("hi")
    assert reply.success is False
    assert reply.thread_id is None
    assert reply.error is not None
    assert reply.error.startswith("cannot reach the Shoal server at http://shoal.test")
    assert "after 3 attempts" in reply.error
    assert isinstance(reply.exception, ShoalConnectionError)
    assert sleeps == [0.5, 1.0]


def test_an_incomplete_run_is_not_a_success(connect: Callable[..., ShoalClient]) -> None:
    script = Script(message(), run(status="incomplete", output="partial", stop_reason="max_steps"))
    reply = connect(script).send_message("hi", thread_id="thread_1")
    assert reply.success is False
    assert reply.content == "partial"
    assert reply.error == "the run ended with status 'incomplete' (max_steps)"


def test_an_incomplete_run_gives_the_servers_reason(connect: Callable[..., ShoalClient]) -> None:
    truncated = run(status="incomplete", output="It was a dark and", stop_reason="final")
    body = truncated.json()
    body["incomplete_details"] = {"reason": "max_completion_tokens"}
    script = Script(message(), ok(body))
    reply = connect(script).send_message("Tell a story", thread_id="thread_1")
    assert reply.error == "the run ended with status 'incomplete' (max_completion_tokens)"


def test_an_unreadable_run_is_a_failed_reply(connect: Callable[..., ShoalClient]) -> None:
    script = Script(message(), ok({"id": "run_1", "object": "thread.run"}))
    reply = connect(script).send_message("hi", thread_id="thread_1")
    assert reply.success is False
    assert isinstance(reply.exception, ShoalAPIError)
    assert reply.exception.code == "unexpected_response"
    assert "thread_id: Field required" in str(reply.error)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"message": "   "}, "message must be a non-empty string"),
        ({"message": "hi", "thread_id": ""}, "thread_id must be a non-empty string"),
        ({"message": "hi", "agent": ""}, "agent must be a non-empty string"),
        ({"message": "hi", "tools": "get_weather"}, "tools must be a list"),
        ({"message": "hi", "tools": ["get_weather"]}, "tools[0] must be a tool definition"),
        ({"message": "hi", "tools": [{"type": "function", "function": {}}]}, "name must be"),
        ({"message": "hi", "tools": [{"type": "retrieval"}]}, "not a function tool"),
    ],
)
def test_misuse_raises_before_any_request(
    connect: Callable[..., ShoalClient], kwargs: dict[str, Any], problem: str
) -> None:
    script = Script()
    client = connect(script)
    with pytest.raises(ClientUsageError) as info:
        client.send_message(**kwargs)
    assert problem in str(info.value)
    assert script.requests == []
    assert client.get_metrics()["total_requests"] == 0


# -- retries ---------------------------------------------------------------------------------


def test_retry_after_is_honoured(connect: Callable[..., ShoalClient], sleeps: list[float]) -> None:
    full = error(
        429, "the queue of smollm2-135m is full", "overloaded_error", **{"Retry-After": "2"}
    )
    script = Script(full, thread())
    assert connect(script).create_thread() == "thread_1"
    assert len(script.requests) == 2
    assert sleeps == [2.0]
    assert script.body(1) == script.body(0)  # the same request again


def test_retry_after_is_capped_and_503_backs_off(
    connect: Callable[..., ShoalClient], sleeps: list[float]
) -> None:
    slow = error(429, "full", **{"Retry-After": "600"})
    loading = error(503, "smollm2-135m is loading")
    script = Script(slow, loading, loading, thread())
    assert connect(script).create_thread() == "thread_1"
    # Retry-After capped at max_retry_delay (30 s); no Retry-After: 0.5 s doubling per attempt
    assert sleeps == [30.0, 1.0, 2.0]


def test_retries_run_out_and_the_error_is_raised(
    connect: Callable[..., ShoalClient], sleeps: list[float]
) -> None:
    script = Script(*[error(503, "loading", **{"Retry-After": "1"})] * 3)
    client = connect(script, max_retries=2)
    with pytest.raises(ShoalAPIError) as info:
        client.create_thread()
    assert (info.value.status, info.value.message, info.value.retry_after) == (503, "loading", 1)
    assert len(script.requests) == 3
    assert sleeps == [1.0, 1.0]
    assert client.get_metrics()["retries"] == 2


@pytest.mark.parametrize("status", [400, 401, 404, 500, 504])
def test_other_errors_are_not_retried(
    connect: Callable[..., ShoalClient], sleeps: list[float], status: int
) -> None:
    script = Script(error(status, "no"))
    with pytest.raises(ShoalAPIError) as info:
        connect(script).create_thread()
    assert info.value.status == status
    assert len(script.requests) == 1
    assert sleeps == []


def test_a_broken_connection_is_retried_for_reads_only(
    connect: Callable[..., ShoalClient], sleeps: list[float]
) -> None:
    script = Script(httpx.ReadError("reset"), thread(message_count=0))
    assert connect(script).get_thread_info("thread_1").id == "thread_1"
    assert sleeps == [0.5]

    # a POST may have reached the server: sending it again could run the agent twice
    script = Script(httpx.RemoteProtocolError("closed"))
    with pytest.raises(ShoalConnectionError, match="cannot reach"):
        connect(script).create_thread()
    assert len(script.requests) == 1


def test_a_timeout_is_not_retried(connect: Callable[..., ShoalClient], sleeps: list[float]) -> None:
    script = Script(httpx.ReadTimeout("timed out"))
    with pytest.raises(ShoalConnectionError, match=r"did not answer within 3 s"):
        connect(script, timeout=3).get_thread_info("thread_1")
    assert len(script.requests) == 1
    assert sleeps == []


# -- threads, health -------------------------------------------------------------------------


def test_get_thread_info_parses_times_and_counts(connect: Callable[..., ShoalClient]) -> None:
    script = Script(
        thread("thread_1", metadata={"user": "u1"}, message_count=4, updated_at=1_700_000_060)
    )
    info = connect(script).get_thread_info("thread_1")
    assert script.calls == [("GET", "/v1/threads/thread_1")]
    assert info == ThreadInfo(
        id="thread_1",
        metadata={"user": "u1"},
        created_at=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        updated_at=datetime(2023, 11, 14, 22, 14, 20, tzinfo=UTC),
        message_count=4,
    )


def test_unknown_thread_raises_with_status_and_code(connect: Callable[..., ShoalClient]) -> None:
    script = Script(error(404, "no thread 'thread_x'", "thread_not_found_error"))
    with pytest.raises(ShoalAPIError) as info:
        connect(script).get_thread_info("thread_x")
    assert str(info.value) == "404: no thread 'thread_x'"
    assert (info.value.status, info.value.code) == (404, "thread_not_found_error")
    assert isinstance(info.value, ShoalError)
    assert not isinstance(info.value, UserError)


def test_thread_ids_are_quoted_in_paths(connect: Callable[..., ShoalClient]) -> None:
    script = Script(thread("../x"))
    connect(script).get_thread_info("../x")
    assert script.requests[0].url.raw_path == b"/v1/threads/..%2Fx"


def test_delete_thread(connect: Callable[..., ShoalClient]) -> None:
    deleted = ok({"id": "thread_1", "object": "thread.deleted", "deleted": True})
    script = Script(deleted, error(404, "no thread"), error(500, "disk full"))
    client = connect(script)
    assert client.delete_thread("thread_1") is True
    assert client.delete_thread("thread_1") is False
    with pytest.raises(ShoalAPIError, match="500: disk full"):
        client.delete_thread("thread_1")
    assert script.calls == [("DELETE", "/v1/threads/thread_1")] * 3


def test_an_error_body_of_another_shape_keeps_its_text(
    connect: Callable[..., ShoalClient],
) -> None:
    page = httpx.Response(502, text="<html><body>Bad gateway</body></html>")
    with pytest.raises(ShoalAPIError) as info:
        connect(Script(page)).create_thread()
    assert info.value.status == 502
    assert "Bad gateway" in info.value.message


def test_health_check(connect: Callable[..., ShoalClient], sleeps: list[float]) -> None:
    ready = ok({"status": "ok", "ready": True, "default_model": "smollm2-135m"})
    loading = ok({"status": "loading", "ready": False}, status=503)
    script = Script(
        ready,
        loading,
        httpx.ConnectError("refused"),
        httpx.Response(200, text="not json"),
    )
    client = connect(script)
    assert client.health_check() is True
    assert client.health_check() is False  # loading: 503, not retried
    assert client.health_check() is False  # down: no exception, no retry
    assert client.health_check() is False
    assert script.calls == [("GET", "/health")] * 4
    assert sleeps == []
    assert client.get_metrics()["total_requests"] == 0  # probes are not counted


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_arithmetic(
    connect: Callable[..., ShoalClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    monkeypatch.setattr(_flows, "_clock", lambda: now[0])

    def after(seconds: float, response: httpx.Response) -> Step:
        def answer(request: httpx.Request) -> httpx.Response:
            now[0] += seconds
            return response

        return answer

    script = Script(
        after(1, thread()),  # create_thread: 1 s
        after(1, thread()),  # send_message: 1 + 1 + 2 s, 15 tokens
        after(1, message()),
        after(2, run(usage=(10, 5))),
        after(1, message()),  # send_message: 1 + 3 s, 7 tokens
        after(3, run(usage=(4, 3))),
        after(1, error(503, "died")),  # send_message: failed, 1 s
        after(1, error(404, "no thread")),  # delete_thread -> False: a success, 1 s
        after(1, error(404, "no thread")),  # get_thread_info: raises, 1 s
    )
    client = connect(script, max_retries=0)
    client.create_thread()
    assert client.send_message("a").success
    assert client.send_message("b", thread_id="thread_1").success
    assert not client.send_message("c", thread_id="thread_1").success
    assert client.delete_thread("thread_1") is False
    with pytest.raises(ShoalAPIError):
        client.get_thread_info("thread_1")
    assert client.get_metrics() == {
        "total_requests": 6,
        "successful_requests": 4,
        "failed_requests": 2,
        "success_rate": pytest.approx(4 / 6),
        "average_latency": pytest.approx(12 / 6),
        "retries": 0,
        "prompt_tokens": 14,
        "completion_tokens": 8,
        "total_tokens": 22,
    }


def test_metrics_start_at_zero(connect: Callable[..., ShoalClient]) -> None:
    metrics = connect(Script()).get_metrics()
    assert metrics["total_requests"] == 0
    assert metrics["success_rate"] == 0.0
    assert metrics["average_latency"] == 0.0


# -- async -----------------------------------------------------------------------------------


async def test_async_client_sends_and_retries(sleeps: list[float]) -> None:
    full = error(429, "full", **{"Retry-After": "1"})
    script = Script(thread(), full, message(), run())
    async with AsyncShoalClient(ENDPOINT, "sk-1", transport=httpx.MockTransport(script)) as client:
        reply = await client.send_message("hi", agent="support")
        metrics = client.get_metrics()
    assert isinstance(reply, AgentReply)
    assert reply.success is True
    assert reply.content == "Order 1042 ships today."
    assert sleeps == [1.0]
    assert [r.headers["authorization"] for r in script.requests] == ["Bearer sk-1"] * 4
    assert metrics["total_tokens"] == 15
    assert metrics["retries"] == 1


async def test_async_client_threads_health_and_failures() -> None:
    deleted = ok({"id": "thread_1", "object": "thread.deleted", "deleted": True})
    script = Script(
        thread(metadata={"k": "v"}),
        thread(message_count=2, metadata={"k": "v"}),
        deleted,
        error(404, "no thread"),
        httpx.ConnectError("refused"),
        message(),
        error(504, "deadline exceeded", "deadline_exceeded_error"),
    )
    client = AsyncShoalClient(ENDPOINT, max_retries=0, transport=httpx.MockTransport(script))
    try:
        thread_id = await client.create_thread({"k": "v"})
        info = await client.get_thread_info(thread_id)
        assert (info.message_count, info.metadata) == (2, {"k": "v"})
        assert await client.delete_thread(thread_id) is True
        assert await client.delete_thread(thread_id) is False
        assert await client.health_check() is False
        reply = await client.send_message("hi", thread_id=thread_id)
        assert reply.success is False
        assert reply.error == "504: deadline exceeded"
        with pytest.raises(ClientUsageError):
            await client.send_message("")
    finally:
        await client.aclose()


# -- layering --------------------------------------------------------------------------------


def test_importing_the_client_loads_no_server_or_engine() -> None:
    code = (
        "import sys, shoal.client; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'llama_cpp') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
