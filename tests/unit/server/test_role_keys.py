"""API keys mapped to roles (``shoal serve --role-key ROLE=KEY``): each key's requests run the
hosted agents and flows in its role, so a ``ToolPermissionGuard`` offers and allows only that
role's tools, on every route that runs an agent (chat completions, streamed or not, responses,
thread runs, approvals). Models are scripted: ``TestModel`` calls every tool it is offered once
and answers with the results as JSON, so the answer names the tools the role was offered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shoal.cli.main import main
from shoal.exceptions import UserError, exit_code_for
from shoal.messages import Message, ToolCall, ToolMessage
from shoal.models import FunctionModel, Model, ModelRequestParameters, TestModel
from shoal.server import ServerSettings
from shoal.server.settings import parse_role_keys
from tests.unit._systems import tools_module, write_system
from tests.unit.server.conftest import MakeClient

SYSTEM = """\
name: shop
models:
  primary: qwen2.5-coder-0.5b
  pushy: smollm2-135m
guards:
  - ref: shoal.guards:ToolPermissionGuard
    options:
      roles:
        viewer: [lookup_order]
        clerk: [lookup_order, refund]
agents:
  desk:
    tools: [{m}:lookup_order, {m}:refund, {m}:delete_account]
  cashier:
    tools: [{m}:lookup_order, {m}:refund]
    approval: [refund]
  pushy:
    model: pushy
    tools: [{m}:lookup_order, {m}:refund]
flows:
  front:
    type: pipeline
    steps: [desk]
  till:
    type: pipeline
    steps: [cashier]
entry: front
"""

VIEWER, CLERK, PLAIN = "viewer-key", "clerk=key==", "plain-key"
#: the tools each key's role is offered (a plain key has no role: the guard's default, none)
OFFERED = {VIEWER: {"lookup_order"}, CLERK: {"lookup_order", "refund"}, PLAIN: set()}


def always_refund(messages: list[Message], params: ModelRequestParameters) -> Any:
    """A model that calls ``refund`` whatever it is offered, then answers with the result."""
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if not results:
        return ToolCall(name="refund", arguments={"order_id": "7"})
    return results[-1].content


@pytest.fixture
def tools(tmp_path: Path) -> Iterator[str]:
    with tools_module(tmp_path, "role_key_tools") as name:
        yield name


@pytest.fixture
def client(make_client: MakeClient, tmp_path: Path, tools: str) -> TestClient:
    system = write_system(tmp_path, SYSTEM, tools)
    models: dict[str, Model] = {
        "qwen2.5-coder-0.5b": TestModel(name="qwen2.5-coder-0.5b"),
        "smollm2-135m": FunctionModel(always_refund, name="smollm2-135m"),
    }
    return make_client(
        models=models,
        systems=(system,),
        default_model="shop.primary",
        api_keys=(PLAIN,),
        role_keys={VIEWER: "viewer", CLERK: "clerk"},
        request_timeout=20,
    )


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tools_in(answer: str) -> set[str]:
    """The tools a TestModel's answer reports results of ("success": none were offered)."""
    return set() if answer == "success" else set(json.loads(answer))


def run_roles(trace: list[dict[str, Any]]) -> list[str | None]:
    return [event["data"]["role"] for event in trace if event["kind"] == "run"]


def chat(client: TestClient, key: str, model: str, text: str, **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}], **extra},
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def thread_with(client: TestClient, key: str, text: str) -> str:
    created = client.post(
        "/v1/threads", json={"messages": [{"role": "user", "content": text}]}, headers=auth(key)
    )
    assert created.status_code == 200, created.text
    thread: str = created.json()["id"]
    return thread


# -- each key's role decides the tools ----------------------------------------------------------


@pytest.mark.parametrize("key", [VIEWER, CLERK, PLAIN])
def test_chat_completions_offer_only_the_keys_roles_tools(client: TestClient, key: str) -> None:
    body = chat(client, key, "desk", "order 7, please")

    assert tools_in(body["choices"][0]["message"]["content"]) == OFFERED[key]


@pytest.mark.parametrize("key", [VIEWER, CLERK])
def test_streamed_chat_runs_in_the_keys_role(client: TestClient, key: str) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"model": "desk", "messages": [{"role": "user", "content": "x"}], "stream": True},
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    text = ""
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""

    assert tools_in(text) == OFFERED[key]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("key", [VIEWER, CLERK])
