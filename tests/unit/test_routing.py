"""RouterModel, FallbackModel, EscalatingModel and check_response, over scripted models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from shoal.exceptions import ModelError, RemoteModelError, UnknownModelError, UserError
from shoal.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    Usage,
    UserMessage,
)
from shoal.models import (
    FunctionModel,
    Model,
    ModelProfile,
    ModelRequestParameters,
    ModelResponse,
    ResponseDone,
    RouteDecision,
    TextDelta,
    routing,
)
from shoal.models import registry as model_registry
from shoal.models.base import ModelStreamEvent
from shoal.models.routing import (
    EscalatingModel,
    FallbackModel,
    RouterModel,
    RouteRule,
    check_response,
)
from shoal.models.test import FunctionResult
from shoal.observability import LIBRARY_REGISTRY

LOOKUP = ToolDefinition(
    name="lookup_order",
    description="Look up an order.",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "integer"}, "note": {"type": "string"}},
        "required": ["order_id"],
    },
)
REFUND = ToolDefinition(
    name="refund",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "integer"}},
        "required": ["order_id"],
    },
)
TOOLS = ModelRequestParameters(tools=(LOOKUP, REFUND))
GOOD_CALL = '<tool_call>{"name": "lookup_order", "arguments": {"order_id": 42}}</tool_call>'
UNKNOWN_TOOL = '<tool_call>{"name": "rm_rf", "arguments": {"path": "/"}}</tool_call>'
WRONG_TYPES = '<tool_call>{"name": "lookup_order", "arguments": {"order_id": "abc"}}</tool_call>'
BROKEN_JSON = "<tool_call>{broken</tool_call>"


def user(text: str) -> list[Message]:
    return [UserMessage(content=text)]


def scripted(*answers: FunctionResult, name: str) -> FunctionModel:
    """A model giving ``answers`` in turn (the last one again when they run out)."""
    queue = list(answers)

    def answer(messages: list[Message], params: ModelRequestParameters) -> FunctionResult:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return FunctionModel(answer, name=name)


def failing(exc: BaseException, *, name: str) -> FunctionModel:
    def answer(messages: list[Message], params: ModelRequestParameters) -> FunctionResult:
        raise exc

    return FunctionModel(answer, name=name)


def slow(seconds: float, text: str, *, name: str) -> FunctionModel:
    async def answer(messages: list[Message], params: ModelRequestParameters) -> FunctionResult:
        await asyncio.sleep(seconds)
        return text

    return FunctionModel(answer, name=name)


class StreamModel(Model):
    """Streams ``pieces`` (text, or an exception to raise, or an event to wait for), then
    answers with the text streamed so far."""

    def __init__(self, *pieces: str | BaseException | asyncio.Event, name: str) -> None:
        self.pieces = pieces
        self.name = name
        self.profile = ModelProfile(family="test")
        self.requests: list[list[Message]] = []

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        self.requests.append(list(messages))
        text = ""
        for piece in self.pieces:
            if isinstance(piece, BaseException):
                raise piece
            if isinstance(piece, asyncio.Event):
                await piece.wait()
                continue
            text += piece
            yield TextDelta(piece)
        yield ResponseDone(ModelResponse(text=text, raw=text, model_name=self.name))


async def collect(
    model: Model, messages: Sequence[Message], params: ModelRequestParameters | None = None
) -> tuple[list[str], ModelResponse]:
    deltas: list[str] = []
    final: ModelResponse | None = None
    async for event in model.request_stream(messages, params or ModelRequestParameters()):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            final = event.response
    assert final is not None
    return deltas, final


def counted(router: str, kind: str, model: str) -> float:
    labels = {"router": router, "kind": kind, "model": model}
    return LIBRARY_REGISTRY.get_sample_value("shoal_routing_decisions_total", labels) or 0.0


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """String references resolve to scripted models named after them; the list records them."""
    seen: list[str] = []

    def resolve(reference: str | Model) -> Model:
        if isinstance(reference, Model):
            return reference
        seen.append(reference)
        if reference == "missing":
            raise UnknownModelError("unknown model 'missing'")
        return FunctionModel(lambda m, p: f"answer from {reference}", name=reference)

    monkeypatch.setattr(model_registry, "resolve_model", resolve)
    return seen


# -- check_response --------------------------------------------------------------------------


@pytest.fixture
def respond() -> Callable[[FunctionResult], Any]:
    async def run(answer: FunctionResult) -> ModelResponse:
        return await FunctionModel(lambda m, p: answer).request(user("x"), TOOLS)

    return run


async def test_a_valid_call_is_accepted(respond: Any) -> None:
    assert check_response(await respond(GOOD_CALL), TOOLS) is None


async def test_arguments_are_repaired_before_checking(respond: Any) -> None:
    response = await respond(ToolCall(name="lookup_order", arguments={"order_id": "42"}))

    assert check_response(response, TOOLS) is None


async def test_an_unknown_tool_is_rejected_with_the_offered_ones(respond: Any) -> None:
    reason = check_response(await respond(UNKNOWN_TOOL), TOOLS)

    assert reason == "unknown tool 'rm_rf'; available tools: lookup_order, refund"


async def test_arguments_of_the_wrong_type_are_rejected(respond: Any) -> None:
    reason = check_response(await respond(WRONG_TYPES), TOOLS)

    assert reason is not None
    assert reason.startswith("lookup_order: invalid arguments (order_id: 'abc'")


async def test_a_missing_required_argument_is_rejected(respond: Any) -> None:
    reason = check_response(await respond(ToolCall(name="refund", arguments={})), TOOLS)

    assert reason == "refund: invalid arguments ('order_id' is a required property)"


async def test_broken_json_is_rejected_with_the_parse_error(respond: Any) -> None:
    response = await respond(BROKEN_JSON)

    assert response.parse_error is not None
    assert check_response(response, TOOLS) == response.parse_error


async def test_prose_when_a_call_is_required_is_rejected(respond: Any) -> None:
    params = ModelRequestParameters(tools=(LOOKUP, REFUND), tool_choice="required")

    reason = check_response(await respond("I would look up the order."), params)

    assert reason == "a tool call is required (one of: lookup_order, refund)"
    assert check_response(await respond("fine"), TOOLS) is None


async def test_a_call_to_a_tool_not_allowed_or_not_chosen_is_rejected(respond: Any) -> None:
    allowed = ModelRequestParameters(tools=(LOOKUP, REFUND), allowed_tools=("refund",))
    named = ModelRequestParameters(tools=(LOOKUP, REFUND), tool_choice="refund")
    none = ModelRequestParameters(tools=(LOOKUP, REFUND), tool_choice="none")
    response = await respond(GOOD_CALL)

    assert check_response(response, allowed) == (
        "unknown tool 'lookup_order'; available tools: refund"
    )
    assert check_response(response, named) is not None
    assert check_response(response, none) == (
        "unknown tool 'lookup_order'; available tools: none may be called here"
    )


async def test_the_narrowed_call_schema_is_the_one_checked(respond: Any) -> None:
    narrowed = {
        "type": "object",
        "properties": {"order_id": {"type": "integer"}, "note": {"type": "string"}},
        "required": ["order_id", "note"],
    }
    params = ModelRequestParameters(tools=(LOOKUP,), call_schemas={"lookup_order": narrowed})

    reason = check_response(await respond(GOOD_CALL), params)

    assert reason == "lookup_order: invalid arguments ('note' is a required property)"


async def test_a_text_answer_is_checked_against_the_output_schema(respond: Any) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    params = ModelRequestParameters(output_schema=schema)

    assert check_response(await respond("not json"), params) == "the answer is not JSON"
    reason = check_response(await respond('{"n": "two"}'), params)
    assert reason is not None
    assert reason.startswith("the answer does not match the required format (n:")
    assert check_response(await respond('{"n": 2}'), params) is None


# -- EscalatingModel -------------------------------------------------------------------------


async def test_an_accepted_first_tier_answer_is_returned_and_the_next_tier_not_asked() -> None:
    small = scripted(GOOD_CALL, name="small")
    large = scripted(GOOD_CALL, name="large")
    model = EscalatingModel([small, large])

    _, response = await collect(model, user("order 42?"), TOOLS)

    assert response.tool_calls[0].arguments == {"order_id": 42}
    assert response.decisions == ()
    assert response.model_name == "small"
    assert len(small.requests) == 1
    assert large.requests == []


@pytest.mark.parametrize("bad", [UNKNOWN_TOOL, WRONG_TYPES, BROKEN_JSON, "Let me check."])
async def test_a_tier_that_keeps_failing_escalates_with_the_original_messages(bad: str) -> None:
    small = scripted(bad, name="small")
    large = scripted(GOOD_CALL, name="large")
    model = EscalatingModel([small, large], attempts=2, name="tiers")
    params = ModelRequestParameters(tools=(LOOKUP, REFUND), tool_choice="required")
    before = counted("tiers", "escalation", "large")

    _, response = await collect(model, user("order 42?"), params)

    assert response.model_name == "large"
    assert len(small.requests) == 2
    assert [r.messages for r in large.requests] == [user("order 42?")]
    (decision,) = response.decisions
    assert decision.router == "tiers"
    assert decision.kind == "escalation"
    assert decision.model == "large"
    assert decision.reason == f"small: {check_response(await small.request([], params), params)}"
    assert counted("tiers", "escalation", "large") == before + 1


async def test_a_rejected_try_is_retried_with_the_output_and_the_reason() -> None:
    small = scripted(UNKNOWN_TOOL, GOOD_CALL, name="small")
    large = scripted(GOOD_CALL, name="large")
    model = EscalatingModel([small, large])

    _, response = await collect(model, user("order 42?"), TOOLS)

    assert response.model_name == "small"
    assert response.decisions == ()
    assert large.requests == []
    retry = small.requests[1].messages
    assert retry[:1] == user("order 42?")
    assert retry[1] == AssistantMessage(content=UNKNOWN_TOOL)
    assert retry[2] == UserMessage(
        content="Error: unknown tool 'rm_rf'; available tools: lookup_order, refund. Answer again."
    )


async def test_calls_without_raw_text_are_written_back_as_tool_call_blocks() -> None:
    bad = ToolCall(name="rm_rf", arguments={"path": "/"})
    small = scripted(bad, GOOD_CALL, name="small")
    model = EscalatingModel([small, scripted("unused", name="large")])

    await collect(model, user("order 42?"), TOOLS)

    written = small.requests[1].messages[1]
    assert isinstance(written, AssistantMessage)
    assert written.content is not None
    body = written.content.removeprefix("<tool_call>").removesuffix("</tool_call>")
    assert json.loads(body) == {"name": "rm_rf", "arguments": {"path": "/"}}


async def test_the_usage_of_every_try_is_added_up() -> None:
    def costly(text: str, tokens: int) -> ModelResponse:
        usage = Usage(requests=1, prompt_tokens=tokens, completion_tokens=1)
        return ModelResponse(text=text, raw=text, usage=usage)

    small = scripted(costly("no", 10), name="small")
    large = scripted(costly('{"ok": true}', 100), name="large")
    params = ModelRequestParameters(output_schema={"type": "object"})
    model = EscalatingModel([small, large], attempts=3)

    _, response = await collect(model, user("q"), params)

    assert response.usage.requests == 4
    assert response.usage.prompt_tokens == 130
    assert response.usage.completion_tokens == 4


async def test_a_validator_rejects_answers_the_checks_accept() -> None:
    seen: list[list[Message]] = []

    def validator(response: ModelResponse, messages: Sequence[Message]) -> str | None:
        seen.append(list(messages))
        return "too short" if len(response.text or "") < 10 else None

    small = scripted("short", name="small")
    large = scripted("a long and careful answer", name="large")
    model = EscalatingModel([small, large], validator=validator)

    _, response = await collect(model, user("explain"))

    assert response.text == "a long and careful answer"
    assert response.decisions[0].reason == "small: too short"
    assert small.requests[1].messages[-1] == UserMessage(content="Error: too short. Answer again.")
    # the validator judges each try of the lower tiers against the conversation asked about
    assert seen == [user("explain"), user("explain")]


async def test_an_async_validator_is_awaited() -> None:
    async def validator(response: ModelResponse, messages: Sequence[Message]) -> str | None:
        await asyncio.sleep(0)
        return None if "yes" in (response.text or "") else "say yes"

    small = scripted("no", "yes", name="small")
    model = EscalatingModel([small, scripted("x", name="large")], validator=validator)

    _, response = await collect(model, user("q"))

    assert response.text == "yes"
    assert len(small.requests) == 2


async def test_the_validator_is_not_asked_about_output_the_checks_reject() -> None:
    asked: list[ModelResponse] = []

    def validator(response: ModelResponse, messages: Sequence[Message]) -> str | None:
        asked.append(response)
        return None

    model = EscalatingModel(
        [scripted(BROKEN_JSON, name="small"), scripted(GOOD_CALL, name="large")],
        validator=validator,
        attempts=1,
    )

    _, response = await collect(model, user("q"), TOOLS)

    assert response.model_name == "large"
    assert asked == []


async def test_the_last_tier_answer_is_returned_whatever_it_is() -> None:
    small = scripted(UNKNOWN_TOOL, name="small")
    large = scripted(UNKNOWN_TOOL, name="large")
    model = EscalatingModel([small, large], attempts=1)

    _, response = await collect(model, user("q"), TOOLS)

    assert response.tool_calls[0].name == "rm_rf"
    assert response.model_name == "large"
    assert len(large.requests) == 1
    assert [d.model for d in response.decisions] == ["large"]


async def test_three_tiers_escalate_one_step_at_a_time() -> None:
    tiers = [scripted("nope", name=n) for n in ("t1", "t2")] + [scripted("{}", name="t3")]
    params = ModelRequestParameters(output_schema={"type": "object"})

    _, response = await collect(EscalatingModel(tiers, attempts=1), user("q"), params)

    assert [(d.kind, d.model) for d in response.decisions] == [
        ("escalation", "t2"),
        ("escalation", "t3"),
    ]
    assert response.decisions[1].reason == "t2: the answer is not JSON"


async def test_a_lower_tier_is_not_streamed_until_its_answer_is_accepted() -> None:
    gate = asyncio.Event()
    small = StreamModel("hel", "lo", gate, name="small")
    model = EscalatingModel([small, scripted("unused", name="large")])
    stream = model.request_stream(user("q"), ModelRequestParameters())

    first = asyncio.ensure_future(anext(stream))
    for _ in range(20):
        await asyncio.sleep(0)
    assert small.requests  # asked, and streaming to the escalation model...
    assert not first.done()  # ...which holds the pieces back until the answer is complete
    gate.set()

    assert (await first) == TextDelta("hel")
    rest = [event async for event in stream]
    assert rest[0] == TextDelta("lo")
    assert isinstance(rest[-1], ResponseDone)
    assert rest[-1].response.text == "hello"


async def test_the_last_tier_streams_as_it_answers() -> None:
    gate = asyncio.Event()
    large = StreamModel("hel", gate, "lo", name="large")
    model = EscalatingModel([scripted("{bad", name="small"), large], attempts=1)
    params = ModelRequestParameters(output_schema={"type": "object"})
    stream = model.request_stream(user("q"), params)

    # the first piece arrives while the last tier is still answering
    assert await asyncio.wait_for(anext(stream), timeout=10) == TextDelta("hel")
    gate.set()
    rest = [event async for event in stream]
    assert rest[0] == TextDelta("lo")
    assert isinstance(rest[-1], ResponseDone)
    assert [d.model for d in rest[-1].response.decisions] == ["large"]


async def test_a_rejected_try_streams_nothing() -> None:
    small = scripted("not json", '{"a": 1}', name="small")
    model = EscalatingModel([small, scripted("{}", name="large")])
    params = ModelRequestParameters(output_schema={"type": "object"})

    deltas, response = await collect(model, user("q"), params)

    assert "".join(deltas) == '{"a": 1}' == response.text


async def test_an_error_in_a_tier_propagates() -> None:
    large = scripted("x", name="large")
    model = EscalatingModel([failing(ModelError("engine died"), name="small"), large])

    with pytest.raises(ModelError, match="engine died"):
        await collect(model, user("q"))
    assert large.requests == []


async def test_inner_decisions_follow_the_escalation() -> None:
    inner = FallbackModel(
        [failing(ModelError("down"), name="a"), scripted("{}", name="b")], name="pair"
    )
    model = EscalatingModel([scripted("nope", name="small"), inner], attempts=1)
    params = ModelRequestParameters(output_schema={"type": "object"})

    _, response = await collect(model, user("q"), params)

    assert [(d.router, d.kind, d.model) for d in response.decisions] == [
        ("escalation", "escalation", "pair"),
        ("pair", "fallback", "b"),
    ]


def test_escalation_needs_tiers_and_attempts() -> None:
    with pytest.raises(UserError, match="at least one tier"):
        EscalatingModel([])
    with pytest.raises(UserError, match="attempts"):
        EscalatingModel(["a"], attempts=0)


# -- FallbackModel ---------------------------------------------------------------------------


async def test_the_next_model_answers_when_one_fails() -> None:
    first = failing(RemoteModelError("HTTP 503 from server", status=503), name="first")
    second = scripted("hello", name="second")
    model = FallbackModel([first, second], name="safe")
    before = counted("safe", "fallback", "second")

    deltas, response = await collect(model, user("hi"))

    assert "".join(deltas) == "hello"
    assert response.model_name == "second"
    assert response.decisions == (
        RouteDecision(
            router="safe",
            kind="fallback",
            model="second",
            reason="first failed: HTTP 503 from server",
        ),
    )
    assert [r.messages for r in second.requests] == [user("hi")]
    assert counted("safe", "fallback", "second") == before + 1


async def test_the_first_model_answering_makes_no_decision() -> None:
    second = scripted("unused", name="second")

    _, response = await collect(FallbackModel([scripted("hi", name="first"), second]), user("q"))

    assert response.model_name == "first"
    assert response.decisions == ()
    assert second.requests == []


async def test_a_slow_model_times_out_and_the_next_one_answers() -> None:
    first = slow(30, "too late", name="first")
    second = scripted("in time", name="second")

    _, response = await collect(FallbackModel([first, second], timeout=0.05), user("q"))

    assert response.text == "in time"
    assert response.decisions[0].reason == "first failed: first did not answer within 0.05 s"


async def test_the_timeout_falls_back_whatever_on_says() -> None:
    model = FallbackModel([slow(30, "x", name="a"), scripted("y", name="b")], timeout=0.05, on=())

    _, response = await collect(model, user("q"))

    assert response.text == "y"


async def test_a_users_mistake_propagates_at_once() -> None:
    second = scripted("unused", name="second")
    model = FallbackModel(
        [failing(UserError("bad request"), name="first"), second], on=(Exception,)
    )

    with pytest.raises(UserError, match="bad request"):
        await collect(model, user("q"))
    assert second.requests == []


async def test_errors_not_in_on_propagate() -> None:
    second = scripted("unused", name="second")

    with pytest.raises(ValueError, match="bug"):
        await collect(FallbackModel([failing(ValueError("bug"), name="a"), second]), user("q"))
    assert second.requests == []

    model = FallbackModel([failing(ValueError("bug"), name="a"), second], on=(ValueError,))
    _, response = await collect(model, user("q"))
    assert response.model_name == "second"


async def test_an_error_before_any_text_falls_back_while_streaming() -> None:
    first = StreamModel(RemoteModelError("reset", status=None), name="first")
    second = StreamModel("fine", name="second")

    deltas, response = await collect(FallbackModel([first, second]), user("q"))

    assert deltas == ["fine"]
    assert response.decisions[0].model == "second"


async def test_an_error_after_text_was_streamed_propagates() -> None:
    first = StreamModel("par", RemoteModelError("reset mid-answer", status=None), name="first")
    second = StreamModel("fine", name="second")
    seen: list[ModelStreamEvent] = []

    async def consume() -> None:
        async for event in FallbackModel([first, second]).request_stream(
            user("q"), ModelRequestParameters()
        ):
            seen.append(event)

    with pytest.raises(RemoteModelError, match="reset mid-answer"):
        await consume()
    assert seen == [TextDelta("par")]
    assert second.requests == []


async def test_when_every_model_fails_the_last_error_lists_them_all() -> None:
    first = failing(ModelError("out of memory"), name="first")
    second = failing(RemoteModelError("HTTP 502", status=502, url="http://h/v1"), name="second")

    with pytest.raises(RemoteModelError) as caught:
        await collect(FallbackModel([first, second]), user("q"))

    assert str(caught.value) == ("every model failed (first: out of memory; second: HTTP 502)")
    assert caught.value.status == 502
    assert caught.value.url == "http://h/v1"


async def test_a_fallback_references_models_by_name_resolved_on_first_use(
    resolved: list[str],
) -> None:
    model = FallbackModel([failing(ModelError("down"), name="primary"), "backup"])
    assert resolved == []

    _, response = await collect(model, user("q"))

    assert response.text == "answer from backup"
    assert response.decisions[0].model == "backup"
    assert resolved == ["backup"]


def test_fallback_needs_models_and_a_positive_timeout() -> None:
    with pytest.raises(UserError):
        FallbackModel([])
    with pytest.raises(UserError, match="timeout"):
        FallbackModel(["a"], timeout=0)


# -- shared behaviour of the wrappers ----------------------------------------------------------


class Lifecycle(FunctionModel):
    def __init__(self, name: str, context: int) -> None:
        super().__init__(lambda m, p: "ok", name=name, profile=ModelProfile(context_length=context))
        self.events: list[str] = []

    async def prepare(self) -> None:
        self.events.append("prepare")

    async def close(self) -> None:
        self.events.append("close")

    def count_tokens(self, messages: Sequence[Message], params: ModelRequestParameters) -> int:
        return 1000 + self.profile.context_length


@pytest.mark.parametrize("wrapper", [FallbackModel, EscalatingModel])
async def test_profile_context_and_lifecycle_delegate(wrapper: Any) -> None:
    first, second = Lifecycle("first", 4096), Lifecycle("second", 2048)
    model = wrapper([first, second])

    assert model.profile is first.profile
    assert model.context_length == 2048  # a request must fit whichever model answers
    assert model.count_tokens(user("q"), ModelRequestParameters()) == 1000 + 4096
    await model.prepare()
    await model.close()
    assert first.events == second.events == ["prepare", "close"]


@pytest.mark.parametrize("wrapper", [FallbackModel, EscalatingModel])
async def test_close_leaves_unresolved_references_alone(wrapper: Any, resolved: list[str]) -> None:
    first = Lifecycle("first", 4096)

    await wrapper([first, "never-used"]).close()

    assert first.events == ["close"]
    assert resolved == []


async def test_close_closes_every_member_even_when_one_fails() -> None:
    class Broken(Lifecycle):
        async def close(self) -> None:
            raise ModelError("cannot close")

    last = Lifecycle("last", 10)

    with pytest.raises(ModelError, match="cannot close"):
        await FallbackModel([Broken("broken", 10), last]).close()
    assert last.events == ["close"]


# -- RouterModel -----------------------------------------------------------------------------


def classifier_answering(*answers: FunctionResult) -> FunctionModel:
    return scripted(*answers, name="classifier")


def make_router(classifier: Model | None = None, **options: Any) -> RouterModel:
    routes: dict[str, str | Model] = {
        "simple": scripted("simple answer", name="small"),
        "complex": scripted("complex answer", name="large"),
    }
    return RouterModel(
        routes,
        rules=options.pop("rules", [RouteRule(route="complex", pattern=r"refund|invoice")]),
        classifier=classifier,
        labels=options.pop(
            "labels",
            {"simple": "a lookup or a short question", "complex": "needs reasoning"},
        ),
        default="simple",
        **options,
    )


async def test_a_matching_rule_routes_without_asking_the_classifier() -> None:
    classifier = classifier_answering('"simple"')
    router = make_router(classifier, name="front")
    before = counted("front", "rule", "large")

    model, decisions = await router.route(user("I want a REFUND for order 4"))

    assert model.name == "large"
    assert decisions == (
        RouteDecision(
            router="front", kind="rule", model="large", reason="pattern 'refund|invoice'"
        ),
    )
    assert classifier.requests == []
    assert counted("front", "rule", "large") == before + 1


async def test_rules_apply_in_order_and_may_be_predicates() -> None:
    rules = [
        RouteRule(route="simple", when=lambda text: len(text) < 12, reason="short"),
        RouteRule(route="complex", pattern="."),
    ]
    router = make_router(rules=rules)

    assert (await router.route(user("hi there")))[1][0].reason == "short"
    assert (await router.route(user("a much longer question")))[0].name == "large"


async def test_a_rule_with_a_pattern_and_a_predicate_needs_both() -> None:
    rule = RouteRule(route="complex", pattern="order", when=lambda text: "42" in text)

    assert rule.matches("Order 42")
    assert not rule.matches("order 7")
    assert not rule.matches("item 42")


@pytest.mark.parametrize("answer", ['"complex"', "complex", " Complex\n", '"COMPLEX"', "complex."])
async def test_the_classifier_picks_the_route(answer: str) -> None:
    classifier = classifier_answering(answer)
    router = make_router(classifier)

    model, decisions = await router.route(user("why is the sky blue?"))

    assert model.name == "large"
    (decision,) = decisions
    assert decision.model_copy(update={"usage": None}) == RouteDecision(
        router="router", kind="classifier", model="large", reason="classified as complex"
    )
    # route() is outside any response: the classifier's request travels with the decision
    assert decision.usage is not None
    assert decision.usage.requests == 1


async def test_what_the_classifier_is_asked() -> None:
    classifier = classifier_answering('"simple"')
    router = make_router(classifier)
    conversation: list[Message] = [
        SystemMessage(content="You are helpful."),
        UserMessage(content="first question"),
        AssistantMessage(content="first answer"),
        UserMessage(content="where is order 5?"),
        AssistantMessage(tool_calls=(ToolCall(id="c1", name="lookup_order"),)),
        ToolMessage(tool_call_id="c1", name="lookup_order", content="shipped"),
    ]

    await router.route(conversation)

    (request,) = classifier.requests
    system, question = request.messages
    assert isinstance(system, SystemMessage)
    assert system.content.splitlines()[-2:] == [
        "simple: a lookup or a short question",
        "complex: needs reasoning",
    ]
    assert question == UserMessage(content="where is order 5?")
    assert request.params.output_schema == {"enum": ["simple", "complex"]}
    assert request.params.settings.temperature == 0
    assert request.params.settings.max_tokens == 16
    assert request.params.tools == ()


async def test_instructions_replace_the_classifier_prompt() -> None:
    classifier = classifier_answering("simple")
    router = make_router(classifier, instructions="Pick a lane.", labels=None)

    await router.route(user("hello"))

    system = classifier.requests[0].messages[0]
    assert system.content == "Pick a lane.\nLabels:\nsimple: simple\ncomplex: complex"


@pytest.mark.parametrize("answer", ["medium", '{"label": "complex"}', '["complex"]', ""])
async def test_an_answer_that_is_not_a_label_routes_to_the_default(answer: str) -> None:
    router = make_router(classifier_answering(answer), name="r")

    model, (decision,) = await router.route(user("hmm"))

    assert model.name == "small"
    assert decision.kind == "default"
    assert decision.reason.startswith("classifier answered ")
    assert decision.reason.endswith(", not a label")


async def test_a_failing_classifier_routes_to_the_default_and_is_asked_again_later() -> None:
    classifier = failing(RemoteModelError("connection refused", status=None), name="classifier")
    router = make_router(classifier)

    model, (decision,) = await router.route(user("hmm"))
    await router.route(user("hmm"))

    assert model.name == "small"
    assert decision.kind == "default"
    assert decision.reason == "classifier classifier failed: connection refused"
    assert len(classifier.requests) == 2  # an error is not remembered


async def test_a_misconfigured_classifier_is_the_callers_error(resolved: list[str]) -> None:
    router = make_router("missing")  # type: ignore[arg-type]

    with pytest.raises(UnknownModelError):
        await router.route(user("hmm"))


async def test_classifications_are_cached_per_last_user_message() -> None:
    classifier = classifier_answering('"complex"', '"simple"', '"simple"')
    router = make_router(classifier)
    run: list[Message] = [UserMessage(content="why?")]

    first = await router.route(run)
    # a later step of the same run: same last user message, more messages after it
    run += [AssistantMessage(content="thinking"), UserMessage(content="why?")]
    second = await router.route(run)
    third = await router.route(user("something else"))

    assert first[0] is second[0]
    assert first[1][0].reason == second[1][0].reason == "classified as complex"
    # the first classified (and paid for it); the second was served from the cache
    assert first[1][0].usage is not None
    assert second[1][0].usage is None
    assert first[0].name == "large"
    assert third[0].name == "small"
    assert [r.messages[-1] for r in classifier.requests] == [
        UserMessage(content="why?"),
        UserMessage(content="something else"),
    ]


async def test_the_classification_cache_forgets_the_least_recent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(routing, "CLASSIFICATION_CACHE_SIZE", 2)
    classifier = classifier_answering("simple")
    router = make_router(classifier)

    for text in ("a", "b", "a", "c", "a", "b"):
        await router.route(user(text))

    # a, b asked; a cached (now most recent); c evicts b; a cached; b asked again
    assert [r.messages[-1].content for r in classifier.requests] == ["a", "b", "c", "b"]


async def test_no_rule_and_no_classifier_routes_to_the_default() -> None:
    router = make_router()

    model, (decision,) = await router.route(user("hello"))

    assert model.name == "small"
    assert decision == RouteDecision(
        router="router", kind="default", model="small", reason="no rule matched"
    )


async def test_a_conversation_without_user_text_routes_to_the_default() -> None:
    classifier = classifier_answering("complex")
    router = make_router(classifier)

    _, (decision,) = await router.route([SystemMessage(content="sys")])

    assert decision.reason == "no user message to route by"
    assert classifier.requests == []


async def test_nested_routers_route_through_and_report_both_decisions() -> None:
    inner = RouterModel(
        {"tiny": scripted("t", name="tiny"), "mid": scripted("m", name="mid")},
        rules=[RouteRule(route="mid", pattern="order")],
        default="tiny",
        name="inner",
    )
    outer = RouterModel(
        {"local": inner, "cloud": scripted("c", name="cloud")},
        rules=[RouteRule(route="cloud", pattern="contract")],
        default="local",
        name="outer",
    )

    model, decisions = await outer.route(user("where is my order?"))

    assert model.name == "mid"
    assert [(d.router, d.kind, d.model) for d in decisions] == [
        ("outer", "default", "inner"),
        ("inner", "rule", "mid"),
    ]


async def test_a_request_to_the_router_streams_the_chosen_model_with_the_decisions() -> None:
    classifier = classifier_answering(
        ModelResponse(text='"complex"', usage=Usage(requests=1, prompt_tokens=50))
    )
    router = make_router(classifier)

    deltas, response = await collect(router, user("why is the sky blue?"))
    _, again = await collect(router, user("why is the sky blue?"))

    assert "".join(deltas) == "complex answer"
    assert len(deltas) > 1
    assert response.model_name == "large"
    assert [d.kind for d in response.decisions] == ["classifier"]
    # the classification is paid for once, in the request that made it
    assert response.usage.requests == 2
    assert response.usage.prompt_tokens - again.usage.prompt_tokens == 50
    assert again.usage.requests == 1


async def test_router_profile_and_context() -> None:
    small, large = Lifecycle("small", 8192), Lifecycle("large", 2048)
    classifier = Lifecycle("classifier", 512)
    router = RouterModel({"a": small, "b": large}, classifier=classifier, default="a")

    assert router.profile is small.profile
    assert router.context_length == 2048
    assert router.count_tokens(user("q"), ModelRequestParameters()) == 1000 + 8192
    await router.prepare()
    await router.close()
    assert small.events == large.events == classifier.events == ["prepare", "close"]


async def test_routes_given_by_reference_are_resolved_when_chosen(resolved: list[str]) -> None:
    router = RouterModel(
        {"a": "model-a", "b": "model-b"}, rules=[RouteRule(route="b", pattern="b")], default="a"
    )
    assert resolved == []

    model, _ = await router.route(user("b please"))

    assert model.name == "model-b"
    assert resolved == ["model-b"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"default": "nope"}, "default 'nope' is not one of its routes"),
        ({"rules": [RouteRule(route="nope", pattern="x")]}, "unknown route 'nope'"),
        ({"rules": [RouteRule(route="a")]}, "needs a pattern or a predicate"),
        ({"rules": [RouteRule(route="a", pattern="(")]}, "bad pattern"),
        ({"labels": {"a": "x", "z": "y"}}, "labels \\['z'\\] are not routes"),
    ],
)
def test_router_configuration_errors(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"default": "a", **options}

    with pytest.raises(UserError, match=message):
        RouterModel({"a": "x", "b": "y"}, **arguments)
    with pytest.raises(UserError, match="at least one route"):
        RouterModel({}, default="a")
