"""Tool construction, validation messages, execution, timeouts and result formatting."""

import asyncio
import dataclasses
import datetime as dt
import enum
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

import shoal.tools
from shoal.exceptions import (
    ToolArgumentsError,
    ToolError,
    ToolExecutionError,
    ToolTimeoutError,
)
from shoal.messages import ToolDefinition
from shoal.tools import Tool, as_tool, format_tool_result, tool


class Line(BaseModel):
    sku: str
    qty: int = 1


class Status(enum.Enum):
    OPEN = "open"
    SHIPPED = "shipped"


@dataclasses.dataclass
class Receipt:
    total: float
    lines: list[Line]


@tool
def lookup_order(order_id: int, verbose: bool = False) -> str:
    """Look up an order by its number.

    Args:
        order_id: The order number.
        verbose: Include the lines.
    """
    return f"order {order_id} verbose={verbose}"


def test_public_api() -> None:
    assert sorted(shoal.tools.__all__) == [
        "SandboxError",
        "Tool",
        "ToolScore",
        "Workspace",
        "as_tool",
        "check_output_schema",
        "decode_answer",
        "file_tools",
        "format_tool_result",
        "mentioned_parameters",
        "narrow_to_mentioned",
        "rank_tools",
        "relevant_tools",
        "schema_problem",
        "shell_tool",
        "tool",
    ]


# -- construction ---------------------------------------------------------------------------


def test_decorator_without_parentheses() -> None:
    assert isinstance(lookup_order, Tool)
    assert lookup_order.name == "lookup_order"
    assert lookup_order.description == "Look up an order by its number."
    assert lookup_order.timeout == 30.0
    assert lookup_order.is_async is False


def test_decorator_with_empty_parentheses_and_options() -> None:
    @tool()
    def a(x: int) -> int:
        return x

    @tool(name="orders.search", description="Find orders.", timeout=5)
    async def b(query: str) -> list[str]:
        return [query]

    assert (a.name, a.timeout) == ("a", 30.0)
    assert (b.name, b.description, b.timeout, b.is_async) == (
        "orders.search",
        "Find orders.",
        5.0,
        True,
    )
    assert tool(a.function, timeout=None).timeout is None


def test_definition() -> None:
    definition = lookup_order.definition
    assert isinstance(definition, ToolDefinition)
    assert definition == ToolDefinition(
        name="lookup_order",
        description="Look up an order by its number.",
        parameters={
            "type": "object",
            "properties": {
                "order_id": {"type": "integer", "description": "The order number."},
                "verbose": {
                    "type": "boolean",
                    "description": "Include the lines.",
                    "default": False,
                },
            },
            "required": ["order_id"],
            "additionalProperties": False,
        },
    )


def test_as_tool() -> None:
    assert as_tool(lookup_order) is lookup_order

    def plain(x: int) -> int:
        return x * 2

    async def coro(x: int) -> int:
        return x * 3

    wrapped = as_tool(plain)
    assert (wrapped.name, wrapped.timeout, wrapped.is_async) == ("plain", 30.0, False)
    assert as_tool(coro).is_async is True


def test_tool_of_a_tool_wraps_its_function() -> None:
    again = Tool(lookup_order, name="lookup_again")
    assert again.function is lookup_order.function
    assert again.definition.parameters == lookup_order.definition.parameters


def test_call_passthrough() -> None:
    assert lookup_order(7) == "order 7 verbose=False"
    assert lookup_order(order_id=7, verbose=True) == "order 7 verbose=True"
    # no validation on the direct path: the function gets what it is given
    assert lookup_order("7") == "order 7 verbose=False"


async def test_call_passthrough_async() -> None:
    @tool
    async def double(x: int) -> int:
        return x * 2

    assert await double(21) == 42


# -- validation -----------------------------------------------------------------------------


def test_validate_coerces_and_fills_defaults() -> None:
    assert lookup_order.validate({"order_id": "1042"}) == {"order_id": 1042, "verbose": False}


