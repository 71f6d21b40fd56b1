"""Tool strategies: what each one asks of the model, and the grammar rules for copied numbers.

Each strategy is seen through the :class:`ModelRequestParameters` a scripted model receives:

- ``grammar``: text or a call, constrained; ``parse``: the same, unconstrained;
- ``relevance``: code picks the relevant tools (step 1 must call one of them, or answer when
  none is relevant);
- ``two-phase``: a router request (an enum of tool names and ``none``, no tools) picks the
  tool step 1 must call, or ``none`` for a text answer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shoal import Agent, FunctionModel, tool
from shoal.agent.agent import TOOL_STRATEGIES
from shoal.exceptions import UserError
from shoal.messages import Message, SystemMessage, ToolCall, ToolDefinition, Usage, UserMessage
from shoal.models import ModelRequestParameters, ModelResponse
from shoal.models.llamacpp import LlamaCppModel
from shoal.models.profiles import ModelProfile
from shoal.threads import InMemoryThreadStore
from shoal.toolcalls import build_tool_grammar
from shoal.toolcalls.grammar import copied_number_rules, numbers_in
from shoal.tools import narrow_to_mentioned, relevant_tools

from .grammar_checks import assert_parses, converter, rules_of

Answer = str | ToolCall | list[ToolCall] | ModelResponse

ORDERS = {"1042": {"order_id": "1042", "status": "shipped"}}


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by its id.

    Args:
        order_id: The order number.
    """
    return ORDERS.get(order_id, {"error": f"no order {order_id}"})


@tool
def cancel_order(order_id: str) -> str:
    """Cancel an order."""
    return f"order {order_id} cancelled"


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


TOOLS = [lookup_order, cancel_order, add]
NAMES = ["lookup_order", "cancel_order", "add"]


class Recorder:
    """A scripted model that keeps the parameters of every request."""

    def __init__(self, *answers: Answer, profile: ModelProfile | None = None) -> None:
        self.queue = list(answers)
        kwargs: dict[str, Any] = {} if profile is None else {"profile": profile}
        self.model = FunctionModel(self._answer, **kwargs)

    def _answer(self, messages: list[Message], params: ModelRequestParameters) -> Answer:
        return self.queue.pop(0)

    @property
    def params(self) -> list[ModelRequestParameters]:
        return [r.params for r in self.model.requests]

    @property
    def choices(self) -> list[str]:
        return [p.tool_choice for p in self.params]


def order_call(order_id: str = "1042") -> ToolCall:
    return ToolCall(name="lookup_order", arguments={"order_id": order_id})


def agent(recorder: Recorder, strategy: str | None, **kwargs: Any) -> Agent[str]:
    return Agent(
        "a", recorder.model, tools=kwargs.pop("tools", TOOLS), tool_strategy=strategy, **kwargs
    )


# -- configuration --------------------------------------------------------------------------


def test_the_strategies() -> None:
    assert set(TOOL_STRATEGIES) == {"grammar", "relevance", "gated", "two-phase", "parse"}
    assert TOOL_STRATEGIES["parse"] == ("model", False)
    assert all(constrained for name, (_, constrained) in TOOL_STRATEGIES.items() if name != "parse")


@pytest.mark.parametrize("strategy", ["nope", "two_phase", "GRAMMAR", ""])
def test_unknown_strategy_is_a_user_error(strategy: str) -> None:
    with pytest.raises(UserError) as info:
        Agent("a", FunctionModel(lambda m, p: "x"), tools=TOOLS, tool_strategy=strategy)

    message = str(info.value)
    assert f"tool_strategy {strategy!r}" in message
    for name in TOOL_STRATEGIES:
        assert name in message


@pytest.mark.parametrize("strategy", [*TOOL_STRATEGIES, None])
def test_known_strategies_are_kept(strategy: str | None) -> None:
    built = Agent("a", FunctionModel(lambda m, p: "x"), tool_strategy=strategy)

    assert built.tool_strategy == strategy


# -- grammar and parse: the model decides --------------------------------------------------


@pytest.mark.parametrize(("strategy", "constrained"), [("grammar", True), ("parse", False)])
async def test_model_decides_with_or_without_a_grammar(strategy: str, constrained: bool) -> None:
    recorder = Recorder(order_call(), "It has shipped.")

    result = await agent(recorder, strategy).run("Where is my order 1042?")

    assert result.output == "It has shipped."
    assert recorder.choices == ["auto", "auto"]
    for params in recorder.params:
        assert params.constrained is constrained
        assert params.allowed_tools is None
        assert params.output_schema is None
        assert [t.name for t in params.tools] == NAMES
        assert [t.name for t in params.offered_tools()] == NAMES
    assert result.notes == []
    assert result.usage.requests == 2


