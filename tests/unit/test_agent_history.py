"""Running an agent on a conversation the caller holds (``history=``, ``message=None``) and
answers that must satisfy a raw JSON schema (``output_schema=``): what the server needs to
speak the OpenAI chat API through the agent loop."""

from __future__ import annotations

from typing import Any

import pytest

from shoal import Agent, FunctionModel
from shoal.exceptions import ModelBehaviorError, UserError
from shoal.messages import AssistantMessage, Message, ToolCall, ToolMessage, UserMessage
from shoal.models import ModelProfile, ModelRequestParameters, ModelResponse, ResponseDone
from shoal.tools import Tool

WEATHER = Tool.external(
    "get_weather",
    description="Get the weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
CALLED: list[Message] = [
    UserMessage(content="What is the weather in Oslo?"),
    AssistantMessage(
        tool_calls=(ToolCall(id="c1", name="get_weather", arguments={"city": "Oslo"}),)
    ),
    ToolMessage(tool_call_id="c1", name="get_weather", content="rain, 8 C"),
]


class Recorder:
    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[list[Message], ModelRequestParameters]] = []

    def __call__(self, messages: list[Message], params: ModelRequestParameters) -> Any:
        self.seen.append((messages, params))
        return self.answers.pop(0)


async def test_history_comes_before_the_new_message() -> None:
    model = Recorder("Hi Ada.")
    agent = Agent("a", FunctionModel(model), instructions="Be kind.")
    history: list[Message] = [UserMessage(content="I am Ada."), AssistantMessage(content="Hello!")]
    result = await agent.run("Who am I?", history=history)
    sent = model.seen[0][0]
    assert [m.role for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[-1].content == "Who am I?"
    assert result.output == "Hi Ada."
    assert [m.role for m in result.new_messages] == ["user", "assistant"]


async def test_continuing_after_client_tool_results() -> None:
    model = Recorder("Rainy, 8 C.")
    agent = Agent("a", FunctionModel(model), tools=[WEATHER])
    result = await agent.run(None, history=CALLED)
    sent, params = model.seen[0]
    assert sent == CALLED
    assert params.tool_choice == "auto"
    assert result.output == "Rainy, 8 C."
    # only what this run added; the caller's messages are not repeated
    assert result.new_messages == [AssistantMessage(content="Rainy, 8 C.")]


@pytest.mark.parametrize("selection", ["relevance", "gated"])
async def test_continuing_is_not_a_first_look_at_the_request(selection: str) -> None:
    """After results, code-side selection must not force the same call again."""
    profile = ModelProfile(family="tiny", tool_selection=selection, supports_grammar=True)  # type: ignore[arg-type]
    model = Recorder("Rainy.")
    agent = Agent("a", FunctionModel(model, profile=profile), tools=[WEATHER])
    await agent.run(None, history=CALLED)
    params = model.seen[0][1]
    assert not params.call_required


async def test_nothing_to_answer_is_a_user_error() -> None:
    agent = Agent("a", FunctionModel(Recorder()))
    with pytest.raises(UserError, match="nothing to answer"):
        await agent.run(None, history=[UserMessage(content="x"), AssistantMessage(content="y")])
    with pytest.raises(UserError, match="nothing to answer"):
        await agent.run(None)


async def test_thread_and_history_together_are_refused() -> None:
    agent = Agent("a", FunctionModel(Recorder()))
    thread = await agent.store.create_thread()
    with pytest.raises(UserError, match="not both"):
        await agent.run("hi", thread=thread, history=[UserMessage(content="x")])


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


async def test_output_schema_is_sent_and_enforced() -> None:
    model = Recorder('{"n": "two"}', "not json", '{"n": 2}')
    agent = Agent("a", FunctionModel(model), output_schema=SCHEMA, retries=2)
    result = await agent.run("how many?")
    assert result.output == {"n": 2}
    assert all(params.output_schema == SCHEMA for _, params in model.seen)
    assert result.retries == 2
    corrections = [m.content for m in result.new_messages if isinstance(m, UserMessage)][1:]
    assert "n: 'two' is not of type 'integer'" in corrections[0]
    assert "not JSON" in corrections[1]


async def test_output_schema_gives_up_after_retries() -> None:
    agent = Agent("a", FunctionModel(Recorder("{}", "{}")), output_schema=SCHEMA, retries=1)
    with pytest.raises(ModelBehaviorError, match="'n' is a required property"):
        await agent.run("how many?")


def test_output_schema_must_be_a_schema() -> None:
    with pytest.raises(UserError, match="invalid output schema"):
        Agent("a", "test", output_schema={"type": "wrong"})
    with pytest.raises(UserError, match="not both"):
        Agent("a", "test", output_type=int, output_schema=SCHEMA)  # type: ignore[call-overload]


async def test_truncated_answer_is_reported() -> None:
    def cut(messages: list[Message], params: ModelRequestParameters) -> Any:
        return "a very long"

    model = FunctionModel(cut)
    agent = Agent("a", model)
    result = await agent.run("write")
    assert result.truncated is False

    # a model whose response ends on the token limit
    class Cut(FunctionModel):
        async def request_stream(self, messages: Any, params: Any) -> Any:
            yield ResponseDone(ModelResponse(text="a very lo", finish_reason="length"))

    result = await Agent("a", Cut(cut)).run("write")
    assert result.truncated is True
    assert result.output == "a very lo"
