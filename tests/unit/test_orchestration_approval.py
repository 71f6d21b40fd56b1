"""Flows that pause for a person's approval and resume (shoal.orchestration), scripted models.

A member's run that stops with ``stop_reason == "approval"`` stops the flow too, with the
waiting calls and a thread that holds where the flow was; ``resume`` continues from there.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shoal import Agent, tool
from shoal.agent import pending_approval
from shoal.exceptions import ApprovalError
from shoal.messages import Message, ToolCall, ToolMessage, UserMessage
from shoal.models import FunctionModel, ModelRequestParameters
from shoal.orchestration import (
    FLOW_KEY,
    Chain,
    CriticLoop,
    CriticVerdict,
    FanOut,
    FlowResult,
    Pipeline,
    Router,
    Step,
    Team,
)
from shoal.threads import InMemoryThreadStore
from shoal.tools import Tool

Answer = str | ToolCall


def scripted(*answers: Answer) -> FunctionModel:
    queue = list(answers)

    def answer(messages: list[Message], params: ModelRequestParameters) -> Answer:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return FunctionModel(answer)


def refund_tool() -> Tool:
    @tool(requires_approval=True)
    def refund(order: str) -> str:
        """Refund an order.

        Args:
            order: The order id.
        """
        return f"refunded {order}"

    return refund


def refunder(
    final: str = "Refund done.", name: str = "refunds"
) -> tuple[Agent[Any], FunctionModel]:
    model = scripted(ToolCall(name="refund", arguments={"order": "A1"}), final)
    return Agent("refunds", model, tools=[refund_tool()]), model


def kinds(result: FlowResult, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in result.trace if e.kind == kind]


# -- roles ------------------------------------------------------------------------------------


def run_roles(result: FlowResult) -> list[str | None]:
    return [e.data["role"] for e in result.trace if e.kind == "run"]


async def test_a_resumed_flow_goes_on_in_the_role_it_started_with() -> None:
    agent, _ = refunder()
    after = Agent("after", scripted("Noted."))
    flow = Pipeline("desk", [agent, after])
    paused = await flow.run("refund A1", role="clerk")
    assert paused.stop_reason == "approval"
    assert paused.thread_id is not None

    done = await flow.resume(paused.thread_id)

    assert done.stop_reason == "final"
    # the paused member and the step after it both run as the clerk
    assert run_roles(done) == ["clerk", "clerk"]


async def test_an_explicit_role_on_resume_replaces_the_stored_one() -> None:
    agent, _ = refunder()
    flow = Pipeline("desk", [agent])
    paused = await flow.run("refund A1", role="clerk")
    assert paused.thread_id is not None

    done = await flow.resume(paused.thread_id, role="auditor")

    assert run_roles(done) == ["auditor"]


# -- Team: handoffs that need approval ---------------------------------------------------------


def support_team(triage_model: FunctionModel) -> tuple[Team, FunctionModel, FunctionModel]:
    billing_model = scripted("Billing answer.")
    refunds_model = scripted("Refunds answer.")
    team = Team(
        "support",
        [
            Agent("triage", triage_model),
            Agent("billing", billing_model),
            Agent("refunds", refunds_model),
        ],
        entry="triage",
        handoffs={"triage": ["billing", "refunds"]},
        approval=["refunds"],
    )
    return team, billing_model, refunds_model


async def test_handoff_needing_approval_pauses_and_resumes_to_the_target() -> None:
    call = ToolCall(name="transfer_with_approval", arguments={"agent": "refunds"})
    team, _, refunds_model = support_team(scripted(call))
    tools = team.agents["triage"].tools
    assert not tools["transfer_to"].requires_approval
    assert tools["transfer_to"].definition.parameters["properties"]["agent"]["enum"] == ["billing"]
    assert tools["transfer_with_approval"].requires_approval

    paused = await team.run("I want my money back")

    assert paused.stop_reason == "approval"
    assert paused.agent == "triage"
    assert [c.name for c in paused.pending_approvals] == ["transfer_with_approval"]
    assert paused.thread_id is not None
    record = await pending_approval(team.store, paused.thread_id)
    assert record is not None
    assert record["agent"] == "triage"
    assert refunds_model.requests == []

    done = await team.resume(paused.thread_id, approve=True)

    assert done.stop_reason == "final"
    assert done.agent == "refunds"
    assert done.text == "Refunds answer."
    assert done.path == ["triage", "refunds"]
    assert kinds(done, "handoff") == [{"source": "triage", "target": "refunds", "reason": ""}]
    assert await pending_approval(team.store, paused.thread_id) is None


async def test_rejected_handoff_goes_back_to_the_agent() -> None:
    call = ToolCall(name="transfer_with_approval", arguments={"agent": "refunds"})
    triage_model = scripted(call, "I cannot transfer you; sorry.")
    team, _, refunds_model = support_team(triage_model)
    paused = await team.run("money back")
    assert paused.thread_id is not None

    done = await team.resume(paused.thread_id, approve=False, reason="not eligible")

    assert done.stop_reason == "final"
    assert done.agent == "triage"
    assert refunds_model.requests == []
    rejected = [m for m in triage_model.requests[-1].messages if isinstance(m, ToolMessage)]
    assert "rejected by a person: not eligible" in rejected[-1].content


async def test_resume_with_nothing_waiting_is_an_approval_error() -> None:
    team, _, _ = support_team(scripted("hi"))
    result = await team.run("hello")
    assert result.thread_id is not None

    with pytest.raises(ApprovalError):
        await team.resume(result.thread_id)


async def test_team_member_tool_approval_pauses_the_team() -> None:
    agent, model = refunder()
    team = Team("t", [agent], entry="refunds")

    paused = await team.run("refund A1")
    assert paused.stop_reason == "approval"
    assert paused.thread_id is not None
    done = await team.resume(paused.thread_id)

    assert done.text == "Refund done."
    results = [m for m in model.requests[-1].messages if isinstance(m, ToolMessage)]
    assert results[-1].content == "refunded A1"


# -- Router ------------------------------------------------------------------------------------


async def test_router_pauses_and_resumes_the_member_with_its_route() -> None:
    agent, _ = refunder()
    router = Router(
        "desk", {"refunds": agent, "other": Agent("other", scripted("x"))}, default="refunds"
    )

    paused = await router.run("refund A1")

    assert paused.stop_reason == "approval"
    assert paused.thread_id is not None
    thread = await router.store.get_thread(paused.thread_id)
    assert thread.metadata[FLOW_KEY]["desk"]["member"] == "refunds"

    done = await router.resume(paused.thread_id)

    assert done.stop_reason == "final"
    assert done.text == "Refund done."
    assert done.route is not None
    assert done.route.target == "refunds"
    thread = await router.store.get_thread(paused.thread_id)
    assert FLOW_KEY not in thread.metadata


# -- Pipeline, fan-out, critic loop, chain -----------------------------------------------------


async def test_pipeline_pauses_at_a_step_and_goes_on_after_approval() -> None:
    agent, _ = refunder("Refunded A1.")
    writer = scripted("Dear customer, done.")
    store = InMemoryThreadStore()
    pipeline = Pipeline("p", [agent, Agent("writer", writer)], store=store)

    paused = await pipeline.run("refund order A1")

    assert paused.stop_reason == "approval"
    assert paused.thread_id is not None
    assert [c.name for c in paused.pending_approvals] == ["refund"]
    assert writer.requests == []

    done = await pipeline.resume(paused.thread_id, approve={paused.pending_approvals[0].id: True})

    assert done.stop_reason == "final"
    assert done.text == "Dear customer, done."
    assert [m.content for m in writer.requests[0].messages if isinstance(m, UserMessage)] == [
        "Refunded A1."
    ]
    messages = await store.get_messages(paused.thread_id)
    assert [m.content for m in messages] == ["refund order A1", "Dear customer, done."]
    stored = [e["kind"] for e in await store.get_trace(paused.thread_id)]
    assert stored.count("system") == 2  # the run and the resume


async def test_resume_naming_an_unknown_call_changes_nothing() -> None:
    agent, _ = refunder()
    pipeline = Pipeline("p", [agent])
    paused = await pipeline.run("refund")
    assert paused.thread_id is not None

    with pytest.raises(ApprovalError, match="no call 'nope'"):
        await pipeline.resume(paused.thread_id, approve={"nope": True})

    done = await pipeline.resume(paused.thread_id, approve=True)
    assert done.text == "Refund done."


async def test_fan_out_pauses_once_every_branch_is_done_and_resumes_the_paused_ones() -> None:
    agent, _ = refunder("Refund done.")
    fan = FanOut("fan", [agent, Agent("notes", scripted("Noted."))])

    paused = await fan.run("refund A1")

    assert paused.stop_reason == "approval"
    assert [c.name for c in paused.pending_approvals] == ["refund"]
    assert paused.thread_id is not None

    done = await fan.resume(paused.thread_id, approve=True)

    assert done.stop_reason == "final"
    assert done.text == "refunds: Refund done.\n\nnotes: Noted."


async def test_chain_resumes_at_the_paused_step_with_earlier_outputs() -> None:
    agent, _ = refunder("Refund done.")
    last = scripted("ok")
    chain = Chain(
        "c",
        [
            Step("order", lambda values: {"id": "A1"}),
            Step("pay", agent, prompt="refund {order.id}"),
            Step("tell", Agent("tell", last), prompt="{order.id}: {pay}"),
        ],
    )

    paused = await chain.run("x")
    assert paused.stop_reason == "approval"
    assert paused.thread_id is not None
    done = await chain.resume(paused.thread_id)

    assert done.text == "ok"
    told = [m.content for m in last.requests[0].messages if isinstance(m, UserMessage)]
    assert told == ["A1: Refund done."]


async def test_critic_loop_resumes_a_paused_worker() -> None:
    agent, _ = refunder("Refund done.")
    critic = Agent("critic", scripted(json.dumps({"verdict": "accept"})), output_type=CriticVerdict)
    loop = CriticLoop("review", agent, critic)

    paused = await loop.run("refund A1")
    assert paused.stop_reason == "approval"
    assert paused.thread_id is not None
    done = await loop.resume(paused.thread_id)

    assert done.text == "Refund done."
    assert [e["verdict"] for e in kinds(done, "critic.round")] == ["accept"]


async def test_fan_out_approvals_by_call_id_reach_each_branch() -> None:
    first, first_model = refunder("First done.")
    second_model = scripted(ToolCall(name="refund", arguments={"order": "B2"}), "Second done.")
    second = Agent("refunds2", second_model, tools=[refund_tool()])
    fan = FanOut("fan", [first, second], limit=1)

    paused = await fan.run("refund")
    assert paused.thread_id is not None
    waiting = await fan.pending_approvals(paused.thread_id)
    assert sorted(c.arguments["order"] for c in waiting) == ["A1", "B2"]
    by_order = {c.arguments["order"]: c.id for c in waiting}

    done = await fan.resume(
        paused.thread_id, approve={by_order["A1"]: True, by_order["B2"]: False}, reason="no"
    )

    assert done.text == "refunds: First done.\n\nrefunds2: Second done."
    ran = [m for m in first_model.requests[-1].messages if isinstance(m, ToolMessage)]
    assert ran[-1].content == "refunded A1"
    refused = [m for m in second_model.requests[-1].messages if isinstance(m, ToolMessage)]
    assert "rejected by a person: no" in refused[-1].content


async def test_fan_out_resume_must_decide_every_waiting_call() -> None:
    first, _ = refunder()
    second = Agent(
        "refunds2",
        scripted(ToolCall(name="refund", arguments={"order": "B2"}), "ok"),
        tools=[refund_tool()],
    )
    fan = FanOut("fan", [first, second])
    paused = await fan.run("refund")
    assert paused.thread_id is not None
    one = paused.pending_approvals[0].id

    with pytest.raises(ApprovalError, match="not decided"):
        await fan.resume(paused.thread_id, approve={one: True})
    assert len(await fan.pending_approvals(paused.thread_id)) == 2  # nothing changed


async def test_pending_approvals_of_flows() -> None:
    agent, _ = refunder()
    team = Team("t", [agent], entry="refunds")
    router = Router("r", {"refunds": refunder()[0]}, default="refunds")

    by_team = await team.run("refund")
    by_router = await router.run("refund")
    assert by_team.thread_id is not None
    assert by_router.thread_id is not None

    assert [c.name for c in await team.pending_approvals(by_team.thread_id)] == ["refund"]
    assert [c.name for c in await router.pending_approvals(by_router.thread_id)] == ["refund"]


async def test_a_new_message_on_a_paused_flow_thread_is_refused() -> None:
    agent, _ = refunder()
    pipeline = Pipeline("p", [agent])
    paused = await pipeline.run("refund")
    assert paused.thread_id is not None

    with pytest.raises(ApprovalError, match="resume it first"):
        await pipeline.run("something else", thread=paused.thread_id)


def test_flows_resume_synchronously() -> None:
    agent, _ = refunder()
    pipeline = Pipeline("p", [agent])

    paused = pipeline.run_sync("refund")
    assert paused.thread_id is not None
    done = pipeline.resume_sync(paused.thread_id)

    assert done.text == "Refund done."


async def test_fan_in_agent_that_pauses_is_resumed_with_the_branch_answers() -> None:
    combiner, combiner_model = refunder("Combined and refunded.")
    fan = FanOut(
        "fan", [Agent("a", scripted("A says")), Agent("b", scripted("B says"))], combine=combiner
    )

    paused = await fan.run("go")
    assert paused.stop_reason == "approval"
    assert paused.agent == "refunds"
    assert paused.thread_id is not None
    done = await fan.resume(paused.thread_id)

    assert done.text == "Combined and refunded."
    assert done.outputs == {"a": "A says", "b": "B says"}
    first = [m.content for m in combiner_model.requests[0].messages if isinstance(m, UserMessage)]
    assert "a: A says\n\nb: B says" in first[0]
