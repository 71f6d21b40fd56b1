"""``shoal serve`` as a real process on the real default model, used by real clients.

One server per module (loading takes a few seconds). The official ``openai`` SDK talks to it;
tool calls and JSON answers are checked against the declared schemas, the engine worker is
killed mid-request, and the server is restarted over the same database.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.integration.processes import ShoalServer as Server
from tests.integration.processes import free_port

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("serve")
    running = Server(home, free_port())
    running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        running.stop()


@pytest.fixture
def sdk(server: Server) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0)
    yield client
    client.close()


def test_chat_with_the_openai_sdk(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Say hello in one short sentence."}],
        max_tokens=32,
        temperature=0,
    )
    choice = completion.choices[0]
    assert isinstance(choice.message.content, str)
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0


def test_streaming_with_the_openai_sdk(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text.strip()
    assert finish in ("stop", "length")
    assert usage is not None
    assert usage.completion_tokens > 0


def test_tool_call_validates_against_the_declared_schema(sdk: openai.OpenAI) -> None:
    for choice_arg in ("required", "auto"):
        completion = sdk.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice=choice_arg,  # type: ignore[arg-type]
            max_tokens=128,
        )
        message = completion.choices[0].message
        if choice_arg == "required":
            assert message.tool_calls
        for call in message.tool_calls or []:
            assert call.function.name == "get_weather"
            arguments = json.loads(call.function.arguments)
            jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]
            assert completion.choices[0].finish_reason == "tool_calls"


def test_json_schema_output(sdk: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    completion = sdk.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Ada is 36 years old. Give her name and age."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema},
        },
        max_tokens=64,
    )
    content = completion.choices[0].message.content
    assert content is not None
    jsonschema.validate(json.loads(content), schema)


def test_errors_reach_the_sdk_as_its_exceptions(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="smollm2-135m", messages=[], max_tokens=8)
    assert "messages" in str(bad.value)
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )


def test_killed_engine_fails_one_request_with_503_then_recovers(
    server: Server, sdk: openai.OpenAI
) -> None:
    before = server.health()["models"]["smollm2-135m"]
    pid = before["pid"]
    assert isinstance(pid, int)
    outcome: dict[str, Any] = {}

    def long_request() -> None:
        try:
            sdk.chat.completions.create(
                model="smollm2-135m",
                messages=[{"role": "user", "content": "Write a long story about the sea."}],
                max_tokens=1000,
            )
            outcome["status"] = 200
        except openai.APIStatusError as exc:
            outcome["status"] = exc.status_code
            outcome["message"] = exc.message

    worker = threading.Thread(target=long_request)
    worker.start()
    deadline = time.monotonic() + 30
    while server.health()["models"]["smollm2-135m"]["active"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # generating now
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=60)
    assert outcome.get("status") == 503, outcome
    assert "died" in outcome["message"]
    completion = sdk.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Hi"}], max_tokens=8
    )
    assert completion.choices[0].message.content is not None
    after = server.health()["models"]["smollm2-135m"]
    assert after["state"] == "ready"
    assert after["restarts"] == before.get("restarts", 0) + 1
    assert after["pid"] != pid
    metrics = httpx.get(server.base + "/metrics").text
    assert 'shoal_model_events_total{event="crash",model="smollm2-135m"} 1.0' in metrics


def test_threads_survive_a_restart(server: Server) -> None:
    base = server.base
    thread = httpx.post(base + "/v1/threads", json={"metadata": {"user": "ada"}}).json()
    tid = thread["id"]
    r = httpx.post(
        f"{base}/v1/threads/{tid}/messages", json={"role": "user", "content": "Hi, I am Ada."}
    )
    assert r.status_code == 200, r.text
    run = httpx.post(f"{base}/v1/threads/{tid}/runs", json={}, timeout=120)
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "completed"
    before = httpx.get(f"{base}/v1/threads/{tid}/messages?order=asc").json()["data"]
    assert [m["role"] for m in before] == ["user", "assistant"]
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is the signal's
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log.read_text()
    server.start()
    again = httpx.get(f"{base}/v1/threads/{tid}").json()
    assert again["metadata"] == {"user": "ada"}
    after = httpx.get(f"{base}/v1/threads/{tid}/messages?order=asc").json()["data"]
    assert after == before


def test_streamed_text_is_whole_characters(sdk: openai.OpenAI) -> None:
    """Streamed pieces never split a multi-byte character, and add up to the plain answer."""
    messages: Any = [{"role": "user", "content": "Translate to Japanese and French: good morning"}]
    whole = sdk.chat.completions.create(
        model="smollm2-135m", messages=messages, max_tokens=48, temperature=0
    )
    pieces = [
        choice.delta.content or ""
        for chunk in sdk.chat.completions.create(
            model="smollm2-135m", messages=messages, max_tokens=48, temperature=0, stream=True
        )
        for choice in chunk.choices
    ]
    streamed = "".join(pieces)
    assert all("\ufffd" not in piece for piece in pieces)
    assert any(ord(c) > 127 for c in streamed), streamed  # the check saw multi-byte text
    assert streamed.strip() == (whole.choices[0].message.content or "").strip()
