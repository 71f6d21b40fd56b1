"""POST /v1/chat/completions over scripted models: shapes, tools, streaming, errors."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from shoal.messages import ToolCall
from shoal.models import ModelRequestParameters
from tests.unit.server.conftest import WEATHER_TOOL, MakeClient

USER = [{"role": "user", "content": "What is the weather in Paris?"}]


def events(client: TestClient, body: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_text_answer_has_openai_shape(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={"model": "smollm2-135m", "messages": USER})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "smollm2-135m"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "echo: " + USER[0]["content"]}
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_tool_call_comes_back_with_json_arguments(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={"messages": USER, "tools": [WEATHER_TOOL]})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_invalid_call_is_never_returned(make_client: MakeClient) -> None:
    """A call whose arguments do not validate is sent back to the model, not to the client."""
    answers = iter(
        [
            ToolCall(name="get_weather", arguments={"town": 3}),
            ToolCall(name="get_weather", arguments={"city": "Oslo"}),
        ]
    )
    seen: list[ModelRequestParameters] = []

    def model(messages: list[Any], params: ModelRequestParameters) -> Any:
        seen.append(params)
        return next(answers)

    client = make_client(model)
    r = client.post("/v1/chat/completions", json={"messages": USER, "tools": [WEATHER_TOOL]})
    (call,) = r.json()["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert len(seen) == 2


def test_tool_results_from_the_client_continue_the_conversation(make_client: MakeClient) -> None:
    received: list[list[Any]] = []

    def model(messages: list[Any], params: ModelRequestParameters) -> Any:
        received.append(messages)
        return "It is sunny in Paris."

    client = make_client(model)
    messages = [
        {"role": "system", "content": "Be brief."},
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    r = client.post("/v1/chat/completions", json={"messages": messages, "tools": [WEATHER_TOOL]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "It is sunny in Paris."
    sent = received[0]
    assert sent[0].role == "system"
    assert sent[0].content == "Be brief."
    assert sent[-1].role == "tool"
    assert sent[-1].name == "get_weather"
    assert sent[-1].content == "sunny, 21 C"


def test_tool_choice_none_and_named(make_client: MakeClient) -> None:
    choices: list[str] = []

    def model(messages: list[Any], params: ModelRequestParameters) -> Any:
        choices.append(params.tool_choice)
        if params.call_required:
            return ToolCall(name=params.offered_tools()[0].name, arguments={"city": "Rome"})
        return "no call"

    client = make_client(model)
    r = client.post(
        "/v1/chat/completions",
        json={"messages": USER, "tools": [WEATHER_TOOL], "tool_choice": "none"},
    )
    assert r.json()["choices"][0]["message"]["content"] == "no call"
    r = client.post(
        "/v1/chat/completions",
        json={
            "messages": USER,
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
    )
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert choices == ["none", "get_weather"]


def test_json_schema_output_is_constrained_and_validated(make_client: MakeClient) -> None:
    schemas: list[Any] = []
    answers = iter(['{"name": 5}', '{"name": "Ada"}'])

    def model(messages: list[Any], params: ModelRequestParameters) -> Any:
        schemas.append(params.output_schema)
        return next(answers)

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    }
    client = make_client(model)
    r = client.post(
        "/v1/chat/completions",
        json={
            "messages": USER,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "p", "schema": schema},
            },
        },
    )
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["choices"][0]["message"]["content"]) == {"name": "Ada"}
    assert schemas == [schema, schema]


def test_stream_text_chunks_and_usage(client: TestClient) -> None:
    out = events(
        client,
        {"messages": USER, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: " + USER[0]["content"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert set(finishes[:-1]) == {None}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_stream_tool_call_delta(client: TestClient) -> None:
    out = events(client, {"messages": USER, "tools": [WEATHER_TOOL], "stream": True})
    calls = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in out[:-1]
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert len(calls) == 1
    (delta,) = calls[0]
    assert delta["index"] == 0
    assert delta["function"]["name"] == "get_weather"
    assert json.loads(delta["function"]["arguments"]) == {"city": "Paris"}
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_keeps_multibyte_characters_whole(make_client: MakeClient) -> None:
    text = "Grüße aus Köln 🌍 — 東京"
    client = make_client(lambda messages, params: text)
    out = events(client, {"messages": USER, "stream": True})
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in out[:-1] if c["choices"]]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_bad_requests_are_400_in_openai_shape(client: TestClient) -> None:
    cases: list[tuple[Any, str]] = [
        ({"messages": []}, "messages"),
        ({"messages": USER, "n": 2}, "n"),
        ({"messages": USER, "temperature": 7}, "temperature"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
        ({"messages": USER, "tool_choice": "required"}, "tool_choice"),
        ({"messages": USER, "max_tokens": 10**6}, "max_tokens"),
        (
            {"messages": USER, "tools": [{"type": "function", "function": {"name": "bad name!"}}]},
            "tools",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "messages",
        ),
    ]
    for body, param in cases:
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert (error["param"] or "").startswith(param), (body, error)
        assert error["message"]
    r = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"]


def test_unknown_model_is_404(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": USER})
    assert r.status_code == 404
    assert "gpt-9" in r.json()["error"]["message"]
    assert r.json()["error"]["code"] == "unknown_model_error"