async def test_parse_strategy_still_reads_calls_from_free_text() -> None:
    raw = '{"name": "add", "arguments": {"a": "2", "b": 3}}'
    recorder = Recorder(raw, "5")

    result = await agent(recorder, "parse").run("add 2 and 3")

    assert result.tool_calls[0].result == 5
    assert result.output == "5"


# -- relevance: code picks the tools -----------------------------------------------------


async def test_relevance_requires_a_call_to_the_relevant_tools() -> None:
    recorder = Recorder(order_call(), "It has shipped.")
    query = "Where is my order 1042?"

    result = await agent(recorder, "relevance").run(query)

    first, second = recorder.params
    expected = tuple(t.name for t in relevant_tools(query, [t.definition for t in TOOLS]))
    assert expected == ("lookup_order", "cancel_order")
    assert first.tool_choice == "required"
    assert first.allowed_tools == expected
    assert first.constrained
    assert first.call_required
    assert [t.name for t in first.offered_tools()] == list(expected)
    assert [t.name for t in first.tools] == NAMES  # all still declared
    # after a successful call, the next step answers from the result
    assert second.tool_choice == "none"
    assert second.allowed_tools is None
    assert result.output == "It has shipped."
    assert result.notes == ["step 1: tools matching the request: lookup_order, cancel_order"]


async def test_relevance_with_a_clear_winner_offers_it_alone() -> None:
    recorder = Recorder(ToolCall(name="add", arguments={"a": 2, "b": 3}), "5")

    await agent(recorder, "relevance").run("add 2 and 3")

    assert recorder.params[0].allowed_tools == ("add",)
    assert recorder.choices == ["required", "none"]


async def test_relevance_answers_directly_when_nothing_matches() -> None:
    recorder = Recorder("I only handle orders.")

    result = await agent(recorder, "relevance").run("What is the weather in Paris?")

    [only] = recorder.params
    assert only.tool_choice == "none"
    assert only.allowed_tools is None
    assert only.offered_tools() == ()
    assert result.output == "I only handle orders."
    assert result.stop_reason == "final"
    assert result.notes == ["step 1: no tool matches the request; answering directly"]


async def test_relevance_retries_a_failed_call_on_the_same_tools() -> None:
    recorder = Recorder(
        ToolCall(name="add", arguments={"a": "two", "b": 3}),
        ToolCall(name="add", arguments={"a": 2, "b": 3}),
        "5",
    )

    result = await agent(recorder, "relevance").run("add 2 and 3")

    assert recorder.choices == ["required", "required", "none"]
    assert [p.allowed_tools for p in recorder.params] == [("add",), ("add",), None]
    assert result.retries == 1
    assert [r.outcome for r in result.tool_calls] == ["invalid", "ok"]


# -- gated: code narrows, the model decides ---------------------------------------------------


async def test_gated_offers_the_relevant_tools_and_leaves_the_choice_to_the_model() -> None:
    recorder = Recorder(order_call(), "It has shipped.")

    result = await agent(recorder, "gated").run("Where is my order 1042?")

    first, second = recorder.params
    assert first.tool_choice == "auto"  # the model may still answer in text
    assert not first.call_required
    assert first.allowed_tools == ("lookup_order", "cancel_order")
    assert [t.name for t in first.offered_tools()] == ["lookup_order", "cancel_order"]
    # after the call, every tool is offered again: the model may chain or answer
    assert second.tool_choice == "auto"
    assert second.allowed_tools is None
    assert result.output == "It has shipped."


async def test_gated_text_that_names_a_tool_becomes_the_call() -> None:
    recorder = Recorder(
        "You can use the `lookup_order` function to find it.", order_call(), "It has shipped."
    )

    result = await agent(recorder, "gated").run("Where is my order 1042?")

    assert recorder.choices == ["auto", "lookup_order", "auto"]
    assert result.tool_calls[0].call.name == "lookup_order"
    assert result.output == "It has shipped."
    assert any("names the tool lookup_order" in note for note in result.notes)


