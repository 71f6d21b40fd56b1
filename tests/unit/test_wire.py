"""shoal.models.wire: messages and tools to OpenAI chat JSON and replies back (pure functions)."""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from typing import Any

import jsonschema
import pytest

from shoal.messages import (
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from shoal.models import wire
from shoal.settings import ModelSettings

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


# -- requests -------------------------------------------------------------------------------------


def test_messages_json_writes_calls_natively() -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Zürich"})
    messages = [
        SystemMessage(content="Be brief."),
        UserMessage(content="Weather?"),
        AssistantMessage(content=None, tool_calls=(call,)),
        ToolMessage(tool_call_id="call_1", name="get_weather", content='{"temp": 21}'),
        AssistantMessage(content="21 degrees."),
        AssistantMessage(content=None),
    ]
    out = wire.messages_json(messages)
    assert out[0] == {"role": "system", "content": "Be brief."}
    assert out[1] == {"role": "user", "content": "Weather?"}
    assert out[2]["content"] is None
    (entry,) = out[2]["tool_calls"]
    assert entry["id"] == "call_1"
    assert entry["type"] == "function"
    assert entry["function"]["name"] == "get_weather"
    # arguments travel as a JSON *string*, not an object
    assert isinstance(entry["function"]["arguments"], str)
    assert json.loads(entry["function"]["arguments"]) == {"city": "Zürich"}
    assert out[3] == {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'}
    assert out[4] == {"role": "assistant", "content": "21 degrees."}
    assert out[5] == {"role": "assistant", "content": ""}  # no null content without calls


def test_tools_and_tool_choice_json() -> None:
    (weather, clock) = wire.tools_json([WEATHER, CLOCK])
    assert weather == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": WEATHER.parameters,
            "description": "Weather for a city.",
        },
    }
    assert "description" not in clock["function"]
    assert wire.tool_choice_json("auto") == "auto"
    assert wire.tool_choice_json("required") == "required"
    assert wire.tool_choice_json("none") == "none"
    assert wire.tool_choice_json("get_weather") == {
        "type": "function",
        "function": {"name": "get_weather"},
    }


def test_call_object_schema_accepts_exactly_valid_calls() -> None:
    one = wire.call_object_schema([WEATHER])
    assert one["properties"]["name"] == {"type": "string", "enum": ["get_weather"]}
    jsonschema.validate({"name": "get_weather", "arguments": {"city": "Oslo"}}, one)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "get_weather", "arguments": {}}, one)  # city required
    both = wire.call_object_schema([WEATHER, CLOCK])
    assert len(both["anyOf"]) == 2
    jsonschema.validate({"name": "get_time", "arguments": {}}, both)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "launch", "arguments": {}}, both)


def test_schema_fields_response_format_strict_only_when_the_schema_allows() -> None:
    strict_schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    fields, wrapped = wire.schema_fields(strict_schema, "response_format")
    assert not wrapped
    assert fields == {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": strict_schema, "strict": True},
        }
    }
    loose = {"type": "object", "properties": {"a": {"type": "string"}}}
    fields, wrapped = wire.schema_fields(loose, "response_format")
    assert fields["response_format"]["json_schema"]["strict"] is False
    assert not wrapped


def test_schema_fields_wraps_a_non_object_root_for_response_format() -> None:
    fields, wrapped = wire.schema_fields({"enum": ["simple", "complex"]}, "response_format")
    assert wrapped
    sent = fields["response_format"]["json_schema"]["schema"]
    assert sent["type"] == "object"
    assert sent["properties"] == {"answer": {"enum": ["simple", "complex"]}}
    assert fields["response_format"]["json_schema"]["strict"] is True
    assert wire.unwrap_answer('{"answer": "simple"}') == '"simple"'
    assert wire.unwrap_answer('{"answer": "x", "other": 1}') == '{"answer": "x", "other": 1}'
    assert wire.unwrap_answer("not json") == "not json"


def test_schema_fields_guided_json_and_json_schema_send_the_schema_as_is() -> None:
    schema = {"enum": ["a"]}
    assert wire.schema_fields(schema, "guided_json") == ({"guided_json": schema}, False)
    assert wire.schema_fields(schema, "json_schema") == ({"json_schema": schema}, False)


