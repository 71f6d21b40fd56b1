"""Choosing tools in code: content words, BM25-style ranking and the relevance cut."""

from __future__ import annotations

import math
from typing import Literal

import pytest
from pydantic import BaseModel

from shoal.messages import ToolDefinition
from shoal.tools import mentioned_parameters, narrow_to_mentioned, rank_tools, relevant_tools, tool
from shoal.tools.selection import terms

from .sample_tools import lookup_order

# -- realistic tools ----------------------------------------------------------------------


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Current weather for a city.

    Args:
        city: City name.
        unit: Temperature unit.
    """
    return ""


@tool
def create_ticket(subject: str, body: str) -> str:
    """Open a support ticket for a customer problem.

    Args:
        subject: Short summary of the problem.
        body: Full description.
    """
    return ""


@tool
def convert_currency(amount: float, source: str, target: str) -> float:
    """Convert money between currencies at today's exchange rate."""
    return amount


@tool
def cancel_order(order_id: str, reason: str = "") -> str:
    """Cancel an order that has not shipped yet.

    Args:
        order_id: The order number.
        reason: Why the customer cancels.
    """
    return ""


class Recipient(BaseModel):
    email_address: str
    display_name: str = ""


@tool
def send_message(recipient: Recipient, text: str) -> str:
    """Deliver a note to someone.

    Args:
        recipient: Who receives it.
        text: What to say.
    """
    return ""


SUPPORT = [
    t.definition for t in (lookup_order, get_weather, create_ticket, convert_currency, send_message)
]


def names(tools: list[ToolDefinition]) -> list[str]:
    return [t.name for t in tools]


def idf(hits: int, count: int) -> float:
    return math.log(1 + (count - hits + 0.5) / (hits + 0.5))


# -- terms --------------------------------------------------------------------------------


def test_terms_lowercases_and_drops_stopwords() -> None:
    assert terms("Where is MY Order?") == ["order"]


def test_terms_drops_digits_and_single_letters() -> None:
    assert terms("order 1042 for x y z v2") == ["order"]


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("order", "orders"),
        ("city", "cities"),
        ("category", "categories"),
        ("box", "boxes"),
        ("search", "searches"),
        ("ticket", "tickets"),
        ("shipped", "shipping"),
    ],
)
def test_word_forms_share_a_stem(one: str, other: str) -> None:
    assert len(terms(one)) == 1
    assert terms(one) == terms(other)


@pytest.mark.parametrize("word", ["gas", "bus", "red", "sing"])
def test_short_words_keep_their_ending(word: str) -> None:
    assert terms(word) == [word]


def test_terms_splits_snake_case_camel_case_and_dots() -> None:
    assert terms("lookup_order") == ["lookup", "order"]
    assert terms("lookupOrder") == ["lookup", "order"]
    assert terms("getWeatherForecast") == ["weather", "forecast"]  # 'get' is a stopword
    assert terms("orders.read_text") == ["order", "read", "text"]


@pytest.mark.parametrize("singular", ["invoice", "file", "message", "note", "price"])
def test_plural_of_a_word_ending_in_e_shares_its_stem(singular: str) -> None:
    assert terms(singular + "s") == terms(singular)


def test_a_plural_request_finds_the_tool_named_in_the_singular() -> None:
    @tool
    def get_invoice(invoice_id: str) -> str:
        """Fetch an invoice.

        Args:
            invoice_id: The invoice number.
        """
        return ""

    tools = [get_invoice.definition, lookup_order.definition]

    assert names(relevant_tools("Show my invoices", tools)) == ["get_invoice"]


def test_terms_keeps_repeats_in_order() -> None:
    assert terms("order, ORDER and orders") == ["order", "order", "order"]


def test_terms_of_nothing_useful_is_empty() -> None:
    assert terms("") == []
    assert terms("hi, thanks! ok?") == []
    assert terms("123 456") == []


# -- rank_tools ---------------------------------------------------------------------------


def test_rank_puts_the_named_tool_first_and_keeps_every_tool() -> None:
    ranked = rank_tools("Where is my order 1042?", SUPPORT)

    assert ranked[0].tool.name == "lookup_order"
    assert sorted(s.tool.name for s in ranked) == sorted(names(SUPPORT))
    assert ranked[0].key_matches == ("order",)
    assert ranked[0].score == pytest.approx(3.0 * idf(1, len(SUPPORT)))
    assert all(s.score == 0 for s in ranked[1:])


def test_ties_keep_declaration_order() -> None:
    ranked = rank_tools("hello there", SUPPORT)

    assert [s.tool.name for s in ranked] == names(SUPPORT)
    assert all(s.score == 0 and not s.relevant for s in ranked)


def test_name_weighs_more_than_parameters_more_than_descriptions() -> None:
    in_name = ToolDefinition(name="refund_invoice", description="Give money back.")
    in_param = ToolDefinition(
        name="email_customer",
        description="Write to a customer.",
        parameters={"type": "object", "properties": {"invoice_id": {"type": "string"}}},
    )
    in_text = ToolDefinition(name="audit", description="Check an invoice for mistakes.")
    unrelated = ToolDefinition(name="weather", description="Rain or sun.")
    tools = [in_text, unrelated, in_param, in_name]

    ranked = rank_tools("invoice", tools)

    weight = idf(3, 4)
    assert [(s.tool.name, s.score) for s in ranked] == [
        ("refund_invoice", pytest.approx(3 * weight)),
        ("email_customer", pytest.approx(2 * weight)),
        ("audit", pytest.approx(1 * weight)),
        ("weather", 0.0),
    ]
    assert ranked[0].key_matches == ("invoice",)
    assert ranked[1].key_matches == ("invoice",)
    assert ranked[2].key_matches == ()
    assert ranked[2].text_matches == ("invoice",)