async def test_gated_text_that_does_not_name_a_tool_is_the_answer() -> None:
    recorder = Recorder("Orders usually ship within two days.")

    result = await agent(recorder, "gated").run("Where is my order 1042?")

    assert recorder.choices == ["auto"]
    assert result.output == "Orders usually ship within two days."


async def test_gated_answers_directly_when_nothing_matches() -> None:
    recorder = Recorder("I only handle orders.")

    result = await agent(recorder, "gated").run("What is the weather in Paris?")

    [only] = recorder.params
    assert only.tool_choice == "none"
    assert only.offered_tools() == ()
    assert result.output == "I only handle orders."


async def test_gated_retries_a_failed_call_on_the_relevant_tools() -> None:
    recorder = Recorder(
        ToolCall(name="add", arguments={"a": "two", "b": 3}),
        ToolCall(name="add", arguments={"a": 2, "b": 3}),
        "5",
    )

    result = await agent(recorder, "gated").run("add 2 and 3")

    assert recorder.choices == ["auto", "required", "auto"]
    assert [p.allowed_tools for p in recorder.params] == [("add",), ("add",), None]
    assert result.output == "5"


# -- two-phase: the model routes first ------------------------------------------------------


async def test_two_phase_router_request_then_the_chosen_tool_is_forced() -> None:
    recorder = Recorder('"lookup_order"', order_call(), "It has shipped.")

    result = await agent(recorder, "two-phase", instructions="Help.").run("Where is 1042?")

    router, step1, step2 = recorder.params
    assert router.output_schema == {"enum": [*NAMES, "none"]}
    assert router.tools == ()
    assert router.offered_tools() == ()
    assert router.constrained
    assert step1.tool_choice == "lookup_order"
    assert [t.name for t in step1.offered_tools()] == ["lookup_order"]
    assert step1.output_schema is None
    assert step2.tool_choice == "auto"  # the forced call succeeded: the model may answer
    assert result.output == "It has shipped."
    assert result.tool_calls[0].result == ORDERS["1042"]
    assert "router: lookup_order" in result.notes


async def test_router_sees_a_listing_of_the_tools_and_the_question() -> None:
    recorder = Recorder("none", "Hi!")

    await agent(recorder, "two-phase", instructions="Be brief.").run("hello")

    messages = recorder.model.requests[0].messages
    system, user = messages
    assert isinstance(system, SystemMessage)
    assert "- lookup_order: Look up an order by its id." in system.content
    assert "- cancel_order: Cancel an order." in system.content
    assert "- add: Add two numbers." in system.content
    assert "none" in system.content
    assert isinstance(user, UserMessage)
    assert user.content == "hello"
    # the agent's own instructions come back for the answering step
    answer_system = recorder.model.requests[1].messages[0]
    assert answer_system.content == "Be brief."


@pytest.mark.parametrize("answer", ["none", '"none"', "I think add", "", '"delete_all"', "Add"])
async def test_router_none_or_garbage_means_a_text_answer(answer: str) -> None:
    recorder = Recorder(answer, "Hello there.")

    result = await agent(recorder, "two-phase").run("hello")

    assert recorder.choices == ["auto", "none"]
    assert recorder.params[1].offered_tools() == ()
    assert result.output == "Hello there."
    assert result.stop_reason == "final"
    assert result.tool_calls == []
    assert result.notes == ["router: no tool"]


@pytest.mark.parametrize("answer", ["add", '"add"', ' "add" \n'])
async def test_router_answer_as_json_string_or_bare_name(answer: str) -> None:
    recorder = Recorder(answer, ToolCall(name="add", arguments={"a": 1, "b": 2}), "3")

    result = await agent(recorder, "two-phase").run("1 plus 2")

    assert recorder.choices == ["auto", "add", "auto"]
    assert result.output == "3"
    assert result.notes == ["router: add"]


async def test_router_usage_is_added_to_the_run() -> None:
    def usage(prompt: int, completion: int) -> Usage:
        return Usage(requests=1, prompt_tokens=prompt, completion_tokens=completion)

    recorder = Recorder(
        ModelResponse(text='"add"', usage=usage(100, 3)),
        ModelResponse(
            tool_calls=(ToolCall(name="add", arguments={"a": 1, "b": 2}),),
            finish_reason="tool_calls",
            usage=usage(40, 10),
        ),
        ModelResponse(text="3", usage=usage(50, 1)),
    )

    result = await agent(recorder, "two-phase").run("1 plus 2")

    assert result.output == "3"
    assert result.usage.requests == 3
    assert result.usage.steps == 2  # the router request is not a step
    assert result.usage.prompt_tokens == 190
    assert result.usage.completion_tokens == 14


