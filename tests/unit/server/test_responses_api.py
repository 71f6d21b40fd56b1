"""``/v1/responses`` and its store: shapes, chaining, client tools, streaming, errors; the
official ``openai`` SDK as a client where it matters (it accepts the TestClient as its
``http_client``)."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from shoal.exceptions import ModelCrashedError, StoreError
from shoal.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from shoal.models import FunctionModel, ModelRequestParameters
from shoal.server.response_store import ResponseStore
from shoal.threads import SQLiteThreadStore
from tests.unit.server.conftest import MakeClient

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def weather_then_answer(messages: list[Message], params: ModelRequestParameters) -> Any:
    """Calls the first offered tool; answers from a tool result; else echoes the request."""
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return f"It is {last.content} in Paris."
    offered = params.offered_tools()
    if offered and params.tool_choice != "none":
        return ToolCall(name=offered[0].name, arguments={"city": "Paris"})
    return f"echo: {getattr(last, 'content', '')}"


def scripted(make_client: MakeClient, **settings: Any) -> tuple[TestClient, FunctionModel]:
    model = FunctionModel(weather_then_answer)
    return make_client(models={"smollm2-135m": model}, **settings), model


def sdk(client: TestClient) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key="test", http_client=client, max_retries=0
    )


def assert_error(response: Response, status: int, *, contains: str, kind: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert contains in error["message"], error
    assert error["type"] == kind


def sse_events(response: Response) -> list[dict[str, Any]]:
    """The stream's events; each ``event:`` line must name its data's ``type``."""
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.strip().split("\n\n"):
        kind_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert kind_line == f"event: {data['type']}"
        events.append(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


# -- shapes -----------------------------------------------------------------------------------


def test_text_response_shape(make_client: MakeClient) -> None:
    client, model = scripted(make_client)
    response = client.post(
        "/v1/responses",
        json={"input": "hi", "instructions": "Be brief.", "metadata": {"user": "ana"}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("resp_")
    assert body["object"] == "response"
    assert body["status"] == "completed"
    assert body["model"] == "smollm2-135m"
    assert isinstance(body["created_at"], int)
    assert body["instructions"] == "Be brief."
    assert body["metadata"] == {"user": "ana"}
    assert body["error"] is None
    assert body["incomplete_details"] is None
    assert body["previous_response_id"] is None
    assert body["parallel_tool_calls"] is False
    assert body["tool_choice"] == "auto"
    assert body["tools"] == []
    assert body["text"] == {"format": {"type": "text"}}
    [message] = body["output"]
    assert message["type"] == "message"
    assert message["id"].startswith("msg_")
    assert message["status"] == "completed"
    assert message["role"] == "assistant"
    assert message["content"] == [{"type": "output_text", "text": "echo: hi", "annotations": []}]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert usage["input_tokens_details"]["cached_tokens"] == 0
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0}
    assert model.requests[-1].messages == [
        SystemMessage(content="Be brief."),
        UserMessage(content="hi"),
    ]


def test_openai_sdk_create_retrieve_delete(make_client: MakeClient) -> None:
    client, _ = scripted(make_client)
    api = sdk(client)
    created = api.responses.create(input="hello", temperature=0.5)
    assert created.output_text == "echo: hello"
    assert created.status == "completed"
    assert created.temperature == 0.5
    assert created.usage is not None
    assert created.usage.output_tokens > 0
    again = api.responses.retrieve(created.id)
    assert again.output_text == "echo: hello"
    assert again.id == created.id
    api.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(created.id)


def test_items_input_and_json_schema_output(make_client: MakeClient) -> None:
    model = FunctionModel(lambda messages, params: '{"answer": 42}')
    client = make_client(models={"smollm2-135m": model})
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    text = {"format": {"type": "json_schema", "name": "answer", "schema": schema}}
    body = client.post(
        "/v1/responses",
        json={
            "input": [
                {"role": "developer", "content": "Answer in JSON."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Q"}],
                },
            ],
            "text": text,
        },
    ).json()
    assert body["output"][0]["content"][0]["text"] == '{"answer": 42}'
    assert body["text"] == text
    assert model.requests[-1].params.output_schema == schema
    assert model.requests[-1].messages == [
        SystemMessage(content="Answer in JSON."),
        UserMessage(content="Q"),
    ]


# -- conversations ----------------------------------------------------------------------------


def test_previous_response_id_chains_conversations(make_client: MakeClient) -> None:
    client, model = scripted(make_client)
    api = sdk(client)
    first = api.responses.create(
        input=[
            {"role": "developer", "content": "Kept: an input item."},
            {"role": "user", "content": "first"},
        ],
        instructions="Dropped: instructions are per request.",
    )
    second = api.responses.create(input="second", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert second.instructions is None
    assert model.requests[-1].messages == [
        SystemMessage(content="Kept: an input item."),
        UserMessage(content="first"),
        AssistantMessage(content="echo: first"),
        UserMessage(content="second"),
    ]
    third = api.responses.create(input="third", previous_response_id=second.id, instructions="New.")
    assert third.output_text == "echo: third"
    messages = model.requests[-1].messages
    assert messages[0] == SystemMessage(content="New.\n\nKept: an input item.")
    assert [m.role for m in messages[1:]] == ["user", "assistant"] * 2 + ["user"]


def test_client_tool_call_then_function_call_output(make_client: MakeClient) -> None:
    client, model = scripted(make_client)
    api = sdk(client)
    asked = api.responses.create(input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    [call] = asked.output
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id.startswith("call_")
    assert call.id is not None
    assert call.id.startswith("fc_")
    assert call.status == "completed"
    assert asked.output_text == ""
    assert asked.tools[0].type == "function"
    assert asked.tools[0].name == "get_weather"

    answered = api.responses.create(
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        previous_response_id=asked.id,
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert answered.output_text == "It is sunny in Paris."
    seen = model.requests[-1].messages
    assert isinstance(seen[-2], AssistantMessage)
    assert seen[-2].tool_calls[0].id == call.call_id
    assert seen[-1] == ToolMessage(tool_call_id=call.call_id, name="get_weather", content="sunny")


def test_whole_history_in_input_without_storing(make_client: MakeClient) -> None:
    client, model = scripted(make_client)
    response = client.post(
        "/v1/responses",
        json={
            "store": False,
            "tools": [WEATHER],
            "input": [
                {"role": "user", "content": "Weather?"},
                {"type": "message", "role": "assistant", "content": "Let me look."},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city": "Paris"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "rainy"},
            ],
        },
    ).json()
    assert response["output"][0]["content"][0]["text"] == "It is rainy in Paris."
    assert model.requests[-1].messages[-2] == AssistantMessage(
        content="Let me look.",
        tool_calls=(ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"}),),
    )
    missing = client.get(f"/v1/responses/{response['id']}")
    assert_error(missing, 404, contains=response["id"], kind="not_found_error")


def test_hosted_agent_runs_its_own_tools(make_client: MakeClient, tmp_path: Path) -> None:
    (tmp_path / "clock_tools_for_responses.py").write_text(
        textwrap.dedent(
            '''
            def local_time(city: str) -> str:
                """The local time in a city."""
                return "10:30"
            '''
        )
    )
    spec = tmp_path / "clock.yaml"
    spec.write_text(
        "name: clock\nmodel: smollm2-135m\ninstructions: Tell the time.\n"
        "tools:\n  - clock_tools_for_responses:local_time\n"
    )
    client, model = scripted(make_client, agent_specs=(spec,))
    body = client.post("/v1/responses", json={"model": "clock", "input": "Time?"}).json()
    assert body["model"] == "clock"
    assert [item["type"] for item in body["output"]] == ["message"]
    assert body["output"][0]["content"][0]["text"] == "It is 10:30 in Paris."
    assert model.requests[0].messages[0] == SystemMessage(content="Tell the time.")


def test_responses_survive_a_restart(make_client: MakeClient, tmp_path: Path) -> None:
    settings = {"database": tmp_path / "server.db"}
    first = make_client(store=SQLiteThreadStore(tmp_path / "server.db"), **settings)
    created = first.post("/v1/responses", json={"input": "remember me"}).json()
    first.__exit__(None, None, None)

    model = FunctionModel(weather_then_answer)
    second = make_client(
        store=SQLiteThreadStore(tmp_path / "server.db"), models={"smollm2-135m": model}, **settings
    )
    assert second.get(f"/v1/responses/{created['id']}").json() == created
    chained = second.post(
        "/v1/responses", json={"input": "and now?", "previous_response_id": created["id"]}
    )
    assert chained.status_code == 200
    assert model.requests[-1].messages[:2] == [
        UserMessage(content="remember me"),
        AssistantMessage(content="echo: remember me"),
    ]


def test_get_and_delete(make_client: MakeClient) -> None:
    client, _ = scripted(make_client)
    created = client.post("/v1/responses", json={"input": "x"}).json()
    assert client.get(f"/v1/responses/{created['id']}").json() == created
    deleted = client.delete(f"/v1/responses/{created['id']}").json()
    assert deleted == {"id": created["id"], "object": "response.deleted", "deleted": True}
    for response in (
        client.get(f"/v1/responses/{created['id']}"),
        client.delete(f"/v1/responses/{created['id']}"),
    ):
        assert_error(response, 404, contains=created["id"], kind="not_found_error")


# -- streaming --------------------------------------------------------------------------------


def test_stream_text_events(make_client: MakeClient) -> None:
    client, _ = scripted(make_client)
    response = client.post("/v1/responses", json={"input": "stream me", "stream": True})
    assert response.status_code == 200
    events = sse_events(response)
    kinds = [e["type"] for e in events]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) > 1
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(deltas),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == []
    item_id = events[2]["item"]["id"]
    assert all(d["item_id"] == item_id and d["output_index"] == 0 for d in deltas)
    assert "".join(d["delta"] for d in deltas) == "echo: stream me"
    assert events[-4]["text"] == "echo: stream me"
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["id"] == item_id
    assert final["output"][0]["content"][0]["text"] == "echo: stream me"
    assert client.get(f"/v1/responses/{final['id']}").json() == final


def test_stream_function_call_events(make_client: MakeClient) -> None:
    client, _ = scripted(make_client)
    response = client.post(
        "/v1/responses", json={"input": "Weather?", "tools": [WEATHER], "stream": True}
    )
    events = sse_events(response)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added, delta, done, item_done = events[2:6]
    assert added["item"]["type"] == "function_call"
    assert added["item"]["status"] == "in_progress"
    assert json.loads(delta["delta"]) == {"city": "Paris"}
    assert done["arguments"] == delta["delta"]
    assert done["name"] == "get_weather"
    assert item_done["item"]["status"] == "completed"
    assert events[-1]["response"]["output"] == [item_done["item"]]


def test_stream_through_the_sdk(make_client: MakeClient) -> None:
    client, _ = scripted(make_client)
    stream = sdk(client).responses.create(input="sdk", stream=True)
    events = list(stream)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "echo: sdk"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: sdk"


def test_failure_after_the_stream_started(make_client: MakeClient) -> None:
    def crash(messages: list[Message], params: ModelRequestParameters) -> str:
        raise ModelCrashedError("the engine process died")

    client = make_client(crash)
    response = client.post("/v1/responses", json={"input": "hi", "stream": True})
    assert response.status_code == 200
    events = sse_events(response)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "error",
        "response.failed",
    ]
    assert "engine process died" in events[2]["message"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error"
    assert "engine process died" in failed["error"]["message"]
    assert client.get(f"/v1/responses/{failed['id']}").status_code == 404


def test_full_queue_refuses_a_stream_before_it_starts(make_client: MakeClient) -> None:
    client = make_client(max_queue=0)
    engine = client.app.state.shoal.engine_for(None)  # type: ignore[attr-defined]
    engine.active = engine.max_active  # a request holds the only slot
    try:
        response = client.post("/v1/responses", json={"input": "hi", "stream": True})
    finally:
        engine.active = 0
    assert_error(response, 429, contains="busy", kind="rate_limit_error")
    assert "retry-after" in response.headers


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "phrase"),
    [
        ({}, 400, "input"),
        ({"input": "x", "previous_response_id": "resp_nope"}, 404, "resp_nope"),
        ({"input": "x", "model": "no-such-model"}, 404, "no-such-model"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
            400,
            "only text content",
        ),
        ({"input": [{"type": "reasoning", "summary": []}]}, 400, "'reasoning' are not supported"),
        ({"input": [{"role": "assistant", "content": "hi"}]}, 400, "must end with a user"),
        ({"input": []}, 400, "no user message"),
        (
            {"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]},
            400,
            "no function_call with call_id 'call_x'",
        ),
        (
            {
                "input": [
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"},
                    {"type": "function_call_output", "call_id": "c", "output": "1"},
                ]
            },
            400,
            "JSON object",
        ),
        ({"input": "x", "tools": [{"type": "web_search"}]}, 400, "only function tools"),
        ({"input": "x", "tool_choice": {"type": "function", "name": "f"}}, 400, "not in tools"),
        ({"input": "x", "tool_choice": {"type": "file_search"}}, 400, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, 400, "needs a schema"),
        ({"input": "x", "max_output_tokens": 10**6}, 400, "max_output_tokens"),
        ({"input": "x", "temperature": 5}, 400, "temperature"),
    ],
)
def test_request_errors(client: TestClient, body: dict[str, Any], status: int, phrase: str) -> None:
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    assert_error(client.post("/v1/responses", json=body), status, contains=phrase, kind=kind)


def test_sdk_raises_on_a_bad_request(make_client: MakeClient) -> None:
    client, _ = scripted(make_client)
    with pytest.raises(openai.NotFoundError, match="resp_missing"):
        sdk(client).responses.create(input="x", previous_response_id="resp_missing")


# -- the store --------------------------------------------------------------------------------


async def test_store_round_trip_and_delete(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.db")
    conversation: list[Message] = [
        UserMessage(content="Zürich?"),
        AssistantMessage(tool_calls=(ToolCall(id="c1", name="f", arguments={"n": [1, 2.5]}),)),
        ToolMessage(tool_call_id="c1", name="f", content="ok"),
    ]
    await store.put(
        response_id="resp_1", created_at=7, response={"id": "resp_1"}, conversation=conversation
    )
    await store.close()
    reopened = ResponseStore(tmp_path / "r.db")
    stored = await reopened.get("resp_1")
    assert stored is not None
    assert (stored.id, stored.created_at, stored.response) == ("resp_1", 7, {"id": "resp_1"})
    assert stored.conversation == conversation
    assert await reopened.get("resp_2") is None
    assert await reopened.delete("resp_1") is True
    assert await reopened.delete("resp_1") is False
    await reopened.close()
    await reopened.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        await reopened.get("resp_1")


async def test_store_shares_a_file_with_the_thread_store(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    threads = SQLiteThreadStore(path)
    responses = ResponseStore(path)
    thread = await threads.create_thread()
    await responses.put(response_id="r", created_at=1, response={}, conversation=[])
    await threads.close()
    await responses.close()
    # each keeps its own migrations: reopening in either order works
    async with SQLiteThreadStore(path) as again:
        assert (await again.get_thread(thread.id)).id == thread.id
    responses = ResponseStore(path)
    assert await responses.get("r") is not None
    await responses.close()


def test_store_refuses_a_newer_file(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE _response_migrations (name TEXT PRIMARY KEY, applied_at INT)")
        db.execute("INSERT INTO _response_migrations VALUES ('r999_future', 0)")
    db.close()
    with pytest.raises(StoreError, match="newer version"):
        ResponseStore(path)


async def test_store_in_memory() -> None:
    store = ResponseStore()
    await store.put(response_id="r", created_at=1, response={"a": 1}, conversation=[])
    stored = await store.get("r")
    assert stored is not None
    assert stored.response == {"a": 1}
    with pytest.raises(ValueError, match="JSON"):
        await store.put(
            response_id="bad", created_at=1, response={"x": float("nan")}, conversation=[]
        )
    await store.close()
