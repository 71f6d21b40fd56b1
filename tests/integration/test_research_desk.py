"""The research desk example on the real model: the steps taken and the searches made.

``examples/research_desk/system.yaml`` runs as shipped (planner -> brief -> two specialists in
parallel over their own documents -> synthesiser -> critic, at most two rounds), greedy
decoding, on one question. The tests assert the flow's shape (which agents ran, in which
order, the trace's spans and events), the structured plan, and which search each specialist
made over which documents, never the wording of the answer.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.agent import RunResult
from shoal.orchestration import FlowResult
from shoal.spec import load_system

from .conftest import REPO

EXAMPLE = REPO / "examples" / "research_desk"
QUESTION = "Should we get a heat pump, and is there a grant for it?"


@pytest.fixture(scope="module")
def desk_tools() -> Iterator[Any]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import desk_tools

        yield desk_tools
    finally:
        sys.path.remove(str(EXAMPLE))


@pytest.fixture(scope="module")
def result() -> FlowResult:
    return load_system(EXAMPLE / "system.yaml").build().run_sync(QUESTION)


def _runs(result: FlowResult, agent: str) -> list[RunResult[Any]]:
    return [run for run in result.runs if run.agent_name == agent]


def test_the_agents_run_in_the_order_of_the_flow(result: FlowResult) -> None:
    assert result.stop_reason == "final"
    assert result.path[0] == "planner"
    rounds = result.path.count("critic")
    assert 1 <= rounds <= 2  # the critic loop is bounded
    # each round: both specialists (in branch order), the synthesiser, then the critic
    assert result.path[1:] == ["technology", "money", "synthesiser", "critic"] * rounds
    assert result.agent == "synthesiser"
    assert result.text.strip()


def test_the_planner_returns_a_structured_plan_and_code_turns_it_into_a_brief(
    result: FlowResult,
) -> None:
    [plan] = _runs(result, "planner")
    assert set(plan.output) == {"question", "technology", "money_and_rules"}
    assert plan.output["question"].strip()
    brief = result.outputs["brief"]
    assert brief.startswith(f"Question: {plan.output['question'].strip()}")
    assert "Technology search:" in brief
    # the specialists were given the brief
    for name in ("technology", "money"):
        first = _runs(result, name)[0]
        assert first.new_messages[0].content.startswith("Question:")


def test_each_specialist_searches_its_own_documents(result: FlowResult, desk_tools: Any) -> None:
    scopes = {
        "technology": ("search_technology", set(desk_tools.TECHNOLOGY_DOCS)),
        "money": ("search_money_and_rules", set(desk_tools.MONEY_DOCS)),
    }
    for agent, (tool, documents) in scopes.items():
        for run in _runs(result, agent):
            assert run.tool_calls, f"{agent} made no search"
            record = run.tool_calls[0]
            assert record.call.name == tool
            assert record.call.arguments["query"].strip()
            assert record.outcome == "ok"
            found = {p["doc"] for p in record.result.get("passages", [])}
            assert found <= documents
            assert run.usage.steps <= 2


def test_the_trace_shows_the_pipeline_the_fan_out_and_the_critic(result: FlowResult) -> None:
    steps = [e.data["agent"] for e in result.trace if e.kind == "pipeline.step"]
    assert steps == ["planner", "brief", "reviewed"]
    fanouts = [e for e in result.trace if e.kind == "fanout"]
    assert fanouts
    assert all(e.data["branches"] == ["technology", "money"] for e in fanouts)
    assert all(e.data["limit"] == 2 for e in fanouts)
    verdicts = [e.data for e in result.trace if e.kind == "critic.round"]
    assert [v["round"] for v in verdicts] == list(range(1, len(verdicts) + 1))
    assert len(verdicts) == result.path.count("critic")
    assert all(v["verdict"] in ("accept", "revise") for v in verdicts)
    # the loop stops at the first accept, or after its last round
    assert all(v["verdict"] == "revise" for v in verdicts[:-1])
    if verdicts[-1]["verdict"] == "revise":
        assert len(verdicts) == 2
        assert result.notes