def test_responses_api_runs_in_the_keys_role(client: TestClient, key: str, stream: bool) -> None:
    response = client.post(
        "/v1/responses", json={"model": "desk", "input": "x", "stream": stream}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    if stream:
        events = [
            json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data:")
        ]
        [done] = [e for e in events if e["type"] == "response.completed"]
        body = done["response"]
    else:
        body = response.json()

    assert tools_in(body["output"][0]["content"][0]["text"]) == OFFERED[key]


@pytest.mark.parametrize("key", [VIEWER, CLERK, PLAIN])
def test_a_flow_runs_its_agents_in_the_keys_role(client: TestClient, key: str) -> None:
    shoal = chat(client, key, "shop", "order 7")["shoal"]

    role = {VIEWER: "viewer", CLERK: "clerk", PLAIN: None}[key]
    assert run_roles(shoal["trace"]) == [role]
    called = {e["data"]["tool"] for e in shoal["trace"] if e["kind"] == "tool.call"}
    assert called == OFFERED[key]

    response = client.post(
        "/v1/responses", json={"model": "front", "input": "x"}, headers=auth(key)
    )
    assert run_roles(response.json()["shoal"]["trace"]) == [role]


def test_a_call_to_a_tool_the_role_lacks_is_blocked(client: TestClient) -> None:
    outcomes = {}
    for key in (VIEWER, CLERK):
        thread = thread_with(client, key, "refund order 7")
        run = client.post(f"/v1/threads/{thread}/runs", json={"model": "pushy"}, headers=auth(key))
        assert run.status_code == 200, run.text
        [record] = run.json()["shoal"]["tool_calls"]
        assert record["name"] == "refund"
        outcomes[key] = (record["outcome"], record["content"])

    assert outcomes[VIEWER] == (
        "blocked",
        "Error: blocked by guard ToolPermissionGuard: the role 'viewer' may not use the tool "
        "'refund'",
    )
    assert outcomes[CLERK] == ("ok", "refunded 7")


def test_thread_runs_of_an_agent_and_a_flow_run_in_the_keys_role(client: TestClient) -> None:
    for model in ("desk", "front"):
        thread = thread_with(client, VIEWER, "order 7")
        run = client.post(f"/v1/threads/{thread}/runs", json={"model": model}, headers=auth(VIEWER))
        assert run.status_code == 200, run.text
        assert {r["name"] for r in run.json()["shoal"]["tool_calls"]} == {"lookup_order"}
        trace = client.get(f"/v1/threads/{thread}/trace", headers=auth(VIEWER)).json()["data"]
        assert run_roles(trace) == ["viewer"]


@pytest.mark.parametrize("model", ["cashier", "till"])
def test_an_approval_goes_on_in_the_role_the_run_started_with(
    client: TestClient, model: str
) -> None:
    thread = thread_with(client, CLERK, "refund order 7")
    paused = client.post(f"/v1/threads/{thread}/runs", json={"model": model}, headers=auth(CLERK))
    assert paused.json()["status"] == "requires_action", paused.text

    done = client.post(f"/v1/threads/{thread}/approval", json={}, headers=auth(VIEWER))

    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
    trace = client.get(f"/v1/threads/{thread}/trace", headers=auth(CLERK)).json()["data"]
    assert run_roles(trace) == ["clerk", "clerk"]  # approving is not a change of role


# -- the key decides, never the client ----------------------------------------------------------


def test_a_client_cannot_choose_its_role(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"model": "desk", "messages": [{"role": "user", "content": "x"}], "role": "clerk"},
        headers={**auth(VIEWER), "X-Shoal-Role": "clerk", "Shoal-Role": "clerk"},
    )

    # the body's unknown field is ignored and the headers are not read: the role is the key's
    assert response.status_code == 200, response.text
    assert tools_in(response.json()["choices"][0]["message"]["content"]) == {"lookup_order"}
    plain = client.post(
        "/v1/chat/completions",
        json={"model": "desk", "messages": [{"role": "user", "content": "x"}]},
        headers={**auth(PLAIN), "X-Shoal-Role": "clerk"},
    )
    assert tools_in(plain.json()["choices"][0]["message"]["content"]) == set()


