"""Pipelines, fan-out, critic loops and mini-chains (shoal.orchestration), on scripted models."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from shoal import Agent
from shoal.exceptions import ModelBehaviorError, ModelError, UserError
from shoal.messages import AssistantMessage, Message, ToolCall, UserMessage
from shoal.models import FunctionModel, ModelRequestParameters
from shoal.orchestration import (
    Chain,
    CriticLoop,
    CriticVerdict,
    FanOut,
    FlowResult,
    Pipeline,
    Step,
)
from shoal.threads import InMemoryThreadStore
from shoal.tools import Tool


def scripted(*answers: str) -> FunctionModel:
    """A model answering ``answers`` in order (the last one again and again)."""
    queue = list(answers)

    def answer(messages: list[Message], params: ModelRequestParameters) -> str:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return FunctionModel(answer)


def echo(prefix: str) -> FunctionModel:
    """A model answering ``prefix`` + the last user message."""

    def answer(messages: list[Message], params: ModelRequestParameters) -> str:
        last = [m for m in messages if isinstance(m, UserMessage)][-1]
        return f"{prefix}{last.content}"

    return FunctionModel(answer)


def asked(model: FunctionModel) -> list[str]:
    """The last user message of each request the model got."""
    return [
        [m for m in r.messages if isinstance(m, UserMessage)][-1].content for r in model.requests
    ]


def events(result: FlowResult, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in result.trace if e.kind == kind]


# -- Pipeline -------------------------------------------------------------------------------


async def test_pipeline_passes_each_answer_to_the_next_step() -> None:
    planner, writer = echo("plan: "), echo("text: ")

    def shout(text: str) -> str:
        return text.upper()

    pipeline = Pipeline("desk", [Agent("planner", planner), shout, Agent("writer", writer)])

    result = await pipeline.run("cats")

    assert asked(planner) == ["cats"]
    assert asked(writer) == ["PLAN: CATS"]
    assert result.text == "text: PLAN: CATS"
    assert result.agent == "writer"
    assert result.path == ["planner", "writer"]
    assert result.outputs == {
        "planner": "plan: cats",
        "shout": "PLAN: CATS",
        "writer": "text: PLAN: CATS",
    }
    steps = events(result, "pipeline.step")
    assert [(s["index"], s["agent"]) for s in steps] == [
        (0, "planner"),
        (1, "shout"),
        (2, "writer"),
    ]
    (system,) = [e for e in result.trace if e.kind == "pipeline.step" and e.data["index"] == 0]
    runs = [e for e in result.trace if e.kind == "run" and e.agent == "planner"]
    assert runs[0].parent_id == system.span_id  # the agent run nests in its step's span


async def test_pipeline_async_code_step_and_thread() -> None:
    store = InMemoryThreadStore()
    thread = (await store.create_thread()).id

    async def count(text: str) -> str:
        await asyncio.sleep(0)
        return f"{len(text)} characters"

    pipeline = Pipeline("p", [Agent("a", echo(">")), count], store=store)

    result = await pipeline.run("hello", thread=thread)

    assert result.text == "6 characters"
    assert result.agent == "p"  # the last answer came from code
    assert result.thread_id == thread
    assert await store.get_messages(thread) == [
        UserMessage(content="hello"),
        AssistantMessage(content="6 characters"),
    ]
    stored = [e["kind"] for e in await store.get_trace(thread)]
    assert stored.count("pipeline.step") == 2
    assert stored.count("run") == 1


async def test_pipeline_stops_at_a_step_without_an_answer() -> None:
    def calls(messages: list[Message], params: ModelRequestParameters) -> ToolCall:
        return ToolCall(name="lookup", arguments={})

    lookup = Tool.external("lookup", description="Look up.")
    second = echo("never: ")
    pipeline = Pipeline(
        "p", [Agent("caller", FunctionModel(calls), tools=[lookup]), Agent("b", second)]
    )

    result = await pipeline.run("x")

    assert result.stop_reason == "tool_calls"
    assert result.pending_calls[0].name == "lookup"
    assert second.requests == []


def test_pipeline_rejects_what_is_not_a_step() -> None:
    with pytest.raises(UserError, match="at least one step"):
        Pipeline("p", [])
    with pytest.raises(UserError, match="not an agent"):
        Pipeline("p", [42])  # type: ignore[list-item]


# -- FanOut ---------------------------------------------------------------------------------


def counting(active: list[int], peak: list[int], answer: str) -> FunctionModel:
    """A model that counts how many requests are in progress at once."""

    async def respond(messages: list[Message], params: ModelRequestParameters) -> str:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.02)
        active[0] -= 1
        return answer

    return FunctionModel(respond)


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_fan_out_respects_its_concurrency_limit(limit: int) -> None:
    active, peak = [0], [0]
    branches = [Agent(f"b{i}", counting(active, peak, f"answer {i}")) for i in range(5)]
    fan = FanOut("fan", branches, limit=limit)

    result = await fan.run("question")

    assert peak[0] == limit
    assert result.text == "\n\n".join(f"b{i}: answer {i}" for i in range(5))
    assert result.outputs == {f"b{i}": f"answer {i}" for i in range(5)}
    (span,) = events(result, "fanout")
    assert span["limit"] == limit
    assert span["branches"] == [f"b{i}" for i in range(5)]


async def test_fan_out_results_keep_branch_order() -> None:
    async def slow(messages: list[Message], params: ModelRequestParameters) -> str:
        await asyncio.sleep(0.03)
        return "slow"

    fan = FanOut(
        "fan",
        [Agent("first", FunctionModel(slow)), Agent("second", scripted("fast"))],
        limit=2,
        combine=lambda results: " | ".join(r.text for r in results),
    )

    result = await fan.run("go")

    assert result.text == "slow | fast"
    assert result.agent == "fan"


async def test_fan_in_by_an_agent_gets_the_labelled_answers() -> None:
    summary = echo("summary of: ")
    fan = FanOut(
        "fan",
        [Agent("pro", scripted("yes")), Agent("con", scripted("no"))],
        combine=Agent("moderator", summary),
    )

    result = await fan.run("Should we?")

    (message,) = asked(summary)
    assert message == "Task:\nShould we?\n\nAnswers:\n\npro: yes\n\ncon: no"
    assert result.agent == "moderator"
    assert result.path == ["pro", "con", "moderator"]


async def test_fan_out_keeps_going_when_one_branch_fails() -> None:
    def broken(messages: list[Message], params: ModelRequestParameters) -> str:
        raise ModelError("engine crashed")

    fan = FanOut("fan", [Agent("ok", scripted("fine")), Agent("bad", FunctionModel(broken))])

    result = await fan.run("go")

    assert result.stop_reason == "final"
    assert result.text == "ok: fine\n\nbad: [branch bad failed: ModelError: engine crashed]"
    assert result.outputs == {"ok": "fine", "bad": None}
    assert any("bad failed" in e["text"] for e in events(result, "note"))


async def test_fan_out_fails_when_every_branch_fails() -> None:
    def broken(messages: list[Message], params: ModelRequestParameters) -> str:
        raise ModelError("down")

    fan = FanOut("fan", [Agent("a", FunctionModel(broken)), Agent("b", FunctionModel(broken))])

    with pytest.raises(ModelError, match="down"):
        await fan.run("go")


def test_fan_out_configuration_errors() -> None:
    a = Agent("a", scripted("x"))
    with pytest.raises(UserError, match="limit"):
        FanOut("f", [a], limit=0)
    with pytest.raises(UserError, match="two branches"):
        FanOut("f", [a, Agent("a", scripted("y"))])
    with pytest.raises(UserError, match="at least one branch"):
        FanOut("f", [])


# -- CriticLoop ------------------------------------------------------------------------------


def verdicts(*answers: dict[str, str] | str) -> FunctionModel:
    return scripted(*(a if isinstance(a, str) else json.dumps(a) for a in answers))


async def test_critic_that_never_accepts_stops_at_max_rounds() -> None:
    worker = scripted("draft 1", "draft 2", "draft 3")
    critic_model = verdicts({"verdict": "revise", "feedback": "more detail"})
    loop = CriticLoop(
        "review",
        Agent("writer", worker),
        Agent("critic", critic_model, output_type=CriticVerdict),
        max_rounds=2,
    )

    result = await loop.run("Write about owls")

    assert len(worker.requests) == 2
    assert len(critic_model.requests) == 2
    assert result.stop_reason == "final"
    assert result.text == "draft 2"
    assert result.agent == "writer"
    assert any("did not accept" in note for note in result.notes)
    rounds = events(result, "critic.round")
    assert [(r["round"], r["verdict"]) for r in rounds] == [(1, "revise"), (2, "revise")]
    assert rounds[0]["feedback"] == "more detail"
    assert result.path == ["writer", "critic", "writer", "critic"]


async def test_revision_sees_the_task_the_answer_and_the_feedback() -> None:
    worker = scripted("owls hoot", "owls hoot at night")
    critic_model = verdicts({"verdict": "revise", "feedback": "say when"}, {"verdict": "accept"})
    loop = CriticLoop(
        "review",
        Agent("writer", worker),
        Agent("critic", critic_model, output_type=CriticVerdict),
        max_rounds=3,
    )

    result = await loop.run("Write about owls")

    first, second = asked(worker)
    assert first == "Write about owls"
    assert "Write about owls" in second
    assert "owls hoot" in second
    assert "say when" in second
    assert "Answer:\nowls hoot at night" in asked(critic_model)[1]
    assert result.text == "owls hoot at night"
    assert result.notes == []
    assert result.outputs == {"rounds": 2}


async def test_critic_verdict_is_typed_and_validated() -> None:
    with pytest.raises(ValidationError):
        CriticVerdict(verdict="maybe")  # type: ignore[arg-type]
    critic_model = verdicts({"verdict": "maybe"}, {"verdict": "accept", "feedback": ""})
    loop = CriticLoop("review", Agent("writer", scripted("ok")), critic_model)

    result = await loop.run("task")

    assert result.text == "ok"
    critic_run = result.runs[1]
    assert critic_run.agent_name == "review-critic"
    assert critic_run.retries == 1  # the invalid verdict went back to the critic
    schema = critic_model.requests[0].params.output_schema
    assert schema is not None
    assert schema["properties"]["verdict"]["enum"] == ["accept", "revise"]


def test_critic_loop_configuration_errors() -> None:
    worker = Agent("w", scripted("x"))
    with pytest.raises(UserError, match="1 to 3"):
        CriticLoop("c", worker, scripted("x"), max_rounds=4)
    with pytest.raises(UserError, match="1 to 3"):
        CriticLoop("c", worker, scripted("x"), max_rounds=0)
    with pytest.raises(UserError, match="output_type=CriticVerdict"):
        CriticLoop("c", worker, Agent("critic", scripted("x")))


# -- Chain -----------------------------------------------------------------------------------


class City(BaseModel):
    city: str
    country: str = ""


async def test_chain_fills_prompts_from_earlier_typed_steps() -> None:
    extract_model = scripted('{"city": "Paris", "country": "France"}')
    answer_model = echo("")

    def code(values: dict[str, Any]) -> dict[str, Any]:
        return {"population": 2100000, "city": values["extract"].city}

    chain = Chain(
        "facts",
        [
            Step(
                "extract",
                extract_model,
                prompt="Which city is this about? {input}",
                output_type=City,
            ),
            Step("lookup", code, output_schema={"type": "object", "required": ["population"]}),
            Step(
                "answer",
                Agent("answer", answer_model),
                prompt="{extract.city} ({extract.country}) has {lookup.population:,} people",
            ),
        ],
    )

    result = await chain.run("I flew to Paris last week")

    assert asked(extract_model) == ["Which city is this about? I flew to Paris last week"]
    assert extract_model.requests[0].params.output_schema == City.model_json_schema()
    assert asked(answer_model) == ["Paris (France) has 2,100,000 people"]
    assert result.text == "Paris (France) has 2,100,000 people"
    assert result.agent == "answer"
    assert result.outputs["extract"] == City(city="Paris", country="France")
    assert result.outputs["lookup"] == {"population": 2100000, "city": "Paris"}
    steps = [e["step"] for e in events(result, "chain.step")]
    assert steps == ["extract", "lookup", "answer"]


async def test_chain_step_object_outputs_format_as_json() -> None:
    second = echo("")
    chain = Chain(
        "c",
        [
            Step("pick", lambda values: {"a": 1}),
            Step("show", Agent("show", second), prompt="got {pick} and {pick[a]}"),
        ],
    )

    await chain.run("x")

    assert asked(second) == ['got {"a": 1} and 1']


async def test_chain_function_step_is_validated_and_retried() -> None:
    calls: list[int] = []

    def flaky(values: dict[str, Any]) -> Any:
        calls.append(1)
        return {"city": 3} if len(calls) < 2 else {"city": "Oslo"}

    chain = Chain("c", [Step("where", flaky, output_type=City, retries=1)])

    result = await chain.run("x")

    assert result.output == City(city="Oslo")
    assert len(calls) == 2
    (retry,) = events(result, "retry")
    assert retry["why"].startswith("step where:")


async def test_chain_function_step_that_never_validates_names_the_step() -> None:
    chain = Chain("c", [Step("where", lambda values: {"town": "x"}, output_type=City, retries=2)])

    with pytest.raises(UserError, match=r"chain 'c': step 'where' failed after 3 attempt") as info:
        await chain.run("x")
    assert "city" in str(info.value)


async def test_chain_agent_step_that_never_validates_names_the_step() -> None:
    model = scripted("not json")
    chain = Chain(
        "c", [Step("extract", Agent("e", model, output_type=City, retries=0), output_type=City)]
    )

    with pytest.raises(ModelBehaviorError, match=r"chain 'c': step 'extract' failed after 2"):
        await chain.run("x")
    assert len(model.requests) == 2  # one try, one retry of the step


async def test_chain_function_step_error_is_re_raised_with_the_step() -> None:
    def boom(values: dict[str, Any]) -> str:
        raise KeyError("missing")

    chain = Chain("c", [Step("look", boom, retries=0)])

    with pytest.raises(KeyError) as info:
        await chain.run("x")
    assert "in step 'look' of chain 'c'" in (info.value.__notes__ or [""])[0]


def test_chain_configuration_errors() -> None:
    with pytest.raises(UserError, match=r"\{later\}"):
        Chain("c", [Step("a", lambda v: 1, prompt="{later}"), Step("later", lambda v: 2)])
    with pytest.raises(UserError, match="two steps"):
        Chain("c", [Step("a", lambda v: 1), Step("a", lambda v: 2)])
    with pytest.raises(UserError, match="positional"):
        Step("a", lambda v: 1, prompt="{}")
    with pytest.raises(UserError, match="named 'input'"):
        Step("input", lambda v: 1)
    with pytest.raises(UserError, match="output_type"):
        Step("a", Agent("plain", scripted("x")), output_type=City)
    with pytest.raises(UserError, match="not both"):
        Step("a", scripted("x"), output_type=City, output_schema={"type": "object"})


async def test_chain_prompt_reaching_into_a_missing_field_is_a_user_error() -> None:
    chain = Chain(
        "c",
        [
            Step("pick", lambda values: {"a": 1}),
            Step("use", Agent("u", scripted("x")), prompt="{pick.b}"),
        ],
    )

    with pytest.raises(UserError, match="step 'use': cannot fill in its prompt"):
        await chain.run("x")
