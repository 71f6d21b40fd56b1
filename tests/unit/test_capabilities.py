"""Capability probing against fakes of each server's behaviour, and the capability cache.

The fakes are ``httpx.MockTransport`` handlers that answer as the servers do (identification
paths, which body fields they honour, ignore or reject); ``post``/``get`` are thin httpx
adapters over them, as the OpenAI-compatible backend builds them. One test runs the probe
against Shoal's own server in-process (its real routes, a scripted model).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.exceptions import ModelTimeoutError, RemoteModelError
from shoal.models.capabilities import (
    PROBE_GRAMMAR,
    PROBE_TOOL_NAME,
    Capabilities,
    CapabilityCache,
    Get,
    Post,
    assumed_capabilities,
    probe_and_cache,
    probe_capabilities,
)

Handler = Callable[[httpx.Request], httpx.Response]
CHAT = "/v1/chat/completions"


class Endpoint:
    """``post``/``get`` over a MockTransport handler, recording every request."""

    def __init__(self, handler: Handler) -> None:
        self.posts: list[dict[str, Any]] = []
        self.gets: list[str] = []

        def record(request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                self.posts.append(json.loads(request.content))
            else:
                self.gets.append(request.url.path)
            return handler(request)

        self.client = httpx.AsyncClient(
            transport=httpx.MockTransport(record), base_url="http://fake:1234"
        )

    @staticmethod
    def _read(response: httpx.Response) -> tuple[int, Any]:
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    async def post(self, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            response = await self.client.post(CHAT, json=body)
        except httpx.ConnectError as exc:
            raise RemoteModelError("is the server running?", url="http://fake:1234") from exc
        return self._read(response)

    async def get(self, path: str) -> tuple[int, Any]:
        return self._read(await self.client.get(path))


# -- answers as servers write them ----------------------------------------------------------


def chat(
    content: str | None = None, tool_calls: list[dict[str, Any]] | None = None
) -> httpx.Response:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    finish = "tool_calls" if tool_calls else "stop"
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        },
    )


def native_call(name: str, arguments: Any, *, call_id: str | None = "call_1") -> dict[str, Any]:
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        call["id"] = call_id
    return call


def grammar_text(grammar: str) -> str:
    """What a GBNF of one literal (``root ::= "..."``) lets a model write."""
    match = re.fullmatch(r'root ::= "([^"]*)"', grammar)
    assert match, grammar
    return match.group(1)


def schema_value(schema: dict[str, Any]) -> str:
    """The only value of an object schema whose properties are one-value enums."""
    return json.dumps({k: v["enum"][0] for k, v in schema["properties"].items()})


def named_choice(body: dict[str, Any]) -> str | None:
    choice = body.get("tool_choice")
    return choice["function"]["name"] if isinstance(choice, dict) else None


def not_found() -> httpx.Response:
    return httpx.Response(404, text="404 page not found")


# -- fakes ----------------------------------------------------------------------------------


def llama_server(request: httpx.Request) -> httpx.Response:
    """llama.cpp's llama-server without --jinja (tools/server/README.md): ``grammar`` and
    ``json_schema`` fields and ``response_format`` honoured, ``tools`` rejected."""
    if request.method == "GET":
        if request.url.path == "/props":
            return httpx.Response(
                200, json={"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1}
            )
        return not_found()
    body = json.loads(request.content)
    if "tools" in body:
        return httpx.Response(
            500, json={"error": {"code": 500, "message": "tools param requires --jinja flag"}}
        )
    if "grammar" in body:
        return chat(grammar_text(body["grammar"]))
    if "response_format" in body:
        return chat(schema_value(body["response_format"]["json_schema"]["schema"]))
    if "json_schema" in body:
        return chat(schema_value(body["json_schema"]))
    return chat("Hello! How can I help you today?")


def ollama(request: httpx.Request) -> httpx.Response:
    """Ollama: /api/version; grammar ignored; response_format json_schema honoured;
    ``tool_choice`` ignored; calls come back natively with object arguments and no id."""
    if request.method == "GET":
        if request.url.path == "/api/version":
            return httpx.Response(200, json={"version": "0.6.5"})
        return not_found()
    body = json.loads(request.content)
    if "response_format" in body:
        return chat(schema_value(body["response_format"]["json_schema"]["schema"]))
    user = body["messages"][-1]["content"]
    if body.get("tools") and PROBE_TOOL_NAME in user:
        return chat("", [native_call(PROBE_TOOL_NAME, {"code": "42"}, call_id=None)])
    return chat("Hello there!")


def vllm(request: httpx.Request) -> httpx.Response:
    """vLLM started without --enable-auto-tool-choice: a named tool_choice is forced through
    guided decoding, "auto" is a 400; response_format honoured, grammar ignored."""
    if request.method == "GET":
        if request.url.path == "/version":
            return httpx.Response(200, json={"version": "0.8.4"})
        return not_found()
    body = json.loads(request.content)
    if body.get("tool_choice") == "auto":
        return httpx.Response(
            400,
            json={
                "object": "error",
                "message": '"auto" tool choice requires --enable-auto-tool-choice and '
                "--tool-call-parser to be set",
                "type": "BadRequestError",
                "code": 400,
            },
        )
    if name := named_choice(body):
        return chat("", [native_call(name, '{"code": "x"}', call_id="chatcmpl-tool-1")])
    if "response_format" in body:
        return chat(schema_value(body["response_format"]["json_schema"]["schema"]))
    return chat("Hello!")


def foundry_local(request: httpx.Request) -> httpx.Response:
    """Foundry Local: /openai/status; no schema support; calls written into ``content``."""
    if request.method == "GET":
        if request.url.path == "/openai/status":
            return httpx.Response(200, json={"modelDirPath": "/home/u/.foundry/cache/models"})
        return not_found()
    body = json.loads(request.content)
    user = body["messages"][-1]["content"]
    if body.get("tools") and PROBE_TOOL_NAME in user:
        call = json.dumps({"name": PROBE_TOOL_NAME, "arguments": {"code": "42"}})
        return chat(f"<tool_call>\n{call}\n</tool_call>")
    return chat("Hello, how can I help?")


def guided_only(request: httpx.Request) -> httpx.Response:
    """An unidentified server that honours only vLLM's ``guided_json``."""
    if request.method == "GET":
        return not_found()
    body = json.loads(request.content)
    if "guided_json" in body:
        return chat(schema_value(body["guided_json"]))
    return chat('{"code": "something else"}')