async def test_router_usage_counts_when_it_answers_none() -> None:
    recorder = Recorder("none", "Hi.")

    result = await agent(recorder, "two-phase").run("hello")

    assert result.usage.requests == 2
    assert result.usage.steps == 1


async def test_two_phase_retries_the_routed_tool_after_an_invalid_call() -> None:
    recorder = Recorder(
        "add",
        ToolCall(name="add", arguments={"a": "one", "b": 2}),
        ToolCall(name="add", arguments={"a": 1, "b": 2}),
        "3",
    )

    result = await agent(recorder, "two-phase").run("1 plus 2")

    assert recorder.choices == ["auto", "add", "add", "auto"]
    assert result.retries == 1
    assert result.output == "3"


async def test_two_phase_retry_stops_forcing_when_the_budget_is_spent() -> None:
    recorder = Recorder(
        "add",
        ToolCall(name="add", arguments={"a": "one", "b": 2}),
        "I could not add them.",
    )

    result = await agent(recorder, "two-phase", retries=1).run("1 plus 2")

    assert recorder.choices == ["auto", "add", "auto"]
    assert result.output == "I could not add them."


async def test_two_phase_is_skipped_when_the_run_names_a_tool_choice() -> None:
    recorder = Recorder(ToolCall(name="add", arguments={"a": 1, "b": 2}), "3")

    result = await agent(recorder, "two-phase").run("1 plus 2", tool_choice="add")

    assert recorder.choices == ["add", "auto"]
    assert all(p.output_schema is None for p in recorder.params)
    assert not any(note.startswith("router") for note in result.notes)


async def test_two_phase_without_tools_does_not_route() -> None:
    recorder = Recorder("Hi.")

    result = await agent(recorder, "two-phase", tools=[]).run("hello")

    assert len(recorder.params) == 1
    assert recorder.params[0].output_schema is None
    assert result.output == "Hi."
    assert result.notes == []


async def test_router_sees_the_thread_history() -> None:
    store = InMemoryThreadStore()
    recorder = Recorder("none", "Hi Ann.", "none", "Your name is Ann.")
    built = agent(recorder, "two-phase", store=store)
    thread = await store.create_thread()

    await built.run("I am Ann.", thread=thread)
    await built.run("What is my name?", thread=thread)

    second_router = recorder.model.requests[2].messages
    assert [m.content for m in second_router if isinstance(m, UserMessage)] == [
        "I am Ann.",
        "What is my name?",
    ]


# -- the default follows the model profile -------------------------------------------------


async def test_default_follows_an_unconstrained_model_profile() -> None:
    recorder = Recorder(order_call(), "Shipped.")  # the test profile: model picks, no grammar

    await agent(recorder, None).run("Where is my order 1042?")

    assert recorder.choices == ["auto", "auto"]
    assert [p.constrained for p in recorder.params] == [False, False]


async def test_default_with_a_relevance_profile() -> None:
    profile = ModelProfile(family="tiny", tool_selection="relevance", supports_grammar=True)
    recorder = Recorder("Hello.", profile=profile)

    result = await agent(recorder, None).run("What is the weather in Paris?")

    assert recorder.choices == ["none"]
    assert recorder.params[0].constrained
    assert "no tool matches" in result.notes[0]


async def test_default_with_a_router_profile() -> None:
    profile = ModelProfile(family="tiny", tool_selection="router", supports_grammar=False)
    recorder = Recorder(
        "add", ToolCall(name="add", arguments={"a": 1, "b": 2}), "3", profile=profile
    )

    await agent(recorder, None).run("1 plus 2")

    assert recorder.params[0].output_schema == {"enum": [*NAMES, "none"]}
    assert recorder.choices == ["auto", "add", "auto"]
    assert [p.constrained for p in recorder.params] == [False, False, False]


async def test_explicit_strategy_overrides_the_profile() -> None:
    profile = ModelProfile(family="tiny", tool_selection="relevance", supports_grammar=False)
    recorder = Recorder("Hello.", profile=profile)

    await agent(recorder, "grammar").run("What is the weather in Paris?")

    assert recorder.choices == ["auto"]
    assert recorder.params[0].constrained


