"""OpenAICompatModel against scripted servers (httpx.MockTransport): what is sent, what is read.

Replies in ``tests/unit/recorded/`` are server quirks in their documented shapes (each file says
where the shape comes from).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.exceptions import (
    ModelError,
    ModelLoadError,
    ModelTimeoutError,
    RemoteModelError,
    UserError,
    exit_code_for,
    http_status_for,
)
from shoal.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from shoal.models import openai_compat, wire
from shoal.models.base import ModelRequestParameters, ResponseDone, TextDelta
from shoal.models.capabilities import PROBE_GRAMMAR, Capabilities
from shoal.models.grammars import grammar_for
from shoal.models.openai_compat import OpenAICompatModel, family_for_model_id
from shoal.models.profiles import ModelProfile
from shoal.settings import ModelSettings
from shoal.toolcalls import NO_CALL_GRAMMAR

RECORDED = Path(__file__).parent / "recorded"
BASE_URL = "http://llm.test/v1"

WEATHER = ToolDefinition(
    name="get_weather",
    description="Weather for a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
)
CLOCK = ToolDefinition(name="get_time", parameters={"type": "object", "properties": {}})
QUESTION: list[Message] = [
    SystemMessage(content="You help."),
    UserMessage(content="Weather in Oslo?"),
]
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'

LLAMA_SERVER = Capabilities(server="llama-server", grammar=True, json_schema="json_schema")
OPENAI = Capabilities(
    server="openai", native_tools=True, tool_choice=True, json_schema="response_format"
)
PLAIN = Capabilities()

Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Server:
    """A scripted endpoint: each request takes the next step (the last one repeats)."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return step(request)

    def body(self, index: int = -1) -> dict[str, Any]:
        value = json.loads(self.requests[index].content)
        assert isinstance(value, dict)
        return value


def completion(
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    *,
    finish: str = "stop",
    usage: dict[str, Any] | None = None,
) -> httpx.Response:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    body = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
    }
    return httpx.Response(200, json=body)


def sse(chunks: list[dict[str, Any]], *, done: bool = True) -> httpx.Response:
    lines = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks]
    if done:
        lines.append("data: [DONE]\n\n")
    headers = {"content-type": "text/event-stream"}
    return httpx.Response(200, headers=headers, content="".join(lines).encode())


