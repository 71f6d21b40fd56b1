"""``shoal serve --system``: a system's entry, flows and agents over HTTP, approvals and traces.

The system's model references go through the server's model factory (worker processes in
production; scripted TestModels here: each calls every offered tool once, then answers with
the results).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shoal.exceptions import UserError
from shoal.models import Model, TestModel
from tests.unit._systems import tools_module, write_system
from tests.unit.server.conftest import WEATHER_TOOL, MakeClient

SYSTEM = """\
name: shop
description: Customer service.
models:
  primary: qwen2.5-coder-0.5b
  tiny: smollm2-135m
agents:
  billing:
    description: Payments and refunds.
    tools: [{m}:lookup_order, {m}:refund]
    approval: [refund]
  tech:
    instructions: You fix the app.
  boss:
    delegates: [tech]
flows:
  triage:
    type: router
    routes: [billing, tech]
    rules:
      - {pattern: "refund", to: billing, reason: billing words}
    classifier: tiny
  helpdesk:
    type: pipeline
    steps: [tech]
entry: triage
"""


@pytest.fixture
def tools(tmp_path: Path) -> Iterator[str]:
    with tools_module(tmp_path, "server_system_tools") as name:
        yield name


def scripted() -> dict[str, Model]:
    return {
        "qwen2.5-coder-0.5b": TestModel(name="qwen2.5-coder-0.5b"),
        "smollm2-135m": TestModel(name="smollm2-135m"),
    }


@pytest.fixture
def system_path(tmp_path: Path, tools: str) -> Path:
    return write_system(tmp_path, SYSTEM, tools)


@pytest.fixture
def client(make_client: MakeClient, system_path: Path) -> TestClient:
    return make_client(
        models=scripted(),
        systems=(system_path,),
        default_model="shop.primary",
        max_active=1,
        request_timeout=20,  # a deadlock fails in 20 s, not 300
    )


def chat(client: TestClient, model: str, text: str, **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}], **extra},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_models_lists_the_system_its_flows_agents_and_models(client: TestClient) -> None:
    data = {m["id"]: m for m in client.get("/v1/models").json()["data"]}

    assert data["shop"]["owned_by"] == "shoal-system"
    assert data["shop"]["runs"] == "triage"
    assert data["shop"]["agents"] == ["billing", "tech", "boss"]
    assert data["triage"]["owned_by"] == "shoal-flow"
    assert data["billing"]["owned_by"] == "shoal-agent"
    assert data["billing"]["description"] == "Payments and refunds."
    assert data["billing"]["model"] == "shop.primary"
    assert "shop.tiny" in data
    assert client.get("/health").json()["systems"] == ["shop"]


def test_the_system_name_runs_its_entry(client: TestClient) -> None:
    body = chat(client, "shop", "the app is slow")

    shoal = body["shoal"]
    # no rule matches: the classifier (a TestModel: the first label) picks
    assert (shoal["route"]["target"], shoal["route"]["by"]) == ("billing", "classifier")
    assert shoal["path"] == ["billing"]
    assert shoal["stop_reason"] == "approval"  # billing's TestModel calls refund, which waits


def test_a_flow_by_name_and_a_rule(client: TestClient) -> None:
    body = chat(client, "triage", "please refund order 9")

    assert body["model"] == "triage"
    assert body["shoal"]["route"] == {"target": "billing", "by": "rule", "reason": "billing words"}
    assert body["choices"][0]["message"]["content"] == ""
    assert body["choices"][0]["finish_reason"] == "stop"
    thread = body["shoal"]["thread_id"]
    assert thread is not None  # kept for the approval
    kinds = {event["kind"] for event in body["shoal"]["trace"]}
    assert {"system", "agent.route", "run", "tool.call"} <= kinds


def test_an_agent_by_name_is_a_hosted_agent(client: TestClient) -> None:
    body = chat(client, "tech", "hello")

    assert body["model"] == "tech"
    assert body["choices"][0]["message"]["content"] == "success"
    assert "shoal" not in body


def test_a_flow_refuses_client_tools(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "shop",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL],
        },
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "tools"
    assert "'shop' is a flow" in error["message"]


def test_delegating_on_one_model_does_not_deadlock(client: TestClient) -> None:
    # boss and tech share the model (one slot): boss's tool runs tech while boss holds it
    body = chat(client, "boss", "ask tech")

    assert "ask_tech" in body["choices"][0]["message"]["content"]


def test_approval_over_http(client: TestClient) -> None:
    thread = chat(client, "shop", "refund order 9")["shoal"]["thread_id"]

    pending = client.get(f"/v1/threads/{thread}/approval")
    assert pending.status_code == 200, pending.text
    body = pending.json()
    assert (body["system"], body["flow"], body["agent"]) == ("shop", "triage", "billing")
    [call] = body["tool_calls"]
    assert call["function"]["name"] == "refund"

    run = client.post(f"/v1/threads/{thread}/approval", json={"approve": True})
    assert run.status_code == 200, run.text
    result = run.json()
    assert result["object"] == "thread.run"
    assert result["status"] == "completed"
    assert "refunded" in result["shoal"]["output"]
    assert result["shoal"]["path"] == ["billing"]

    again = client.get(f"/v1/threads/{thread}/approval")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "no_pending_approval"
    posted = client.post(f"/v1/threads/{thread}/approval", json={"approve": True})
    assert posted.status_code == 404

    trace = client.get(f"/v1/threads/{thread}/trace").json()
    kinds = [event["kind"] for event in trace["data"]]
    assert "approval.requested" in kinds
    assert "approval.decided" in kinds


def test_thread_runs_pause_with_submit_approval_and_reject(client: TestClient) -> None:
    thread = client.post(
        "/v1/threads", json={"messages": [{"role": "user", "content": "refund order 3"}]}
    ).json()["id"]

    run = client.post(f"/v1/threads/{thread}/runs", json={"assistant_id": "shop"})
    assert run.status_code == 200, run.text
    paused = run.json()
    assert paused["status"] == "requires_action"
    action = paused["required_action"]
    assert action["type"] == "submit_approval"
    [call] = action["submit_approval"]["tool_calls"]
    assert call["function"]["name"] == "refund"
    assert paused["shoal"]["route"]["target"] == "billing"

    wrong = client.post(
        f"/v1/threads/{thread}/approval", json={"approve": True, "call_ids": ["call_nope"]}
    )
    assert wrong.status_code == 409
    assert wrong.json()["error"]["code"] == "approval_error"

    done = client.post(
        f"/v1/threads/{thread}/approval",
        json={"approve": False, "reason": "not allowed", "call_ids": [call["id"]]},
    ).json()
    assert done["status"] == "completed"
    assert "rejected by a person: not allowed" in done["shoal"]["output"]
    messages = client.get(f"/v1/threads/{thread}/messages", params={"order": "asc"}).json()
    assert messages["data"][0]["content"][0]["text"]["value"] == "refund order 3"


def test_thread_runs_of_a_flow_refuse_request_tools(client: TestClient) -> None:
    thread = client.post(
        "/v1/threads", json={"messages": [{"role": "user", "content": "hi"}]}
    ).json()["id"]

    run = client.post(
        f"/v1/threads/{thread}/runs", json={"model": "triage", "instructions": "be brief"}
    )

    assert run.status_code == 400
    assert run.json()["error"]["param"] == "instructions"


def test_a_hosted_agent_spec_pauses_and_resumes(
    make_client: MakeClient, tmp_path: Path, tools: str
) -> None:
    spec = tmp_path / "agent.yaml"
    spec.write_text(f"name: support\ntools: [{tools}:delete_account]\n", encoding="utf-8")
    client = make_client(
        models={"smollm2-135m": TestModel(name="smollm2-135m")}, agent_specs=(spec,)
    )
    thread = client.post(
        "/v1/threads", json={"messages": [{"role": "user", "content": "delete me"}]}
    ).json()["id"]

    paused = client.post(f"/v1/threads/{thread}/runs", json={"model": "support"}).json()
    assert paused["status"] == "requires_action"
    assert paused["required_action"]["type"] == "submit_approval"
    pending = client.get(f"/v1/threads/{thread}/approval").json()
    assert (pending["agent"], pending["system"]) == ("support", None)

    done = client.post(f"/v1/threads/{thread}/approval", json={}).json()
    assert done["status"] == "completed"
    assert "deleted" in done["shoal"]["output"]
    assert done["assistant_id"] == "support"


def test_responses_api_runs_a_flow(client: TestClient) -> None:
    response = client.post("/v1/responses", json={"model": "helpdesk", "input": "it crashed"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["shoal"]["path"] == ["tech"]
    assert body["output"][0]["content"][0]["text"] == "success"
    stored = client.get(f"/v1/responses/{body['id']}").json()
    assert stored["id"] == body["id"]
    paused = client.post("/v1/responses", json={"model": "shop", "input": "refund 1"}).json()
    assert paused["status"] == "incomplete"
    assert paused["incomplete_details"] == {"reason": "approval"}
    assert paused["output"] == []
    assert paused["shoal"]["thread_id"] is not None
    agent = client.post("/v1/responses", json={"model": "tech", "input": "hi"}).json()
    assert agent["output"][0]["content"][0]["text"] == "success"
    assert "shoal" not in agent


def test_a_streamed_flow_answer(client: TestClient) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "shop",
            "messages": [{"role": "user", "content": "refund 1"}],
            "stream": True,
        },
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]

    assert lines[-1] == "data: [DONE]"
    assert '"stop_reason": "approval"' in lines[-2]


def test_names_may_not_clash(make_client: MakeClient, tmp_path: Path, system_path: Path) -> None:
    spec = tmp_path / "agent.yaml"
    spec.write_text("name: billing\n", encoding="utf-8")

    with pytest.raises(UserError, match="the name 'billing' is already a hosted agent"):
        make_client(models=scripted(), agent_specs=(spec,), systems=(system_path,))
