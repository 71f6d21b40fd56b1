"""Reading tool calls out of unconstrained output, repairing them, and coercing arguments.

Covers the strategies of ``parse_model_output`` beyond the Hermes blocks the grammar produces
(Qwen3-Coder XML, JSON in many shapes and places, Python-style calls, JSON repair), and
``coerce_arguments`` / ``validate_arguments`` against tool schemas.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shoal.messages import ToolDefinition
from shoal.toolcalls import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    ParsedOutput,
    coerce_arguments,
    parse_model_output,
    validate_arguments,
)

TOOLS = ["get_weather", "add", "math_factorial", "ping", "search"]
Calls = list[tuple[str, dict[str, Any]]]


def calls_of(parsed: ParsedOutput) -> Calls:
    return [(c.name, c.arguments) for c in parsed.calls]


def qwen_function(name: str, **params: str) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<function={name}>\n{body}</function>"


# -- strategy table: (raw, tool_names, expected calls, expected text, expected strategy) ------

PARIS = {"city": "Paris"}

STRATEGY_CASES: list[tuple[str, str, list[str] | None, Calls, str | None, str]] = [
    # Hermes still comes first
    (
        "hermes",
        f'{TOOL_CALL_OPEN}\n{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}\n'
        f"{TOOL_CALL_CLOSE}",
        None,
        [("get_weather", PARIS)],
        None,
        "hermes",
    ),
    (
        "hermes several objects in one block",
        f'{TOOL_CALL_OPEN}\n{{"name": "ping", "arguments": {{}}}}\n'
        f'{{"name": "add", "arguments": {{"a": 1}}}}\n{TOOL_CALL_CLOSE}',
        None,
        [("ping", {}), ("add", {"a": 1})],
        None,
        "hermes",
    ),
    (
        "hermes fenced body",
        f'{TOOL_CALL_OPEN}\n```json\n{{"name": "ping", "arguments": {{}}}}\n```\n{TOOL_CALL_CLOSE}',
        None,
        [("ping", {})],
        None,
        "hermes",
    ),
    (
        "hermes python-style body with known tools",
        f'{TOOL_CALL_OPEN}get_weather(city="Paris"){TOOL_CALL_CLOSE}',
        TOOLS,
        [("get_weather", PARIS)],
        None,
        "hermes",
    ),
    (
        "hermes name matched loosely",
        f'{TOOL_CALL_OPEN}{{"name": "functions.get-weather", "arguments": {{}}}}{TOOL_CALL_CLOSE}',
        TOOLS,
        [("get_weather", {})],
        None,
        "hermes",
    ),
    (
        "hermes keeps an unknown name (explicit markup)",
        f'{TOOL_CALL_OPEN}{{"name": "fly", "arguments": {{}}}}{TOOL_CALL_CLOSE}',
        TOOLS,
        [("fly", {})],
        None,
        "hermes",
    ),
    # Qwen3-Coder XML
    (
        "qwen xml in wrapper",
        f"{TOOL_CALL_OPEN}\n{qwen_function('get_weather', city='Paris', days='3')}\n"
        f"{TOOL_CALL_CLOSE}",
        None,
        [("get_weather", {"city": "Paris", "days": 3})],
        None,
        "qwen_xml",
    ),
    (
        "qwen xml without wrapper, after prose",
        "Let me look.\n" + qwen_function("get_weather", city="New York"),
        None,
        [("get_weather", {"city": "New York"})],
        "Let me look.",
        "qwen_xml",
    ),
    (
        "qwen xml several functions",
        f"{TOOL_CALL_OPEN}\n{qwen_function('ping')}\n{TOOL_CALL_CLOSE}\n"
        f"{TOOL_CALL_OPEN}\n{qwen_function('add', a='1', b='2.5')}\n{TOOL_CALL_CLOSE}",
        None,
        [("ping", {}), ("add", {"a": 1, "b": 2.5})],
        None,
        "qwen_xml",
    ),
    (
        "qwen xml values decoded as JSON when they are JSON",
        qwen_function(
            "search",
            query="cheap flights",
            flag="true",
            tags='["a", "b"]',
            filters='{"max": 3}',
            nothing="null",
            zip="007",
            quoted='"x"',
        ),
        None,
        [
            (
                "search",
                {
                    "query": "cheap flights",
                    "flag": True,
                    "tags": ["a", "b"],
                    "filters": {"max": 3},
                    "nothing": None,
                    "zip": "007",
                    "quoted": "x",
                },
            )
        ],
        None,
        "qwen_xml",
    ),
    (
        "qwen xml multi-line value keeps inner lines",
        "<function=search>\n<parameter=query>\nline one\nline two\n</parameter>\n</function>",
        None,
        [("search", {"query": "line one\nline two"})],
        None,
        "qwen_xml",
    ),
    (
        "qwen xml unclosed at the end of output",
        "<function=get_weather>\n<parameter=city>\nParis\n",
        None,
        [("get_weather", PARIS)],
        None,
        "qwen_xml",
    ),
    (
        "llama 3.1 function tag with JSON body",
        '<function=get_weather>{"city": "Paris"}</function>',
        None,
        [("get_weather", PARIS)],
        None,
        "qwen_xml",
    ),
    (
        "qwen xml NaN stays text",
        qwen_function("search", query="NaN"),
        None,
        [("search", {"query": "NaN"})],
        None,
        "qwen_xml",
    ),
    # JSON: whole answer, fences, prose
    (
        "json name/arguments",
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        None,
        [("get_weather", PARIS)],
        None,
        "json",
    ),
    (
        "json name/parameters",
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        None,
        [("get_weather", PARIS)],
        None,
        "json",
    ),
    (
        "json openai function object",
        '{"type": "function", "function": {"name": "get_weather", '
        '"arguments": "{\\"city\\": \\"Paris\\"}"}}',
        None,
        [("get_weather", PARIS)],
        None,
        "json",
    ),
    (
        "json openai tool_calls message",
        json.dumps(
            {
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "ping", "arguments": "{}"},
                    },
                    {"function": {"name": "add", "arguments": {"a": 1}}},
                ]
            }
        ),
        None,
        [("ping", {}), ("add", {"a": 1})],
        None,
        "json",
    ),
    (
        "json tool/args",
        '{"tool": "get_weather", "args": {"city": "Paris"}}',
        None,
        [("get_weather", PARIS)],
        None,
        "json",
    ),
    (
        "json tool_name/arguments",
        '{"tool_name": "get_weather", "arguments": {"city": "Paris"}}',
        None,
        [("get_weather", PARIS)],
        None,
        "json",
    ),
    (
        "json double-encoded arguments",
        json.dumps({"name": "add", "arguments": json.dumps({"a": 1, "b": 2})}),
        None,
        [("add", {"a": 1, "b": 2})],
        None,
        "json",
    ),
    (
        "json list of calls",
        '[{"name": "ping", "arguments": {}}, {"name": "add", "arguments": {"a": 1}}]',
        None,
        [("ping", {}), ("add", {"a": 1})],
        None,
        "json",
    ),
    (
        "json in a fence after prose",
        'Sure, here it is:\n```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        None,
        [("get_weather", PARIS)],
        "Sure, here it is:",
        "json",
    ),
    (
        "json in a tool_call fence",
        '```tool_call\n{"name": "ping", "arguments": {}}\n```',
        None,
        [("ping", {})],
        None,
        "json",
    ),
    (
        "json embedded in prose",
        'I will check the weather. {"name": "get_weather", "arguments": {"city": "Paris"}} '
        "Then I will answer.",
        None,
        [("get_weather", PARIS)],
        "I will check the weather.",
        "json",
    ),
    (
        "json list embedded in prose",
        'Doing both: [{"name": "ping", "arguments": {}}, {"name": "add", "arguments": {}}]',
        None,
        [("ping", {}), ("add", {})],
        "Doing both:",
        "json",
    ),
    (
        "json objects one per line",
        '{"name": "ping", "arguments": {}}\n{"name": "add", "arguments": {"a": 2}}',
        None,
        [("ping", {}), ("add", {"a": 2})],
        None,
        "json",
    ),
    (
        "json prose skips non-call JSON before the call",
        'The data is {"city": "Paris"}; now '
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        None,
        [("get_weather", PARIS)],
        'The data is {"city": "Paris"}; now',
        "json",
    ),
    (
        "json name-only call for a known tool",
        '{"name": "ping"}',
        TOOLS,
        [("ping", {})],
        None,
        "json",
    ),
    (
        "json unknown names in a list are ignored",
        '[{"name": "ping", "arguments": {}}, {"name": "fly", "arguments": {}}]',
        TOOLS,
        [("ping", {})],
        None,
        "json",
    ),
    (
        "json dotted name matches underscored tool",
        '{"name": "math.factorial", "arguments": {"n": 5}}',
        TOOLS,
        [("math_factorial", {"n": 5})],
        None,
        "json",
    ),
    # Python-style calls (known tool names only)
    (
        "python keyword call",
        'get_weather(city="Paris", days=3)',
        TOOLS,
        [("get_weather", {"city": "Paris", "days": 3})],
        None,
        "python",
    ),
    (
        "python list of calls",
        "[get_weather(city='Paris'), add(a=1, b=2)]",
        TOOLS,
        [("get_weather", PARIS), ("add", {"a": 1, "b": 2})],
        None,
        "python",
    ),
    (
        "python calls on separate lines",
        "ping()\nadd(a=1, b=2)",
        TOOLS,
        [("ping", {}), ("add", {"a": 1, "b": 2})],
        None,
        "python",
    ),
    (
        "python in a fence after prose",
        "I'll run it:\n```python\nsearch(query='x', limit=None, exact=True)\n```",
        TOOLS,
        [("search", {"query": "x", "limit": None, "exact": True})],
        "I'll run it:",
        "python",
    ),
    (
        "python whole line after prose",
        "Let me compute that.\nmath.factorial(n=5)",
        TOOLS,
        [("math_factorial", {"n": 5})],
        "Let me compute that.",
        "python",
    ),
    (
        "python in backticks on its own line",
        "Calling:\n`search(query='cats')`",
        TOOLS,
        [("search", {"query": "cats"})],
        "Calling:",
        "python",
    ),
    (
        "python literal containers and JSON words",
        "search(query='x', tags=('a', 'b'), opts={'deep': true}, n=-2)",
        TOOLS,
        [("search", {"query": "x", "tags": ["a", "b"], "opts": {"deep": True}, "n": -2})],
        None,
        "python",
    ),
    (
        "python unknown calls in a list are skipped",
        "[ping(), fly(to='moon')]",
        TOOLS,
        [("ping", {})],
        None,
        "python",
    ),
    # repairs
    (
        "repair trailing comma",
        '{"name": "add", "arguments": {"a": 1, "b": 2,},}',
        None,
        [("add", {"a": 1, "b": 2})],
        None,
        "json",
    ),
    (
        "repair single quotes",
        "{'name': 'get_weather', 'arguments': {'city': 'Paris'}}",
        None,
        [("get_weather", PARIS)],
        None,
        "json",
    ),
    (
        "repair unquoted keys",
        '{name: "get_weather", arguments: {city: "Paris"}}',
        None,
        [("get_weather", PARIS)],
        None,
        "json",
    ),
    (
        "repair unclosed brace",
        '{"name": "get_weather", "arguments": {"city": "Paris"}',
        None,
        [("get_weather", PARIS)],
        None,
        "json",
    ),
    (
        "repair python True/None",
        '{"name": "search", "arguments": {"exact": True, "limit": None}}',
        None,
        [("search", {"exact": True, "limit": None})],
        None,
        "json",
    ),
    (
        "repair mixed true and None",
        '{"name": "search", "arguments": {"exact": true, "limit": None}}',
        None,
        [("search", {"exact": True, "limit": None})],
        None,
        "json",
    ),
    (
        "repair in a fence",
        "```json\n{'name': 'ping', 'arguments': {},}\n```",
        None,
        [("ping", {})],
        None,
        "json",
    ),
    (
        "repair embedded in prose",
        "Okay: {'name': 'get_weather', 'arguments': {'city': 'Paris'}} done",
        None,
        [("get_weather", PARIS)],
        "Okay:",
        "json",
    ),
    (
        "repair in a hermes block with a missing brace",
        f'{TOOL_CALL_OPEN}\n{{"name": "get_weather", "arguments": {{"city": "Paris"}}\n'
        f"{TOOL_CALL_CLOSE}",
        None,
        [("get_weather", PARIS)],
        None,
        "hermes",
    ),
    (
        "repair in an unclosed hermes block",
        f"{TOOL_CALL_OPEN}\n{{'name': 'ping', 'arguments': {{}}}}",
        None,
        [("ping", {})],
        None,
        "hermes",
    ),
]


@pytest.mark.parametrize(
    ("raw", "tool_names", "expected", "text", "strategy"),
    [pytest.param(*case[1:], id=case[0]) for case in STRATEGY_CASES],
)
def test_strategies_read_calls(
    raw: str, tool_names: list[str] | None, expected: Calls, text: str | None, strategy: str
) -> None:
    parsed = parse_model_output(raw, tool_names)

    assert parsed.error is None
    assert calls_of(parsed) == expected
    assert parsed.text == text
    assert parsed.extra["strategy"] == strategy


@pytest.mark.parametrize(
    ("raw", "repaired"),
    [
        ('{"name": "ping", "arguments": {}}', False),
        ('{"name": "ping", "arguments": {},}', True),
        ("{'name': 'ping', 'arguments': {}}", True),
        (f'{TOOL_CALL_OPEN}{{"name": "ping", "arguments": {{}}}}{TOOL_CALL_CLOSE}', False),
        (f'{TOOL_CALL_OPEN}{{"name": "ping", "arguments": {{}}{TOOL_CALL_CLOSE}', True),
        ('<function=ping>{"x": 1,}</function>', True),
    ],
)
def test_repaired_is_recorded_only_when_repair_was_needed(raw: str, repaired: bool) -> None:
    parsed = parse_model_output(raw)

    assert calls_of(parsed)
    assert parsed.extra.get("repaired", False) is repaired


# -- what stays text --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "tool_names"),
    [
        pytest.param("The weather in Paris is sunny.", TOOLS, id="plain prose"),
        pytest.param(
            'You can use get_weather(city="Paris") to find out.', TOOLS, id="python inside prose"
        ),
        pytest.param("Call get_weather with a city.", TOOLS, id="name mentioned"),
        pytest.param('get_weather(city="Paris")', None, id="python without tool names"),
        pytest.param('fly(to="moon")', TOOLS, id="python unknown name"),
        pytest.param('print("hello")\nx = 1', TOOLS, id="code that is not a call"),
        pytest.param(
            '```python\nweather = get_weather(city="Paris")\nprint(weather)\n```',
            TOOLS,
            id="fenced code using a tool",
        ),
        pytest.param('Use it like {"name": "add"}.', TOOLS, id="json example without arguments"),
        pytest.param('{"name": "Alice", "age": 30}', TOOLS, id="structured answer with a name"),
        pytest.param(
            '{"name": "fly", "arguments": {"to": "moon"}}', TOOLS, id="json unknown tool name"
        ),
        pytest.param(
            'An example: {"name": "fly", "arguments": {}} is how.', TOOLS, id="prose unknown name"
        ),
        pytest.param('{"city": "Paris", "temp": 21}', None, id="json data"),
        pytest.param('[{"city": "Paris"}, {"city": "Rome"}]', None, id="json list of data"),
        pytest.param("Sets are written {1, 2} and dicts {'a': 1}.", None, id="braces in prose"),
        pytest.param("function f() { return [1, 2]; }", TOOLS, id="javascript"),
        pytest.param("", TOOLS, id="empty"),
    ],
)
def test_text_without_a_call_stays_text(raw: str, tool_names: list[str] | None) -> None:
    parsed = parse_model_output(raw, tool_names)

    assert parsed.calls == ()
    assert parsed.error is None
    assert parsed.text == raw.strip()
    assert "strategy" not in parsed.extra


def test_ignored_unknown_calls_are_listed() -> None:
    parsed = parse_model_output('{"name": "fly", "arguments": {"to": "moon"}}', TOOLS)

    assert parsed.calls == ()
    assert parsed.extra == {"ignored_calls": ["fly"]}


def test_ignored_calls_are_listed_next_to_known_ones() -> None:
    raw = '[{"name": "ping", "arguments": {}}, {"name": "fly", "arguments": {}}]'

    parsed = parse_model_output(raw, TOOLS)

    assert parsed.extra["ignored_calls"] == ["fly"]


def test_plain_text_has_no_extra() -> None:
    assert parse_model_output("Hello there.", TOOLS) == ParsedOutput(text="Hello there.")


def test_tool_names_as_a_set_or_mapping() -> None:
    raw = '{"name": "ping", "arguments": {}}'

    assert calls_of(parse_model_output(raw, {"ping"})) == [("ping", {})]
    assert calls_of(parse_model_output(raw, {"ping": ToolDefinition(name="ping")})) == [
        ("ping", {})
    ]


def test_ambiguous_loose_name_is_not_matched() -> None:
    raw = '{"name": "get.weather", "arguments": {}}'

    parsed = parse_model_output(raw, ["get_weather", "get-weather"])

    assert parsed.calls == ()


# -- errors the caller can re-ask with ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "tool_names", "error_start", "text"),
    [
        pytest.param(
            '{"name": "add", "arguments": {"a": 1,',
            None,
            "the tool call is not valid JSON",
            None,
            id="json cut off after a comma",
        ),
        pytest.param(
            'Checking. {"name": "add", "arguments": {"a": "unfinished',
            None,
            "the tool call is not valid JSON",
            "Checking.",
            id="json cut off inside a string",
        ),
        pytest.param(
            '```json\n{"name": "add", "arguments": {"a":\n```',
            None,
            "the tool call is not valid JSON",
            None,
            id="fenced json cut off after a colon",
        ),
        pytest.param(
            f'{TOOL_CALL_OPEN}{{"name": "add", "arguments": {{"a"{TOOL_CALL_CLOSE}',
            None,
            "the tool call is not valid JSON",
            None,
            id="hermes cut off after a key",
        ),
        pytest.param(
            '<function=add>{"a": 1,</function>',
            None,
            "the arguments of add are not valid JSON",
            None,
            id="llama function body cut off",
        ),
        pytest.param(
            "<function=add>[1, 2]</function>",
            None,
            "the arguments of add must be a JSON object",
            None,
            id="llama function body not an object",
        ),
        pytest.param(
            'get_weather("Paris")',
            TOOLS,
            "the call get_weather(...) has positional arguments",
            None,
            id="python positional arguments",
        ),
        pytest.param(
            "Let me see.\nadd(a=x, b=2)",
            TOOLS,
            "the value of 'a' in add(...) must be a literal value",
            "Let me see.",
            id="python non-literal argument",
        ),
        pytest.param(
            "search(**opts)",
            TOOLS,
            "the call search(**...) cannot be read",
            None,
            id="python keyword splat",
        ),
    ],
)
def test_unreadable_calls_give_an_error(
    raw: str, tool_names: list[str] | None, error_start: str, text: str | None
) -> None:
    parsed = parse_model_output(raw, tool_names)

    assert parsed.calls == ()
    assert parsed.error is not None
    assert parsed.error.startswith(error_start), parsed.error
    assert parsed.text == text
    assert parsed.extra["strategy"]


def test_python_positional_arguments_are_mapped_with_schemas() -> None:
    weather = ToolDefinition(
        name="get_weather",
        parameters={
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    )

    parsed = parse_model_output('get_weather("Paris", days=2)', {"get_weather": weather})

    assert calls_of(parsed) == [("get_weather", {"city": "Paris", "days": 2})]


@pytest.mark.parametrize(
    "raw",
    [
        'get_weather("Paris", 2, 3)',  # more positional arguments than properties
        'get_weather("Paris", city="Rome")',  # the same argument twice
    ],
)
def test_python_positional_arguments_that_cannot_be_mapped(raw: str) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}

    parsed = parse_model_output(raw, {"get_weather": schema})

    assert parsed.calls == ()
    assert parsed.error is not None
    assert "get_weather(city)" in parsed.error


def test_python_positional_call_is_skipped_next_to_a_good_one() -> None:
    parsed = parse_model_output('[ping(), get_weather("Paris")]', TOOLS)

    assert calls_of(parsed) == [("ping", {})]
    assert parsed.extra["skipped_calls"] == [
        "the call get_weather(...) has positional arguments; name them: get_weather(arg=value)"
    ]


def test_python_is_never_evaluated() -> None:
    raw = "search(query=__import__('os').system('echo hacked'))"

    parsed = parse_model_output(raw, TOOLS)

    assert parsed.calls == ()
    assert parsed.error is not None


def test_a_call_list_split_over_lines_as_the_whole_answer() -> None:
    raw = "[\n  get_weather(city='Paris'),\n  get_weather(city='Rome'),\n]"

    parsed = parse_model_output(raw, TOOLS)

    assert calls_of(parsed) == [("get_weather", PARIS), ("get_weather", {"city": "Rome"})]


def test_strategy_order_hermes_before_json() -> None:
    raw = (
        f'{{"name": "add", "arguments": {{}}}}\n{TOOL_CALL_OPEN}{{"name": "ping"}}{TOOL_CALL_CLOSE}'
    )

    parsed = parse_model_output(raw)

    assert calls_of(parsed) == [("ping", {})]
    assert parsed.extra["strategy"] == "hermes"


def test_strategy_order_json_before_python() -> None:
    raw = 'ping()\n{"name": "add", "arguments": {"a": 1}}'

    parsed = parse_model_output(raw, TOOLS)

    assert calls_of(parsed) == [("add", {"a": 1})]
    assert parsed.extra["strategy"] == "json"


def test_every_call_gets_its_own_id() -> None:
    parsed = parse_model_output("[ping(), ping()]", TOOLS)

    assert len({c.id for c in parsed.calls}) == 2


def test_long_prose_with_many_braces_is_fast_and_text() -> None:
    raw = "code: " + "{x: [1, 2]} " * 2000 + '"name": 1, "arguments": 2'

    parsed = parse_model_output(raw, TOOLS)

    assert parsed.calls == ()


# -- coerce_arguments ---------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "address": {
            "type": "object",
            "properties": {"zip_code": {"type": "string"}, "floor": {"type": "integer"}},
            "required": ["zip_code"],
        },
        "points": {
            "type": "array",
            "items": {"type": "object", "properties": {"x": {"type": "number"}}},
        },
        "filters": {"type": "object"},
        "max_results": {"type": "integer"},
        "level": {"enum": [1, 2, 3]},
    },
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("key", "given", "expected"),
    [
        ("count", "5", 5),
        ("count", " 7 ", 7),
        ("count", "5.0", 5),
        ("count", "1e3", 1000),
        ("ratio", "2.5", 2.5),
        ("ratio", "1e3", 1000.0),
        ("ratio", "-3", -3),
        ("ratio", ".5", 0.5),
        ("flag", "true", True),
        ("flag", "False", False),
        ("flag", "yes", True),
        ("flag", "no", False),
        ("tags", "red", ["red"]),
        ("tags", '["red", "blue"]', ["red", "blue"]),
        ("tags", 5, ["5"]),
        ("unit", "Celsius", "celsius"),
        ("unit", " FAHRENHEIT ", "fahrenheit"),
        ("limit", "10", 10),
        ("city", 75001, "75001"),
        ("city", 2.5, "2.5"),
        ("filters", '{"max": 3}', {"max": 3}),
        ("level", "2", 2),
    ],
)
def test_coercion_rules(key: str, given: Any, expected: Any) -> None:
    coerced, notes = coerce_arguments({key: given}, SCHEMA)

    assert coerced == {key: expected}
    assert type(coerced[key]) is type(expected)
    assert len(notes) >= 1
    assert all(key in note for note in notes)


@pytest.mark.parametrize(
    ("key", "given"),
    [
        ("count", "5.5"),  # not integral
        ("count", "many"),
        ("count", True),  # a boolean is not a number
        ("ratio", "nan"),
        ("ratio", "inf"),
        ("flag", "maybe"),
        ("flag", 1),
        ("unit", "kelvin"),
        ("filters", "not json"),
        ("filters", "[1]"),
        ("city", None),
        ("city", ["Paris"]),
    ],
)
def test_values_that_cannot_be_coerced_are_left_alone(key: str, given: Any) -> None:
    coerced, notes = coerce_arguments({key: given}, SCHEMA)

    assert coerced == {key: given}
    assert notes == []


@pytest.mark.parametrize(
    "arguments",
    [
        {"city": "Paris", "count": 5, "ratio": 5, "flag": True, "tags": ["5"]},
        {"city": "5"},  # a numeric string where a string is expected stays a string
        {"city": "Paris", "limit": None},
        {"city": "Paris", "unit": "celsius"},
        {"city": "Paris", "address": {"zip_code": "7"}},
    ],
)
def test_valid_values_are_not_touched(arguments: dict[str, Any]) -> None:
    coerced, notes = coerce_arguments(arguments, SCHEMA)

    assert coerced == arguments
    assert notes == []


@pytest.mark.parametrize(
    ("given", "renamed"),
    [
        ("City", "city"),
        ("CITY", "city"),
        ("max-results", "max_results"),
        ("max results", "max_results"),
        ("Max-Results", "max_results"),
    ],
)
def test_keys_are_renamed_to_their_property(given: str, renamed: str) -> None:
    coerced, notes = coerce_arguments({given: "1"}, SCHEMA)

    assert renamed in coerced
    assert given not in coerced
    assert f"renamed '{given}' to '{renamed}'" in notes


def test_a_key_is_not_renamed_onto_one_already_given() -> None:
    coerced, notes = coerce_arguments({"city": "Paris", "City": "Rome"}, SCHEMA)

    assert coerced == {"city": "Paris", "City": "Rome"}
    assert notes == []


def test_unknown_keys_are_kept_and_nothing_is_invented() -> None:
    coerced, notes = coerce_arguments({"foo": "1", "count": "2"}, SCHEMA)

    assert coerced == {"foo": "1", "count": 2}
    assert "city" not in coerced
    assert notes == ["'count': '2' -> 2"]


def test_nested_objects_and_arrays_are_coerced() -> None:
    arguments = {
        "city": "Paris",
        "address": '{"Zip-Code": 75001, "floor": "2"}',
        "points": [{"x": "1.5"}, {"x": 2}, {"X": "3"}],
    }

    coerced, notes = coerce_arguments(arguments, SCHEMA)

    assert coerced == {
        "city": "Paris",
        "address": {"zip_code": "75001", "floor": 2},
        "points": [{"x": 1.5}, {"x": 2}, {"x": 3}],
    }
    assert notes == [
        "'address': decoded a JSON-encoded object",
        "renamed 'address.Zip-Code' to 'address.zip_code'",
        "'address.zip_code': 75001 -> '75001'",
        "'address.floor': '2' -> 2",
        "'points[0].x': '1.5' -> 1.5",
        "renamed 'points[2].X' to 'points[2].x'",
        "'points[2].x': '3' -> 3",
    ]


def test_notes_describe_each_change() -> None:
    arguments = {"City": "Paris", "count": "5", "flag": "yes", "tags": "a", "unit": "Celsius"}

    _, notes = coerce_arguments(arguments, SCHEMA)

    assert notes == [
        "renamed 'City' to 'city'",
        "'count': '5' -> 5",
        "'flag': 'yes' -> true",
        "'tags': wrapped 'a' in a list",
        "'unit': 'Celsius' -> 'celsius'",
    ]


def test_coercion_does_not_modify_its_input() -> None:
    arguments = {"count": "5", "address": {"zip_code": 1}}
    snapshot = json.loads(json.dumps(arguments))

    coerce_arguments(arguments, SCHEMA)

    assert arguments == snapshot


def test_coercion_follows_refs_and_nullable_objects() -> None:
    schema = {
        "type": "object",
        "properties": {
            "address": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
        },
        "$defs": {
            "Address": {
                "type": "object",
                "properties": {"floor": {"type": "integer"}},
            },
            "Item": {"type": "object", "properties": {"qty": {"type": "integer"}}},
        },
    }

    coerced, notes = coerce_arguments(
        {"address": {"Floor": "3"}, "items": '[{"qty": "2"}]'}, schema
    )

    assert coerced == {"address": {"floor": 3}, "items": [{"qty": 2}]}
    assert "renamed 'address.Floor' to 'address.floor'" in notes
    assert validate_arguments(coerced, schema) is None


def test_coercion_with_a_schema_without_properties() -> None:
    assert coerce_arguments({"a": "1"}, {"type": "object"}) == ({"a": "1"}, [])


def test_coerced_tool_schema_from_the_tool_decorator_validates() -> None:
    from .sample_tools import add

    coerced, notes = coerce_arguments({"A": "2", "b": "3"}, add.definition.parameters)

    assert coerced == {"a": 2, "b": 3}
    assert len(notes) == 3
    assert validate_arguments(coerced, add.definition.parameters) is None


# -- validate_arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"city": "Paris"}, None),
        ({"city": "Paris", "count": 3, "unit": "celsius", "limit": None}, None),
        ({}, "missing required argument 'city'"),
        ({"count": "many", "city": "x"}, "'count' must be an integer, got 'many'"),
        ({"city": 5}, "'city' must be a string, got 5"),
        ({"city": "x", "flag": "maybe"}, "'flag' must be a boolean (true or false), got 'maybe'"),
        ({"city": "x", "tags": "a"}, "'tags' must be an array, got 'a'"),
        ({"city": "x", "unit": "kelvin"}, "'unit' must be one of: celsius, fahrenheit"),
        ({"city": "x", "level": 7}, "'level' must be one of: 1, 2, 3"),
        ({"city": "x", "limit": "lots"}, "'limit' must be an integer or null, got 'lots'"),
        ({"city": "x", "address": {}}, "'address' is missing required key 'zip_code'"),
        (
            {"city": "x", "address": {"zip_code": 5}},
            "'address.zip_code' must be a string, got 5",
        ),
        ({"city": "x", "points": [{"x": "a"}]}, "'points[0].x' must be a number, got 'a'"),
        ({"city": "x", "tags": ["a", 1]}, "'tags[1]' must be a string, got 1"),
    ],
)
def test_validation_messages(arguments: dict[str, Any], message: str | None) -> None:
    assert validate_arguments(arguments, SCHEMA) == message


def test_unknown_argument_lists_the_expected_ones() -> None:
    schema = {"type": "object", "properties": {"a": {}, "b": {}}}

    assert validate_arguments({"a": 1, "foo": 2}, schema) == (
        "unknown argument 'foo'; expected one of: a, b"
    )
    assert validate_arguments({"foo": 1, "bar": 2}, schema) == (
        "unknown arguments 'foo', 'bar'; expected one of: a, b"
    )


def test_unknown_arguments_for_a_tool_without_parameters() -> None:
    schema = {"type": "object", "properties": {}}

    assert validate_arguments({"x": 1}, schema) == "unknown argument 'x'; it takes none"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {}}, "additionalProperties": True},
        {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "integer"}},
        {"type": "object", "properties": {"a": {}}, "patternProperties": {"^x": {}}},
        {"type": "object"},  # no properties listed: anything goes
    ],
)
def test_unknown_arguments_allowed_when_the_schema_says_so(schema: dict[str, Any]) -> None:
    assert validate_arguments({"a": 1, "x1": 2}, schema) is None


def test_unknown_nested_keys_are_fine_unless_forbidden() -> None:
    open_schema = {
        "type": "object",
        "properties": {"o": {"type": "object", "properties": {"k": {}}}},
    }
    closed = json.loads(json.dumps(open_schema))
    closed["properties"]["o"]["additionalProperties"] = False

    assert validate_arguments({"o": {"k": 1, "z": 2}}, open_schema) is None
    assert validate_arguments({"o": {"k": 1, "z": 2}}, closed) == (
        "unknown key 'z' in 'o'; expected one of: k"
    )


def test_the_most_important_error_is_reported() -> None:
    # a missing or unknown argument matters more than a wrong nested value
    assert validate_arguments({"address": {"zip_code": 1}}, SCHEMA) == (
        "missing required argument 'city'"
    )
    assert validate_arguments({"city": "x", "foo": 1, "count": "z"}, SCHEMA) == (
        "unknown argument 'foo'; expected one of: " + ", ".join(SCHEMA["properties"])
    )


def test_several_missing_arguments_are_named_together() -> None:
    schema = {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a", "b"]}

    assert validate_arguments({}, schema) == "missing required arguments 'a', 'b'"


@pytest.mark.parametrize(
    ("prop", "value", "message"),
    [
        ({"type": "integer", "minimum": 1}, 0, "'v' must be >= 1, got 0"),
        ({"type": "integer", "maximum": 9}, 10, "'v' must be <= 9, got 10"),
        ({"type": "string", "minLength": 2}, "a", "'v' must be at least 2 characters long"),
        ({"type": "string", "maxLength": 1}, "ab", "'v' must be at most 1 characters long"),
        ({"type": "array", "minItems": 1}, [], "'v' must have at least 1 item"),
        ({"type": "string", "pattern": "^[0-9]+$"}, "x", "'v' must match the pattern ^[0-9]+$"),
        ({"const": "on"}, "off", "'v' must be 'on'"),
    ],
)
def test_other_constraints_have_short_messages(
    prop: dict[str, Any], value: Any, message: str
) -> None:
    schema = {"type": "object", "properties": {"v": prop}}

    assert validate_arguments({"v": value}, schema) == message


def test_nullable_object_reports_the_inner_problem() -> None:
    schema = {
        "type": "object",
        "properties": {
            "address": {
                "anyOf": [
                    {"type": "object", "properties": {"city": {"type": "string"}}},
                    {"type": "null"},
                ]
            }
        },
    }

    assert validate_arguments({"address": {"city": 3}}, schema) == (
        "'address.city' must be a string, got 3"
    )


def test_arguments_that_are_not_an_object() -> None:
    assert validate_arguments([1], SCHEMA) == "the arguments must be a JSON object"  # type: ignore[arg-type]


def test_long_values_are_shortened_in_messages() -> None:
    message = validate_arguments({"city": "x", "count": "z" * 500}, SCHEMA)

    assert message is not None
    assert len(message) < 100


def test_coerce_then_validate_round_trip() -> None:
    raw = qwen_function("get_weather", City="Paris", count="3", unit="Celsius", flag="yes")
    parsed = parse_model_output(raw, TOOLS)

    arguments, _ = coerce_arguments(parsed.calls[0].arguments, SCHEMA)

    assert validate_arguments(arguments, SCHEMA) is None
    assert arguments == {"city": "Paris", "count": 3, "unit": "celsius", "flag": True}


@pytest.mark.parametrize(
    "raw",
    [
        "x " + '{"name": "a", "arguments": {"b": [' * 3000,
        f"{TOOL_CALL_OPEN}" + "[" * 5000 + "]" * 5000,
        '{"name": "add", "arguments": ' + "[" * 5000 + "]" * 5000 + "}",
        "add(a=" + "[" * 5000 + "]" * 5000 + ")",
    ],
)
def test_absurd_nesting_does_not_crash(raw: str) -> None:
    parsed = parse_model_output(raw, TOOLS)

    assert parsed.calls == ()


# -- constrained output: only Hermes blocks are calls -----------------------------------------


def test_constrained_output_reads_only_hermes_calls() -> None:
    raw = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    # unconstrained, JSON that is call-shaped is a call ...
    assert parse_model_output(raw, ["get_weather"]).calls
    # ... but under a grammar the text branch is the model's answer, whatever it looks like
    parsed = parse_model_output(raw, ["get_weather"], constrained=True)
    assert parsed.calls == ()
    assert parsed.text == raw
    hermes = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    [call] = parse_model_output(hermes, ["get_weather"], constrained=True).calls
    assert call.arguments == {"city": "Paris"}
