"""The run loop against scripted models, including malformed and hostile output."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

from shoal import Agent, FunctionModel, TestModel, tool
from shoal.agent import FinalEvent, TextEvent, ToolCallEvent, ToolResultEvent
from shoal.exceptions import ModelBehaviorError, ThreadNotFoundError, UserError
from shoal.messages import AssistantMessage, Message, ToolCall, ToolMessage, UserMessage
from shoal.models import ModelRequestParameters
from shoal.settings import ModelSettings
from shoal.threads import InMemoryThreadStore

ORDERS = {"1042": {"order_id": "1042", "status": "shipped", "eta": "2 days"}}


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by its id.

    Args:
        order_id: The order number.
    """
    return ORDERS.get(order_id, {"error": f"no order {order_id}"})


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def call(name: str, **arguments: Any) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def scripted(*outputs: str) -> FunctionModel:
    """A model that answers with ``outputs`` in order."""
    queue = list(outputs)

    def answer(messages: list[Message], params: ModelRequestParameters) -> str:
        return queue.pop(0)

    return FunctionModel(answer)


def tool_results(messages: list[Message]) -> list[ToolMessage]:
    return [m for m in messages if isinstance(m, ToolMessage)]


async def test_call_then_answer_from_result() -> None:
    model = scripted(call("lookup_order", order_id="1042"), "Order 1042 has shipped.")
    agent = Agent("support", model, instructions="Help.", tools=[lookup_order])
    result = await agent.run("Where is my order 1042?")
    assert result.output == "Order 1042 has shipped."
    assert result.stop_reason == "final"
    [record] = result.tool_calls
    assert record.call.name == "lookup_order"
    assert record.call.arguments == {"order_id": "1042"}
    assert record.result == ORDERS["1042"]
    assert record.outcome == "ok"
    assert result.usage.requests == 2
    assert result.usage.steps == 2
    # the second request carried the tool result back to the model
    second = model.requests[1].messages
    [shown] = tool_results(second)
    assert json.loads(shown.content) == ORDERS["1042"]
    assert shown.tool_call_id == record.call.id
    assert [m.role for m in result.new_messages] == ["user", "assistant", "tool", "assistant"]


async def test_system_prompt_and_tools_are_sent() -> None:
    model = scripted("Hello.")
    agent = Agent("a", model, instructions="Be brief.", tools=[lookup_order, add])
    await agent.run("hi")
    request = model.requests[0]
    assert request.messages[0].role == "system"
    assert request.messages[0].content == "Be brief."
    assert [t.name for t in request.params.tools] == ["lookup_order", "add"]
    assert request.params.tool_choice == "auto"


async def test_arguments_are_coerced_before_the_tool_runs() -> None:
    model = scripted(call("add", a="2", b=3), "5")
    result = await Agent("m", model, tools=[add]).run("2+3?")
    assert result.tool_calls[0].result == 5


async def test_unknown_tool_goes_back_to_the_model() -> None:
    model = scripted(call("delete_everything"), call("add", a=1, b=2), "3")
    result = await Agent("m", model, tools=[add]).run("1+2?")
    assert result.output == "3"
    bad, good = result.tool_calls
    assert bad.outcome == "invalid"
    assert "unknown tool 'delete_everything'" in (bad.error or "")
    assert "add" in (bad.error or "")  # lists what is available
    assert good.result == 3
    assert result.retries == 1
    # the model saw the error as the result of its call
    assert tool_results(model.requests[1].messages)[0].is_error


async def test_invalid_arguments_are_not_executed() -> None:
    executed: list[int] = []

    @tool
    def record(n: int) -> int:
        """Record a number."""
        executed.append(n)
        return n

    model = scripted(call("record", n="not a number"), call("record", n=4), "ok")
    result = await Agent("m", model, tools=[record]).run("record 4")
    assert executed == [4]
    assert result.tool_calls[0].outcome == "invalid"
    assert "n" in (result.tool_calls[0].error or "")