def delta(content: str | None = None, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = dict(extra)
    if content is not None:
        payload["content"] = content
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": payload}]}


def recorded(name: str) -> tuple[httpx.Response, dict[str, Any]]:
    """A recorded reply as a response, and its fixture (with its source)."""
    fixture = json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))
    assert fixture["source"]
    if "chunks" in fixture:
        response = sse(fixture["chunks"], done=fixture.get("done", True))
    else:
        response = httpx.Response(
            fixture["status"], headers=fixture["headers"], json=fixture["body"]
        )
    return response, fixture


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays between retries, recorded instead of slept."""
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(openai_compat, "_sleep", fake_sleep)
    return delays


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., OpenAICompatModel]]:
    models: list[OpenAICompatModel] = []

    def build(
        server: Server, caps: Capabilities | None = PLAIN, **kwargs: Any
    ) -> OpenAICompatModel:
        kwargs.setdefault("model", "qwen2.5-0.5b-instruct")
        model = OpenAICompatModel(
            base_url=kwargs.pop("base_url", BASE_URL),
            capabilities=caps,
            transport=httpx.MockTransport(server),
            **kwargs,
        )
        models.append(model)
        return model

    yield build
    for model in models:
        await model.close()


async def stream(
    model: OpenAICompatModel, messages: list[Message], params: Any
) -> tuple[list[str], Any]:
    deltas: list[str] = []
    final = None
    async for event in model.request_stream(messages, params):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            assert isinstance(event, ResponseDone)
            final = event.response
    assert final is not None
    return deltas, final


# -- mechanisms -----------------------------------------------------------------------------------


async def test_grammar_mechanism_sends_the_embedded_engines_grammar(make: Any) -> None:
    server = Server(completion(CALL_TEXT, usage={"prompt_tokens": 80, "completion_tokens": 20}))
    model = make(server, LLAMA_SERVER)
    narrowed = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    params = ModelRequestParameters(
        tools=(WEATHER,), tool_choice="required", call_schemas={"get_weather": narrowed}
    )
    response = await model.request(QUESTION, params)
    body = server.body()
    assert body["grammar"] == grammar_for(params)
    assert '\\"days\\"' not in body["grammar"]  # the narrowed schema, not the declared one
    assert "tools" not in body
    assert "json_schema" not in body  # llama-server refuses both together
    assert body["model"] == "qwen2.5-0.5b-instruct"
    assert body["stream"] is False
    system = body["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You help.")
    assert "<tools>" in system["content"]
    # qwen family sampling, with the fields llama-server takes
    assert body["top_k"] == 20
    assert body["repeat_penalty"] == 1.05
    assert body["max_tokens"] == 512
    assert response.tool_calls[0].name == "get_weather"
    assert response.tool_calls[0].arguments == {"city": "Oslo"}
    assert response.finish_reason == "tool_calls"
    assert response.raw == CALL_TEXT
    assert response.usage.prompt_tokens == 80
    assert response.usage.completion_tokens == 20
    assert response.usage.requests == 1
    assert response.model_name == "openai-compat:qwen2.5-0.5b-instruct"


async def test_grammar_for_an_answer_schema_and_for_tools_that_cannot_be_called(make: Any) -> None:
    server = Server(completion('"b"'), completion("It is sunny."))
    model = make(server, LLAMA_SERVER)
    schema_params = ModelRequestParameters(output_schema={"enum": ["a", "b"]})
    answer = await model.request(QUESTION, schema_params)
    assert server.body(0)["grammar"] == grammar_for(schema_params)
    assert answer.text == '"b"'
    no_call = ModelRequestParameters(tools=(WEATHER,), tool_choice="none")
    text = await model.request(QUESTION, no_call)
    assert server.body(1)["grammar"] == NO_CALL_GRAMMAR
    # a Qwen model under 1B parameters shows tool results as plain information ("context"):
    # tools that cannot be called are not described
    assert model.profile.tool_result_style == "context"
    assert "<tools>" not in server.body(1)["messages"][0]["content"]
    assert text.text == "It is sunny."
    assert text.tool_calls == ()
    other = Server(completion("It is sunny."))
    hermes = make(other, LLAMA_SERVER, profile=model.profile.replace(tool_result_style="hermes"))
    await hermes.request(QUESTION, no_call)
    assert "<tools>" in other.body(0)["messages"][0]["content"]  # described, though not callable


async def test_native_tools_with_tool_choice_and_native_history(make: Any) -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Oslo"})
    history: list[Message] = [
        *QUESTION,
        AssistantMessage(content=None, tool_calls=(call,)),
        ToolMessage(tool_call_id="call_1", name="get_weather", content='{"temp": 3}'),
        UserMessage(content="And Bergen?"),
    ]
    reply = completion(
        None,
        [{"id": "call_9", "type": "function",
          "function": {"name": "get_weather", "arguments": '{"city": "Bergen"}'}}],
        finish="tool_calls",
    )  # fmt: skip
    server = Server(reply)
    model = make(server, OPENAI, provider="openai", model="gpt-4o-mini")
    narrowed = {"type": "object", "properties": {"city": {"type": "string"}}}
    params = ModelRequestParameters(
        tools=(WEATHER, CLOCK),
        tool_choice="get_weather",
        call_schemas={"get_weather": narrowed},
        settings=ModelSettings(max_tokens=100, top_k=5),
    )
    response = await model.request(history, params)
    body = server.body()
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]
    assert body["tools"][0]["function"]["parameters"] == narrowed
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["max_completion_tokens"] == 100  # OpenAI: not max_tokens
    assert "max_tokens" not in body
    assert "top_k" not in body  # never sent to OpenAI
    messages = body["messages"]
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == '{"city": "Oslo"}'
    assert messages[3] == {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'}
    assert "<tools>" not in messages[0]["content"]  # tools travel in the tools field
    assert response.tool_calls == (
        ToolCall(id="call_9", name="get_weather", arguments={"city": "Bergen"}),
    )
    assert response.finish_reason == "tool_calls"
    assert "<tool_call>" in response.raw


async def test_required_call_without_tool_choice_is_constrained_to_a_call_object(
    make: Any,
) -> None:
    server = Server(completion('{"answer": {"name": "get_time", "arguments": {}}}'))
    caps = Capabilities(server="ollama", native_tools=True, json_schema="response_format")
    model = make(server, caps)
    params = ModelRequestParameters(tools=(WEATHER, CLOCK), tool_choice="required")
    response = await model.request(QUESTION, params)
    body = server.body()
    assert "tools" not in body
    assert "tool_choice" not in body
    spec = body["response_format"]["json_schema"]
    call_schema = wire.call_object_schema([WEATHER, CLOCK])
    assert spec["schema"]["properties"]["answer"] == call_schema  # anyOf, wrapped in an object
    assert "<tools>" in body["messages"][0]["content"]  # the tools are described in the prompt
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("get_time", {})]


async def test_required_call_with_nothing_to_force_it_is_asked_for(make: Any) -> None:
    reply = completion(None, [{"id": "c1", "function": {"name": "get_weather", "arguments": "{}"}}])
    server = Server(reply)
    model = make(server, Capabilities(server="lmstudio", native_tools=True))
    params = ModelRequestParameters(tools=(WEATHER, CLOCK), tool_choice="get_weather")
    response = await model.request(QUESTION, params)
    body = server.body()
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]  # only the named
    assert "tool_choice" not in body
    assert body["messages"][0]["content"] == (
        "You help.\n\nAnswer with a call to the function get_weather, not with text."
    )
    assert response.tool_calls[0].name == "get_weather"


async def test_prompt_mode_describes_tools_and_parses_calls_from_text(make: Any) -> None:
    server = Server(
        completion('```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```')
    )
    model = make(server, PLAIN, model="qwen2.5-7b-instruct")  # hermes turns (not a <1B model)
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Rome"})
    history: list[Message] = [
        *QUESTION,
        AssistantMessage(tool_calls=(call,)),
        ToolMessage(tool_call_id="call_1", name="get_weather", content="sunny"),
        UserMessage(content="Now Oslo."),
    ]
    response = await model.request(history, ModelRequestParameters(tools=(WEATHER,)))
    body = server.body()
    assert set(body) == {"model", "messages", "stream", "temperature", "top_p", "max_tokens"}
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert "<tools>" in body["messages"][0]["content"]
    assert "<tool_call>" in body["messages"][2]["content"]  # the earlier call, written back
    assert "<tool_response>\nsunny\n</tool_response>" in body["messages"][3]["content"]
    assert response.tool_calls[0].arguments == {"city": "Oslo"}


async def test_unconstrained_requests_send_no_grammar_schema_or_tools(make: Any) -> None:
    server = Server(completion('{"x": 1}'))
    caps = Capabilities(
        server="llama-server", native_tools=True, tool_choice=True, json_schema="json_schema",
        grammar=True,
    )  # fmt: skip
    model = make(server, caps)
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    params = ModelRequestParameters(tools=(WEATHER,), output_schema=schema, constrained=False)
    response = await model.request(QUESTION, params)
    body = server.body()
    assert not {"grammar", "json_schema", "tools", "tool_choice", "response_format"} & set(body)
    system = body["messages"][0]["content"]
    assert "<tools>" in system
    assert "matches this JSON schema" in system
    assert response.text == '{"x": 1}'
    assert response.tool_calls == ()


@pytest.mark.parametrize(
    ("caps", "field"),
    [
        (Capabilities(server="openai", json_schema="response_format"), "response_format"),
        (Capabilities(server="vllm", json_schema="guided_json"), "guided_json"),
        (Capabilities(server="llama-server", json_schema="json_schema"), "json_schema"),
        (Capabilities(), None),
    ],
)
async def test_answer_schema_goes_the_way_the_server_takes_it(
    make: Any, caps: Capabilities, field: str | None
) -> None:
    schema = {"enum": ["simple", "complex"]}
    reply = '{"answer": "simple"}' if field == "response_format" else '"simple"'
    server = Server(completion(reply))
    model = make(server, caps)
    response = await model.request(QUESTION, ModelRequestParameters(output_schema=schema))
    body = server.body()
    assert "grammar" not in body
    if field == "response_format":
        wrapped = body["response_format"]["json_schema"]["schema"]
        assert wrapped["properties"]["answer"] == schema
    elif field is not None:
        assert body[field] == schema
    else:
        assert "matches this JSON schema" in body["messages"][0]["content"]
    assert response.text == '"simple"'


async def test_llama_server_json_schema_reply_and_cached_tokens(make: Any) -> None:
    reply, fixture = recorded("llama_server_json_schema")
    server = Server(reply)
    model = make(server, Capabilities(server="llama-server", json_schema="json_schema"))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    response = await model.request(QUESTION, ModelRequestParameters(output_schema=schema))
    assert set(fixture["request"]) <= set(server.body())
    assert server.body()["json_schema"] == schema
    assert json.loads(response.text or "") == {"city": "Paris", "days": 3}
    assert response.usage.prompt_tokens == 44
    assert response.usage.cached_prompt_tokens == 30


async def test_llama_server_refusal_of_grammar_and_schema_is_a_clear_error(
    make: Any, sleeps: list[float]
) -> None:
    reply, _ = recorded("llama_server_grammar_and_schema_400")
    server = Server(reply)
    model = make(server, LLAMA_SERVER)
    with pytest.raises(RemoteModelError) as info:
        await model.request(QUESTION, ModelRequestParameters(output_schema={"enum": ["a"]}))
    assert info.value.status == 400
    assert 'Either "json_schema" or "grammar" can be specified' in str(info.value)
    assert len(server.requests) == 1  # a 4xx is not retried
    assert sleeps == []


# -- recorded quirks ------------------------------------------------------------------------------


async def test_ollama_arguments_as_an_object_and_no_call_id(make: Any) -> None:
    reply, _ = recorded("ollama_native_tool_call")
    server = Server(reply)
    model = make(server, Capabilities(server="ollama", native_tools=True), model="llama3.1")
    tool = WEATHER.model_copy(update={"name": "get_current_weather"})
    response = await model.request(QUESTION, ModelRequestParameters(tools=(tool,)))
    (call,) = response.tool_calls
    assert call.name == "get_current_weather"
    assert call.arguments == {"format": "celsius", "location": "Paris, FR"}
    assert call.id.startswith("call_")
    assert response.finish_reason == "tool_calls"


async def test_llama_server_empty_call_id_gets_one(make: Any) -> None:
    reply, _ = recorded("llama_server_tool_call_empty_id")
    server = Server(reply)
    model = make(server, Capabilities(server="llama-server", native_tools=True, tool_choice=True))
    tool = ToolDefinition(name="duckduckgo_results_json")
    response = await model.request(QUESTION, ModelRequestParameters(tools=(tool,)))
    (call,) = response.tool_calls
    assert call.id.startswith("call_")
    assert call.arguments == {"query": "AI MAX 395"}
    assert response.text is None


async def test_foundry_local_call_in_content_is_parsed(make: Any) -> None:
    reply, fixture = recorded("foundry_local_call_in_content")
    server = Server(reply)
    model = make(server, Capabilities(server="foundry-local", native_tools=True))
    response = await model.request(QUESTION, ModelRequestParameters(tools=(WEATHER,)))
    assert server.body()["tools"][0]["function"]["name"] == "get_weather"
    assert fixture["body"]["choices"][0]["message"]["tool_calls"] == []
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("get_weather", {"city": "Seattle"})
    ]
    assert response.text is None
    assert response.finish_reason == "tool_calls"


async def test_vllm_refusing_auto_tool_choice_falls_back_to_the_prompt(make: Any) -> None:
    refusal, _ = recorded("vllm_auto_tool_choice_400")
    server = Server(refusal, completion(CALL_TEXT), completion(CALL_TEXT))
    caps = Capabilities(server="vllm", native_tools=True, tool_choice=True)
    model = make(server, caps)
    params = ModelRequestParameters(tools=(WEATHER,))
    response = await model.request(QUESTION, params)
    assert server.body(0)["tool_choice"] == "auto"
    assert "tools" not in server.body(1)
    assert "<tools>" in server.body(1)["messages"][0]["content"]
    assert response.tool_calls[0].arguments == {"city": "Oslo"}
    assert any("--enable-auto-tool-choice" in note for note in model.notes)
    await model.request(QUESTION, params)  # remembered: straight to the prompt
    assert len(server.requests) == 3
    assert "tools" not in server.body(2)


async def test_vllm_guided_json_constrains_a_required_call(make: Any) -> None:
    reply, _ = recorded("vllm_guided_json")
    server = Server(reply)
    model = make(server, Capabilities(server="vllm", tool_choice=True, json_schema="guided_json"))
    lookup = ToolDefinition(
        name="lookup_order",
        parameters={"type": "object", "properties": {"order_id": {"type": "string"}}},
    )
    params = ModelRequestParameters(tools=(lookup,), tool_choice="required")
    response = await model.request(QUESTION, params)
    assert server.body()["guided_json"] == wire.call_object_schema([lookup])
    assert "tools" not in server.body()
    assert response.tool_calls[0].arguments == {"order_id": "A-1042"}


async def test_unreadable_native_arguments_are_a_parse_error(make: Any) -> None:
    reply = completion(
        None, [{"id": "c1", "function": {"name": "get_weather", "arguments": '{"ci'}}]
    )
    model = make(Server(reply), OPENAI)
    response = await model.request(QUESTION, ModelRequestParameters(tools=(WEATHER,)))
    assert response.tool_calls == ()
    assert response.parse_error is not None
    assert "not valid JSON" in response.parse_error


async def test_finish_reason_length_is_reported(make: Any) -> None:
    model = make(Server(completion("Once upon a", finish="length")))
    response = await model.request(QUESTION, ModelRequestParameters())
    assert response.finish_reason == "length"
    assert response.text == "Once upon a"


# -- streaming ------------------------------------------------------------------------------------


async def test_stream_yields_text_as_it_comes_and_reads_usage(make: Any) -> None:
    usage_chunk = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}
    server = Server(sse([delta("Hel"), delta("lo"), usage_chunk]))
    model = make(server, Capabilities(server="llama-server"))
    deltas, response = await stream(model, QUESTION, ModelRequestParameters())
    assert deltas == ["Hel", "lo"]
    assert response.text == "Hello"
    assert response.usage.prompt_tokens == 9
    body = server.body()
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_stream_merges_native_tool_call_deltas(make: Any) -> None:
    def call_delta(**entry: Any) -> dict[str, Any]:
        return delta(tool_calls=[entry])

    chunks = [
        delta("Checking. "),
        call_delta(index=0, id="call_a", function={"name": "get_weather", "arguments": ""}),
        call_delta(index=0, function={"arguments": '{"city": '}),
        call_delta(index=1, id="call_b", function={"name": "get_time", "arguments": "{}"}),
        call_delta(index=0, function={"arguments": '"Oslo"}'}),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    server = Server(sse(chunks))
    model = make(server, OPENAI)
    deltas, response = await stream(model, QUESTION, ModelRequestParameters(tools=(WEATHER, CLOCK)))
    assert "".join(deltas) == "Checking. "
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_a", "get_weather", {"city": "Oslo"}),
        ("call_b", "get_time", {}),
    ]
    assert response.text == "Checking."
    assert response.finish_reason == "tool_calls"


async def test_stream_ollama_whole_call_in_one_delta(make: Any) -> None:
    reply, _ = recorded("ollama_stream_tool_call")
    server = Server(reply)
    model = make(server, Capabilities(server="ollama", native_tools=True))
    deltas, response = await stream(model, QUESTION, ModelRequestParameters(tools=(WEATHER,)))
    assert deltas == []
    assert [(c.id, c.arguments) for c in response.tool_calls] == [("call_k1", {"city": "Seattle"})]
    assert response.usage.prompt_tokens == 150
    assert server.body()["stream_options"] == {"include_usage": True}


async def test_stream_foundry_local_call_in_content_is_not_shown_as_text(make: Any) -> None:
    reply, _ = recorded("foundry_local_stream_call_in_content")
    server = Server(reply)
    model = make(server, Capabilities(server="foundry-local", native_tools=True))
    deltas, response = await stream(model, QUESTION, ModelRequestParameters(tools=(WEATHER,)))
    assert deltas == []  # the <tool_call> text is held back, not streamed as an answer
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("get_weather", {"city": "Seattle"})
    ]
    assert "stream_options" not in server.body()  # not known to take it


async def test_stream_in_prompt_mode_holds_text_that_may_be_a_call(make: Any) -> None:
    call_chunks = [delta('{"name": "get_weather", '), delta('"arguments": {"city": "Oslo"}}')]
    server = Server(sse(call_chunks), sse([delta("It is "), delta("cold.")]))
    model = make(server, PLAIN)
    params = ModelRequestParameters(tools=(WEATHER,))
    deltas, response = await stream(model, QUESTION, params)
    assert deltas == []
    assert response.tool_calls[0].arguments == {"city": "Oslo"}
    deltas, response = await stream(model, QUESTION, params)
    assert deltas == ["It is cold."]  # released once known to be text
    assert response.text == "It is cold."


async def test_stream_request_answered_with_plain_json(make: Any) -> None:
    server = Server(completion("Hi."))
    model = make(server)
    deltas, response = await stream(model, QUESTION, ModelRequestParameters())
    assert deltas == ["Hi."]
    assert response.text == "Hi."


async def test_stream_error_chunk_becomes_a_remote_model_error(make: Any) -> None:
    error = {"error": {"code": 500, "message": "context shift is disabled"}}
    model = make(Server(sse([delta("Hi"), error], done=False)))
    with pytest.raises(RemoteModelError, match="mid-stream: context shift is disabled"):
        await stream(model, QUESTION, ModelRequestParameters())


# -- retries and errors ---------------------------------------------------------------------------


async def test_429_is_retried_after_its_retry_after(make: Any, sleeps: list[float]) -> None:
    limited = httpx.Response(429, headers={"retry-after": "2"}, json={"error": {"message": "slow"}})
    server = Server(limited, completion("ok"))
    response = await make(server).request(QUESTION, ModelRequestParameters())
    assert response.text == "ok"
    assert sleeps == [2.0]
    assert len(server.requests) == 2


async def test_retry_after_is_capped(make: Any, sleeps: list[float]) -> None:
    limited = httpx.Response(429, headers={"retry-after": "3600"})
    await make(Server(limited, completion("ok"))).request(QUESTION, ModelRequestParameters())
    assert sleeps == [30.0]


async def test_503_then_200_backs_off(make: Any, sleeps: list[float]) -> None:
    server = Server(httpx.Response(503, text="loading model"), completion("ok"))
    response = await make(server).request(QUESTION, ModelRequestParameters())
    assert response.text == "ok"
    assert sleeps == [0.5]


async def test_connection_error_then_success(make: Any, sleeps: list[float]) -> None:
    server = Server(httpx.ConnectError("Connection refused"), completion("ok"))
    response = await make(server).request(QUESTION, ModelRequestParameters())
    assert response.text == "ok"
    assert sleeps == [0.5]


async def test_retries_exhausted_is_an_error_with_status_and_body(
    make: Any, sleeps: list[float]
) -> None:
    server = Server(httpx.Response(503, json={"error": {"message": "overloaded"}}))
    with pytest.raises(RemoteModelError) as info:
        await make(server).request(QUESTION, ModelRequestParameters())
    assert len(server.requests) == 3
    assert sleeps == [0.5, 1.0]
    error = info.value
    assert error.status == 503
    assert "overloaded" in error.body
    assert error.url == BASE_URL + "/chat/completions"
    assert "gave up after 3 attempts" in str(error)
    assert http_status_for(error) == 502


async def test_client_errors_fail_at_once(make: Any, sleeps: list[float]) -> None:
    server = Server(httpx.Response(400, json={"error": {"message": "bad 'messages'"}}))
    with pytest.raises(RemoteModelError, match="HTTP 400 \\(bad 'messages'\\)"):
        await make(server).request(QUESTION, ModelRequestParameters())
    assert len(server.requests) == 1
    assert sleeps == []


async def test_401_says_which_key_to_check(make: Any) -> None:
    denied = httpx.Response(401, json={"error": {"message": "Incorrect API key provided"}})
    server = Server(denied)
    model = make(server, OPENAI, api_key="sk-wrong", api_key_env="OPENAI_API_KEY")
    with pytest.raises(RemoteModelError) as info:
        await model.request(QUESTION, ModelRequestParameters())
    message = str(info.value)
    assert "check the API key in $OPENAI_API_KEY" in message
    assert "sk-wrong" not in message
    assert server.requests[0].headers["authorization"] == "Bearer sk-wrong"
    assert exit_code_for(info.value) == 6
    keyless = make(Server(denied), OPENAI, api_key_env="OPENAI_API_KEY")
    with pytest.raises(RemoteModelError, match="no API key was sent: set \\$OPENAI_API_KEY"):
        await keyless.request(QUESTION, ModelRequestParameters())


async def test_404_names_the_model_id_and_url(make: Any) -> None:
    missing = httpx.Response(404, json={"error": {"message": 'model "qwen9" not found'}})
    model = make(Server(missing), model="qwen9")
    with pytest.raises(RemoteModelError) as info:
        await model.request(QUESTION, ModelRequestParameters())
    assert info.value.status == 404
    assert "check the model id 'qwen9'" in str(info.value)
    assert BASE_URL in str(info.value)


async def test_connection_refused_asks_whether_the_server_runs(
    make: Any, sleeps: list[float]
) -> None:
    server = Server(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(RemoteModelError) as info:
        await make(server).request(QUESTION, ModelRequestParameters())
    assert info.value.status is None
    assert "cannot connect to http://llm.test/v1/chat/completions" in str(info.value)
    assert "is the server running?" in str(info.value)
    assert len(server.requests) == 3
    assert len(sleeps) == 2


async def test_read_timeout_is_not_retried(make: Any, sleeps: list[float]) -> None:
    server = Server(httpx.ReadTimeout("timed out"))
    with pytest.raises(ModelTimeoutError) as info:
        await make(server, timeout=7).request(QUESTION, ModelRequestParameters())
    assert "did not answer within 7 s" in str(info.value)
    assert len(server.requests) == 1
    assert http_status_for(info.value) == 504


async def test_connect_timeout_is_retried_then_a_timeout_error(
    make: Any, sleeps: list[float]
) -> None:
    server = Server(httpx.ConnectTimeout("connect timed out"))
    with pytest.raises(ModelTimeoutError, match=r"could not connect .* within 5 s"):
        await make(server).request(QUESTION, ModelRequestParameters())
    assert len(server.requests) == 3


async def test_stream_retries_before_the_reply_starts(make: Any, sleeps: list[float]) -> None:
    server = Server(httpx.Response(502, text="bad gateway"), sse([delta("ok")]))
    deltas, response = await stream(make(server), QUESTION, ModelRequestParameters())
    assert deltas == ["ok"]
    assert response.text == "ok"
    assert sleeps == [0.5]


# -- capabilities ---------------------------------------------------------------------------------


def fake_llama_server(real_reply: str) -> Callable[[httpx.Request], httpx.Response]:
    """llama-server without --jinja: grammar and json_schema honoured, tools refused."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            if request.url.path == "/props":
                return httpx.Response(200, json={"default_generation_settings": {}})
            return httpx.Response(404, text="Not Found")
        body = json.loads(request.content)
        if body["messages"][-1]["content"] == "Weather in Oslo?":
            return completion(real_reply)
        if "tools" in body:
            return httpx.Response(500, json={"error": {"message": "tools param requires --jinja"}})
        if body.get("grammar") == PROBE_GRAMMAR:
            return completion("shoal-probe")
        if "json_schema" in body:
            return completion('{"code": "shoal-probe-7q"}')
        return completion("Hello!")

    return handle


