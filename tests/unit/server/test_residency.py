"""Residency in the server: models take turns within the limits, reported by /health, /metrics."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shoal.cli.main import main
from shoal.exceptions import UserError
from shoal.messages import Message
from shoal.models import (
    FunctionModel,
    Model,
    ModelRequestParameters,
    ModelStreamEvent,
    Resident,
    WorkerModel,
)
from shoal.server import ServerSettings, create_app
from shoal.threads import InMemoryThreadStore
from tests.unit.server.conftest import weather_or_echo

MB = 2**20
SCRIPT = "tests.unit.worker_models:script_model"
Serve = Callable[..., TestClient]


class ResidentFunctionModel(FunctionModel):
    """A FunctionModel that is a Resident: loads and unloads at once, ``size_mb`` big."""

    def __init__(
        self, name: str, size_mb: int = 100, function: Callable[..., Any] = weather_or_echo
    ) -> None:
        super().__init__(function, name=name)
        self.size = size_mb * MB
        self.loaded = False

    def memory_bytes(self) -> int | None:
        return self.size if self.loaded else None

    def estimated_bytes(self) -> int:
        return self.size

    async def prepare(self) -> None:
        self.loaded = True

    async def unload(self) -> None:
        self.loaded = False

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        assert self.loaded, f"{self.name} was asked while unloaded"
        async for event in super().request_stream(messages, params):
            yield event


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """``serve({"a": model, "b": model}, **settings)``: the first model is the default."""
    clients: list[TestClient] = []

    def make(models: dict[str, Model], **settings: Any) -> TestClient:
        default, *others = models
        app = create_app(
            ServerSettings(
                default_model=default,
                models=tuple(others),
                database=tmp_path / "server.db",
                **settings,
            ),
            store=InMemoryThreadStore(),
            factory=models.__getitem__,
        )
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def ask(client: TestClient, model: str, text: str = "hello") -> Any:
    return client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}]},
    )


def wait_for(client: TestClient, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """``/health`` once ``check(body)`` holds (the preload and the reaper run in background)."""
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = client.get("/health").json()
        if check(body):
            return body
        assert time.monotonic() < deadline, f"/health never got there: {body}"
        time.sleep(0.02)


def in_state(model: str, *wanted: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body["models"].get(model, {}).get("state") in wanted


def metric(text: str, series: str) -> float:
    """The value of one series line (``name{labels}``) of a /metrics page."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{series} is not reported"
    return float(match[1])


def test_the_residency_double_is_a_resident() -> None:
    assert isinstance(ResidentFunctionModel("a"), Resident)


def test_two_models_take_turns_under_max_loaded_models_1(serve: Serve) -> None:
    a, b = ResidentFunctionModel("a", 300), ResidentFunctionModel("b", 200)
    client = serve({"a": a, "b": b}, max_loaded_models=1, keep_alive_s=None)
    wait_for(client, in_state("a", "ready"))  # preloaded

    assert ask(client, "b").status_code == 200  # a goes, b comes
    assert (a.loaded, b.loaded) == (False, True)
    r = client.get("/health")
    assert r.status_code == 200  # the default model unloaded is still servable
    body = r.json()
    assert body["ready"] is True
    assert body["models"]["a"]["state"] == "unloaded"
    assert body["models"]["a"]["memory_mb"] == 0
    assert body["models"]["b"]["state"] == "ready"
    assert body["models"]["b"]["memory_mb"] == 200
    assert body["models"]["b"]["idle_s"] >= 0
    assert body["residency"]["max_loaded_models"] == 1
    assert body["residency"]["loaded_models"] == 1
    assert body["residency"]["used_mb"] == 200
    assert body["residency"]["keep_alive_s"] is None

    assert ask(client, "a").status_code == 200  # and back
    assert (a.loaded, b.loaded) == (True, False)
    text = client.get("/metrics").text
    assert metric(text, 'shoal_model_loads_total{model="a"}') == 2
    assert metric(text, 'shoal_model_loads_total{model="b"}') == 1
    assert metric(text, 'shoal_model_unloads_total{model="a",reason="lru"}') == 1
    assert metric(text, 'shoal_model_unloads_total{model="b",reason="lru"}') == 1
    assert metric(text, 'shoal_model_unloads_total{model="b",reason="idle"}') == 0
    assert metric(text, 'shoal_model_loaded{model="a"}') == 1
    assert metric(text, 'shoal_model_loaded{model="b"}') == 0
    assert metric(text, 'shoal_model_memory_bytes{model="a"}') == 300 * MB
    assert metric(text, 'shoal_model_memory_bytes{model="b"}') == 0
    assert metric(text, 'shoal_model_ready{model="b"}') == 0
    assert metric(text, "shoal_models_loaded") == 1
    budget = body["residency"]["max_memory_mb"]
    assert metric(text, "shoal_residency_budget_bytes") == budget * MB


def test_keep_alive_0_unloads_after_each_request(serve: Serve) -> None:
    a = ResidentFunctionModel("a")
    client = serve({"a": a}, keep_alive_s=0)
    wait_for(client, lambda body: body["models"].get("a", {}).get("unloads") == 1)
    assert ask(client, "a").status_code == 200  # loads it again
    body = wait_for(client, lambda body: body["models"]["a"]["unloads"] == 2)
    assert body["models"]["a"]["state"] == "unloaded"
    assert body["models"]["a"]["loads"] == 2
    assert body["ready"] is True
    text = client.get("/metrics").text
    assert metric(text, 'shoal_model_unloads_total{model="a",reason="idle"}') == 2
    assert metric(text, "shoal_models_loaded") == 0


