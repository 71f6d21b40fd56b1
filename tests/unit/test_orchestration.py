"""Routers, teams with handoffs and agents as tools (shoal.orchestration), on scripted models.

Every model here is a FunctionModel: the tests assert what each agent was asked (its messages,
the tools and schemas offered) and what the flow recorded (path, thread, trace).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from shoal import Agent
from shoal.exceptions import ModelBehaviorError, ModelError, UserError
from shoal.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from shoal.models import FunctionModel, ModelRequestParameters
from shoal.orchestration import (
    TEAM_KEY,
    FlowResult,
    Router,
    RouteRule,
    Team,
    agent_tool,
    as_flow,
)
from shoal.threads import InMemoryThreadStore

Answer = str | ToolCall


def scripted(
    *answers: Answer | Callable[[list[Message], ModelRequestParameters], Answer],
) -> FunctionModel:
    """A model answering ``answers`` in order (the last one again and again)."""
    queue = list(answers)

    def answer(messages: list[Message], params: ModelRequestParameters) -> Answer:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        return item(messages, params) if callable(item) else item

    return FunctionModel(answer)


def transfer(target: str, reason: str = "") -> ToolCall:
    arguments = {"agent": target, "reason": reason} if reason else {"agent": target}
    return ToolCall(name="transfer_to", arguments=arguments)


def kinds(result: FlowResult, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in result.trace if e.kind == kind]


def texts(messages: Sequence[Message]) -> list[str]:
    return [
        m.content for m in messages if isinstance(m, UserMessage | AssistantMessage) and m.content
    ]


# -- Router ---------------------------------------------------------------------------------


def desk(
    classifier: FunctionModel | None = None, *, default: str | None = "tech", **kwargs: Any
) -> tuple[Router, FunctionModel, FunctionModel]:
    billing_model = scripted("Billing here.")
    tech_model = scripted("Tech here.")
    router = Router(
        "desk",
        {
            "billing": Agent("billing", billing_model, instructions="Invoices and refunds."),
            "tech": Agent("tech", tech_model, instructions="Crashes and errors. More text."),
        },
        rules=[RouteRule("billing", pattern=r"\binvoice\b", reason="mentions an invoice")],
        classifier=classifier,
        default=default,
        **kwargs,
    )
    return router, billing_model, tech_model


async def test_router_rule_decides_without_the_classifier() -> None:
    classifier = scripted('"tech"')
    router, _billing_model, tech_model = desk(classifier)

    result = await router.run("My INVOICE is wrong")

    assert result.route is not None
    assert (result.route.target, result.route.by) == ("billing", "rule")
    assert result.route.reason == "mentions an invoice"
    assert result.path == ["billing"]
    assert result.text == "Billing here."
    assert classifier.requests == []
    assert tech_model.requests == []
    assert kinds(result, "agent.route") == [
        {"router": "desk", "target": "billing", "by": "rule", "reason": "mentions an invoice"}
    ]


async def test_router_classifier_answers_under_an_enum_schema() -> None:
    classifier = scripted('"billing"')
    router, _billing_model, _tech_model = desk(classifier)

    result = await router.run("I was charged twice")

    assert result.route is not None
    assert (result.route.target, result.route.by) == ("billing", "classifier")
    assert result.path == ["billing"]
    (request,) = classifier.requests
    assert request.params.output_schema == {"enum": ["billing", "tech"]}
    system = request.messages[0]
    assert isinstance(system, SystemMessage)
    assert "- billing: Invoices and refunds." in system.content
    assert "- tech: Crashes and errors." in system.content
    assert request.messages[1] == UserMessage(content="I was charged twice")
    assert result.usage.requests == 2  # the classifier's request and the agent's
    route_events = kinds(result, "agent.route")
    assert route_events[0]["by"] == "classifier"
    assert route_events[0]["reason"] == "classified as billing"


async def test_router_unknown_label_goes_to_the_default_with_the_reason() -> None:
    router, _, tech_model = desk(scripted("weather"))

    choice = await router.choose("what is the weather")

    assert choice.target == "tech"
    assert choice.by == "default"
    assert "weather" in choice.reason
    assert tech_model.requests == []  # choose() runs nobody


async def test_router_failing_classifier_goes_to_the_default() -> None:
    def broken(messages: list[Message], params: ModelRequestParameters) -> str:
        raise ModelError("engine crashed")

    router, _, _ = desk(FunctionModel(broken))

    choice = await router.choose("hello")

    assert (choice.target, choice.by) == ("tech", "default")
    assert "engine crashed" in choice.reason


async def test_router_without_classifier_uses_the_default() -> None:
    router, billing_model, _tech_model = desk(None)

    result = await router.run("my screen is blank")

    assert result.route is not None
    assert (result.route.target, result.route.by) == ("tech", "default")
    assert result.text == "Tech here."
    assert billing_model.requests == []


async def test_router_unknown_label_without_default_is_an_error() -> None:
    router, _, _ = desk(scripted('"sales"'), default=None)

    with pytest.raises(ModelBehaviorError, match="no default"):
        await router.choose("buy something")


def test_router_configuration_errors() -> None:
    agent = Agent("a", scripted("x"))
    with pytest.raises(UserError, match="classifier or a default"):
        Router("r", {"a": agent})
    with pytest.raises(UserError, match="default 'b'"):
        Router("r", {"a": agent}, default="b")
    with pytest.raises(UserError, match="unknown route 'b'"):
        Router("r", {"a": agent}, default="a", rules=[RouteRule("b", pattern="x")])
    with pytest.raises(UserError, match="bad pattern"):
        Router("r", {"a": agent}, default="a", rules=[RouteRule("a", pattern="(")])
    with pytest.raises(UserError, match="at least one route"):
        Router("r", {}, default="a")


async def test_router_runs_the_member_on_the_thread_and_stores_the_trace() -> None:
    store = InMemoryThreadStore()
    router, _, tech_model = desk(None, store=store)
    thread = (await store.create_thread()).id
    await store.append_messages(
        thread, [UserMessage(content="hi"), AssistantMessage(content="Hello!")]
    )

    result = await router.run("my app crashes", thread=thread)

    assert result.thread_id == thread
    assert texts(tech_model.requests[0].messages) == ["hi", "Hello!", "my app crashes"]
    assert texts(await store.get_messages(thread)) == [
        "hi",
        "Hello!",
        "my app crashes",
        "Tech here.",
    ]
    stored = [e["kind"] for e in await store.get_trace(thread)]
    assert stored.count("agent.route") == 1
    assert stored.count("run") == 1  # stored once (by the agent), not again by the router
    assert "system" in stored


async def test_router_copies_agents_onto_its_store() -> None:
    own = InMemoryThreadStore()
    agent = Agent("solo", scripted("ok"), store=own)
    shared = InMemoryThreadStore()
    router = Router("r", {"solo": agent}, default="solo", store=shared)
    thread = (await shared.create_thread()).id

    result = await router.run("hello", thread=thread)

    assert result.text == "ok"
    assert agent.store is own  # the caller's agent is not modified
    assert len(await shared.get_messages(thread)) == 2


async def test_router_member_can_be_a_flow() -> None:
    inner = Router("inner", {"x": Agent("x", scripted("from x"))}, default="x")
    outer = Router("outer", {"inner": inner}, default="inner")

    result = await outer.run("go")

    assert result.text == "from x"
    assert result.path == ["x"]
    routers = [e["router"] for e in kinds(result, "agent.route")]
    assert routers == ["outer", "inner"]


# -- Team (handoffs) ---------------------------------------------------------------------------


def team_of(
    triage: FunctionModel, billing: FunctionModel, tech: FunctionModel | None = None, **kw: Any
) -> Team:
    agents = [
        Agent("triage", triage, instructions="Send the user to the right desk."),
        Agent("billing", billing, instructions="Handles invoices and refunds."),
    ]
    if tech is not None:
        agents.append(Agent("tech", tech, instructions="Fixes crashes."))
    return Team("support", agents, entry="triage", **kw)


async def test_handoff_carries_the_thread_to_the_target() -> None:
    triage = scripted(transfer("billing", "invoice question"))
    billing = scripted("Your invoice is fixed.")
    team = team_of(triage, billing)

    result = await team.run("My invoice is wrong")

    assert result.stop_reason == "final"
    assert result.agent == "billing"
    assert result.text == "Your invoice is fixed."
    assert result.path == ["triage", "billing"]
    assert result.thread_id is not None
    # the target read the conversation so far, with the transfer answered
    seen = billing.requests[0].messages
    assert UserMessage(content="My invoice is wrong") in seen
    assert any(isinstance(m, ToolMessage) and m.content == "Transferred to billing." for m in seen)
    # the thread holds both agents' messages
    stored = await team.store.get_messages(result.thread_id)
    assert stored[0] == UserMessage(content="My invoice is wrong")
    assert isinstance(stored[1], AssistantMessage)
    assert stored[1].tool_calls[0].name == "transfer_to"
    assert isinstance(stored[2], ToolMessage)
    assert stored[3] == AssistantMessage(content="Your invoice is fixed.")
    assert kinds(result, "handoff") == [
        {"source": "triage", "target": "billing", "reason": "invoice question"}
    ]
    stored_kinds = [e["kind"] for e in await team.store.get_trace(result.thread_id)]
    assert stored_kinds.count("handoff") == 1
    assert stored_kinds.count("run") == 2


async def test_transfer_tool_constrains_the_target_with_an_enum() -> None:
    triage = scripted("Hello!")
    team = team_of(triage, scripted("x"), scripted("y"))

    await team.run("hi")

    params = triage.requests[0].params
    (tool,) = [t for t in params.tools if t.name == "transfer_to"]
    assert tool.parameters["properties"]["agent"]["enum"] == ["billing", "tech"]
    assert tool.parameters["required"] == ["agent"]
    assert "billing: Handles invoices and refunds." in tool.description


async def test_team_does_not_modify_the_agents_it_was_given() -> None:
    agent = Agent("triage", scripted("x"))
    other = Agent("billing", scripted("y"))
    team = Team("t", [agent, other], entry="triage")

    assert "transfer_to" not in agent.tools
    assert "transfer_to" in team.agents["triage"].tools


async def test_invalid_target_is_refused_by_the_enum_and_retried() -> None:
    triage = scripted(transfer("nobody"), transfer("billing"))
    billing = scripted("Billing.")
    team = team_of(triage, billing)

    result = await team.run("help")

    assert result.path == ["triage", "billing"]
    assert result.runs[0].retries == 1
    retried = triage.requests[1].messages
    assert any(isinstance(m, ToolMessage) and m.is_error and "nobody" in m.content for m in retried)


async def test_next_message_goes_to_the_current_agent() -> None:
    triage = scripted(transfer("billing"), "Triage again.")
    billing = scripted("Billing answer.", "Billing again.")
    team = team_of(triage, billing)
    first = await team.run("invoice?")
    assert first.thread_id is not None
    thread = await team.store.get_thread(first.thread_id)
    assert thread.metadata[TEAM_KEY] == {"team": "support", "current": "billing"}

    second = await team.run("and the refund?", thread=first.thread_id)

    assert second.path == ["billing"]
    assert second.text == "Billing again."
    assert len(triage.requests) == 1
    assert texts(billing.requests[-1].messages)[-1] == "and the refund?"


async def test_handoff_loop_stops_at_max_handoffs_with_an_answer() -> None:
    def ping_pong(target: str) -> Callable[[list[Message], ModelRequestParameters], Answer]:
        def answer(messages: list[Message], params: ModelRequestParameters) -> Answer:
            if params.tool_choice == "none":
                return f"{target} cannot help; here is my answer."
            return transfer(target)

        return answer

    a_model = FunctionModel(ping_pong("b"))
    b_model = FunctionModel(ping_pong("a"))
    team = Team("loop", [Agent("a", a_model), Agent("b", b_model)], entry="a", max_handoffs=2)

    result = await team.run("go")

    assert result.stop_reason == "max_handoffs"
    assert result.path == ["a", "b", "a", "a"]
    assert result.agent == "a"
    assert result.text == "b cannot help; here is my answer."
    assert len(kinds(result, "handoff")) == 2
    assert any("limit of 2 handoffs" in n for n in result.notes)
    assert a_model.requests[-1].params.tool_choice == "none"
    refused = [
        m
        for m in await team.store.get_messages(result.thread_id or "")
        if isinstance(m, ToolMessage)
    ]
    assert refused[-1].is_error
    assert "not transferred" in refused[-1].content


def test_team_configuration_errors() -> None:
    a, b = Agent("a", scripted("x")), Agent("b", scripted("y"))
    with pytest.raises(UserError, match="entry 'c'"):
        Team("t", [a, b], entry="c")
    with pytest.raises(UserError, match="itself"):
        Team("t", [a, b], entry="a", handoffs={"a": ["a"]})
    with pytest.raises(UserError, match="unknown agent 'c'"):
        Team("t", [a, b], entry="a", handoffs={"a": ["c"]})
    with pytest.raises(UserError, match="two agents"):
        Team("t", [a, Agent("a", scripted("z"))], entry="a")
    with pytest.raises(UserError, match="no agent hands off"):
        Team("t", [a, b], entry="a", handoffs={"a": ["b"]}, approval=["a"])
    with pytest.raises(UserError, match="max_handoffs"):
        Team("t", [a, b], entry="a", max_handoffs=-1)


async def test_handoffs_restrict_who_may_transfer() -> None:
    a_model, b_model = scripted("A."), scripted("B.")
    team = Team("t", [Agent("a", a_model), Agent("b", b_model)], entry="a", handoffs={"a": ["b"]})

    await team.run("x")

    assert "transfer_to" in team.agents["a"].tools
    assert "transfer_to" not in team.agents["b"].tools


# -- agents as tools ---------------------------------------------------------------------------


async def test_agent_tool_runs_the_agent_on_the_task_and_nests_its_trace() -> None:
    researcher_model = scripted("Paris is the capital of France.")
    researcher = Agent("researcher", researcher_model, instructions="Finds facts. Cites nothing.")
    ask = agent_tool(researcher)
    parent_model = scripted(
        ToolCall(name="researcher", arguments={"task": "capital of France?"}),
        "It is Paris.",
    )
    parent = Agent("writer", parent_model, tools=[ask])

    result = await as_flow(parent).run("Where is the Eiffel tower?")

    assert ask.description == "Finds facts."
    assert ask.definition.parameters["required"] == ["task"]
    assert result.text == "It is Paris."
    # the sub-agent saw the task only, in a fresh conversation
    seen = researcher_model.requests[0].messages
    assert [m for m in seen if not isinstance(m, SystemMessage)] == [
        UserMessage(content="capital of France?")
    ]
    # the parent read the sub-agent's answer as the tool result
    results = [m for m in parent_model.requests[1].messages if isinstance(m, ToolMessage)]
    assert results[0].content == "Paris is the capital of France."
    # the sub-run's trace is in the flow's, nested under the parent's tool.call span
    (call_span,) = [e for e in result.trace if e.kind == "tool.call"]
    runs = {e.agent: e for e in result.trace if e.kind == "run"}
    assert set(runs) == {"writer", "researcher"}
    assert runs["researcher"].parent_id == call_span.span_id
    assert call_span.data["outcome"] == "ok"


async def test_agent_tool_sub_run_nests_under_the_tool_call_span() -> None:
    from shoal.observability import TraceEvent, add_sink, remove_sink

    class Collect:
        def __init__(self) -> None:
            self.events: list[TraceEvent] = []

        def start(self, event: TraceEvent) -> None:
            pass

        def end(self, event: TraceEvent) -> None:
            self.events.append(event)

        def emit(self, event: TraceEvent) -> None:
            self.events.append(event)

    sink = Collect()
    researcher = Agent("researcher", scripted("fact"))
    parent = Agent(
        "writer",
        scripted(ToolCall(name="ask", arguments={"task": "t"}), "done"),
        tools=[agent_tool(researcher, name="ask", description="Ask the researcher.")],
    )
    add_sink(sink)
    try:
        await parent.run("x")
    finally:
        remove_sink(sink)

    (call_span,) = [e for e in sink.events if e.kind == "tool.call" and e.agent == "writer"]
    (sub_run,) = [e for e in sink.events if e.kind == "run" and e.agent == "researcher"]
    assert sub_run.parent_id == call_span.span_id


async def test_agent_tool_runs_the_sub_agent_in_the_callers_role() -> None:
    from shoal import tool
    from shoal.agent import current_role
    from shoal.guards import ToolPermissionGuard
    from shoal.observability import TraceEvent, add_sink, remove_sink

    seen: list[str | None] = []

    @tool
    def wipe(disk: str) -> str:
        """Wipe a disk."""
        seen.append(current_role())
        return "wiped"

    guard = ToolPermissionGuard({"admin": ["wipe", "helper"], "guest": ["helper"]})

    def front() -> Agent[Any]:
        helper = Agent(
            "helper",
            scripted(ToolCall(name="wipe", arguments={"disk": "d"}), "done"),
            tools=[wipe],
            guards=[guard],
        )
        return Agent(
            "front",
            scripted(ToolCall(name="helper", arguments={"task": "wipe d"}), "ok"),
            tools=[agent_tool(helper)],
            guards=[guard],
        )

    parent = front()

    events: list[TraceEvent] = []

    class Collect:
        def start(self, event: TraceEvent) -> None:
            pass

        def end(self, event: TraceEvent) -> None:
            events.append(event)

        def emit(self, event: TraceEvent) -> None:
            events.append(event)

    sink = Collect()
    add_sink(sink)
    try:
        await parent.run("wipe d", role="guest")
    finally:
        remove_sink(sink)

    # the delegate runs as the guest: its wipe call is blocked, not run
    (sub_run,) = [e for e in events if e.kind == "run" and e.agent == "helper"]
    assert sub_run.data["role"] == "guest"
    assert seen == []
    assert any(
        e.kind == "guard" and e.agent == "helper" and e.data["action"] == "block" for e in events
    )

    await front().run("wipe d", role="admin")
    assert seen == ["admin"]  # a tool reads its run's role
    assert current_role() is None  # outside a tool call


async def test_agent_tool_sub_agent_needing_approval_is_an_error_the_model_reads() -> None:
    from shoal import tool

    @tool(requires_approval=True)
    def pay(amount: int) -> str:
        """Pay."""
        return "paid"

    payer = Agent("payer", scripted(ToolCall(name="pay", arguments={"amount": 3})), tools=[pay])
    parent_model = scripted(ToolCall(name="payer", arguments={"task": "pay 3"}), "could not")
    parent = Agent("boss", parent_model, tools=[agent_tool(payer)])

    result = await parent.run("pay")

    assert result.tool_calls[0].outcome == "failed"
    assert "approval" in (result.tool_calls[0].error or "")


async def test_team_behind_a_router_keeps_its_conversation_on_the_router_thread() -> None:
    store = InMemoryThreadStore()
    triage = scripted(transfer("billing", "money"))
    billing = scripted("Billing answer.", "Billing again.")
    team = team_of(triage, billing)
    faq = scripted("FAQ answer.")
    router = Router(
        "front",
        {"support": team, "faq": Agent("faq", faq)},
        rules=[RouteRule("faq", pattern=r"^faq:")],
        default="support",
        store=store,
    )
    thread = (await store.create_thread()).id

    first = await router.run("my invoice", thread=thread)
    second = await router.run("and my refund?", thread=thread)

    assert first.path == ["triage", "billing"]
    assert second.path == ["billing"]  # the team remembered who has the conversation
    assert second.text == "Billing again."
    assert team.store is not store  # the router works on a copy bound to its store
    messages = await store.get_messages(thread)
    assert texts(messages) == ["my invoice", "Billing answer.", "and my refund?", "Billing again."]
    stored = [e["kind"] for e in await store.get_trace(thread)]
    assert stored.count("handoff") == 1
    assert stored.count("agent.route") == 2


def test_run_sync_inside_an_event_loop_is_a_user_error() -> None:
    import asyncio

    router = Router("r", {"a": Agent("a", scripted("x"))}, default="a")

    async def inside() -> None:
        router.run_sync("hi")

    with pytest.raises(UserError, match="inside an event loop"):
        asyncio.run(inside())
    assert router.run_sync("hi").text == "x"


async def test_flow_trace_is_ordered_by_time_and_nested() -> None:
    team = team_of(scripted(transfer("billing")), scripted("done"))

    result = await team.run("x")

    times = [e.at for e in result.trace]
    assert times == sorted(times)
    (system,) = [e for e in result.trace if e.kind == "system"]
    assert system.data["system"] == "support"
    assert system.data["entry"] == "triage"
    assert system.data["stop_reason"] == "final"
    runs = [e for e in result.trace if e.kind == "run"]
    assert {e.parent_id for e in runs} == {system.span_id}
