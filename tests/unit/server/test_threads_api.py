"""``/v1/threads``: threads, their messages and synchronous runs, over scripted models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from shoal.exceptions import ModelCrashedError
from shoal.messages import Message, SystemMessage, ToolCall, ToolMessage, UserMessage
from shoal.models import FunctionModel, ModelRequestParameters
from shoal.threads import SQLiteThreadStore
from tests.unit.server.conftest import WEATHER_TOOL, MakeClient


def weather_then_answer(messages: list[Message], params: ModelRequestParameters) -> Any:
    """Calls the first offered tool; answers from a tool result; else echoes the request."""
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return f"It is {last.content} in Paris."
    offered = params.offered_tools()
    if offered and params.tool_choice != "none":
        return ToolCall(name=offered[0].name, arguments={"city": "Paris"})
    return f"echo: {getattr(last, 'content', '')}"


def assert_error(response: Response, status: int, *, contains: str, kind: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert contains in error["message"]
    assert error["type"] == kind


def new_thread(client: TestClient, *texts: str, **body: Any) -> str:
    messages = [{"role": "user", "content": text} for text in texts]
    response = client.post("/v1/threads", json={"messages": messages, **body})
    assert response.status_code == 200, response.text
    thread_id: str = response.json()["id"]
    return thread_id


# -- threads ----------------------------------------------------------------------------------


def test_thread_lifecycle(client: TestClient) -> None:
    created = client.post(
        "/v1/threads",
        json={
            "metadata": {"owner": "ana", "tags": ["x"]},
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
            ],
        },
    )
    assert created.status_code == 200
    thread = created.json()
    assert thread["id"].startswith("thread_")
    assert thread["object"] == "thread"
    assert isinstance(thread["created_at"], int)
    assert thread["metadata"] == {"owner": "ana", "tags": ["x"]}

    got = client.get(f"/v1/threads/{thread['id']}").json()
    assert got["message_count"] == 2
    assert got["updated_at"] >= got["created_at"]
    assert got["metadata"] == {"owner": "ana", "tags": ["x"]}

    updated = client.post(f"/v1/threads/{thread['id']}", json={"metadata": {"owner": "bo"}})
    assert updated.status_code == 200
    assert updated.json()["metadata"] == {"owner": "bo"}
    assert client.get(f"/v1/threads/{thread['id']}").json()["metadata"] == {"owner": "bo"}

    deleted = client.delete(f"/v1/threads/{thread['id']}")
    assert deleted.json() == {"id": thread["id"], "object": "thread.deleted", "deleted": True}
    assert_error(
        client.get(f"/v1/threads/{thread['id']}"), 404, contains="no thread", kind="not_found_error"
    )


def test_thread_without_a_body(client: TestClient) -> None:
    response = client.post("/v1/threads")
    assert response.status_code == 200
    assert response.json()["metadata"] == {}
    assert client.get(f"/v1/threads/{response.json()['id']}").json()["message_count"] == 0


def test_list_threads_pages_and_filters(client: TestClient) -> None:
    ids = [new_thread(client, metadata={"team": team}) for team in ("a", "b", "a")]
    first = client.get("/v1/threads", params={"limit": 2}).json()
    assert first["object"] == "list"
    assert [t["id"] for t in first["data"]] == [ids[2], ids[1]]  # newest first
    assert first["has_more"] is True
    assert first["first_id"] == ids[2]
    rest = client.get("/v1/threads", params={"limit": 2, "offset": 2}).json()
    assert [t["id"] for t in rest["data"]] == [ids[0]]
    assert rest["has_more"] is False

    team_a = client.get("/v1/threads", params={"metadata[team]": "a"}).json()
    assert [t["id"] for t in team_a["data"]] == [ids[2], ids[0]]
    assert client.get("/v1/threads", params={"metadata[team]": "z"}).json()["data"] == []


@pytest.mark.parametrize("limit", [0, 101, "many"])
def test_list_limits_are_checked(client: TestClient, limit: Any) -> None:
    response = client.get("/v1/threads", params={"limit": limit})
    assert_error(response, 400, contains="limit", kind="invalid_request_error")
    thread_id = new_thread(client)
    response = client.get(f"/v1/threads/{thread_id}/messages", params={"limit": limit})
    assert_error(response, 400, contains="limit", kind="invalid_request_error")


def test_metadata_that_is_not_json_is_a_400(client: TestClient) -> None:
    nan = '{"metadata": {"score": NaN}}'
    response = client.post("/v1/threads", content=nan, headers={"content-type": "application/json"})
    assert_error(response, 400, contains="NaN", kind="invalid_request_error")
    assert response.json()["error"]["param"] == "metadata"
    thread_id = new_thread(client)
    response = client.post(
        f"/v1/threads/{thread_id}", content=nan, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, contains="NaN", kind="invalid_request_error")
    response = client.post("/v1/threads", json={"metadata": ["not", "an", "object"]})
    assert_error(response, 400, contains="metadata", kind="invalid_request_error")


def test_unknown_thread_is_a_404_everywhere(client: TestClient) -> None:
    for response in (
        client.get("/v1/threads/thread_nope"),
        client.post("/v1/threads/thread_nope", json={"metadata": {}}),
        client.delete("/v1/threads/thread_nope"),
        client.get("/v1/threads/thread_nope/messages"),
        client.post("/v1/threads/thread_nope/messages", json={"role": "user", "content": "x"}),
        client.post("/v1/threads/thread_nope/runs", json={}),
    ):
        assert_error(response, 404, contains="thread_nope", kind="not_found_error")


# -- messages ---------------------------------------------------------------------------------


def test_add_and_list_messages(client: TestClient) -> None:
    thread_id = new_thread(client, "one")
    suffix = thread_id.removeprefix("thread_")
    added = client.post(
        f"/v1/threads/{thread_id}/messages",
        json={"role": "user", "content": [{"type": "text", "text": "two"}]},
    )
    assert added.status_code == 200
    message = added.json()
    assert message["id"] == f"msg_{suffix}_1"
    assert message["object"] == "thread.message"
    assert message["thread_id"] == thread_id
    assert message["role"] == "user"
    assert message["content"] == [{"type": "text", "text": {"value": "two", "annotations": []}}]
    assert isinstance(message["created_at"], int)
    client.post(f"/v1/threads/{thread_id}/messages", json={"role": "user", "content": "three"})

    def texts(**params: Any) -> list[str]:
        listing = client.get(f"/v1/threads/{thread_id}/messages", params=params).json()
        return [m["content"][0]["text"]["value"] for m in listing["data"]]

    assert texts() == ["three", "two", "one"]  # newest first by default
    assert texts(order="asc") == ["one", "two", "three"]
    assert texts(order="asc", limit=2) == ["one", "two"]
    assert texts(order="asc", after=f"msg_{suffix}_0") == ["two", "three"]
    assert texts(after=f"msg_{suffix}_2") == ["two", "one"]
    assert texts(before=f"msg_{suffix}_2", order="asc") == ["one", "two"]
    page = client.get(f"/v1/threads/{thread_id}/messages", params={"limit": 1}).json()
    assert page["has_more"] is True
    assert page["first_id"] == page["last_id"] == f"msg_{suffix}_2"

    bad = client.get(f"/v1/threads/{thread_id}/messages", params={"after": "msg_other_1"})
    assert_error(bad, 400, contains="not a message id", kind="invalid_request_error")


def test_bad_messages_are_400s(client: TestClient) -> None:
    thread_id = new_thread(client, "hi")
    url = f"/v1/threads/{thread_id}/messages"
    image = [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]
    cases = [
        ({"role": "user", "content": image}, "only text content"),
        ({"role": "system", "content": "x"}, "role"),
        ({"role": "tool", "content": "x"}, "tool_call_id"),
        ({"role": "tool", "tool_call_id": "call_unknown", "content": "x"}, "does not match"),
        ({"role": "user", "content": "x", "metadata": {"k": "v"}}, "metadata"),
    ]
    for body, phrase in cases:
        assert_error(
            client.post(url, json=body), 400, contains=phrase, kind="invalid_request_error"
        )
    response = client.post(
        "/v1/threads", json={"messages": [{"role": "tool", "tool_call_id": "c", "content": "x"}]}
    )
    assert_error(response, 400, contains="user and assistant", kind="invalid_request_error")


# -- runs -------------------------------------------------------------------------------------


def test_run_answers_and_appends_to_the_thread(make_client: MakeClient) -> None:
    model = FunctionModel(weather_then_answer)
    client = make_client(models={"smollm2-135m": model})
    thread_id = new_thread(client, "hello")
    response = client.post(
        f"/v1/threads/{thread_id}/runs", json={"instructions": "Be brief.", "temperature": 0.2}
    )
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["id"].startswith("run_")
    assert run["object"] == "thread.run"
    assert run["thread_id"] == thread_id
    assert run["status"] == "completed"
    assert run["required_action"] is None
    assert run["model"] == run["assistant_id"] == "smollm2-135m"
    assert run["instructions"] == "Be brief."
    assert run["temperature"] == 0.2
    usage = run["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert run["shoal"]["output"] == "echo: hello"
    assert run["shoal"]["stop_reason"] == "final"
    assert model.requests[-1].messages == [
        SystemMessage(content="Be brief."),
        UserMessage(content="hello"),
    ]

    listing = client.get(f"/v1/threads/{thread_id}/messages", params={"order": "asc"}).json()
    assert [(m["role"], m["content"][0]["text"]["value"]) for m in listing["data"]] == [
        ("user", "hello"),
        ("assistant", "echo: hello"),
    ]
    # the thread ends with the answer now: another run needs a new user message
    again = client.post(f"/v1/threads/{thread_id}/runs", json={})
    assert_error(again, 400, contains="add a user message first", kind="invalid_request_error")
    client.post(f"/v1/threads/{thread_id}/messages", json={"role": "user", "content": "more"})
    assert client.post(f"/v1/threads/{thread_id}/runs", json={}).json()["status"] == "completed"
    assert len(model.requests[-1].messages) == 3  # the model saw the earlier turn


def test_run_with_client_tools_requires_action(make_client: MakeClient) -> None:
    client = make_client(weather_then_answer)
    thread_id = new_thread(client, "Weather in Paris?")
    body = {"tools": [WEATHER_TOOL]}
    run = client.post(f"/v1/threads/{thread_id}/runs", json=body).json()
    assert run["status"] == "requires_action"
    assert run["tools"] == [WEATHER_TOOL]
    calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert run["required_action"]["type"] == "submit_tool_outputs"
    assert len(calls) == 1
    assert calls[0]["type"] == "function"
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}

    # the thread ends with the call: it needs the result before another run
    blocked = client.post(f"/v1/threads/{thread_id}/runs", json=body)
    assert_error(blocked, 400, contains="add a user message first", kind="invalid_request_error")
    url = f"/v1/threads/{thread_id}/messages"
    result = {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"}
    added = client.post(url, json=result).json()
    assert added["role"] == "tool"
    assert added["tool_call_id"] == calls[0]["id"]
    assert added["name"] == "get_weather"
    twice = client.post(url, json=result)
    assert_error(twice, 400, contains="already has a result", kind="invalid_request_error")

    run = client.post(f"/v1/threads/{thread_id}/runs", json=body).json()
    assert run["status"] == "completed"
    assert run["shoal"]["output"] == "It is sunny in Paris."
    listing = client.get(url, params={"order": "asc"}).json()["data"]
    assert [m["role"] for m in listing] == ["user", "assistant", "tool", "assistant"]
    assert listing[1]["content"] == []
    assert listing[1]["tool_calls"][0]["id"] == calls[0]["id"]
    assert listing[3]["content"][0]["text"]["value"] == "It is sunny in Paris."


def test_run_survives_a_restart(make_client: MakeClient, tmp_path: Path) -> None:
    first = make_client(store=SQLiteThreadStore(tmp_path / "threads.db"))
    thread_id = new_thread(first, "remember me", metadata={"k": "v"})
    assert first.post(f"/v1/threads/{thread_id}/runs", json={}).json()["status"] == "completed"
    first.__exit__(None, None, None)  # shuts the app down: the store is closed

    model = FunctionModel(weather_then_answer)
    second = make_client(
        store=SQLiteThreadStore(tmp_path / "threads.db"), models={"smollm2-135m": model}
    )
    thread = second.get(f"/v1/threads/{thread_id}").json()
    assert thread["metadata"] == {"k": "v"}
    assert thread["message_count"] == 2
    second.post(f"/v1/threads/{thread_id}/messages", json={"role": "user", "content": "again"})
    run = second.post(f"/v1/threads/{thread_id}/runs", json={}).json()
    assert run["shoal"]["output"] == "echo: again"
    assert [m.role for m in model.requests[-1].messages] == ["user", "assistant", "user"]
    assert model.requests[-1].messages[1].content == "echo: remember me"


def test_run_request_errors(client: TestClient) -> None:
    empty = client.post("/v1/threads").json()["id"]
    assert_error(
        client.post(f"/v1/threads/{empty}/runs", json={}),
        400,
        contains="add a user message first",
        kind="invalid_request_error",
    )
    thread_id = new_thread(client, "hi")
    url = f"/v1/threads/{thread_id}/runs"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"model": "no-such-model"}, 404, "no-such-model"),
        ({"assistant_id": "a", "model": "b"}, 400, "not both"),
        ({"stream": True}, 400, "stream"),
        ({"tool_choice": "required"}, 400, "no tools"),
        ({"tools": [{"type": "code_interpreter"}]}, 400, "tools"),
        ({"max_tokens": 10**6}, 400, "limit"),
    ]
    for body, status, phrase in cases:
        kind = "not_found_error" if status == 404 else "invalid_request_error"
        assert_error(client.post(url, json=body), status, contains=phrase, kind=kind)
    # nothing was appended by the refused runs
    assert client.get(f"/v1/threads/{thread_id}").json()["message_count"] == 1


def test_engine_failure_is_an_http_error_not_a_failed_run(make_client: MakeClient) -> None:
    def crash(messages: list[Message], params: ModelRequestParameters) -> str:
        raise ModelCrashedError("the engine process died")

    client = make_client(crash)
    thread_id = new_thread(client, "hi")
    response = client.post(f"/v1/threads/{thread_id}/runs", json={})
    assert_error(response, 503, contains="engine process died", kind="service_unavailable")
    assert client.get(f"/v1/threads/{thread_id}").json()["message_count"] == 1


def test_run_with_json_output(make_client: MakeClient) -> None:
    client = make_client(lambda messages, params: '{"answer": 42}')
    thread_id = new_thread(client, "the answer?")
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    body = {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
    run = client.post(f"/v1/threads/{thread_id}/runs", json=body).json()
    assert run["status"] == "completed"
    assert run["shoal"]["output"] == {"answer": 42}


def test_run_with_a_hosted_agent(make_client: MakeClient, tmp_path: Path) -> None:
    (tmp_path / "clock_tools_for_threads.py").write_text(
        'def local_time(city: str) -> str:\n    """The local time in a city."""\n'
        '    return "10:30"\n'
    )
    spec = tmp_path / "clock.yaml"
    spec.write_text(
        "name: clock\nmodel: smollm2-135m\ninstructions: Tell the time.\n"
        "tools:\n  - clock_tools_for_threads:local_time\n"
    )
    client = make_client(weather_then_answer, agent_specs=(spec,))
    thread_id = new_thread(client, "Time in Paris?")
    run = client.post(f"/v1/threads/{thread_id}/runs", json={"assistant_id": "clock"}).json()
    assert run["status"] == "completed"
    assert run["assistant_id"] == "clock"
    assert run["model"] == "smollm2-135m"
    assert run["instructions"] == ""  # the agent's own instructions are not shown
    assert run["shoal"]["output"] == "It is 10:30 in Paris."
    assert run["shoal"]["tool_calls"] == [
        {"name": "local_time", "arguments": {"city": "Paris"}, "outcome": "ok", "content": "10:30"}
    ]
    roles = [m["role"] for m in client.get(f"/v1/threads/{thread_id}/messages").json()["data"]]
    assert roles == ["assistant", "tool", "assistant", "user"]  # newest first