def rejects_everything(request: httpx.Request) -> httpx.Response:
    if request.method == "GET":
        return not_found()
    return httpx.Response(
        400,
        json={"error": {"message": "Unsupported parameter: 'max_tokens'", "type": "invalid"}},
    )


async def probe(handler: Handler, provider: str, model: str = "m") -> tuple[Capabilities, Endpoint]:
    endpoint = Endpoint(handler)
    caps = await probe_capabilities(endpoint.post, endpoint.get, model=model, provider=provider)
    await endpoint.client.aclose()
    return caps, endpoint


# -- the dataclass and the assumptions ------------------------------------------------------


def test_capabilities_round_trip_through_json() -> None:
    caps = Capabilities(
        server="vllm", tool_choice=True, json_schema="guided_json", probed=True, notes=("a", "b")
    )
    assert Capabilities.from_dict(json.loads(json.dumps(caps.to_dict()))) == caps
    assert caps.to_dict()["notes"] == ["a", "b"]


def test_from_dict_ignores_unknown_keys_and_rejects_wrong_types() -> None:
    assert Capabilities.from_dict({"server": "ollama", "later": 1}) == Capabilities(server="ollama")
    for bad, problem in (
        ({"grammar": "yes"}, "grammar must be true or false"),
        ({"json_schema": "xml"}, "json_schema must be one of"),
        ({"notes": "one string"}, "notes must be a list"),
        ({"server": 3}, "server must be a string"),
        ({"probed": 1}, "probed must be true or false"),
    ):
        with pytest.raises(ValueError, match=problem):
            Capabilities.from_dict(bad)


def test_assumed_capabilities_per_preset() -> None:
    llama = assumed_capabilities("llama-server")
    assert (llama.server, llama.grammar, llama.json_schema) == ("llama-server", True, "json_schema")
    assert not llama.native_tools
    assert not llama.probed
    assert assumed_capabilities("vllm").json_schema == "guided_json"
    openai = assumed_capabilities("openai")
    assert openai.native_tools
    assert openai.tool_choice
    assert not openai.grammar
    assert openai.json_schema == "response_format"
    assert assumed_capabilities("llamacpp-server").grammar
    assert "not probed" in assumed_capabilities("ollama").notes[0]


def test_unknown_provider_is_assumed_to_do_plain_chat_only() -> None:
    caps = assumed_capabilities("openai-compat")
    assert caps.server == "unknown"
    flags = (caps.native_tools, caps.tool_choice, caps.grammar, caps.json_schema)
    assert flags == (False, False, False, None)
    assert "plain chat" in caps.notes[0]