@pytest.mark.parametrize("copy", [True, False])
async def test_copy_sources_follow_the_profile(copy: bool) -> None:
    profile = ModelProfile(family="tiny", copy_arguments=copy)
    recorder = Recorder(order_call(), "Shipped.", profile=profile)

    await agent(recorder, "grammar").run("Where is my order 1042?")

    expected = ("Where is my order 1042?",) if copy else ()
    assert [p.copy_sources for p in recorder.params] == [expected, expected]


# -- numbers_in ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "numbers"),
    [
        ("order 1042", ["1042"]),
        ("a base of 10 and a height of 5", ["10", "5"]),
        ("pay 1,000 or 12,500,000", ["1000", "12500000"]),
        ("from -3 to -1,250", ["-3", "-1250"]),
        ("costs 2.50 or 0.1", ["2.5", "0.1"]),
        ("2.0 is not 2", ["2.0", "2"]),
        ("1,000.75 in total", ["1000.75"]),
        ("seven days", ["7"]),
        ("Zero, One or TWELVE", ["0", "1", "12"]),
        ("thirteen and twenty are not read", []),
        ("10% of $5", ["10", "5"]),
        ("range 3-5", ["3", "5"]),
        ("12,34", ["12", "34"]),  # not a thousands separator
        ("abc123 v2 x1.5", []),  # digits inside words are not numbers
        ("no numbers here", []),
        ("", []),
    ],
)
def test_numbers_in(source: str, numbers: list[str]) -> None:
    assert numbers_in([source]) == numbers


def test_numbers_in_dedups_in_order_of_first_appearance() -> None:
    assert numbers_in(["5 then 3 then 5 again", "3 and 8", "five"]) == ["5", "3", "8"]


def test_numbers_in_words_and_digits_of_one_value_are_one_number() -> None:
    assert numbers_in(["7 or seven", "1000 or 1,000"]) == ["7", "1000"]


def test_numbers_in_gives_json_literals() -> None:
    for literal in numbers_in(["-3 2.5 1,000 0.25 nine"]):
        assert isinstance(json.loads(literal), int | float)


# -- copied_number_rules -------------------------------------------------------------------


def test_copied_number_rules_for_integers_and_decimals() -> None:
    rules = copied_number_rules(["add 2 and 3.5, then -4"])

    assert rules == [
        'integer ::= ( "2" | "-4" ) space',
        'number ::= ( "2" | "3.5" | "-4" ) space',
    ]


def test_copied_number_rules_keep_decimals_out_of_the_integer_rule() -> None:
    rules = copied_number_rules(["only 2.5 and 2.0"])

    assert rules == ['number ::= ( "2.5" | "2.0" ) space']


def test_copied_number_rules_from_several_sources() -> None:
    rules = copied_number_rules(["one", "and 40"])

    assert rules == ['integer ::= ( "1" | "40" ) space', 'number ::= ( "1" | "40" ) space']


@pytest.mark.parametrize("sources", [[], [""], ["no numbers at all"], ["abc123"]])
def test_no_copied_number_rules_without_numbers(sources: list[str]) -> None:
    assert copied_number_rules(sources) == []


# -- build_tool_grammar with copied arguments, checked by llama.cpp --------------------------


def test_the_checker_rejects_a_broken_grammar(capfd: pytest.CaptureFixture[str]) -> None:
    assert_parses('root ::= "a" [b-c]*\n', capfd)
    with pytest.raises(AssertionError):
        assert_parses("root ::= undefined-rule\n", capfd)


AREA = ToolDefinition(
    name="triangle_area",
    description="Area of a triangle.",
    parameters={
        "type": "object",
        "properties": {
            "base": {"type": "integer"},
            "height": {"type": "number"},
            "unit": {"type": "string"},
        },
        "required": ["base", "height", "unit"],
    },
)


def area_grammar(*sources: str, allow_text: bool = False) -> str:
    return build_tool_grammar(
        [AREA],
        allow_text=allow_text,
        output_schema=None,
        converter_factory=converter,
        copy_sources=sources,
    )


def test_converter_rules_without_sources(capfd: pytest.CaptureFixture[str]) -> None:
    rules = rules_of(area_grammar())

    # the converter's free-form rules, which the sources replace
    assert "integral-part" in rules["integer"]
    assert "integral-part" in rules["number"]
    assert "char*" in rules["string"]
    assert not any(name.startswith("shoal-span") for name in rules)
    assert_parses(area_grammar(), capfd)