async def test_first_request_probes_once_and_the_result_is_cached(
    make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path))
    server = Server(fake_llama_server(CALL_TEXT))
    model = make(server, None, provider="llama-server")
    assert model.capabilities is None
    assert model.profile.native_tools is False
    params = ModelRequestParameters(tools=(WEATHER,), tool_choice="required")
    first, second = await asyncio.gather(
        model.request(QUESTION, params), model.request(QUESTION, params)
    )
    caps = model.capabilities
    assert caps is not None
    assert caps.probed
    assert caps.server == "llama-server"
    assert caps.grammar
    assert caps.json_schema == "json_schema"
    assert not caps.native_tools
    assert [r.url.path for r in server.requests].count("/props") == 1  # probed once
    real = [json.loads(r.content) for r in server.requests if r.method == "POST"]
    real = [b for b in real if b["messages"][-1]["content"].startswith("Weather")]
    assert len(real) == 2
    assert all(b["grammar"] == grammar_for(params) for b in real)
    assert first.tool_calls[0].arguments == second.tool_calls[0].arguments == {"city": "Oslo"}
    assert (tmp_path / "remote" / "capabilities.json").is_file()

    again = Server(fake_llama_server(CALL_TEXT))
    cached = make(again, None, provider="llama-server")
    await cached.request(QUESTION, params)
    assert len(again.requests) == 1  # no probe: the cache answered
    assert cached.capabilities == caps


