"""The server in-process: FastAPI's TestClient (runs the lifespan), models scripted in code."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shoal.messages import ToolCall
from shoal.models import FunctionModel, Model, ModelRequestParameters
from shoal.server import ServerSettings, create_app
from shoal.threads import InMemoryThreadStore

MakeClient = Callable[..., TestClient]


def weather_or_echo(messages: list[Any], params: ModelRequestParameters) -> Any:
    """Calls the first offered tool with a city from the request, else echoes the request."""
    offered = params.offered_tools()
    if offered and params.tool_choice != "none":
        return ToolCall(name=offered[0].name, arguments={"city": "Paris"})
    last = messages[-1]
    return f"echo: {getattr(last, 'content', '')}"


@pytest.fixture
def make_client(tmp_path: Any) -> Iterator[MakeClient]:
    """``make_client(function=..., **settings)``: a TestClient over a fresh app."""
    clients: list[TestClient] = []

    def make(
        function: Callable[..., Any] = weather_or_echo,
        *,
        store: Any = None,
        models: dict[str, Model] | None = None,
        **settings: Any,
    ) -> TestClient:
        settings.setdefault("database", tmp_path / "server.db")

        def factory(reference: str) -> Model:
            if models and reference in models:
                return models[reference]
            return FunctionModel(function, name=reference)

        app = create_app(
            ServerSettings(**settings),
            store=store if store is not None else InMemoryThreadStore(),
            factory=factory,
        )
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