@pytest.mark.parametrize("allow_text", [False, True])
def test_sources_replace_integer_number_and_string_rules(
    allow_text: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    grammar = area_grammar("a base of 10 and a height of 2.5 cm", allow_text=allow_text)

    rules = rules_of(grammar)  # also: no rule defined twice
    assert rules["integer"] == '( "10" ) space'
    assert rules["number"] == '( "10" | "2.5" ) space'
    assert rules["string"].startswith('"\\"" ( shoal-span-0-0 ')
    assert "char*" not in rules["string"]
    assert rules["shoal-args-0-base-kv"].endswith(" integer")
    assert rules["shoal-args-0-height-kv"].endswith(" number")
    assert_parses(grammar, capfd)


def test_number_words_reach_the_grammar(capfd: pytest.CaptureFixture[str]) -> None:
    grammar = area_grammar("a base of ten and height three")

    rules = rules_of(grammar)
    assert rules["integer"] == '( "10" | "3" ) space'
    assert rules["number"] == '( "10" | "3" ) space'
    assert_parses(grammar, capfd)


def test_only_decimals_leave_the_integer_rule_free(capfd: pytest.CaptureFixture[str]) -> None:
    grammar = area_grammar("height 2.5 please")

    rules = rules_of(grammar)
    assert "integral-part" in rules["integer"]  # the converter's own
    assert rules["number"] == '( "2.5" ) space'
    assert_parses(grammar, capfd)


def test_sources_without_numbers_leave_numbers_free(capfd: pytest.CaptureFixture[str]) -> None:
    grammar = area_grammar("in centimetres")

    rules = rules_of(grammar)
    assert "integral-part" in rules["integer"]
    assert "integral-part" in rules["number"]
    assert "shoal-span-0-0" in rules["string"]
    assert_parses(grammar, capfd)


def test_numbers_from_every_source(capfd: pytest.CaptureFixture[str]) -> None:
    grammar = area_grammar("base 4", "height 6.5")

    rules = rules_of(grammar)
    assert rules["integer"] == '( "4" ) space'
    assert rules["number"] == '( "4" | "6.5" ) space'
    assert "shoal-span-1-0" in rules
    assert_parses(grammar, capfd)


def test_integer_only_tool_gets_no_number_rule(capfd: pytest.CaptureFixture[str]) -> None:
    grammar = build_tool_grammar(
        [add.definition],
        allow_text=True,
        output_schema=None,
        converter_factory=converter,
        copy_sources=["add 2 and 3.5"],
    )

    rules = rules_of(grammar)
    assert rules["integer"] == '( "2" ) space'
    assert "number" not in rules  # nothing refers to it: not added
    assert "string" not in rules
    assert not any(name.startswith("shoal-span") for name in rules)
    assert_parses(grammar, capfd)


def test_output_schema_ignores_the_sources(capfd: pytest.CaptureFixture[str]) -> None:
    grammar = build_tool_grammar(
        [AREA],
        allow_text=True,
        output_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
        converter_factory=converter,
        copy_sources=["base 4"],
    )

    rules = rules_of(grammar)
    assert "integral-part" in rules["integer"]
    assert "char*" in rules["string"]
    assert_parses(grammar, capfd)


# -- call schemas: the grammar constrains a call with the narrowed schema ---------------------


def test_grammar_uses_the_narrowed_call_schema() -> None:
    definition = ToolDefinition(
        name="find_restaurants",
        description="Find restaurants.",
        parameters={
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "cuisine": {"type": "string", "description": "e.g. Thai, Seafood"},
                "limit": {"type": "integer"},
            },
            "required": ["location"],
        },
    )
    model = LlamaCppModel("unused.gguf")  # grammar_for needs no weights
    query = "Find seafood restaurants in Seattle"
    full = model.grammar_for(ModelRequestParameters(tools=(definition,), tool_choice="required"))
    narrowed = model.grammar_for(
        ModelRequestParameters(
            tools=(definition,),
            tool_choice="required",
            call_schemas={definition.name: narrow_to_mentioned(query, definition)},
        )
    )
    assert full is not None
    assert narrowed is not None
    assert '\\"limit\\"' in full
    assert '\\"cuisine\\"' in full
    assert '\\"limit\\"' not in narrowed  # not mentioned: left out
    assert '\\"cuisine\\"' in narrowed  # mentioned ("seafood" is in its description)