async def test_failed_probe_falls_back_to_the_presets_assumptions(
    make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path))

    async def broken(*args: Any, **kwargs: Any) -> Capabilities:
        raise RemoteModelError("probe went wrong", status=500)

    monkeypatch.setattr(openai_compat, "probe_and_cache", broken)
    server = Server(completion(CALL_TEXT))
    model = make(server, None, provider="ollama")
    response = await model.request(QUESTION, ModelRequestParameters(tools=(WEATHER,)))
    caps = model.capabilities
    assert caps is not None
    assert not caps.probed
    assert caps.native_tools  # the ollama preset
    assert "tools" in server.body()
    assert any("probing http://llm.test/v1 failed" in note for note in model.notes)
    assert response.tool_calls[0].name == "get_weather"


async def test_unreachable_server_while_probing_is_an_error_and_probes_again(
    make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path))
    server = Server(httpx.ConnectError("Connection refused"))
    model = make(server, None, provider="vllm")
    with pytest.raises(RemoteModelError, match="is the server running"):
        await model.request(QUESTION, ModelRequestParameters())
    assert model.capabilities is None
    assert len(server.requests) == 1  # a probe request is not retried
    server.steps = [fake_llama_server("Hi.")]
    response = await model.request(QUESTION, ModelRequestParameters())
    assert response.text == "Hi."
    assert model.capabilities is not None