def _arguments_error(t: Tool, arguments: Any) -> ToolArgumentsError:
    with pytest.raises(ToolArgumentsError) as info:
        t.validate(arguments)
    assert info.value.tool_name == t.name
    return info.value


def test_missing_argument_message() -> None:
    error = _arguments_error(lookup_order, {})
    assert str(error) == "lookup_order: argument 'order_id': field required"


def test_unknown_argument_is_an_error() -> None:
    error = _arguments_error(lookup_order, {"order_id": 1, "foo": 2})
    assert str(error) == ("lookup_order: unexpected argument 'foo' (allowed: order_id, verbose)")


def test_misnamed_argument_message() -> None:
    error = _arguments_error(lookup_order, {"orderId": 1, "extra": True})
    assert str(error) == (
        "lookup_order: unexpected arguments 'orderId', 'extra' (allowed: order_id, verbose); "
        "argument 'order_id': field required"
    )


def test_tool_without_parameters_rejects_arguments() -> None:
    @tool
    def ping() -> str:
        return "pong"

    assert str(_arguments_error(ping, {"x": 1})) == (
        "ping: unexpected argument 'x' (this tool takes no arguments)"
    )


def test_bad_value_message() -> None:
    error = _arguments_error(lookup_order, {"order_id": "abc"})
    assert str(error) == (
        "lookup_order: argument 'order_id': input should be a valid integer, "
        "unable to parse string as an integer"
    )
    assert "https://" not in str(error)


def test_nested_locations() -> None:
    @tool
    def place(lines: list[Line]) -> None:
        pass

    error = _arguments_error(place, {"lines": [{"sku": "a"}, {"sku": "b", "qty": "many"}]})
    assert str(error) == (
        "place: argument 'lines[1].qty': input should be a valid integer, "
        "unable to parse string as an integer"
    )


def test_many_errors_are_summarised() -> None:
    @tool
    def f(a: int, b: int, c: int, d: int, e: int, g: int) -> None:
        pass

    message = str(_arguments_error(f, {}))
    assert message.count("field required") == 4
    assert message.endswith("; and 2 more errors")


def test_arguments_must_be_an_object() -> None:
    error = _arguments_error(lookup_order, [1, 2])
    assert str(error) == "lookup_order: arguments must be a JSON object, not list"


# -- execution ------------------------------------------------------------------------------


async def test_call_sync_runs_in_a_worker_thread() -> None:
    seen: list[int] = []

    @tool
    def where(x: int) -> int:
        seen.append(threading.get_ident())
        return x + 1

    assert await where.call({"x": "41"}) == 42
    assert seen
    assert seen[0] != threading.get_ident()


async def test_call_async_is_awaited_in_the_loop() -> None:
    seen: list[int] = []

    @tool
    async def where(x: int) -> int:
        await asyncio.sleep(0)
        seen.append(threading.get_ident())
        return x * 2

    assert await where.call({"x": 21}) == 42
    assert seen == [threading.get_ident()]


async def test_call_passes_constructed_values() -> None:
    received: dict[str, Any] = {}

    @tool
    def receive(line: Line, status: Status) -> str:
        received.update(line=line, status=status)
        return "ok"

    assert await receive.call({"line": {"sku": "x", "qty": "2"}, "status": "shipped"}) == "ok"
    assert received == {"line": Line(sku="x", qty=2), "status": Status.SHIPPED}


async def test_call_with_bad_arguments_does_not_run_the_function() -> None:
    calls: list[int] = []

    @tool
    def f(x: int) -> None:
        calls.append(x)

    with pytest.raises(ToolArgumentsError, match="argument 'x': field required"):
        await f.call({})
    assert calls == []


async def test_callable_object_and_bound_method() -> None:
    class Adder:
        def __init__(self, base: int) -> None:
            self.base = base

        async def __call__(self, x: int) -> int:
            return self.base + x

        def times(self, x: int) -> int:
            return self.base * x

    adder = Tool(Adder(10), name="add")
    assert adder.is_async is True
    assert await adder.call({"x": "5"}) == 15
    assert await Tool(Adder(3).times).call({"x": 4}) == 12