# -- probing each server --------------------------------------------------------------------


async def test_llama_server_grammar_and_schema_honoured_tools_rejected() -> None:
    caps, endpoint = await probe(llama_server, "llama-server")
    assert caps.server == "llama-server"
    assert caps.grammar
    assert caps.json_schema == "response_format"
    assert not caps.native_tools
    assert not caps.tool_choice
    assert caps.probed
    # the provider's own path answered first: one GET
    assert endpoint.gets == ["/props"]
    # grammar, response_format (honoured, so no json_schema field), two tool requests
    assert len(endpoint.posts) == 4
    assert any("requires --jinja" in note for note in caps.notes)


async def test_probe_requests_are_small_and_deterministic() -> None:
    _, endpoint = await probe(llama_server, "llama-server", model="qwen2.5-0.5b")
    for body in endpoint.posts:
        assert body["model"] == "qwen2.5-0.5b"
        assert body["temperature"] == 0
        assert body["max_tokens"] <= 64
        assert len(body["messages"]) == 1
    grammar, schema, named, auto = endpoint.posts
    assert grammar["grammar"] == PROBE_GRAMMAR == 'root ::= "shoal-probe"'
    assert schema["response_format"]["type"] == "json_schema"
    assert schema["response_format"]["json_schema"]["strict"] is True
    assert named["tool_choice"] == {"type": "function", "function": {"name": PROBE_TOOL_NAME}}
    assert named["tools"][0]["function"]["name"] == PROBE_TOOL_NAME
    assert auto["tool_choice"] == "auto"


async def test_ollama_native_tools_without_tool_choice() -> None:
    caps, endpoint = await probe(ollama, "ollama")
    assert caps.server == "ollama"
    assert caps.native_tools
    assert not caps.tool_choice
    assert caps.json_schema == "response_format"
    assert not caps.grammar
    assert endpoint.gets == ["/api/version"]
    assert any("grammar: ignored" in note for note in caps.notes)
    assert any("tool_choice: ignored" in note for note in caps.notes)


async def test_vllm_without_auto_tool_choice() -> None:
    caps, endpoint = await probe(vllm, "vllm")
    assert caps.server == "vllm"
    assert caps.tool_choice  # a named function is forced
    assert not caps.native_tools  # "auto" is refused: tools must go through the prompt
    assert caps.json_schema == "response_format"
    assert endpoint.gets == ["/version"]
    assert any("--enable-auto-tool-choice" in note for note in caps.notes)


async def test_foundry_local_calls_in_content_are_noted() -> None:
    caps, _ = await probe(foundry_local, "foundry")
    assert caps.server == "foundry-local"
    assert not caps.native_tools
    assert not caps.tool_choice
    assert not caps.grammar
    assert caps.json_schema is None
    assert any("came back in 'content'" in note for note in caps.notes)


async def test_unknown_server_tries_every_schema_field_until_one_works() -> None:
    caps, endpoint = await probe(guided_only, "openai-compat")
    assert caps.server == "unknown"
    assert caps.json_schema == "guided_json"
    # every identification path was tried, once each
    assert len(endpoint.gets) == len(set(endpoint.gets)) == 8
    schema_posts = [
        b for b in endpoint.posts if {"response_format", "guided_json", "json_schema"} & set(b)
    ]
    assert [next(iter({"response_format", "guided_json"} & set(b))) for b in schema_posts] == [
        "response_format",
        "guided_json",
    ]  # stopped at the first honoured: json_schema was not sent
    assert any("response_format: ignored" in note for note in caps.notes)


async def test_identification_falls_through_to_the_server_that_answers() -> None:
    # an Ollama behind the generic preset is still recognised
    caps, endpoint = await probe(ollama, "openai-compat")
    assert caps.server == "ollama"
    assert endpoint.gets[-1] == "/api/version"


