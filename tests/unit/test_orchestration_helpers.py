"""The pieces the flows share: a resumption's decision, kept member results, member
descriptions, and the classifier request shared with RouterModel (shoal.models.routing)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import pytest
from pydantic import BaseModel

from shoal import Agent
from shoal.exceptions import UserError
from shoal.messages import Message, SystemMessage, ToolCall, UserMessage
from shoal.models import FunctionModel, ModelRequestParameters, RouteRule
from shoal.models.routing import check_rules, classify, read_label
from shoal.orchestration import Flow, FlowResult
from shoal.orchestration.base import Resumption, member_descriptions
from shoal.orchestration.running import Outcome, result_from_json, result_to_json


class Recorder:
    """A flow that records how it was resumed."""

    name = "member"

    def __init__(self) -> None:
        self.resumed: list[tuple[str, Any, str, str | None]] = []

    async def resume(
        self,
        thread: str,
        *,
        approve: bool | Mapping[str, bool] = True,
        reason: str = "",
        role: str | None = None,
    ) -> FlowResult:
        self.resumed.append((thread, approve, reason, role))
        return FlowResult(
            output="done", text="done", agent=self.name, stop_reason="final", thread_id=thread
        )


def resumed(call: Callable[[], Awaitable[FlowResult]]) -> FlowResult:
    async def go() -> FlowResult:
        return await call()

    return asyncio.run(go())


def test_resumption_passes_the_decision_and_only_the_members_calls() -> None:
    member = Recorder()
    decision = Resumption({"a": True, "b": False, "c": True}, "not now", "clerk")

    result = resumed(decision.of(cast(Flow, member), 42, ["a", "c"]))
    resumed(decision.of(cast(Flow, member), "t2"))

    assert result.thread_id == "42"
    assert member.resumed == [
        ("42", {"a": True, "c": True}, "not now", "clerk"),
        ("t2", {"a": True, "b": False, "c": True}, "not now", "clerk"),
    ]


def test_a_resumption_of_a_bool_decides_every_call() -> None:
    member = Recorder()
    resumed(Resumption(False, "", None).of(cast(Flow, member), "t", ["x"]))
    assert member.resumed == [("t", False, "", None)]


def test_a_pause_keeps_the_members_thread_with_the_position() -> None:
    paused = FlowResult(
        output=None,
        text="",
        agent="writer",
        stop_reason="approval",
        thread_id="t-9",
        pending_approvals=[ToolCall(id="c1", name="send", arguments={})],
        notes=["from the member"],
    )
    outcome = Outcome.paused(paused, {"step": 2, "thread": "stale"}, notes=["mine"])
    assert outcome.state == {"step": 2, "thread": "t-9"}
    assert outcome.stop_reason == "approval"
    assert [c.id for c in outcome.pending_approvals] == ["c1"]
    assert outcome.notes == ["from the member", "mine"]


class City(BaseModel):
    city: str


def test_a_kept_result_comes_back_as_json_with_its_stop_reason() -> None:
    result = FlowResult(
        output=City(city="Oslo"),
        text='{"city":"Oslo"}',
        agent="x",
        stop_reason="failed",
        thread_id="t",
    )
    back = result_from_json(result_to_json(result))
    assert back.output == {"city": "Oslo"}
    assert (back.text, back.agent, back.stop_reason, back.thread_id) == (
        '{"city":"Oslo"}',
        "x",
        "failed",
        None,
    )
    assert result_from_json({"text": "hi"}).stop_reason == "final"


def test_member_descriptions_fill_in_and_refuse_unknown_names() -> None:
    model = FunctionModel(lambda messages, params: "ok")
    members = {
        "billing": Agent("billing", model, instructions="Invoices and refunds. Long story."),
        "tech": Agent("tech", model),
    }
    about = member_descriptions("router 'desk'", "routes", members, {"tech": "Crashes."})
    assert about == {"billing": "Invoices and refunds.", "tech": "Crashes."}
    with pytest.raises(
        UserError, match=r"router 'desk': descriptions of unknown routes \['sales'\]"
    ):
        member_descriptions("router 'desk'", "routes", members, {"sales": "Deals."})


def test_check_rules_names_the_router_and_the_problem() -> None:
    check_rules("r", [RouteRule("a", pattern="refund")], ["a", "b"])
    with pytest.raises(UserError, match="router 'r': a rule routes to unknown route 'z'"):
        check_rules("r", [RouteRule("z", pattern="x")], ["a"])
    with pytest.raises(UserError, match="router 'r': a rule needs a pattern or a predicate"):
        check_rules("r", [RouteRule("a")], ["a"])
    with pytest.raises(UserError, match="router 'r': bad pattern"):
        check_rules("r", [RouteRule("a", pattern="(")], ["a"])


def test_classify_asks_for_one_label_under_an_enum() -> None:
    asked: list[tuple[list[Message], ModelRequestParameters]] = []

    def answer(messages: list[Message], params: ModelRequestParameters) -> str:
        asked.append((messages, params))
        return '"Billing."'

    label, said, response = asyncio.run(
        classify(FunctionModel(answer), "Pick one.", "my invoice", ["billing", "tech"])
    )
    assert (label, said) == ("billing", '"Billing."')
    assert response.text == '"Billing."'
    messages, params = asked[0]
    assert messages == [SystemMessage(content="Pick one."), UserMessage(content="my invoice")]
    assert params.output_schema == {"enum": ["billing", "tech"]}
    assert params.settings is not None
    assert params.settings.temperature == 0.0


def test_read_label_takes_json_or_a_bare_word_and_nothing_else() -> None:
    assert read_label("TECH", ["billing", "tech"]) == "tech"
    assert read_label('"billing"', ["billing", "tech"]) == "billing"
    assert read_label("sales", ["billing", "tech"]) is None
    assert read_label('["tech"]', ["billing", "tech"]) is None