def test_a_model_bigger_than_the_budget_is_a_503(serve: Serve) -> None:
    small, big = ResidentFunctionModel("small", 100), ResidentFunctionModel("big", 600)
    client = serve({"small": small, "big": big}, max_memory_mb=500)
    r = ask(client, "big")
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "memory_budget_error"
    assert error["message"].startswith("big needs about 600 MB, more than the whole memory budget")
    assert not big.loaded
    body = client.get("/health").json()
    assert body["models"]["big"]["state"] != "failed"  # the model is fine; the budget is not
    assert body["residency"]["max_memory_mb"] == 500


def test_no_room_while_the_loaded_model_is_busy_is_a_503_naming_it(serve: Serve) -> None:
    entered, release = threading.Event(), threading.Event()

    async def slow(messages: list[Any], params: ModelRequestParameters) -> str:
        entered.set()
        await asyncio.to_thread(release.wait, 10)  # the server's loop stays free
        return "done"

    a = ResidentFunctionModel("a", function=slow)
    b = ResidentFunctionModel("b")
    client = serve({"a": a, "b": b}, max_loaded_models=1)
    results: list[int] = []
    worker = threading.Thread(target=lambda: results.append(ask(client, "a").status_code))
    worker.start()
    try:
        assert entered.wait(10)
        r = ask(client, "b")
    finally:
        release.set()
        worker.join(10)
    assert r.status_code == 503
    message = r.json()["error"]["message"]
    assert "1 of at most 1 models are loaded" in message
    assert "a (1 request(s) running" in message
    assert results == [200]
    assert ask(client, "b").status_code == 200  # a is idle now: it makes room


def test_worker_models_unload_their_process_and_come_back(serve: Serve) -> None:
    a = WorkerModel("a", factory=SCRIPT, start_timeout=60)
    b = WorkerModel("b", factory=SCRIPT, start_timeout=60)
    client = serve({"a": a, "b": b}, max_loaded_models=1, keep_alive_s=None)
    health = wait_for(client, in_state("a", "ready"))
    assert health["models"]["a"]["memory_mb"] > 10  # the child's measured RSS
    first_pid = a.pid

    r = ask(client, "b")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "b: hello"
    health = client.get("/health").json()
    assert (health["models"]["a"]["state"], health["models"]["a"]["pid"]) == ("unloaded", None)
    assert health["models"]["b"]["state"] == "ready"
    assert health["ready"] is True

    r = ask(client, "a", "again")
    assert r.json()["choices"][0]["message"]["content"] == "a: again"
    assert a.pid not in (None, first_pid)
    text = client.get("/metrics").text
    assert metric(text, 'shoal_model_unloads_total{model="a",reason="lru"}') == 1
    assert metric(text, 'shoal_model_unloads_total{model="b",reason="lru"}') == 1
    assert metric(text, 'shoal_model_memory_bytes{model="a"}') > 10 * MB


# -- settings and the command line ---------------------------------------------------------------


def test_server_settings_take_the_residency_defaults_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOAL_MAX_MEMORY", "2GB")
    monkeypatch.setenv("SHOAL_MAX_LOADED_MODELS", "2")
    monkeypatch.setenv("SHOAL_KEEP_ALIVE", "90s")
    settings = ServerSettings()
    assert (settings.max_memory_mb, settings.max_loaded_models, settings.keep_alive_s) == (
        2048,
        2,
        90.0,
    )
    assert settings.residency.describe().startswith("up to 2 models loaded")
    with pytest.raises(UserError, match="at least one model"):
        ServerSettings(max_loaded_models=0)
    with pytest.raises(UserError, match="keep-alive must be 0 or more"):
        ServerSettings(keep_alive_s=-5)


def test_serve_passes_the_residency_options_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shoal.server

    started: list[ServerSettings] = []
    monkeypatch.setattr(shoal.server, "check_port", lambda host, port: None)
    monkeypatch.setattr(shoal.server, "serve", lambda settings, **_: started.append(settings))
    monkeypatch.setenv("SHOAL_KEEP_ALIVE", "1h")
    argv = ["serve", "--max-memory", "6GB", "--max-loaded-models", "2"]
    assert main(argv) == 0
    (settings,) = started
    assert (settings.max_memory_mb, settings.max_loaded_models, settings.keep_alive_s) == (
        6144,
        2,
        3600.0,
    )
    assert "up to 2 models loaded within a memory budget of 6144 MB" in capsys.readouterr().err
    assert main([*argv, "--keep-alive", "0"]) == 0
    assert started[-1].keep_alive_s == 0


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("--max-memory", "lots", "error: --max-memory='lots' is not a memory size"),
        ("--max-memory", "6000", "error: --max-memory='6000' needs a unit"),
        ("--max-loaded-models", "0", "error: --max-loaded-models='0' is not a number of models"),
        ("--keep-alive", "soon", "error: --keep-alive='soon' is not a duration"),
    ],
)
def test_serve_refuses_bad_residency_options(
    option: str, value: str, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--port", "8765", option, value]) == 2
    assert capsys.readouterr().err.startswith(error)