def test_sampling_json_sends_extra_fields_only_to_servers_that_take_them() -> None:
    settings = ModelSettings(
        temperature=0.7, top_p=0.8, top_k=20, min_p=0.05, repeat_penalty=1.05, max_tokens=64,
        seed=7, stop=("END",),
    )  # fmt: skip
    base = {"temperature": 0.7, "top_p": 0.8, "max_tokens": 64, "seed": 7, "stop": ["END"]}
    assert wire.sampling_json(settings, "openai") == base
    assert wire.sampling_json(settings, "unknown") == base
    assert wire.sampling_json(settings, "llama-server") == {
        **base, "top_k": 20, "min_p": 0.05, "repeat_penalty": 1.05,
    }  # fmt: skip
    assert wire.sampling_json(settings, "vllm") == {
        **base, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.05,
    }  # fmt: skip
    assert wire.sampling_json(ModelSettings(), "llama-server") == {}


def test_with_system_lines_joins_the_system_prompt_or_makes_one() -> None:
    lines = ["Answer in JSON."]
    merged = wire.with_system_lines(
        [SystemMessage(content="Be brief."), UserMessage(content="hi")], lines
    )
    assert merged[0] == SystemMessage(content="Be brief.\n\nAnswer in JSON.")
    made = wire.with_system_lines([UserMessage(content="hi")], lines)
    assert made[0] == SystemMessage(content="Answer in JSON.")
    assert wire.call_instruction([WEATHER]) == (
        "Answer with a call to the function get_weather, not with text."
    )
    assert '"enum": ["a"]' in wire.json_instruction({"enum": ["a"]})


# -- replies --------------------------------------------------------------------------------------


def test_read_tool_calls_accepts_strings_objects_and_missing_ids() -> None:
    calls, error = wire.read_tool_calls(
        [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "f", "arguments": '{"x": 1}'},
            },
            {"function": {"name": "g", "arguments": {"y": 2}}},  # Ollama: object, no id
            {"id": "", "function": {"name": "h", "arguments": ""}},  # llama-server: empty id
            {"id": "call_d", "function": {"name": "k", "arguments": '"{\\"z\\": 3}"'}},  # doubled
        ]
    )
    assert error is None
    assert [(c.name, c.arguments) for c in calls] == [
        ("f", {"x": 1}), ("g", {"y": 2}), ("h", {}), ("k", {"z": 3}),
    ]  # fmt: skip
    assert calls[0].id == "call_a"
    assert calls[1].id.startswith("call_")
    assert calls[2].id.startswith("call_")
    assert calls[1].id != calls[2].id


def test_read_tool_calls_repairs_slips_but_not_cut_off_arguments() -> None:
    calls, error = wire.read_tool_calls([{"function": {"name": "f", "arguments": '{"x": 1,}'}}])
    assert error is None
    assert calls[0].arguments == {"x": 1}
    calls, error = wire.read_tool_calls([{"function": {"name": "f", "arguments": '{"x": "abc'}}])
    assert calls == ()
    assert error is not None
    assert "not valid JSON" in error
    calls, error = wire.read_tool_calls([{"function": {"name": "f", "arguments": "[1, 2]"}}])
    assert error == "the arguments of f are not a JSON object"
    calls, error = wire.read_tool_calls([{"function": {"arguments": "{}"}}])
    assert error == "a native tool call has no function name"
    assert wire.read_tool_calls(None) == ((), None)


def test_read_reply_reads_content_calls_finish_and_usage() -> None:
    reply = wire.read_reply(
        {
            "choices": [
                {
                    "message": {
                        "content": [
                            {"type": "text", "text": "Hi "},
                            {"type": "text", "text": "there"},
                        ]
                    },
                    "finish_reason": "length",
                }
            ],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 8},
            },
        }
    )
    assert reply.content == "Hi there"
    assert reply.finish_reason == "length"
    assert reply.usage == wire.WireUsage(10, 5, 8)
    with pytest.raises(ValueError, match="no choices"):
        wire.read_reply({"choices": []})


def test_sse_decoder_reads_data_lines() -> None:
    decoder = wire.SSEDecoder()
    lines = [
        ": keep-alive comment",
        "event: message",
        'data: {"a": 1}',
        "",
        "data: {",
        'data: "b": 2}',
        "",
        "data: [DONE]",
    ]
    events = [e for e in (decoder.feed(line) for line in lines) if e is not None]
    assert events == ['{"a": 1}', '{\n"b": 2}', wire.DONE]
    assert decoder.flush() is None


