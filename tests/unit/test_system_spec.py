"""System files: loading and checking (``load_system``), building and running (``System``)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.exceptions import ApprovalError, SpecError, UserError
from shoal.guards import SizeLimitGuard
from shoal.messages import Message, SystemMessage, ToolCall, ToolMessage
from shoal.models import ModelRequestParameters, TestModel
from shoal.models.test import FunctionModel
from shoal.orchestration import Router, Team
from shoal.spec import System, SystemSpec, is_system_file, load_system
from shoal.spec.system_build import SYSTEM_KEY, approval_decisions, pending_calls
from shoal.threads import InMemoryThreadStore
from tests.unit._systems import tools_module

#: besides the shared tools: a guard factory, a step, a combiner and a name that is no guard
EXTRA_TOOLS = """\
from shoal.guards import SizeLimitGuard


def shout(text: str) -> str:
    return text.upper()


def join(results) -> str:
    return " | ".join(r.text for r in results)


def small_guard(max_chars: int = 10):
    return SizeLimitGuard(max_input_chars=max_chars)


NOT_A_GUARD = 42
"""

SYSTEM = """\
name: shop
description: A small shop.
models:
  primary: test
  tiny: test
agents:
  billing:
    description: Payments and refunds.
    instructions: You handle billing.
    tools:
      - {m}:lookup_order
      - {m}:refund
    approval: [refund]
  tech:
    instructions: You fix the app.
  small_talk:
    model: tiny
    instructions: Say hello.
flows:
  triage:
    type: router
    routes: [billing, tech, small_talk]
    rules:
      - {pattern: "refund|invoice", to: billing, reason: billing words}
    classifier: tiny
    descriptions:
      tech: problems with the app
    default: tech