async def test_cloud_preset_skips_identification_and_grammar() -> None:
    def openai(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "response_format" in body:
            return chat(schema_value(body["response_format"]["json_schema"]["schema"]))
        if name := named_choice(body):
            return chat(None, [native_call(name, '{"code":"a"}')])
        return chat(None, [native_call(PROBE_TOOL_NAME, '{"code":"42"}')])

    caps, endpoint = await probe(openai, "openai", model="gpt-4o-mini")
    assert endpoint.gets == []
    assert not any("grammar" in body for body in endpoint.posts)
    for body in endpoint.posts:
        assert "temperature" not in body
        assert "max_tokens" not in body
        assert body["max_completion_tokens"] >= 64
    assert caps.server == "openai"
    assert caps.probed
    assert caps.native_tools
    assert caps.tool_choice
    assert caps.json_schema == "response_format"


async def test_azure_ai_uses_max_tokens() -> None:
    _, endpoint = await probe(rejects_everything, "azure-ai")
    assert all("max_tokens" in body for body in endpoint.posts)


async def test_a_server_that_accepts_no_probe_keeps_the_assumptions() -> None:
    caps, _ = await probe(rejects_everything, "openai")
    assert not caps.probed
    assert caps.native_tools
    assert caps.json_schema == "response_format"
    assert any("accepted no probe request" in note for note in caps.notes)
    assert any("Unsupported parameter" in note for note in caps.notes)


async def test_a_timeout_counts_as_not_honoured() -> None:
    endpoint = Endpoint(llama_server)

    async def post(body: dict[str, Any]) -> tuple[int, Any]:
        if "grammar" in body:
            raise ModelTimeoutError("no answer in 5 s", url="http://fake:1234")
        return await endpoint.post(body)

    caps = await probe_capabilities(post, endpoint.get, model="m", provider="llama-server")
    assert not caps.grammar
    assert caps.probed
    assert caps.json_schema == "response_format"
    assert any("grammar: not honoured (HTTP 0: timed out" in note for note in caps.notes)


async def test_an_identification_path_that_hangs_is_skipped() -> None:
    endpoint = Endpoint(ollama)

    async def get(path: str) -> tuple[int, Any]:
        if path == "/health":
            raise ModelTimeoutError("no answer in 2 s", url="http://fake:1234/health")
        return await endpoint.get(path)

    caps = await probe_capabilities(endpoint.post, get, model="m", provider="openai-compat")
    assert caps.server == "ollama"


async def test_an_error_status_raised_as_remote_model_error_is_read_as_a_status() -> None:
    endpoint = Endpoint(llama_server)

    async def post(body: dict[str, Any]) -> tuple[int, Any]:
        if "tools" in body:
            raise RemoteModelError("bad", status=400, body="tools not supported")
        return await endpoint.post(body)

    caps = await probe_capabilities(post, endpoint.get, model="m", provider="llama-server")
    assert caps.grammar
    assert not caps.native_tools
    assert any("HTTP 400: tools not supported" in note for note in caps.notes)


async def test_an_unreachable_server_raises() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return not_found()
        raise httpx.ConnectError("connection refused")

    endpoint = Endpoint(refused)
    with pytest.raises(RemoteModelError, match="is the server running"):
        await probe_capabilities(endpoint.post, endpoint.get, model="m", provider="vllm")


async def test_probe_against_shoal_server(tmp_path: Path) -> None:
    """Shoal's own server, in-process: identified by /health, honours tools, tool_choice and
    response_format (it hands them to the model as constraints) and ignores ``grammar``."""
    from fastapi.testclient import TestClient

    from shoal.messages import ToolCall
    from shoal.models import FunctionModel, ModelRequestParameters, sample_from_schema
    from shoal.server import ServerSettings, create_app
    from shoal.threads import InMemoryThreadStore

    def scripted(messages: list[Any], params: ModelRequestParameters) -> Any:
        # a well-behaved model: follows the constraints the server passes on
        if params.output_schema is not None:
            return json.dumps(sample_from_schema(params.output_schema))
        offered = params.offered_tools()
        asked = PROBE_TOOL_NAME in str(getattr(messages[-1], "content", ""))
        if offered and (params.call_required or asked):
            return ToolCall(name=offered[0].name, arguments={"code": "42"})
        return "Hello!"

    app = create_app(
        ServerSettings(database=tmp_path / "server.db"),
        store=InMemoryThreadStore(),
        factory=lambda reference: FunctionModel(scripted, name=reference),
    )
    with TestClient(app) as client:
        model = client.get("/v1/models").json()["data"][0]["id"]

        async def post(body: dict[str, Any]) -> tuple[int, Any]:
            response = client.post(CHAT, json=body)
            return response.status_code, response.json()

        async def get(path: str) -> tuple[int, Any]:
            response = client.get(path)
            return response.status_code, response.json()

        caps = await probe_capabilities(post, get, model=model, provider="shoal")
    assert caps.probed  # measured, not the preset's (identical) assumptions
    assert caps.server == "shoal"
    assert caps.native_tools
    assert caps.tool_choice
    assert caps.json_schema == "response_format"
    assert not caps.grammar


# -- cache ----------------------------------------------------------------------------------


def test_cache_round_trip_and_keys(tmp_path: Path) -> None:
    cache = CapabilityCache(tmp_path / "remote" / "capabilities.json")
    caps = Capabilities(server="ollama", native_tools=True, probed=True, notes=("x",))
    assert cache.get("http://a/v1#m") is None
    cache.put("http://a/v1#m", caps)
    assert cache.get("http://a/v1#m") == caps
    assert cache.get("http://a/v1#other") is None
    assert cache.get("http://b/v1#m") is None
    # a second cache object reads the same file
    assert CapabilityCache(cache.path).get("http://a/v1#m") == caps
    # atomic write: no temporary file left next to it
    assert [p.name for p in cache.path.parent.iterdir()] == ["capabilities.json"]


def test_cache_default_path_is_under_the_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path))
    cache = CapabilityCache()
    assert cache.path == tmp_path / "remote" / "capabilities.json"
    cache.put("k", Capabilities())
    assert cache.path.is_file()