def test_a_word_every_tool_shares_decides_little() -> None:
    tools = [
        ToolDefinition(name="customer_orders", description="List a customer's orders."),
        ToolDefinition(name="customer_refund", description="Refund a customer."),
        ToolDefinition(name="customer_address", description="Change a customer's address."),
    ]

    ranked = rank_tools("customer refund", tools)

    assert ranked[0].tool.name == "customer_refund"
    shared, rare = idf(3, 3), idf(1, 3)
    assert shared < rare / 5
    assert ranked[0].score == pytest.approx(3 * shared + 3 * rare)
    assert ranked[1].score == pytest.approx(3 * shared)


def test_repeated_query_words_count_once() -> None:
    once = rank_tools("weather", SUPPORT)[0].score
    thrice = rank_tools("weather weather weathers", SUPPORT)[0].score

    assert thrice == pytest.approx(once)


def test_parameter_descriptions_and_enum_values_count_as_text() -> None:
    ranked = rank_tools("temperature in fahrenheit", SUPPORT)

    top = ranked[0]
    assert top.tool.name == "get_weather"
    assert top.key_matches == ()
    assert set(top.text_matches) == {"temperature", "fahrenheit"}
    assert top.relevant


def test_nested_object_parameters_are_searched() -> None:
    ranked = rank_tools("which email address", SUPPORT)

    assert ranked[0].tool.name == "send_message"
    assert "email" in ranked[0].key_matches


def test_rank_of_no_tools_is_empty() -> None:
    assert rank_tools("anything", []) == []


# -- relevant_tools -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Where is my order 1042?", ["lookup_order"]),
        ("What's the weather in Paris?", ["get_weather"]),
        ("My package arrived broken, please open a ticket", ["create_ticket"]),
        ("Please convert 20 dollars to euros", ["convert_currency"]),
    ],
)
def test_the_tool_a_request_is_about(query: str, expected: list[str]) -> None:
    assert names(relevant_tools(query, SUPPORT)) == expected


@pytest.mark.parametrize(
    "query", ["hello there", "Thanks!", "", "What is 2 + 2?", "What time is it in Tokyo?"]
)
def test_no_relevant_tool_gives_an_empty_list(query: str) -> None:
    assert relevant_tools(query, SUPPORT) == []


def test_one_description_word_is_not_enough() -> None:
    ranked = rank_tools("open the door", SUPPORT)

    assert ranked[0].tool.name == "create_ticket"
    assert ranked[0].score > 0
    assert ranked[0].text_matches == ("open",)
    assert not ranked[0].relevant
    assert relevant_tools("open the door", SUPPORT) == []


def test_two_description_words_are_enough() -> None:
    assert names(relevant_tools("customer problem", SUPPORT)) == ["create_ticket"]


def test_a_clear_winner_is_offered_alone() -> None:
    tools = [*SUPPORT, cancel_order.definition]
    query = "Cancel order 1042"

    ranked = [s for s in rank_tools(query, tools) if s.relevant]
    assert [s.tool.name for s in ranked] == ["cancel_order", "lookup_order"]
    assert ranked[1].score < 0.75 * ranked[0].score

    assert names(relevant_tools(query, tools)) == ["cancel_order"]
    assert names(relevant_tools(query, tools, margin=0.0)) == ["cancel_order", "lookup_order"]


def test_close_scores_are_all_offered_best_first() -> None:
    assert names(relevant_tools("weather for my order", SUPPORT)) == ["lookup_order", "get_weather"]


def test_limit_caps_the_offer() -> None:
    tools = [
        ToolDefinition(name=f"report_{kind}", description=f"A {kind} report.")
        for kind in ("sales", "stock", "staff", "costs")
    ]

    assert names(relevant_tools("report", tools)) == [
        "report_sales",
        "report_stock",
        "report_staff",
    ]
    assert names(relevant_tools("report", tools, limit=2)) == ["report_sales", "report_stock"]
    assert len(relevant_tools("report", tools, limit=10)) == 4


# -- optional arguments the request mentions ----------------------------------------------------

_RESTAURANTS = ToolDefinition(
    name="find_restaurants",
    description="Find restaurants in a location.",
    parameters={
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city."},
            "dietary_requirements": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Special dietary needs, e.g. vegan or gluten-free.",
            },
            "price": {"type": "string", "enum": ["cheap", "moderate", "expensive"]},
            "open_now": {"type": "boolean", "description": "Only places open now."},
            "limit": {"type": "integer", "description": "How many restaurants to return."},
        },
        "required": ["location"],
    },
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Find vegan restaurants in Berlin", ["dietary_requirements"]),  # a description word
        ("Find cheap restaurants in Berlin", ["price"]),  # an enum value
        ("Which restaurants in Rome are open now?", ["open_now"]),  # name words
        ("Find restaurants in Berlin", []),  # words the whole tool is about select nothing
    ],
)
def test_mentioned_parameters(query: str, expected: list[str]) -> None:
    assert mentioned_parameters(query, _RESTAURANTS) == expected


def test_narrow_to_mentioned_requires_mentioned_and_drops_the_rest() -> None:
    schema = narrow_to_mentioned("Find cheap vegan food in Berlin", _RESTAURANTS)
    assert list(schema["properties"]) == ["location", "dietary_requirements", "price"]
    assert schema["required"] == ["location", "dietary_requirements", "price"]
    # the declared schema is untouched
    assert list(_RESTAURANTS.parameters["properties"]) == [
        "location",
        "dietary_requirements",
        "price",
        "open_now",
        "limit",
    ]