entry: triage
"""


@pytest.fixture
def tools(tmp_path: Path) -> Iterator[str]:
    with tools_module(tmp_path, "system_tools", EXTRA_TOOLS) as name:
        yield name


def write(directory: Path, text: str, tools: str = "tools", name: str = "system.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).replace("{m}", tools), encoding="utf-8")
    return path


def error_of(directory: Path, text: str) -> str:
    with pytest.raises(SpecError) as caught:
        load_system(write(directory, text))
    return str(caught.value)


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the text")


# -- loading ----------------------------------------------------------------------------------


def test_a_system_file_loads(tmp_path: Path, tools: str) -> None:
    spec = load_system(write(tmp_path, SYSTEM, tools))

    assert isinstance(spec, SystemSpec)
    assert spec.name == "shop"
    assert list(spec.agents) == ["billing", "tech", "small_talk"]
    assert spec.agents["billing"].approval == ("refund",)
    assert spec.flows["triage"].type == "router"
    assert spec.entry_name == "triage"
    # agents without model: use the first models: entry; the classifier is a model too
    assert spec.agent_model("tech") == "primary"
    assert spec.model_names() == ["primary", "tiny"]
    path = str(tmp_path / "system.yaml")
    refund = line_of(SYSTEM, ":refund")
    assert spec.location(("agents", "billing", "tools", 1)) == f"{path}:{refund}"


def test_agents_may_be_a_list_and_lines_still_point_into_it(tmp_path: Path) -> None:
    text = """\
        name: s
        agents:
          - name: a
            instructions: one
          - name: b
            max_step: 3
        """
    message = error_of(tmp_path, text)

    assert message.startswith(f"{tmp_path / 'system.yaml'}:6: unknown key 'max_step'")
    assert "did you mean 'max_steps'?" in message
    spec = load_system(write(tmp_path, text.replace("max_step:", "max_steps:")))
    assert list(spec.agents) == ["a", "b"]
    assert spec.agents["b"].max_steps == 3
    assert spec.location(("agents", "b")).endswith(":5")


def test_entry_defaults(tmp_path: Path) -> None:
    only_agents = load_system(write(tmp_path, "name: s\nagents: {a: {}, b: {}}\n"))
    one_flow = load_system(
        write(tmp_path, "name: s\nagents: {a: {}}\nflows: {p: {type: pipeline, steps: [a]}}\n")
    )

    assert only_agents.entry_name == "a"
    assert one_flow.entry_name == "p"
    assert only_agents.default_model == "smollm2-135m"


@pytest.mark.parametrize(
    ("change", "needle", "message"),
    [
        (
            ("routes: [billing, tech, small_talk]", "routes: [billing, tech, smalltalk]"),
            "routes: [billing",
            "flow 'triage' routes to 'smalltalk', which is not an agent or flow; "
            "did you mean 'small_talk'?",
        ),
        (
            ("approval: [refund]", "approval: [refunds]"),
            "approval:",
            "agents.billing.approval[0]: approval names 'refunds', which is not one of its "
            "tools; did you mean 'refund'?",
        ),
        (
            ("    classifier: tiny", "    clasifier: tiny"),
            "clasifier",
            "unknown key 'clasifier' in flows.triage; did you mean 'classifier'?",
        ),
        (
            ("    type: router", "    type: ruter"),
            "type: ruter",
            "flows.triage.type: 'ruter' is not a flow type; did you mean 'router'?",
        ),
        (
            ("to: billing, reason", "to: bill, reason"),
            "pattern:",
            "flows.triage.rules[0].to: rule sends to 'bill', which is not a route; "
            "did you mean 'billing'?",
        ),
        (
            ("entry: triage", "entry: triag"),
            "entry:",
            "entry: 'triag' is not an agent or flow; did you mean 'triage'?",
        ),
        (
            ("    model: tiny", "    model: tin"),
            "model: tin",
            "agents.small_talk.model: 'tin' is not an entry of models:; did you mean 'tiny'?",
        ),
    ],
)
def test_errors_name_the_place_and_the_fix(
    tmp_path: Path, tools: str, change: tuple[str, str], needle: str, message: str
) -> None:
    old, new = change
    assert old in SYSTEM
    text = SYSTEM.replace(old, new)
    error = write(tmp_path, text, tools)
    with pytest.raises(SpecError) as caught:
        load_system(error)

    line = line_of(text, needle)
    assert str(caught.value) == f"{error}:{line}: {message}"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            """\
            name: s
            agents: {a: {}, b: {}}
            flows:
              team:
                type: team
                agents: [a, b]
                handoffs: {a: [c]}
            """,
            7,
            "flows.team.handoffs.a[0]: handoffs.a names 'c', which is not an agent of the team; "
            "its agents: a, b",
        ),
        (
            """\
            name: s
            agents: {a: {}}
            flows:
              one: {type: pipeline, steps: [two]}
              two: {type: pipeline, steps: [one]}
            """,
            5,
            "flows make a cycle: one -> two -> one",
        ),
        (
            """\
            name: s
            agents:
              a: {delegates: [b]}
              b: {delegates: [a]}
            """,
            4,
            "agents delegate in a cycle: a -> b -> a",
        ),
        (
            """\
            name: s
            agents: {a: {}}
            flows:
              p: {type: pipeline, steps: [a]}
              q: {type: pipeline, steps: [a]}
            """,
            1,
            "the system has several flows: say which one runs with 'entry:' (p, q)",
        ),
        (
            """\
            name: s
            agents: {a: {}}
            flows:
              p: {type: pipeline, steps: [a]}
              c: {type: critic, worker: a, critic: p}
            entry: c
            """,
            5,
            "flow 'c' needs an agent at critic, and 'p' is a flow; agents: a",
        ),
        (
            """\
            name: s
            agents: {a: {}}
            flows:
              c:
                type: chain
                steps:
                  - {name: first, agent: a, prompt: "about {input}"}
                  - {name: second, agent: a, prompt: "{frist} again"}
            """,
            8,
            "the prompt uses {frist}, but only {input} and earlier steps exist here; "
            "did you mean 'first'?",
        ),
        (
            """\
            name: s
            agents: {a: {}}
            flows:
              a: {type: pipeline, steps: [a]}
            """,
            4,
            "'a' is both an agent and a flow; rename one",
        ),
        (
            """\
            name: s
            agents:
              - name: a
              - name: a
            """,
            4,
            "two agents are named 'a'",
        ),
        (
            """\
            name: s
            agents:
              a:
                name: b
            """,
            4,
            "agent 'a' has name: 'b'; the key is the agent's name (remove 'name:')",
        ),
        (
            """\
            name: s
            agents: {a: {tool_strategy: gramar}}
            """,
            2,
            "'gramar' is not a tool strategy; did you mean 'grammar'?",
        ),
    ],
)
def test_cross_reference_errors(tmp_path: Path, text: str, line: int, message: str) -> None:
    error = error_of(tmp_path, text)

    assert error.startswith(f"{tmp_path / 'system.yaml'}:{line}: ")
    assert error.endswith(message)


def test_is_system_file(tmp_path: Path) -> None:
    system = write(tmp_path, "name: s\nagents: {a: {}}\n", name="s.yaml")
    agent = write(tmp_path, "name: a\ninstructions: hi\n", name="a.yaml")
    broken = write(tmp_path, "name: [\n", name="b.yaml")

    assert is_system_file(system)
    assert not is_system_file(agent)
    assert not is_system_file(broken)
    assert not is_system_file(tmp_path / "missing.yaml")


# -- building ---------------------------------------------------------------------------------


def test_build_shares_models_by_name(tmp_path: Path, tools: str) -> None:
    made: list[str] = []

    def resolve(ref: str) -> TestModel:
        made.append(ref)
        return TestModel(name=ref)

    system = load_system(write(tmp_path, SYSTEM, tools)).build(resolve=resolve)

    assert isinstance(system, System)
    assert made == ["test", "test"]  # one per models: entry, whatever uses it
    agents = system.agents
    assert agents["billing"].model is agents["tech"].model
    assert agents["small_talk"].model is not agents["billing"].model
    router = system.flows["triage"]
    assert isinstance(router, Router)
    assert router.classifier is agents["small_talk"].model
    assert router.descriptions["billing"] == "Payments and refunds."
    assert router.descriptions["tech"] == "problems with the app"
    assert agents["billing"].tools["refund"].requires_approval
    assert not agents["billing"].tools["lookup_order"].requires_approval
    assert system.entry is router


def test_models_given_to_build_replace_the_named_ones(tmp_path: Path, tools: str) -> None:
    primary = TestModel(name="scripted")
    system = load_system(write(tmp_path, SYSTEM, tools)).build(
        models={"primary": primary}, resolve=lambda ref: TestModel(name=ref)
    )

    assert system.agents["billing"].model is primary
    assert system.agents["small_talk"].model is not primary


def test_get_names_what_exists(tmp_path: Path, tools: str) -> None:
    system = load_system(write(tmp_path, SYSTEM, tools)).build()

    assert system.get("tech").name == "tech"
    with pytest.raises(UserError, match="no agent or flow named 'nope'; known: billing, tech"):
        system.get("nope")


def test_a_tool_that_cannot_be_imported_points_at_its_line(tmp_path: Path, tools: str) -> None:
    text = SYSTEM.replace("{m}:lookup_order", "{m}:lookup_ordr")
    spec = load_system(write(tmp_path, text, tools))

    with pytest.raises(SpecError) as caught:
        spec.build()

    line = line_of(text, ":lookup_ordr")
    assert str(caught.value).startswith(f"{tmp_path / 'system.yaml'}:{line}: cannot import")
    assert "did you mean" in str(caught.value)


def test_guards_are_built_from_references(tmp_path: Path, tools: str) -> None:
    text = """\
        name: s
        guards:
          - ref: {m}:small_guard
            options: {max_chars: 5}
        agents:
          a:
            guards: [shoal.guards:InjectionGuard]
        """
    system = load_system(write(tmp_path, text, tools)).build()

    guards = system.agents["a"].guards
    assert [type(g).__name__ for g in guards] == ["SizeLimitGuard", "InjectionGuard"]
    assert isinstance(guards[0], SizeLimitGuard)


def test_a_guard_reference_that_is_not_a_guard(tmp_path: Path, tools: str) -> None:
    text = """\
        name: s
        agents:
          a:
            guards: [{m}:shout]
          b:
            guards: [{m}:NOT_A_GUARD]
        """
    spec = load_system(write(tmp_path, text, tools))

    with pytest.raises(SpecError, match=r"system.yaml:4: .*:shout\(\) failed: TypeError"):
        spec.build()
    fixed = load_system(
        write(tmp_path, text.replace("{m}:shout", "shoal.guards:PIIRedactionGuard"), tools)
    )
    with pytest.raises(SpecError, match=r"system.yaml:6: .*NOT_A_GUARD is a int, not a function"):
        fixed.build()


# -- running ----------------------------------------------------------------------------------


def scripted_system(tmp_path: Path, tools: str, **models: Any) -> System:
    return load_system(write(tmp_path, SYSTEM, tools)).build(
        store=InMemoryThreadStore(), resolve=lambda ref: TestModel(name=ref), models=models
    )


def test_a_rule_routes_and_an_approval_pauses_then_resumes(tmp_path: Path, tools: str) -> None:
    system = scripted_system(tmp_path, tools)

    paused = system.run_sync("I want a refund for order 1042")

    assert paused.stop_reason == "approval"
    assert paused.route is not None
    assert paused.route.target == "billing"
    assert (paused.route.by, paused.route.reason) == ("rule", "billing words")
    assert paused.path == ["billing"]
    assert [c.name for c in paused.pending_approvals] == ["refund"]
    assert paused.thread_id is not None
    kinds = [event.kind for event in paused.trace]
    assert {"system", "agent.route", "run", "tool.call", "approval.requested"} <= set(kinds)

    thread = paused.thread_id
    assert [c.name for c in asyncio.run(system.pending(thread))] == ["refund"]

    done = system.resume_sync(thread)

    assert done.stop_reason == "final"
    assert "refunded" in done.text
    assert asyncio.run(system.pending(thread)) == []


def test_a_rejected_call_is_not_run(tmp_path: Path, tools: str) -> None:
    system = scripted_system(tmp_path, tools)
    paused = system.run_sync("refund order 7")
    assert paused.thread_id is not None

    done = system.resume_sync(paused.thread_id, approve=False, reason="too late")

    assert "rejected by a person: too late" in done.text
    assert "refunded" not in done.text


def test_resume_with_nothing_waiting_is_an_approval_error(tmp_path: Path, tools: str) -> None:
    system = scripted_system(tmp_path, tools)
    result = system.run_sync("hello", agent="tech")
    assert result.thread_id is None

    async def thread() -> str:
        return (await system.store.create_thread()).id

    with pytest.raises(ApprovalError):
        system.resume_sync(asyncio.run(thread()))


def test_the_classifier_routes_when_no_rule_matches(tmp_path: Path, tools: str) -> None:
    def classify(messages: list[Message], params: ModelRequestParameters) -> str:
        assert params.output_schema is not None
        prompt = messages[0]
        assert isinstance(prompt, SystemMessage)
        assert "problems with the app" in prompt.content
        return json.dumps("tech")

    system = scripted_system(tmp_path, tools, tiny=FunctionModel(classify))

    result = system.run_sync("the app crashes when I log in")

    assert result.route is not None
    assert (result.route.target, result.route.by) == ("tech", "classifier")
    assert result.path == ["tech"]
    assert result.stop_reason == "final"


def test_a_named_agent_runs_alone(tmp_path: Path, tools: str) -> None:
    system = scripted_system(tmp_path, tools)

    result = system.run_sync("hi", agent="small_talk")

    assert result.path == ["small_talk"]
    assert result.route is None


def test_pipeline_fanout_critic_and_chain(tmp_path: Path, tools: str) -> None:
    text = """\
        name: desk
        models: {m1: test}
        agents:
          writer: {instructions: Write.}
          reviewer: {instructions: Review.}
          extractor:
            output_schema:
              type: object
              properties: {order_id: {type: string}}
              required: [order_id]
        flows:
          loud: {type: pipeline, steps: [writer, "{m}:shout"]}
          both: {type: fanout, branches: [writer, loud], combine: "{m}:join"}
          reviewed: {type: critic, worker: writer, critic: reviewer, max_rounds: 2}
          ticket:
            type: chain
            steps:
              - {name: order, agent: extractor, prompt: "Find it: {input}"}
              - {name: summary, agent: writer, prompt: "Order {order}: {input}"}
        entry: loud
        """
    answers = {"Write.": "draft", "Review.": json.dumps({"verdict": "accept"})}

    def model(messages: list[Message], params: ModelRequestParameters) -> str:
        system = messages[0].content if isinstance(messages[0], SystemMessage) else ""
        for key, answer in answers.items():
            if system.startswith(key):
                return answer
        return json.dumps({"order_id": "1042"})

    system = load_system(write(tmp_path, text, tools)).build(models={"m1": FunctionModel(model)})

    assert system.run_sync("go").text == "DRAFT"
    assert system.run_sync("go", agent="both").text == "draft | DRAFT"
    reviewed = system.run_sync("go", agent="reviewed")
    assert reviewed.text == "draft"
    assert any(e.kind == "critic.round" for e in reviewed.trace)
    chained = system.run_sync("order 1042 is late", agent="ticket")
    assert chained.outputs["order"] == {"order_id": "1042"}
    assert chained.text == "draft"


def test_a_team_hands_off(tmp_path: Path, tools: str) -> None:
    text = """\
        name: office
        models: {m1: test}
        agents:
          front: {instructions: Front.}
          billing: {instructions: Billing.}
        flows:
          desk: {type: team, agents: [front, billing], entry: front}
        """

    def model(messages: list[Message], params: ModelRequestParameters) -> Any:
        first = messages[0].content if isinstance(messages[0], SystemMessage) else ""
        offered = [t.name for t in params.offered_tools()]
        done = any(isinstance(m, ToolMessage) for m in messages)
        if first.startswith("Front.") and offered and not done:
            name = offered[0]
            tool = next(t for t in params.offered_tools() if t.name == name)
            props = tool.parameters.get("properties", {})
            arguments: dict[str, Any] = {}
            for key, schema in props.items():
                arguments[key] = schema["enum"][0] if "enum" in schema else "billing question"
            return ToolCall(name=name, arguments=arguments)
        return "billing here"

    system = load_system(write(tmp_path, text, tools)).build(models={"m1": FunctionModel(model)})
    team = system.flows["desk"]
    assert isinstance(team, Team)

    result = system.run_sync("I was charged twice")

    assert result.path == ["front", "billing"]
    assert result.text == "billing here"
    assert any(e.kind == "handoff" for e in result.trace)


def test_delegates_become_tools(tmp_path: Path, tools: str) -> None:
    text = """\
        name: s
        models: {m1: test}
        agents:
          boss: {instructions: Boss., delegates: [helper]}
          helper: {instructions: Helper., description: Knows things.}
        """
    system = load_system(write(tmp_path, text, tools)).build()

    tool = system.agents["boss"].tools["ask_helper"]
    assert tool.description == "Knows things."
    result = system.run_sync("question")
    assert result.stop_reason == "final"
    tool_calls = [r.call.name for r in result.runs[0].tool_calls]
    assert tool_calls == ["ask_helper"]


def test_resume_follows_the_recorded_flow(tmp_path: Path, tools: str) -> None:
    system = scripted_system(tmp_path, tools)
    paused = system.run_sync("refund 12")
    assert paused.thread_id is not None

    thread = asyncio.run(system.store.get_thread(paused.thread_id))
    assert thread.metadata[SYSTEM_KEY] == {"system": "shop", "flow": "triage"}
    assert asyncio.run(system.paused_in(paused.thread_id)) == "triage"


def test_approval_decisions() -> None:
    a = ToolCall(id="a", name="x", arguments={})
    b = ToolCall(id="b", name="y", arguments={})

    assert approval_decisions([a, b], approve=True) is True
    assert approval_decisions([a, b], approve=True, calls=["a"]) == {"a": True, "b": False}
    assert approval_decisions([a, b], approve=False, calls=["b"]) == {"a": True, "b": False}
    with pytest.raises(ApprovalError, match="no call 'c' is waiting for approval; waiting: a, b"):
        approval_decisions([a, b], approve=True, calls=["c"])
    with pytest.raises(ApprovalError, match="nothing is waiting"):
        approval_decisions([], approve=True)


def test_pending_calls_reads_flow_positions_then_agent_records() -> None:
    call = {"id": "c1", "name": "refund", "arguments": {"order_id": "1"}}
    flow_state = {"shoal.flow": {"p": {"waiting": [call]}}}
    agent_record = {"shoal.approval": {"agent": "a", "calls": [call]}}

    assert [c.id for c in pending_calls(flow_state, "p")] == ["c1"]
    assert pending_calls(flow_state, "other") == []
    assert [c.arguments for c in pending_calls(agent_record)] == [{"order_id": "1"}]
    assert pending_calls({}) == []