async def test_unparseable_call_is_sent_back_then_budget_runs_out() -> None:
    model = scripted(*["<tool_call>{not json"] * 5)
    agent = Agent("m", model, tools=[add], retries=2)
    with pytest.raises(ModelBehaviorError, match="unusable output") as info:
        await agent.run("1+2?")
    assert "3 attempts" in str(info.value)
    assert len(model.requests) == 3
    # each retry showed the model its own output and the reason
    feedback = model.requests[1].messages[-1]
    assert isinstance(feedback, UserMessage)
    assert feedback.content.startswith("Error: the tool call is not valid JSON")


async def test_tool_exception_is_reported_to_the_model() -> None:
    @tool
    def broken() -> str:
        """Always fails."""
        raise RuntimeError("database is down")

    model = scripted(call("broken"), "Sorry, the system is down.")
    result = await Agent("m", model, tools=[broken]).run("go")
    [record] = result.tool_calls
    assert record.outcome == "failed"
    assert "database is down" in (record.error or "")
    assert result.output == "Sorry, the system is down."


async def test_hanging_tool_times_out() -> None:
    @tool(timeout=0.1)
    async def slow() -> str:
        """Never finishes."""
        await asyncio.sleep(30)
        return "late"

    model = scripted(call("slow"), "It timed out.")
    result = await Agent("m", model, tools=[slow]).run("go")
    assert result.tool_calls[0].outcome == "timeout"


async def test_repeated_call_is_not_run_again_and_forces_an_answer() -> None:
    runs: list[str] = []

    @tool
    def ping(host: str) -> str:
        """Ping a host."""
        runs.append(host)
        return "pong"

    model = scripted(call("ping", host="a"), call("ping", host="a"), "It answers.")
    result = await Agent("m", model, tools=[ping]).run("ping a")
    assert runs == ["a"]
    assert [r.outcome for r in result.tool_calls] == ["ok", "repeated"]
    assert model.requests[2].params.tool_choice == "none"
    assert result.output == "It answers."
    assert any("repeated call" in note for note in result.notes)


async def test_last_step_must_answer_in_text() -> None:
    model = scripted(call("add", a=1, b=1), call("add", a=2, b=2), "done")
    agent = Agent("m", model, tools=[add], max_steps=3)
    result = await agent.run("go")
    assert [r.params.tool_choice for r in model.requests] == ["auto", "auto", "none"]
    assert result.stop_reason == "final"


async def test_max_steps_reached_without_answer() -> None:
    model = scripted(*["<tool_call>{bad"] * 2)
    result = await Agent("m", model, tools=[add], max_steps=2, retries=5).run("go")
    assert result.stop_reason == "max_steps"
    assert result.output == ""


async def test_structured_output_is_validated_and_retried() -> None:
    class Verdict(BaseModel):
        ok: bool
        reason: str

    model = scripted('{"ok": "maybe"}', '{"ok": true, "reason": "fine"}')
    agent = Agent("m", model, output_type=Verdict)
    result = await agent.run("judge")
    assert result.output == Verdict(ok=True, reason="fine")
    assert result.retries == 1
    schema = model.requests[0].params.output_schema
    assert schema is not None
    assert set(schema["properties"]) == {"ok", "reason"}


async def test_stream_events_in_order() -> None:
    model = scripted(call("lookup_order", order_id="1042"), "It has shipped.")
    agent = Agent("support", model, tools=[lookup_order])
    events = [e async for e in agent.run_stream("where is 1042")]
    kinds = [type(e).__name__ for e in events]
    assert kinds[:2] == ["ToolCallEvent", "ToolResultEvent"]
    assert isinstance(events[-1], FinalEvent)
    text = "".join(e.text for e in events if isinstance(e, TextEvent))
    assert text == "It has shipped."
    call_event = next(e for e in events if isinstance(e, ToolCallEvent))
    assert call_event.call.arguments == {"order_id": "1042"}
    result_event = next(e for e in events if isinstance(e, ToolResultEvent))
    assert result_event.record.result == ORDERS["1042"]


