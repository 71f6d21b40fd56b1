"""``shoal serve --deployment``: named models (routers, fallbacks) served under their names.

The deployment's leaf references go through the server's model factory (worker processes in
production; scripted models here), so each answer says which leaf model produced it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shoal.exceptions import ModelCrashedError, SpecError
from shoal.messages import Message
from shoal.models import FunctionModel, ModelRequestParameters
from tests.unit.server.conftest import MakeClient

DEPLOYMENT = """\
models:
  small: smollm2-135m
  large: qwen2.5-coder-0.5b
  main:
    router:
      rules:
        - {pattern: "weather|order", route: lookup}
      routes: {lookup: small, other: large}
      default: other
default: main
"""


def says(text: str, name: str) -> FunctionModel:
    return FunctionModel(lambda messages, params: text, name=name)


def leaves() -> dict[str, Any]:
    return {
        "smollm2-135m": says("small here", "smollm2-135m"),
        "qwen2.5-coder-0.5b": says("large here", "qwen2.5-coder-0.5b"),
    }


def ask(client: TestClient, text: str, model: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
    if model is not None:
        body["model"] = model
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_a_deployment_router_is_served_under_its_name(
    make_client: MakeClient, tmp_path: Path
) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text(DEPLOYMENT)
    client = make_client(models=leaves(), deployment=path, default_model="main")

    listed = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert listed[:3] == ["main", "small", "large"]

    lookup = ask(client, "What's the weather in Oslo?")  # no model: the default, main
    assert lookup["choices"][0]["message"]["content"] == "small here"
    assert lookup["shoal"]["answered_by"] == "smollm2-135m"
    assert lookup["shoal"]["decisions"] == [
        {
            "router": "main",
            "kind": "rule",
            "model": "smollm2-135m",
            "reason": "pattern 'weather|order'",
        }
    ]
    other = ask(client, "Why is the sky blue?", model="main")
    assert other["choices"][0]["message"]["content"] == "large here"
    assert other["shoal"]["decisions"][0]["kind"] == "default"
    # a named leaf is served on its own, without routing
    direct = ask(client, "hi", model="large")
    assert direct["choices"][0]["message"]["content"] == "large here"
    assert "shoal" not in direct

    metrics = client.get("/metrics").text
    assert 'shoal_routing_decisions_total{kind="rule",model="smollm2-135m",router="main"}' in (
        metrics
    )


def test_an_agent_spec_with_its_own_fallback_models(
    make_client: MakeClient, tmp_path: Path
) -> None:
    spec = tmp_path / "desk.yaml"
    spec.write_text(
        "name: desk\n"
        "models:\n"
        "  safe:\n"
        "    fallback: [smollm2-135m, qwen2.5-coder-0.5b]\n"
        "model: safe\n"
    )

    def crash(messages: list[Message], params: ModelRequestParameters) -> str:
        raise ModelCrashedError("the engine died")

    models = {
        "smollm2-135m": FunctionModel(crash, name="smollm2-135m"),
        "qwen2.5-coder-0.5b": says("second answers", "qwen2.5-coder-0.5b"),
    }
    client = make_client(models=models, agent_specs=(spec,))

    answer = ask(client, "hello", model="desk")
    assert answer["choices"][0]["message"]["content"] == "second answers"
    (decision,) = answer["shoal"]["decisions"]
    assert decision["kind"] == "fallback"
    assert decision["model"] == "qwen2.5-coder-0.5b"
    assert "the engine died" in decision["reason"]
    assert "desk.safe" in [m["id"] for m in client.get("/v1/models").json()["data"]]


def test_a_bad_deployment_file_is_a_clear_error(make_client: MakeClient, tmp_path: Path) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text("models:\n  main:\n    fallback: [smollm2-135m, lagre]\n")
    with pytest.raises(SpecError, match=r"deploy\.yaml:3: .*'lagre'"):
        make_client(deployment=path)


def test_the_example_deployment_routes_small_talk_to_the_secondary_model(
    make_client: MakeClient,
) -> None:
    example = Path(__file__).parents[3] / "examples" / "deployment" / "deployment.yaml"
    client = make_client(models=leaves(), deployment=example, default_model="main")

    hello = ask(client, "hello there")
    assert hello["choices"][0]["message"]["content"] == "small here"
    assert [d["kind"] for d in hello["shoal"]["decisions"]] == ["rule"]

    # no rule: the secondary model classifies; its scripted answer is not a label, so the
    # default route (the fallback chain, primary first) answers
    task = ask(client, "Why is the sky blue?")
    assert task["choices"][0]["message"]["content"] == "large here"
    (decision,) = task["shoal"]["decisions"]
    assert decision["kind"] == "default"
    assert "not a label" in decision["reason"]
