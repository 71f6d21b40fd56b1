"""Health, metrics, models, hosted agents, authentication and the limits of the server."""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shoal.exceptions import ModelLoadError, UserError
from shoal.messages import ToolCall
from shoal.models import FunctionModel, ModelRequestParameters
from shoal.server import ServerSettings
from tests.unit.server.conftest import WEATHER_TOOL, MakeClient

USER = [{"role": "user", "content": "hello"}]


def test_health_reports_ready_model(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True
    assert body["status"] == "ok"
    assert body["models"]["smollm2-135m"]["state"] == "ready"


class _FailingModel(FunctionModel):
    async def prepare(self) -> None:
        raise ModelLoadError("weights are corrupt")


def test_health_reports_failed_load_and_requests_get_503(make_client: MakeClient) -> None:
    failing = _FailingModel(lambda m, p: "never", name="smollm2-135m")
    client = make_client(models={"smollm2-135m": failing})
    r = client.get("/health")
    assert r.status_code == 503
    assert r.json()["ready"] is False
    assert r.json()["models"]["smollm2-135m"]["state"] == "failed"
    assert "corrupt" in r.json()["models"]["smollm2-135m"]["last_error"]
    r = client.post("/v1/chat/completions", json={"messages": USER})
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "service_unavailable"


def test_metrics_count_requests_tokens_and_tool_calls(client: TestClient) -> None:
    client.post("/v1/chat/completions", json={"messages": USER})
    client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER_TOOL]},
    )
    client.post("/v1/chat/completions", json={"messages": []})
    text = client.get("/metrics").text
    assert (
        'shoal_http_requests_total{method="POST",route="/v1/chat/completions",status="200"} 2.0'
        in text
    )
    assert (
        'shoal_http_requests_total{method="POST",route="/v1/chat/completions",status="400"} 1.0'
        in text
    )
    assert 'shoal_tool_calls_total{outcome="pending"} 1.0' in text
    assert 'shoal_tokens_total{direction="in",model="smollm2-135m"}' in text
    assert "shoal_http_request_seconds_bucket" in text
    assert 'shoal_queue_depth{model="smollm2-135m"} 0.0' in text


def test_models_lists_aliases_and_hosted_agents(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client(agent_specs=(_weather_agent(tmp_path),))
    data = client.get("/v1/models").json()["data"]
    ids = [m["id"] for m in data]
    assert "smollm2-135m" in ids
    assert "weather" in ids
    agent = next(m for m in data if m["id"] == "weather")
    assert agent["owned_by"] == "shoal-agent"
    assert agent["tools"] == ["get_weather"]
    assert client.get("/v1/models/weather").json()["id"] == "weather"
    assert client.get("/v1/models/nope").status_code == 404


def _weather_agent(tmp_path: Path) -> Path:
    (tmp_path / "weather_tools.py").write_text(
        textwrap.dedent(
            '''
            def get_weather(city: str) -> str:
                """Current weather in a city."""
                return f"sunny in {city}"
            '''
        )
    )
    spec = tmp_path / "weather.yaml"
    spec.write_text(
        "name: weather\nmodel: smollm2-135m\ninstructions: You report the weather.\n"
        "tools:\n  - weather_tools:get_weather\n"
    )
    return spec


def test_hosted_agent_runs_its_own_tools(make_client: MakeClient, tmp_path: Path) -> None:
    def model(messages: list[Any], params: ModelRequestParameters) -> Any:
        if messages[-1].role == "tool":
            return f"Report: {messages[-1].content}"
        return ToolCall(name="get_weather", arguments={"city": "Lima"})

    client = make_client(model, agent_specs=(_weather_agent(tmp_path),))
    r = client.post(
        "/v1/chat/completions",
        json={"model": "weather", "messages": [{"role": "user", "content": "weather in Lima"}]},
    )
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert message["content"] == "Report: sunny in Lima"
    assert "tool_calls" not in message
    assert 'shoal_tool_calls_total{outcome="ok"} 1.0' in client.get("/metrics").text


def test_api_keys_are_checked_as_bearer_tokens(make_client: MakeClient) -> None:
    client = make_client(api_keys=("s3cret",))
    assert client.get("/health").status_code == 200  # probes need no key
    r = client.get("/v1/models")
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_refuses_a_public_address_without_keys() -> None:
    with pytest.raises(UserError, match="without API keys"):
        ServerSettings(host="0.0.0.0")
    assert ServerSettings(host="0.0.0.0", api_keys=("k",)).host == "0.0.0.0"
    assert ServerSettings(host="::1").host == "::1"


def test_body_limit(make_client: MakeClient) -> None:
    client = make_client(max_body_bytes=2000)
    big = [{"role": "user", "content": "x" * 5000}]
    r = client.post("/v1/chat/completions", json={"messages": big})
    assert r.status_code == 413
    assert "2000 bytes" in r.json()["error"]["message"]


def test_message_count_limit(make_client: MakeClient) -> None:
    client = make_client(max_messages=3)
    many = [{"role": "user", "content": str(i)} for i in range(4)]
    r = client.post("/v1/chat/completions", json={"messages": many})
    assert r.status_code == 400
    assert "too many messages" in r.json()["error"]["message"]


def _slow(seconds: float) -> Any:
    async def model(messages: list[Any], params: ModelRequestParameters) -> Any:
        await asyncio.sleep(seconds)
        return "done"

    return model


def test_full_queue_gets_429_with_retry_after(make_client: MakeClient) -> None:
    client = make_client(_slow(1.0), max_active=1, max_queue=0)
    results: list[int] = []
    first = threading.Thread(
        target=lambda: results.append(
            client.post("/v1/chat/completions", json={"messages": USER}).status_code
        )
    )
    first.start()
    deadline = time.monotonic() + 5
    while 'shoal_active_requests{model="smollm2-135m"} 1.0' not in client.get("/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = client.post("/v1/chat/completions", json={"messages": USER})
    first.join()
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert results == [200]
    stream = client.post("/v1/chat/completions", json={"messages": USER, "stream": True})
    assert stream.status_code == 200  # the slot is free again


def test_deadline_gives_504_and_stops_the_work(make_client: MakeClient) -> None:
    finished: list[bool] = []

    async def model(messages: list[Any], params: ModelRequestParameters) -> Any:
        await asyncio.sleep(2.0)
        finished.append(True)
        return "late"

    client = make_client(model, request_timeout=0.3)
    started = time.monotonic()
    r = client.post("/v1/chat/completions", json={"messages": USER})
    assert r.status_code == 504
    assert time.monotonic() - started < 1.5
    assert r.json()["error"]["code"] == "deadline_exceeded_error"
    time.sleep(0.2)
    assert finished == []
    assert client.get("/health").json()["models"]["smollm2-135m"]["active"] == 0


def test_unexpected_failure_is_500_without_traceback(make_client: MakeClient) -> None:
    def model(messages: list[Any], params: ModelRequestParameters) -> Any:
        raise ZeroDivisionError("boom")

    client = make_client(model)
    client_no_raise = TestClient(client.app, raise_server_exceptions=False)
    r = client_no_raise.post("/v1/chat/completions", json={"messages": USER})
    assert r.status_code == 500
    assert "ZeroDivisionError" in r.json()["error"]["message"]
    assert "Traceback" not in r.text


def test_openapi_document_lists_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/chat/completions", "/v1/models", "/health", "/metrics"):
        assert path in paths
    assert json.dumps(paths)  # serialisable