@pytest.mark.parametrize(
    "header", ["Bearer wrong", "Bearer viewer", "Bearer clerk", "Bearer ", "viewer-key", ""]
)
def test_a_wrong_or_missing_key_is_401(client: TestClient, header: str) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.post(
        "/v1/chat/completions",
        json={"model": "desk", "messages": [{"role": "user", "content": "x"}]},
        headers=headers,
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/health").status_code == 200  # probes need no key


# -- settings -----------------------------------------------------------------------------------


def test_parse_role_keys_splits_at_the_first_equals_sign() -> None:
    keys = parse_role_keys(["staff=a=b", "admin.v2=k2", "staff=a=b"], " guest=g1 , ops-1=o= ,")

    assert keys == {"a=b": "staff", "k2": "admin.v2", "g1": "guest", "o=": "ops-1"}


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        (["s3cret"], "", r"--role-key #1: expected ROLE=KEY"),
        (["=s3cret"], "", r"--role-key #1: the role before '=' is empty"),
        (["staff="], "", r"the key of role 'staff' is empty; write staff=KEY"),
        (["sta ff=s3cret"], "", r"may use only letters, digits"),
        (["s3cret/+x=staff"], "", r"may use only letters, digits"),
        (["staff=s3cret", "admin=s3cret"], "", r"#2: the same key is given for roles 'staff' and"),
        (["staff=s3cret"], "admin=s3cret", r"SHOAL_ROLE_KEYS item 1: the same key is given"),
        ([], "ok=k,s3cret", r"\$SHOAL_ROLE_KEYS item 2: expected ROLE=KEY"),
    ],
)
def test_bad_role_keys_are_one_line_errors_that_never_echo_the_key(
    options: list[str], env: str, message: str
) -> None:
    with pytest.raises(UserError, match=message) as caught:
        parse_role_keys(options, env)

    assert "s3cret" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_settings_check_role_keys_and_hide_all_keys() -> None:
    with pytest.raises(UserError, match="both as a plain API key and as a key of role 'staff'"):
        ServerSettings(api_keys=("s3cret",), role_keys={"s3cret": "staff"})
    with pytest.raises(UserError, match="role must be made of letters"):
        ServerSettings(role_keys={"k": "no spaces"})
    with pytest.raises(UserError, match="key of role 'staff' is empty"):
        ServerSettings(role_keys={"": "staff"})
    with pytest.raises(UserError, match="an API key is empty"):
        ServerSettings(api_keys=("",))

    settings = ServerSettings(host="0.0.0.0", api_keys=("p-s3cret",), role_keys={"r-s3cret": "a"})
    assert settings.host == "0.0.0.0"  # role keys count as keys on a public address
    assert ServerSettings(host="0.0.0.0", role_keys={"r": "a"}).role_keys == {"r": "a"}
    assert "s3cret" not in repr(settings)
    with pytest.raises(TypeError):
        settings.role_keys["new"] = "admin"  # type: ignore[index]


# -- shoal serve --role-key ---------------------------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[ServerSettings]:
    """What ``shoal serve`` would serve, without binding a port or loading a model."""
    seen: list[ServerSettings] = []
    monkeypatch.setattr("shoal.server.check_port", lambda host, port: None)
    monkeypatch.setattr("shoal.server.serve", lambda settings, **_: seen.append(settings))
    monkeypatch.delenv("SHOAL_API_KEYS", raising=False)
    monkeypatch.delenv("SHOAL_ROLE_KEYS", raising=False)
    return seen


def test_serve_maps_role_keys_from_options_and_the_environment(
    served: list[ServerSettings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SHOAL_ROLE_KEYS", "guest=g-s3cret")
    argv = ["serve", "--host", "0.0.0.0", "--role-key", "staff=k=s3cret", "--api-key", "p-s3cret"]

    assert main(argv) == 0

    [settings] = served
    assert dict(settings.role_keys) == {"k=s3cret": "staff", "g-s3cret": "guest"}
    assert settings.api_keys == ("p-s3cret",)
    err = capsys.readouterr().err
    assert "roles by API key: guest, staff" in err
    assert "s3cret" not in err


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--role-key", "s3cret"], "", "--role-key #1: expected ROLE=KEY"),
        (["--role-key", "staff="], "", "the key of role 'staff' is empty"),
        (["--role-key", "a=s3cret", "--role-key", "b=s3cret"], "", "the same key is given"),
        (["--role-key", "a=s3cret", "--api-key", "s3cret"], "", "both as a plain API key"),
        (["--api-key", "s3cret"], "a=s3cret", "both as a plain API key"),
        ([], "a=s3cret,b=s3cret", "$SHOAL_ROLE_KEYS item 2: the same key is given"),
    ],
)
def test_serve_refuses_bad_role_keys_without_a_traceback(
    served: list[ServerSettings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: str,
    message: str,
) -> None:
    if env:
        monkeypatch.setenv("SHOAL_ROLE_KEYS", env)

    code = main(["serve", *argv])

    err = capsys.readouterr().err
    assert code == exit_code_for(UserError("x")) == 2
    assert message in err
    assert "Traceback" not in err
    assert "s3cret" not in err
    assert served == []