async def test_async_timeout() -> None:
    events: list[str] = []

    @tool(timeout=0.2)
    async def slow() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        return "never"

    with pytest.raises(ToolTimeoutError) as info:
        await slow.call({})
    assert str(info.value) == "slow: timed out after 0.2 s"
    assert info.value.tool_name == "slow"
    assert events == ["cancelled"]


async def test_sync_timeout() -> None:
    finished = threading.Event()

    @tool(timeout=0.2)
    def slow_sync() -> str:
        time.sleep(0.6)
        finished.set()
        return "late"

    with pytest.raises(ToolTimeoutError, match=r"^slow_sync: timed out after 0\.2 s$"):
        await slow_sync.call({})
    # the worker thread cannot be killed: it finishes later, its result is dropped
    assert not finished.is_set()


async def test_no_timeout() -> None:
    @tool(timeout=None)
    async def quick() -> str:
        await asyncio.sleep(0.01)
        return "ok"

    assert await quick.call({}) == "ok"


@pytest.mark.parametrize("is_async", [False, True])
async def test_exceptions_are_wrapped(is_async: bool) -> None:
    original = ValueError("order 7 does not exist")

    def failing_sync(order_id: int) -> str:
        raise original

    async def failing_async(order_id: int) -> str:
        raise original

    t = Tool(failing_async if is_async else failing_sync, name="lookup")
    with pytest.raises(ToolExecutionError) as info:
        await t.call({"order_id": 7})
    assert str(info.value) == "lookup: ValueError: order 7 does not exist"
    assert info.value.__cause__ is original
    assert info.value.tool_name == "lookup"
    assert isinstance(info.value, ToolError)


async def test_exception_without_message() -> None:
    @tool
    def broken() -> None:
        raise RuntimeError

    with pytest.raises(ToolExecutionError) as info:
        await broken.call({})
    assert str(info.value) == "broken: RuntimeError"


async def test_function_raising_timeout_error_is_an_execution_error() -> None:
    @tool(timeout=5)
    async def upstream() -> None:
        raise TimeoutError("upstream API did not answer")

    with pytest.raises(ToolExecutionError) as info:
        await upstream.call({})
    assert str(info.value) == "upstream: TimeoutError: upstream API did not answer"
    assert not isinstance(info.value, ToolTimeoutError)


async def test_sync_function_returning_a_coroutine_is_awaited() -> None:
    async def inner(x: int) -> int:
        return x + 1

    def wrapper(x: int) -> Any:
        return inner(x)

    assert await Tool(wrapper).call({"x": 1}) == 2


# -- results --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain text, as is", "plain text, as is"),
        ("", ""),
        (None, "done"),
        (42, "42"),
        (2.5, "2.5"),
        (True, "true"),
        ({"name": "Zoë", "n": 1}, '{"name":"Zoë","n":1}'),
        ([1, "two", None], '[1,"two",null]'),
        ((1, 2), "[1,2]"),
        (Line(sku="é1", qty=2), '{"sku":"é1","qty":2}'),
        (
            Receipt(total=9.5, lines=[Line(sku="a")]),
            '{"total":9.5,"lines":[{"sku":"a","qty":1}]}',
        ),
        ({"status": Status.OPEN, "at": dt.date(2024, 5, 6)}, '{"status":"open","at":"2024-05-06"}'),
        (Status.SHIPPED, "shipped"),
        (dt.datetime(2024, 5, 6, 7, 8, 9), "2024-05-06T07:08:09"),
    ],
)
def test_format_tool_result(value: Any, expected: str) -> None:
    assert format_tool_result(value) == expected


def test_format_tool_result_falls_back_to_str() -> None:
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    assert format_tool_result(Thing()) == "a thing"
    assert format_tool_result({"thing": Thing()}) == '{"thing":"a thing"}'