def test_stream_accumulator_merges_call_fragments_by_index() -> None:
    acc = wire.StreamAccumulator()

    def calls(*entries: dict[str, Any]) -> dict[str, Any]:
        return {"choices": [{"delta": {"tool_calls": list(entries)}}]}

    first = {"name": "get_weather", "arguments": ""}
    chunks: list[dict[str, Any]] = [
        {"choices": [{"delta": {"role": "assistant", "content": "Let me check. "}}]},
        calls({"index": 0, "id": "call_1", "type": "function", "function": first}),
        calls({"index": 0, "function": {"arguments": '{"ci'}}),
        calls({"index": 1, "id": "call_2", "function": {"name": "get_time", "arguments": "{}"}}),
        calls({"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}),
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 12}},
    ]
    texts = [acc.feed(chunk) for chunk in chunks]
    assert texts[0] == "Let me check. "
    assert all(t == "" for t in texts[1:])
    reply = acc.reply()
    assert reply.content == "Let me check. "
    assert reply.finish_reason == "tool_calls"
    assert reply.usage == wire.WireUsage(40, 12, 0)
    assert [(c.id, c.name, c.arguments) for c in reply.calls] == [
        ("call_1", "get_weather", {"city": "Oslo"}),
        ("call_2", "get_time", {}),
    ]


def test_stream_accumulator_takes_whole_calls_and_repeated_names() -> None:
    acc = wire.StreamAccumulator()
    acc.feed({"choices": [{"delta": {"tool_calls": [
        {"function": {"name": "f", "arguments": {"x": 1}}}]}}]})  # fmt: skip
    acc.feed({"choices": [{"delta": {"tool_calls": [
        {"index": 1, "function": {"name": "g", "arguments": "{}"}}]}}]})  # fmt: skip
    acc.feed({"choices": [{"delta": {"tool_calls": [{"index": 1, "function": {"name": "g"}}]}}]})
    calls, error = acc.tool_calls()
    assert error is None
    assert [(c.name, c.arguments) for c in calls] == [("f", {"x": 1}), ("g", {})]
    assert acc.feed("not a chunk") == ""


def test_error_detail_reads_each_server_shape() -> None:
    openai = '{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}'
    assert wire.error_detail(openai) == "Incorrect API key provided"
    vllm = '{"object": "error", "message": "model not found", "code": 404}'
    assert wire.error_detail(vllm) == "model not found"
    assert wire.error_detail('{"detail": "Not Found"}') == "Not Found"
    assert wire.error_detail('{"error": "model \\"x\\" not found"}') == 'model "x" not found'
    assert wire.error_detail("  plain text  ") == "plain text"
    assert len(wire.error_detail("x" * 2000)) == 500


def test_retry_after_seconds_reads_numbers_and_dates() -> None:
    assert wire.retry_after_seconds("3") == 3.0
    assert wire.retry_after_seconds("0.5") == 0.5
    assert wire.retry_after_seconds(None) is None
    assert wire.retry_after_seconds("soon") is None
    in_ten = wire.retry_after_seconds(formatdate(time.time() + 10, usegmt=True))
    assert in_ten is not None
    assert 8 <= in_ten <= 11


def test_status_hint_says_what_to_check() -> None:
    common: dict[str, Any] = {"model": "m", "base_url": "http://h/v1", "attempts": 3}
    assert "set $OPENAI_API_KEY" in wire.status_hint(
        401, key_sent=False, key_env="OPENAI_API_KEY", **common
    )
    assert "check the API key in $OPENAI_API_KEY" in wire.status_hint(
        403, key_sent=True, key_env="OPENAI_API_KEY", **common
    )
    assert "pass api_key=" in wire.status_hint(401, key_sent=False, key_env=None, **common)
    assert "model id 'm'" in wire.status_hint(404, key_sent=False, key_env=None, **common)
    assert "3 attempts" in wire.status_hint(503, key_sent=False, key_env=None, **common)


def test_raw_text_writes_native_calls_as_hermes_blocks() -> None:
    call = ToolCall(id="call_1", name="f", arguments={"x": 1})
    assert wire.raw_text("Sure.", [call]) == (
        'Sure.\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'
    )
    assert wire.raw_text(None, []) == ""


def test_a_stream_without_usage_counts_its_chunks_as_completion_tokens() -> None:
    # llama-cpp-python's server streams one token a chunk and never sends a usage chunk
    acc = wire.StreamAccumulator()
    for piece in ("Hel", "lo", " there", "."):
        acc.feed({"choices": [{"delta": {"content": piece}}]})
    acc.feed({"choices": [{"delta": {}, "finish_reason": "stop"}]})
    assert acc.reply().usage == wire.WireUsage(prompt_tokens=0, completion_tokens=4)
    # a usage chunk, when sent, is what counts
    acc.feed({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}})
    assert acc.reply().usage == wire.WireUsage(9, 3, 0)