def write_entries(path: Path, entries: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries), encoding="utf-8")


def test_expired_entries_are_ignored_and_dropped(tmp_path: Path) -> None:
    path = tmp_path / "capabilities.json"
    old = {"at": time.time() - 100, "capabilities": Capabilities(server="vllm").to_dict()}
    write_entries(path, {"old": old})
    cache = CapabilityCache(path, ttl=50)
    assert cache.get("old") is None
    assert CapabilityCache(path, ttl=1000).get("old") == Capabilities(server="vllm")
    cache.put("new", Capabilities(server="ollama"))
    assert set(json.loads(path.read_text())) == {"new"}


def test_corrupt_file_is_ignored_and_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "capabilities.json"
    path.write_text("{not json", encoding="utf-8")
    cache = CapabilityCache(path)
    assert cache.get("k") is None
    cache.put("k", Capabilities(server="shoal"))
    assert json.loads(path.read_text())["k"]["capabilities"]["server"] == "shoal"
    assert cache.get("k") == Capabilities(server="shoal")


def test_corrupt_entries_are_ignored_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "capabilities.json"
    good = {"at": time.time(), "capabilities": Capabilities(server="vllm").to_dict()}
    write_entries(
        path,
        {
            "good": good,
            "no-time": {"capabilities": {}},
            "bad-field": {"at": time.time(), "capabilities": {"grammar": "maybe"}},
            "not-a-dict": [1, 2],
        },
    )
    cache = CapabilityCache(path)
    assert cache.get("good") == Capabilities(server="vllm")
    for key in ("no-time", "bad-field", "not-a-dict"):
        assert cache.get(key) is None
    path.write_text("[1, 2, 3]", encoding="utf-8")  # valid JSON, wrong shape
    assert cache.get("good") is None


def test_an_unwritable_cache_does_not_fail(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = CapabilityCache(blocker / "remote" / "capabilities.json")
    cache.put("k", Capabilities())  # logged, not raised
    assert cache.get("k") is None


# -- probe_and_cache ------------------------------------------------------------------------


async def test_probe_and_cache_probes_once_then_reads_the_cache(tmp_path: Path) -> None:
    endpoint = Endpoint(ollama)
    cache = CapabilityCache(tmp_path / "capabilities.json")
    key = "http://fake:1234/v1#qwen2.5:0.5b"

    async def run(refresh: bool = False) -> Capabilities:
        post: Post = endpoint.post
        get: Get = endpoint.get
        return await probe_and_cache(
            post,
            get,
            model="qwen2.5:0.5b",
            provider="ollama",
            key=key,
            cache=cache,
            refresh=refresh,
        )

    first = await run()
    sent = len(endpoint.posts)
    assert first.probed
    assert first.server == "ollama"
    assert sent > 0
    assert await run() == first
    assert len(endpoint.posts) == sent  # nothing sent: the cache answered
    await run(refresh=True)
    assert len(endpoint.posts) == 2 * sent
    await endpoint.client.aclose()


async def test_probe_and_cache_uses_the_default_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path))
    endpoint = Endpoint(vllm)
    caps = await probe_and_cache(endpoint.post, endpoint.get, model="m", provider="vllm", key="k")
    stored = json.loads((tmp_path / "remote" / "capabilities.json").read_text())
    assert Capabilities.from_dict(stored["k"]["capabilities"]) == caps
    await endpoint.client.aclose()
