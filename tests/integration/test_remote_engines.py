"""Remote engines as real processes: ``shoal serve`` and llama-cpp-python's own server.

Both serve the default model (SmolLM2-135M) on loopback. Shoal talks to them through
:class:`~shoal.models.OpenAICompatModel`: capability probing must find what each really honours,
an agent's call must come back valid through whichever mechanism was chosen, and the wrapper
models (fallback, balancing, routing, escalation) must move requests between real endpoints.
Invariants only (names, validation, decisions), never prose.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agent import Agent
from shoal.messages import Message, UserMessage
from shoal.models import (
    BalancedModel,
    EscalatingModel,
    FallbackModel,
    FunctionModel,
    ModelProfile,
    ModelRequestParameters,
    ResponseDone,
    RouterModel,
    RouteRule,
    TextDelta,
)
from shoal.models.openai_compat import OpenAICompatModel
from shoal.models.registry import ALIASES
from shoal.settings import ModelSettings
from shoal.tools import tool
from tests.integration.processes import LlamaCppServer, ShoalServer, free_port

GREEDY = ModelSettings(temperature=0, max_tokens=48)


@tool
def get_weather(city: str) -> dict[str, Any]:
    """Current weather for a city."""
    return {"city": city, "temperature_c": 18}


@pytest.fixture(scope="module")
def shoal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShoalServer]:
    server = ShoalServer(tmp_path_factory.mktemp("shoal-serve"), free_port())
    server.start()
    yield server
    if server.running():
        server.stop()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    gguf = ALIASES["smollm2-135m"].locate()
    server = LlamaCppServer(
        tmp_path_factory.mktemp("llama-server"), free_port(), gguf, "smollm2-135m"
    )
    server.start()
    yield server
    if server.running():
        server.stop()


@pytest.fixture(autouse=True)
def _own_capability_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # every test probes afresh: no result from an earlier run (or another test) is reused
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path / "cache"))


def remote(base: str, provider: str, name: str) -> OpenAICompatModel:
    return OpenAICompatModel("smollm2-135m", base_url=base + "/v1", provider=provider, name=name)


@pytest.fixture
async def via_shoal(shoal_server: ShoalServer) -> AsyncIterator[OpenAICompatModel]:
    model = remote(shoal_server.base, "shoal", "via-shoal")
    yield model
    await model.close()


@pytest.fixture
async def via_llama(llama_server: LlamaCppServer) -> AsyncIterator[OpenAICompatModel]:
    model = remote(llama_server.base, "llamacpp-server", "via-llama")
    yield model
    await model.close()


@pytest.fixture(params=["shoal", "llama"])
def endpoint(request: pytest.FixtureRequest) -> OpenAICompatModel:
    model: OpenAICompatModel = request.getfixturevalue(f"via_{request.param}")
    return model


# -- capability probing against the real servers ----------------------------------------------


async def test_probing_finds_what_shoal_serve_honours(via_shoal: OpenAICompatModel) -> None:
    await via_shoal.prepare()
    caps = via_shoal.capabilities
    assert caps is not None
    assert caps.probed
    assert caps.server == "shoal"
    assert caps.native_tools
    assert caps.tool_choice
    assert caps.json_schema == "response_format"
    assert not caps.grammar  # shoal serve constrains decoding itself; it takes no GBNF


async def test_probing_finds_what_llama_cpp_python_honours(via_llama: OpenAICompatModel) -> None:
    await via_llama.prepare()
    caps = via_llama.capabilities
    assert caps is not None
    assert caps.probed
    assert caps.server == "llama-cpp-python"
    assert caps.grammar  # the strongest mechanism: Shoal's own GBNF, decoded by the server
    # its response_format takes only "text" / "json_object" (a 500 for "json_schema"): answer
    # schemas go through the grammar instead
    assert caps.json_schema is None


# -- an agent through each endpoint ------------------------------------------------------------


async def test_a_required_call_comes_back_valid(endpoint: OpenAICompatModel) -> None:
    agent = Agent(
        "weather",
        endpoint,
        tools=[get_weather],
        tool_choice="get_weather",
        settings=GREEDY,
        max_steps=2,
    )
    result = await agent.run("What's the weather in Paris?")
    assert result.tool_calls, result.notes
    record = result.tool_calls[0]
    assert record.call.name == "get_weather"
    assert record.outcome == "ok", record.error
    assert isinstance(record.call.arguments["city"], str)
    assert record.call.arguments["city"].strip()


async def test_a_structured_answer_matches_its_schema(endpoint: OpenAICompatModel) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
        "additionalProperties": False,
    }
    agent = Agent("extract", endpoint, output_schema=schema, settings=GREEDY, retries=0)
    result = await agent.run("Extract the city: it is sunny in Rome today.")
    assert isinstance(result.output, dict)
    assert set(result.output) == {"city", "sunny"}
    assert isinstance(result.output["sunny"], bool)


async def test_text_streams_in_pieces_that_make_the_answer(endpoint: OpenAICompatModel) -> None:
    messages: list[Message] = [UserMessage(content="Say hello in one short sentence.")]
    pieces: list[str] = []
    final = None
    async for event in endpoint.request_stream(messages, ModelRequestParameters(settings=GREEDY)):
        if isinstance(event, TextDelta):
            pieces.append(event.text)
        elif isinstance(event, ResponseDone):
            final = event.response
    assert final is not None
    assert final.text
    assert "".join(pieces) == final.text
    assert final.usage.completion_tokens > 0


# -- wrappers moving requests between real endpoints ------------------------------------------


async def test_fallback_moves_on_from_a_dead_endpoint(via_llama: OpenAICompatModel) -> None:
    dead = OpenAICompatModel(
        "smollm2-135m",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        provider="llamacpp-server",
        name="dead",
        max_retries=0,
        probe=False,
    )
    agent = Agent("fb", FallbackModel([dead, via_llama], name="fb"), settings=GREEDY)
    try:
        result = await agent.run("Say hello.")
    finally:
        await dead.close()
    assert result.stop_reason == "final"
    assert [(d.kind, d.model) for d in result.decisions] == [("fallback", "via-llama")]
    assert "dead" in result.decisions[0].reason or "refused" in result.decisions[0].reason


async def test_balancing_spreads_requests_over_two_real_engines(
    via_shoal: OpenAICompatModel, via_llama: OpenAICompatModel
) -> None:
    pool = BalancedModel([via_shoal, via_llama], name="pool")
    params = ModelRequestParameters(settings=ModelSettings(temperature=0, max_tokens=8))

    async def ask() -> str:
        response = await pool.request([UserMessage(content="Say hi.")], params)
        (decision,) = response.decisions
        assert decision.kind == "balance"
        return decision.model

    chosen = await asyncio.gather(*(ask() for _ in range(4)))
    assert set(chosen) == {"via-shoal", "via-llama"}


async def test_a_rule_routes_to_the_remote_engine_and_the_run_says_so(
    via_llama: OpenAICompatModel,
) -> None:
    router = RouterModel(
        {"remote": via_llama, "local": "smollm2-135m"},
        rules=[RouteRule(route="remote", pattern=r"\bweather\b")],
        default="local",
    )
    agent = Agent("routed", router, tools=[get_weather], tool_choice="get_weather", settings=GREEDY)
    result = await agent.run("What's the weather in Oslo?")
    assert result.model_name == "via-llama"
    assert [(d.kind, d.model) for d in result.decisions] == [("rule", "via-llama")]
    assert result.tool_calls[0].outcome == "ok"


async def test_escalation_reaches_the_remote_tier_when_the_first_fails(
    via_shoal: OpenAICompatModel,
) -> None:
    def broken(messages: list[Message], params: ModelRequestParameters) -> str:
        return '<tool_call>\n{"name": "get_weather", "arguments": {"town": 3}}\n</tool_call>'

    # the tiny tier stands for an engine that constrains decoding (as every real backend does):
    # the loop then asks for constrained output, and the remote tier uses its strongest mechanism
    tiny = FunctionModel(broken, name="tiny", profile=ModelProfile(supports_grammar=True))
    tiers = EscalatingModel([tiny, via_shoal], attempts=1)
    agent = Agent(
        "tiers", tiers, tools=[get_weather], tool_choice="get_weather", settings=GREEDY, max_steps=2
    )
    result = await agent.run("What's the weather in Lima?")
    assert (result.decisions[0].kind, result.decisions[0].model) == ("escalation", "via-shoal")
    assert result.tool_calls, (result.notes, result.new_messages)
    assert result.tool_calls[0].outcome == "ok"
    assert result.retries == 0  # the loop never saw the tiny model's broken call


def test_shoal_models_probe_reports_the_real_server(llama_server: LlamaCppServer) -> None:
    reference = f"llamacpp-server:{llama_server.base}/v1#smollm2-135m"
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", "models", "probe", reference, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),  # SHOAL_CACHE_DIR: this test's own cache
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["model"] == "llamacpp-server:smollm2-135m"
    assert report["server"] == "llama-cpp-python"
    assert report["grammar"] is True
    assert report["probed"] is True
