"""Deterministic routes: a rule decides the call before the model, or after it failed."""

from __future__ import annotations

import re

import pytest

from shoal import Agent, FunctionModel, Route, tool
from shoal.exceptions import ModelBehaviorError, UserError
from shoal.messages import AssistantMessage, Message
from shoal.models import ModelRequestParameters


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: digits and + - * / only.
    """
    if not re.fullmatch(r"[\d+\-*/ ().]+", expression):
        raise ValueError("not arithmetic")
    return str(eval(expression))


CALC = Route(r"^calc:\s*(?P<expression>.+)$", "calculator")


def test_a_route_match_gives_the_call_from_named_groups() -> None:
    call = CALC.match("calc: 2 + 3")
    assert call is not None
    assert call.name == "calculator"
    assert call.arguments == {"expression": "2 + 3"}
    assert CALC.match("what is 2 + 3?") is None


def test_a_route_can_build_its_arguments() -> None:
    route = Route(
        r"(\d+) plus (\d+)", "calculator", arguments=lambda m: {"expression": f"{m[1]}+{m[2]}"}
    )
    call = route.match("What is 2 plus 3?")
    assert call is not None
    assert call.arguments == {"expression": "2+3"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pattern": "(", "tool": "calculator"}, "bad pattern"),
        ({"pattern": "x", "tool": "calculator", "when": "later"}, "when must be"),
    ],
)
def test_bad_routes_are_user_errors(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        Route(**kwargs)  # type: ignore[arg-type]


def test_a_route_to_an_undeclared_tool_is_a_user_error() -> None:
    with pytest.raises(UserError, match="not a declared tool"):
        Agent("a", FunctionModel(lambda m, p: "x"), routes=[Route("x", "missing")])


async def test_a_first_route_calls_the_tool_without_asking_the_model_to_choose() -> None:
    seen: list[ModelRequestParameters] = []

    def respond(messages: list[Message], params: ModelRequestParameters) -> str:
        seen.append(params)
        return "The answer is 5."

    agent = Agent("calc", FunctionModel(respond), tools=[calculator], routes=[CALC])
    result = await agent.run("calc: 2 + 3")

    assert [r.result for r in result.tool_calls] == ["5"]
    assert result.output == "The answer is 5."
    assert len(seen) == 1  # the model only answered from the result
    assert result.usage.requests == 1
    assert isinstance(result.new_messages[1], AssistantMessage)
    assert result.new_messages[1].tool_calls[0].arguments == {"expression": "2 + 3"}
    assert result.notes[0].startswith("route ")


async def test_a_fallback_route_saves_a_run_the_model_cannot_finish() -> None:
    route = Route(r"(?P<expression>\d+\s*[+*/-]\s*\d+)", "calculator", when="fallback")
    answers = iter(["<tool_call>{broken", "<tool_call>{broken", "<tool_call>{broken", "5"])
    agent = Agent(
        "calc",
        FunctionModel(lambda m, p: next(answers)),
        tools=[calculator],
        routes=[route],
        retries=2,
    )

    result = await agent.run("what is 2 + 3")

    assert [r.call.arguments for r in result.tool_calls] == [{"expression": "2 + 3"}]
    assert result.output == "5"
    assert any(note.startswith("fallback route") for note in result.notes)


async def test_without_a_matching_fallback_the_model_error_stands() -> None:
    route = Route(r"^calc:", "calculator", when="fallback")
    agent = Agent(
        "calc",
        FunctionModel(lambda m, p: "<tool_call>{broken"),
        tools=[calculator],
        routes=[route],
        retries=1,
    )
    with pytest.raises(ModelBehaviorError):
        await agent.run("what is 2 + 3")


async def test_a_fallback_route_is_not_used_while_the_model_succeeds() -> None:
    route = Route(r"(?P<expression>.+)", "calculator", when="fallback")
    agent = Agent("calc", FunctionModel(lambda m, p: "Hello."), tools=[calculator], routes=[route])

    result = await agent.run("2 + 3")

    assert result.tool_calls == []
    assert result.output == "Hello."
