"""External tools (``Tool.external``): declared by JSON schema, run by the caller.

The agent validates a call to such a tool (after coercing its arguments) and stops the run
with the call in ``RunResult.pending_calls`` instead of running anything.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shoal import Agent, FunctionModel, tool
from shoal.agent import FinalEvent, ToolCallEvent, ToolResultEvent
from shoal.exceptions import ModelBehaviorError, ToolArgumentsError, ToolDefinitionError
from shoal.messages import AssistantMessage, Message, ToolCall, ToolMessage, UserMessage
from shoal.models import ModelRequestParameters
from shoal.tools import Tool

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city."},
        "days": {"type": "integer", "description": "How many days ahead."},
    },
    "required": ["city"],
}


def weather_tool() -> Tool:
    return Tool.external(
        "get_weather", description="Get the weather forecast.", parameters=WEATHER_SCHEMA
    )


def call(name: str, **arguments: Any) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def scripted(*outputs: str | ToolCall | list[ToolCall]) -> FunctionModel:
    """A model that answers with ``outputs`` in order."""
    queue = list(outputs)

    def answer(
        messages: list[Message], params: ModelRequestParameters
    ) -> str | ToolCall | list[ToolCall]:
        return queue.pop(0)

    return FunctionModel(answer)


def tool_results(messages: list[Message]) -> list[ToolMessage]:
    return [m for m in messages if isinstance(m, ToolMessage)]


# -- declaring an external tool -------------------------------------------------------------


def test_external_tool_has_the_given_definition() -> None:
    weather = weather_tool()

    assert weather.name == "get_weather"
    assert weather.description == "Get the weather forecast."
    assert weather.external_only
    assert weather.timeout is None
    assert not weather.is_async
    assert weather.definition.name == "get_weather"
    assert weather.definition.description == "Get the weather forecast."
    assert weather.definition.parameters == WEATHER_SCHEMA


def test_python_tool_is_not_external() -> None:
    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    assert not ping.external_only


def test_missing_type_and_properties_are_filled_in() -> None:
    bare = Tool.external("ping")
    assert bare.definition.parameters == {"type": "object", "properties": {}}
    assert bare.description == ""

    no_type = Tool.external("echo", parameters={"properties": {"text": {"type": "string"}}})
    assert no_type.definition.parameters == {
        "type": "object",
        "properties": {"text": {"type": "string"}},
    }


def test_the_given_schema_is_not_modified() -> None:
    given: dict[str, Any] = {"required": []}

    external = Tool.external("noop", parameters=given)

    assert given == {"required": []}
    assert external.definition.parameters == {"required": [], "type": "object", "properties": {}}


@pytest.mark.parametrize("name", ["bad name", "1starts_with_digit", "", "x" * 65, "semi;colon"])
def test_bad_name_is_a_definition_error(name: str) -> None:
    with pytest.raises(ToolDefinitionError, match=r"invalid tool name .*1-64 letters"):
        Tool.external(name, parameters=WEATHER_SCHEMA)


@pytest.mark.parametrize("name", ["get_weather", "math.factorial", "a-b", "_private", "x" * 64])
def test_good_names_are_accepted(name: str) -> None:
    assert Tool.external(name).name == name


@pytest.mark.parametrize("kind", ["array", "string", "integer", 5])
def test_non_object_schema_is_a_definition_error(kind: Any) -> None:
    with pytest.raises(ToolDefinitionError, match="parameters must be an object schema") as info:
        Tool.external("f", parameters={"type": kind})
    assert "'f'" in str(info.value)


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "properties": {"a": {"type": "nope"}}}, "'nope'"),
        ({"type": "object", "required": "a"}, "'a' is not of type 'array'"),
        ({"type": "object", "properties": []}, "is not of type 'object'"),
        ({"type": "object", "properties": {"n": {"type": "integer", "minimum": "3"}}}, "'3'"),
    ],
)
def test_invalid_json_schema_is_a_definition_error(schema: dict[str, Any], problem: str) -> None:
    with pytest.raises(ToolDefinitionError) as info:
        Tool.external("f", parameters=schema)

    message = str(info.value)
    assert message.startswith("tool 'f': invalid parameters schema: ")
    assert problem in message
    assert "\n" not in message  # one line, no jsonschema dump


# -- validating arguments against the schema ------------------------------------------------


def test_valid_arguments_are_returned_as_given() -> None:
    weather = weather_tool()

    assert weather.validate({"city": "Paris"}) == {"city": "Paris"}
    assert weather.validate({"city": "Paris", "days": 3}) == {"city": "Paris", "days": 3}


def test_validation_does_not_coerce() -> None:
    # coercion belongs to the loop (coerce_arguments), not to the schema check
    with pytest.raises(ToolArgumentsError) as info:
        weather_tool().validate({"city": "Paris", "days": "5"})

    assert str(info.value) == "get_weather: days: '5' is not of type 'integer'"
    assert info.value.tool_name == "get_weather"


def test_missing_required_argument() -> None:
    with pytest.raises(ToolArgumentsError) as info:
        weather_tool().validate({"days": 2})

    assert str(info.value) == "get_weather: 'city' is a required property"


def test_wrong_type() -> None:
    with pytest.raises(ToolArgumentsError) as info:
        weather_tool().validate({"city": 5})

    message = str(info.value)
    assert message == "get_weather: city: 5 is not of type 'string'"
    assert len(message) < 100  # short enough to feed back to a model


def test_nested_error_names_its_path() -> None:
    external = Tool.external(
        "ship",
        parameters={
            "type": "object",
            "properties": {
                "address": {
                    "type": "object",
                    "properties": {"zip": {"type": "string"}},
                    "required": ["zip"],
                }
            },
        },
    )

    with pytest.raises(ToolArgumentsError, match=r"^ship: address\.zip: 75 is not of type"):
        external.validate({"address": {"zip": 75}})


def test_arguments_that_are_not_an_object() -> None:
    with pytest.raises(ToolArgumentsError, match="arguments must be a JSON object, not list"):
        weather_tool().validate([1, 2])  # type: ignore[arg-type]


def test_extra_arguments_follow_the_schema() -> None:
    closed = Tool.external(
        "f",
        parameters={
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "additionalProperties": False,
        },
    )

    assert weather_tool().validate({"city": "Rome", "units": "C"})["units"] == "C"
    with pytest.raises(ToolArgumentsError, match="'b' was unexpected"):
        closed.validate({"a": 1, "b": 2})


# -- what an external tool cannot do ------------------------------------------------------


async def test_call_on_an_external_tool_is_a_definition_error() -> None:
    with pytest.raises(ToolDefinitionError, match="'get_weather' is external: the caller runs it"):
        await weather_tool().call({"city": "Paris"})


def test_function_of_an_external_tool_is_a_definition_error() -> None:
    weather = weather_tool()

    with pytest.raises(ToolDefinitionError, match="'get_weather' is external: it has no function"):
        _ = weather.function
    with pytest.raises(ToolDefinitionError, match="is external"):
        _ = weather.arguments_model
    with pytest.raises(ToolDefinitionError, match="is external"):
        weather(city="Paris")


# -- agent runs that reach an external call ----------------------------------------------


async def test_external_call_ends_the_run_with_a_pending_call() -> None:
    model = scripted(call("get_weather", city="Paris", days="5"))
    agent = Agent("m", model, tools=[weather_tool()])

    result = await agent.run("Weather in Paris in 5 days?")

    assert result.stop_reason == "tool_calls"
    assert result.output == ""
    [pending] = result.pending_calls
    assert pending.name == "get_weather"
    assert pending.arguments == {"city": "Paris", "days": 5}  # coerced from "5"
    assert any(
        "get_weather arguments repaired" in note and "'days': '5' -> 5" in note
        for note in result.notes
    )
    # nothing ran: no record, no tool message; one request only
    assert result.tool_calls == []
    assert len(model.requests) == 1
    assert result.usage.requests == 1
    assert result.usage.steps == 1
    assert result.retries == 0
    assert [m.role for m in result.new_messages] == ["user", "assistant"]
    last = result.new_messages[-1]
    assert isinstance(last, AssistantMessage)
    [carried] = last.tool_calls
    assert carried.id == pending.id  # the caller answers it by this id
    assert carried.name == "get_weather"
    assert not tool_results(result.new_messages)


async def test_external_call_with_valid_arguments_has_no_repair_note() -> None:
    model = scripted(ToolCall(name="get_weather", arguments={"city": "Oslo"}))

    result = await Agent("m", model, tools=[weather_tool()]).run("Weather in Oslo?")

    assert result.pending_calls[0].arguments == {"city": "Oslo"}
    assert result.notes == []


async def test_external_tool_is_offered_to_the_model() -> None:
    model = scripted(ToolCall(name="get_weather", arguments={"city": "Oslo"}))

    await Agent("m", model, tools=[weather_tool()]).run("Weather in Oslo?")

    [offered] = model.requests[0].params.offered_tools()
    assert offered.name == "get_weather"
    assert offered.parameters == WEATHER_SCHEMA


async def test_streamed_run_emits_the_validated_call_and_no_result() -> None:
    model = scripted(call("get_weather", city="Paris", days="2"))

    events = [e async for e in Agent("m", model, tools=[weather_tool()]).run_stream("go")]

    assert not any(isinstance(e, ToolResultEvent) for e in events)
    [call_event] = [e for e in events if isinstance(e, ToolCallEvent)]
    assert call_event.call.arguments == {"city": "Paris", "days": 2}
    assert call_event.step == 1
    final = events[-1]
    assert isinstance(final, FinalEvent)
    assert final.result.pending_calls == [call_event.call]


async def test_several_external_calls_in_one_response_are_all_pending() -> None:
    model = scripted(
        [
            ToolCall(name="get_weather", arguments={"city": "Paris"}),
            ToolCall(name="get_weather", arguments={"city": "Rome", "days": 1}),
        ]
    )

    result = await Agent("m", model, tools=[weather_tool()]).run("Paris and Rome?")

    assert result.stop_reason == "tool_calls"
    assert [c.arguments for c in result.pending_calls] == [
        {"city": "Paris"},
        {"city": "Rome", "days": 1},
    ]


async def test_mixed_step_runs_the_python_tool_and_returns_the_external_call() -> None:
    ran: list[tuple[int, int]] = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        ran.append((a, b))
        return a + b

    model = scripted(
        [
            ToolCall(name="add", arguments={"a": 2, "b": "3"}),
            ToolCall(name="get_weather", arguments={"city": "Lima"}),
        ]
    )

    result = await Agent("m", model, tools=[add, weather_tool()]).run("2+3 and Lima weather")

    assert ran == [(2, 3)]
    [record] = result.tool_calls
    assert record.call.name == "add"
    assert record.result == 5
    assert record.outcome == "ok"
    assert result.stop_reason == "tool_calls"
    [pending] = result.pending_calls
    assert pending.name == "get_weather"
    assert pending.arguments == {"city": "Lima"}
    assert len(model.requests) == 1  # the run stopped instead of asking the model again
    assert [m.role for m in result.new_messages] == ["user", "assistant", "tool"]
    [shown] = tool_results(result.new_messages)
    assert shown.name == "add"
    assert shown.content == "5"
    assert shown.tool_call_id == record.call.id
    assert all(m.tool_call_id != pending.id for m in tool_results(result.new_messages))


async def test_invalid_external_call_goes_back_to_the_model_then_ends_pending() -> None:
    model = scripted(
        call("get_weather", days=3),  # city missing
        call("get_weather", city="Paris", days=3),
    )

    result = await Agent("m", model, tools=[weather_tool()]).run("Weather in 3 days?")

    assert result.stop_reason == "tool_calls"
    assert result.retries == 1
    assert len(model.requests) == 2
    [bad] = result.tool_calls
    assert bad.outcome == "invalid"
    assert bad.error == "get_weather: 'city' is a required property"
    # the model saw the error as the result of its own call
    [shown] = tool_results(model.requests[1].messages)
    assert shown.is_error
    assert shown.content == "Error: get_weather: 'city' is a required property"
    [pending] = result.pending_calls
    assert pending.arguments == {"city": "Paris", "days": 3}
    assert [m.role for m in result.new_messages] == ["user", "assistant", "tool", "assistant"]
    assert isinstance(result.new_messages[-1], AssistantMessage)
    assert result.new_messages[-1].tool_calls[0].id == pending.id


async def test_wrong_type_that_cannot_be_coerced_is_retried() -> None:
    model = scripted(
        call("get_weather", city="Paris", days="soon"),
        call("get_weather", city="Paris", days=1),
    )

    result = await Agent("m", model, tools=[weather_tool()]).run("Weather soon?")

    assert result.retries == 1
    assert "days" in (result.tool_calls[0].error or "")
    assert result.pending_calls[0].arguments == {"city": "Paris", "days": 1}


async def test_repeated_invalid_external_calls_exhaust_the_budget() -> None:
    model = scripted(*[call("get_weather", days="x")] * 4)
    agent = Agent("m", model, tools=[weather_tool()], retries=2)

    with pytest.raises(ModelBehaviorError, match="kept producing unusable output") as info:
        await agent.run("Weather?")

    assert "3 attempts" in str(info.value)
    assert "get_weather" in str(info.value)
    assert len(model.requests) == 3


async def test_external_call_on_a_later_step_after_a_python_tool() -> None:
    @tool
    def find_city(country: str) -> str:
        """The capital of a country."""
        return {"France": "Paris"}.get(country, "unknown")

    model = scripted(
        call("find_city", country="France"),
        call("get_weather", city="Paris"),
    )

    result = await Agent("m", model, tools=[find_city, weather_tool()]).run("Weather in France?")

    assert [r.result for r in result.tool_calls] == ["Paris"]
    assert result.pending_calls[0].arguments == {"city": "Paris"}
    assert result.usage.steps == 2
    assert [m.role for m in result.new_messages] == ["user", "assistant", "tool", "assistant"]


async def test_text_answer_with_external_tools_is_final() -> None:
    model = scripted("I cannot tell the weather without a city.")

    result = await Agent("m", model, tools=[weather_tool()]).run("Weather?")

    assert result.stop_reason == "final"
    assert result.pending_calls == []
    assert result.output == "I cannot tell the weather without a city."
    assert isinstance(result.new_messages[0], UserMessage)


@pytest.mark.parametrize("parameters", [[1, 2], "abc", 5])
def test_external_parameters_that_are_not_a_schema_object(parameters: object) -> None:
    with pytest.raises(ToolDefinitionError, match="parameters must be a JSON schema object"):
        Tool.external("t", parameters=parameters)  # type: ignore[arg-type]