async def test_thread_carries_the_conversation() -> None:
    store = InMemoryThreadStore()
    model = scripted("Hi Ann.", "Your name is Ann.")
    agent = Agent("m", model, store=store)
    thread = await store.create_thread()
    first = await agent.run("I am Ann.", thread=thread)
    second = await agent.run("What is my name?", thread=thread.id)
    assert first.thread_id == second.thread_id == thread.id
    sent = model.requests[1].messages
    assert [m.content for m in sent if isinstance(m, UserMessage)] == [
        "I am Ann.",
        "What is my name?",
    ]
    stored = await store.get_messages(thread.id)
    assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]


async def test_failed_run_leaves_thread_untouched() -> None:
    store = InMemoryThreadStore()
    agent = Agent("m", scripted("<tool_call>{x"), tools=[add], retries=0, store=store)
    thread = await store.create_thread()
    with pytest.raises(ModelBehaviorError):
        await agent.run("go", thread=thread)
    assert await store.get_messages(thread.id) == []


async def test_unknown_thread_is_a_clear_error() -> None:
    agent = Agent("m", scripted("x"))
    with pytest.raises(ThreadNotFoundError):
        await agent.run("hi", thread="thread_missing")


def test_run_sync() -> None:
    result = Agent("m", TestModel(text="done"), tools=[add]).run_sync("go")
    assert result.output == "done"
    assert result.tool_calls[0].call.name == "add"


async def test_run_sync_inside_a_loop_is_a_clear_error() -> None:
    with pytest.raises(UserError, match=r"await agent\.run"):
        Agent("m", TestModel()).run_sync("go")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name!"}, "agent name"),
        ({"max_steps": 0}, "max_steps"),
        ({"retries": -1}, "retries"),
        ({"tool_choice": "nope"}, "tool_choice 'nope'"),
        ({"tools": [add, add]}, "two tools"),
    ],
)
def test_bad_agent_configuration(kwargs: dict[str, Any], message: str) -> None:
    params: dict[str, Any] = {"name": "ok", "model": TestModel()} | kwargs
    with pytest.raises(UserError, match=message):
        Agent(**params)


async def test_named_tool_choice_applies_to_first_step_only() -> None:
    model = scripted(call("add", a=1, b=2), "3")
    result = await Agent("m", model, tools=[add, lookup_order], tool_choice="add").run("go")
    assert [r.params.tool_choice for r in model.requests] == ["add", "auto"]
    assert model.requests[0].params.offered_tools()[0].name == "add"
    assert result.output == "3"


async def test_settings_reach_the_model() -> None:
    model = scripted("x")
    agent = Agent("m", model, settings=ModelSettings(temperature=0.0, max_tokens=64))
    await agent.run("go", settings=ModelSettings(seed=7))
    settings = model.requests[0].params.settings
    assert (settings.temperature, settings.max_tokens, settings.seed) == (0.0, 64, 7)


async def test_long_tool_result_is_clipped_for_the_model() -> None:
    @tool
    def dump() -> str:
        """Return a lot."""
        return "x" * 10_000

    model = scripted(call("dump"), "ok")
    result = await Agent("m", model, tools=[dump]).run("go")
    shown = tool_results(model.requests[1].messages)[0].content
    assert len(shown) < 4100
    assert shown.endswith("more characters cut]")
    assert result.tool_calls[0].result == "x" * 10_000  # the caller still gets it all


async def test_assistant_tool_calls_recorded_in_messages() -> None:
    model = scripted(call("add", a=1, b=2), "3")
    result = await Agent("m", model, tools=[add]).run("go")
    assistant = result.new_messages[1]
    assert isinstance(assistant, AssistantMessage)
    assert assistant.tool_calls == (
        ToolCall(id=assistant.tool_calls[0].id, name="add", arguments={"a": 1, "b": 2}),
    )