async def test_probe_false_uses_the_assumptions_without_asking(make: Any) -> None:
    server = Server(completion("Hi."))
    model = make(server, None, provider="openai", probe=False)
    await model.request(QUESTION, ModelRequestParameters(tools=(WEATHER,)))
    assert len(server.requests) == 1
    assert server.body()["tool_choice"] == "auto"  # the openai preset: native tools and choice


# -- the rest -------------------------------------------------------------------------------------


async def test_health_checks_the_models_endpoint(make: Any) -> None:
    up = Server(httpx.Response(200, json={"data": []}))
    assert await make(up).health() is True
    assert up.requests[0].url == httpx.URL(BASE_URL + "/models")
    assert await make(Server(httpx.Response(503))).health() is False
    assert await make(Server(httpx.Response(404))).health() is True  # up, no /models route
    assert await make(Server(httpx.ConnectError("refused"))).health() is False


def test_profile_follows_the_model_id_and_capabilities() -> None:
    assert family_for_model_id("Qwen/Qwen2.5-0.5B-Instruct") == "qwen2"
    assert family_for_model_id("qwen2.5:0.5b") == "qwen2"
    assert family_for_model_id("HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm2"
    assert family_for_model_id("llama3.1") == "llama3"
    assert family_for_model_id("gemma3:1b") == "gemma3"
    assert family_for_model_id("phi-4-mini") == "phi"
    assert family_for_model_id("gpt-4o-mini") == "generic"
    assert family_for_model_id("dolphin-mistral") == "generic"
    model = OpenAICompatModel("qwen2.5:0.5b", base_url=BASE_URL, capabilities=OPENAI)
    assert model.profile.family == "qwen2"
    assert model.profile.supports_grammar
    assert model.profile.native_tools
    assert model.name == "openai-compat:qwen2.5:0.5b"
    mine = ModelProfile(family="custom")
    assert OpenAICompatModel("m", base_url=BASE_URL, profile=mine).profile is mine


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(UserError, match="must start with http:// or https://"):
        OpenAICompatModel("m", base_url="localhost:8080/v1")
    with pytest.raises(UserError, match="timeouts"):
        OpenAICompatModel("m", base_url=BASE_URL, timeout=0)


async def test_api_key_header_query_and_custom_path(make: Any) -> None:
    server = Server(completion("ok"))
    model = make(
        server,
        OPENAI,
        provider="azure",
        api_key="k-123",
        auth_header="api-key",
        query={"api-version": "2024-10-21"},
        chat_path="chat/completions",
        headers={"x-trace": "t1"},
        base_url="https://res.openai.azure.com/openai/deployments/dep",
    )
    await model.request(QUESTION, ModelRequestParameters())
    request = server.requests[0]
    assert str(request.url) == (
        "https://res.openai.azure.com/openai/deployments/dep/chat/completions"
        "?api-version=2024-10-21"
    )
    assert request.headers["api-key"] == "k-123"
    assert "authorization" not in request.headers
    assert request.headers["x-trace"] == "t1"


async def test_without_a_transport_the_unit_tier_refuses_real_requests() -> None:
    model = OpenAICompatModel("m", base_url=BASE_URL, capabilities=PLAIN)
    with pytest.raises(ModelError, match="real model requests are disabled"):
        await model.request(QUESTION, ModelRequestParameters())


async def test_close_releases_the_client_and_a_later_request_opens_another(make: Any) -> None:
    server = Server(completion("one"), completion("two"))
    model = make(server)
    assert (await model.request(QUESTION, ModelRequestParameters())).text == "one"
    await model.close()
    assert (await model.request(QUESTION, ModelRequestParameters())).text == "two"


async def test_native_conversation_keeps_its_shape_when_no_call_is_offered(make: Any) -> None:
    server = Server(completion("Done."))
    model = make(server, OPENAI)
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Oslo"})
    history: list[Message] = [
        *QUESTION,
        AssistantMessage(tool_calls=(call,)),
        ToolMessage(tool_call_id="call_1", name="get_weather", content="cold"),
    ]
    response = await model.request(
        history, ModelRequestParameters(tools=(WEATHER,), tool_choice="none")
    )
    body = server.body()
    assert body["tool_choice"] == "none"
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "cold"}
    assert response.text == "Done."


async def test_without_llama_cpp_a_grammar_server_gets_the_next_mechanism(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(params: ModelRequestParameters) -> str | None:
        raise ModelLoadError("the embedded engine needs llama-cpp-python")

    monkeypatch.setattr(openai_compat, "grammar_for", missing)
    server = Server(completion('"a"'))
    model = make(server, LLAMA_SERVER)
    response = await model.request(QUESTION, ModelRequestParameters(output_schema={"enum": ["a"]}))
    body = server.body()
    assert "grammar" not in body
    assert body["json_schema"] == {"enum": ["a"]}  # the server's JSON schema field instead
    assert any("grammars cannot be built here" in note for note in model.notes)
    assert response.text == '"a"'
