"""Tool calls: parsing model output, streaming around calls, Hermes rendering and GBNF grammars.

Grammars are built with llama.cpp's own JSON-schema converter and checked with llama.cpp's own
GBNF parser. ``LlamaGrammar.from_string`` in llama-cpp-python 0.3.x only stores the text, so the
real check builds a grammar sampler: ``llama_sampler_init_grammar`` parses the text (no model
and no weights are needed when the grammar has no token references) and returns NULL, printing
``parse: error ...`` on stderr, when llama.cpp rejects it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import llama_cpp
import llama_cpp.llama_grammar
import pytest
from pydantic import BaseModel

from shoal.messages import ToolCall, ToolDefinition
from shoal.toolcalls import (
    CALL_TAIL,
    NO_CALL_GRAMMAR,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    ParsedOutput,
    TextStreamSplitter,
    build_arguments_grammar,
    build_output_grammar,
    build_tool_grammar,
    build_value_grammar,
    call_head,
    parse_model_output,
    render_call,
    render_tool_result,
    render_tools_section,
    required_fields,
)
from shoal.toolcalls.grammar import copied_string_rules, gbnf_literal
from shoal.tools import tool

from .grammar_checks import assert_parses, converter, llama_cpp_accepts, rules_of
from .sample_tools import add, lookup_order

# -- tools used throughout ----------------------------------------------------------------


class Address(BaseModel):
    street: str
    city: str
    zip_code: str | None = None


@tool
def ship(
    items: list[str], address: Address, speed: Literal["standard", "express"] = "standard"
) -> str:
    """Ship items to an address.

    Args:
        items: Item ids.
        address: Where to ship.
        speed: How fast.
    """
    return "ok"


@tool(name="files.read-v2")
def read_file(path: str, max_bytes: int = 1024) -> str:
    """Read a file."""
    return ""


@tool
def ping() -> str:
    """Check the service is up."""
    return "pong"


LOOKUP = lookup_order.definition
ADD = add.definition
SHIP = ship.definition
READ = read_file.definition
PING = ping.definition


def hermes(name: str, arguments: Any) -> str:
    return (
        f"{TOOL_CALL_OPEN}\n{json.dumps({'name': name, 'arguments': arguments})}\n{TOOL_CALL_CLOSE}"
    )


def calls_of(parsed: ParsedOutput) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, c.arguments) for c in parsed.calls]


# -- parse_model_output: Hermes blocks ----------------------------------------------------


def test_one_hermes_block_is_a_call_with_no_text() -> None:
    parsed = parse_model_output(hermes("lookup_order", {"order_id": "1042"}))

    assert calls_of(parsed) == [("lookup_order", {"order_id": "1042"})]
    assert parsed.text is None
    assert parsed.error is None


def test_text_before_a_block_is_kept_and_stripped() -> None:
    raw = "  Let me check that.\n" + hermes("lookup_order", {"order_id": "7"})

    parsed = parse_model_output(raw)

    assert parsed.text == "Let me check that."
    assert calls_of(parsed) == [("lookup_order", {"order_id": "7"})]


def test_several_blocks_give_calls_in_order() -> None:
    raw = hermes("add", {"a": 1, "b": 2}) + "\n" + hermes("lookup_order", {"order_id": "9"})

    parsed = parse_model_output(raw)

    assert calls_of(parsed) == [("add", {"a": 1, "b": 2}), ("lookup_order", {"order_id": "9"})]


def test_an_unclosed_last_block_is_accepted() -> None:
    raw = (
        hermes("add", {"a": 1, "b": 2})
        + "\n"
        + TOOL_CALL_OPEN
        + '\n{"name": "add", "arguments": {"a": 3, "b": 4}}\n'
    )

    parsed = parse_model_output(raw)

    assert calls_of(parsed) == [("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})]
    assert parsed.error is None


def test_a_list_inside_one_block_gives_several_calls() -> None:
    payload = [
        {"name": "add", "arguments": {"a": 1, "b": 1}},
        {"name": "ping", "arguments": {}},
    ]
    raw = f"{TOOL_CALL_OPEN}{json.dumps(payload)}{TOOL_CALL_CLOSE}"

    parsed = parse_model_output(raw)

    assert calls_of(parsed) == [("add", {"a": 1, "b": 1}), ("ping", {})]


def test_double_encoded_arguments_are_decoded() -> None:
    body = json.dumps({"name": "add", "arguments": json.dumps({"a": 5, "b": 6})})

    parsed = parse_model_output(f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}")

    assert calls_of(parsed) == [("add", {"a": 5, "b": 6})]


def test_empty_arguments_string_means_no_arguments() -> None:
    body = json.dumps({"name": "ping", "arguments": "  "})

    parsed = parse_model_output(f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}")

    assert calls_of(parsed) == [("ping", {})]


def test_parameters_key_is_read_as_arguments() -> None:
    body = json.dumps({"name": "add", "parameters": {"a": 1, "b": 2}})

    parsed = parse_model_output(f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}")

    assert calls_of(parsed) == [("add", {"a": 1, "b": 2})]


def test_missing_arguments_mean_no_arguments() -> None:
    parsed = parse_model_output(f'{TOOL_CALL_OPEN}{{"name": "ping"}}{TOOL_CALL_CLOSE}')

    assert calls_of(parsed) == [("ping", {})]


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "add", "arguments": {"a": 1,',  # truncated JSON
        "not json at all",
        '{"arguments": {"a": 1}}',  # no name
        '{"name": 42, "arguments": {}}',  # name not a string
        '{"name": "add", "arguments": [1, 2]}',  # arguments not an object
        '{"name": "add", "arguments": "{not json"}',  # double-encoded but broken
        '"just a string"',
        "[1, 2]",
    ],
)
def test_a_block_that_cannot_be_decoded_is_an_error(body: str) -> None:
    parsed = parse_model_output(f"Checking.\n{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}")

    assert parsed.calls == ()
    assert parsed.error is not None
    assert parsed.error.startswith("the tool call is not valid JSON")
    assert parsed.text == "Checking."


def test_an_empty_block_is_an_error() -> None:
    parsed = parse_model_output(f"{TOOL_CALL_OPEN}\n  \n{TOOL_CALL_CLOSE}")

    assert parsed.calls == ()
    assert parsed.error == "the tool call is empty"


def test_a_bad_block_after_a_good_one_is_still_an_error() -> None:
    raw = hermes("ping", {}) + f"\n{TOOL_CALL_OPEN}{{oops{TOOL_CALL_CLOSE}"

    parsed = parse_model_output(raw)

    assert parsed.calls == ()
    assert parsed.error is not None


def test_each_call_gets_its_own_id() -> None:
    parsed = parse_model_output(hermes("ping", {}) + hermes("ping", {}))

    ids = [c.id for c in parsed.calls]
    assert len(ids) == 2
    assert len(set(ids)) == 2
    assert all(i.startswith("call_") for i in ids)


# -- parse_model_output: bare and fenced JSON ---------------------------------------------


def test_bare_json_call_is_a_call() -> None:
    parsed = parse_model_output('  {"name": "add", "arguments": {"a": 2, "b": 3}}\n')

    assert calls_of(parsed) == [("add", {"a": 2, "b": 3})]
    assert parsed.text is None
    assert parsed.error is None


def test_bare_json_list_of_calls() -> None:
    raw = json.dumps([{"name": "ping", "arguments": {}}, {"name": "add", "arguments": {"a": 1}}])

    parsed = parse_model_output(raw)

    assert calls_of(parsed) == [("ping", {}), ("add", {"a": 1})]


@pytest.mark.parametrize("fence", ["```json", "```", "```tool_call"])
def test_fenced_json_call_is_a_call(fence: str) -> None:
    raw = f'{fence}\n{{"name": "lookup_order", "arguments": {{"order_id": "55"}}}}\n```'

    parsed = parse_model_output(raw)

    assert calls_of(parsed) == [("lookup_order", {"order_id": "55"})]


@pytest.mark.parametrize(
    "raw",
    [
        '{"status": "shipped", "eta": "2 days"}',
        '```json\n{"answer": 42}\n```',
        "[1, 2, 3]",
        '[{"city": "Paris"}]',
        "{not json",
        '{"name": "add", "arguments": [1]}',  # looks like a call but cannot be one
    ],
)
def test_json_that_is_not_a_call_stays_text(raw: str) -> None:
    parsed = parse_model_output(raw)

    assert parsed.calls == ()
    assert parsed.error is None
    assert parsed.text == raw.strip()


def test_json_answer_with_a_name_field_but_no_arguments_stays_text() -> None:
    # a structured answer such as Person(name=..., age=...) when tools are also offered
    raw = '{"name": "Alice", "age": 30}'

    parsed = parse_model_output(raw)

    assert parsed.calls == ()
    assert parsed.text == raw


def test_plain_text_is_text() -> None:
    parsed = parse_model_output("  Your order has shipped.\n")

    assert parsed == ParsedOutput(text="Your order has shipped.")


def test_text_mentioning_json_in_prose_is_text() -> None:
    raw = 'Call it like {"name": "add"} if you want.'

    assert parse_model_output(raw).calls == ()


# -- Hermes rendering round-trips through the parser --------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"order_id": "1042"},
        {"a": -3, "b": 2.5, "flag": True, "none": None},
        {"items": ["x", "y"], "address": {"street": "1 Rue de l'Église", "city": "Zürich"}},
        {"text": 'quotes " and \\ backslashes\nand newlines\tand tabs'},
        {"emoji": "📦 ✓", "cjk": "注文"},
        {"html": "<b>bold</b> a < b"},
    ],
)
def test_render_call_round_trips(arguments: dict[str, Any]) -> None:
    call = ToolCall(name="ship", arguments=arguments)

    parsed = parse_model_output(render_call(call))

    assert calls_of(parsed) == [("ship", arguments)]
    assert parsed.error is None


def test_render_call_keeps_non_ascii_unescaped_and_name_first() -> None:
    rendered = render_call(ToolCall(name="lookup", arguments={"city": "Zürich"}))

    assert rendered == (
        f'{TOOL_CALL_OPEN}\n{{"name": "lookup", "arguments": {{"city": "Zürich"}}}}\n'
        f"{TOOL_CALL_CLOSE}"
    )


def test_text_and_rendered_calls_round_trip() -> None:
    calls = [ToolCall(name="add", arguments={"a": 1, "b": 2}), ToolCall(name="ping")]
    raw = "I will do both.\n" + "\n".join(render_call(c) for c in calls)

    parsed = parse_model_output(raw)

    assert parsed.text == "I will do both."
    assert calls_of(parsed) == [("add", {"a": 1, "b": 2}), ("ping", {})]


def test_render_tool_result_wraps_in_tool_response() -> None:
    assert render_tool_result('{"ok":true}') == '<tool_response>\n{"ok":true}\n</tool_response>'


def test_tools_section_lists_each_tool_as_one_json_line() -> None:
    section = render_tools_section([LOOKUP, ADD])

    listing = section.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    lines = [json.loads(line) for line in listing.splitlines()]
    assert lines == [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
            },
        }
        for t in (LOOKUP, ADD)
    ]
    assert section.startswith("# Tools\n")
    assert section.endswith(
        f'{TOOL_CALL_OPEN}\n{{"name": <function-name>, "arguments": <args-json-object>}}\n'
        f"{TOOL_CALL_CLOSE}"
    )


# -- TextStreamSplitter -------------------------------------------------------------------


def feed_all(splitter: TextStreamSplitter, pieces: list[str]) -> list[str]:
    return [splitter.feed(p) for p in pieces]


def test_plain_text_streams_out_piece_by_piece() -> None:
    splitter = TextStreamSplitter()

    shown = feed_all(splitter, ["Your ", "order ", "shipped."])

    assert shown == ["Your ", "order ", "shipped."]
    assert splitter.flush() == ""
    assert not splitter.is_call


def test_a_call_at_the_start_releases_nothing() -> None:
    splitter = TextStreamSplitter()
    pieces = ["<tool_call>", '\n{"name": "ping", ', '"arguments": {}}\n', "</tool_call>"]

    shown = feed_all(splitter, pieces)

    assert shown == ["", "", "", ""]
    assert splitter.is_call
    assert splitter.flush() == ""


def test_a_call_tag_split_across_pieces_is_held_back() -> None:
    splitter = TextStreamSplitter()

    shown = feed_all(splitter, ["<", "tool", "_ca", "ll>", '{"name": "ping"}'])

    assert shown == ["", "", "", "", ""]
    assert splitter.is_call
    assert splitter.flush() == ""


def test_whitespace_before_a_call_is_not_released() -> None:
    splitter = TextStreamSplitter()

    shown = feed_all(splitter, ["\n", "  ", "<tool_", "call>\n{"])

    assert shown == ["", "", "", ""]
    assert splitter.is_call
    assert splitter.flush() == ""


def test_text_then_a_call_releases_only_the_text() -> None:
    splitter = TextStreamSplitter()

    shown = feed_all(splitter, ["Let me check.", " <tool", "_call>", '{"name": "x"}', " more"])

    assert "".join(shown) == "Let me check. "
    assert splitter.is_call
    assert splitter.flush() == ""


def test_text_and_the_tag_in_one_piece() -> None:
    splitter = TextStreamSplitter()

    shown = splitter.feed('Sure!<tool_call>{"name": "ping"}')

    assert shown == "Sure!"
    assert splitter.is_call


def test_a_possible_tag_start_is_held_until_it_is_not_one() -> None:
    splitter = TextStreamSplitter()

    assert splitter.feed("a <to") == "a "
    assert splitter.feed("mato") == "<tomato"
    assert not splitter.is_call


def test_a_leading_angle_bracket_that_is_not_a_tag_is_released() -> None:
    splitter = TextStreamSplitter()

    assert splitter.feed("<") == ""
    assert splitter.feed("b>bold</b>") == "<b>bold</b>"
    assert not splitter.is_call


def test_flush_releases_a_held_tail() -> None:
    splitter = TextStreamSplitter()

    assert splitter.feed("x <tool_ca") == "x "
    assert splitter.flush() == "<tool_ca"
    assert splitter.flush() == ""


def test_flush_releases_leading_whitespace_only_text() -> None:
    splitter = TextStreamSplitter()

    assert splitter.feed("  ") == ""
    assert splitter.flush() == "  "


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_released_text_is_what_the_parser_calls_text(size: int) -> None:
    raw = "The answer needs a lookup. " + hermes("lookup_order", {"order_id": "1042"})
    splitter = TextStreamSplitter()

    shown = "".join(splitter.feed(raw[i : i + size]) for i in range(0, len(raw), size))
    shown += splitter.flush()

    assert shown.strip() == parse_model_output(raw).text
    assert splitter.is_call


@pytest.mark.parametrize("size", [1, 3, 11])
def test_text_without_a_call_is_released_whole(size: int) -> None:
    raw = "Prices: a < b, <i>x</i> and <tool but no call."
    splitter = TextStreamSplitter()

    shown = "".join(splitter.feed(raw[i : i + size]) for i in range(0, len(raw), size))

    assert shown + splitter.flush() == raw
    assert not splitter.is_call


# -- grammars: checked by llama.cpp's own parser ------------------------------------------


def declared_names(grammar: str) -> list[str]:
    """Tool names the call rule lets the model write."""
    call = rules_of(grammar)["shoal-call"]
    return re.findall(r'"\\"([^"\\]+)\\", \\"arguments\\": "', call)


def test_the_checker_rejects_broken_grammars(capfd: pytest.CaptureFixture[str]) -> None:
    assert llama_cpp_accepts('root ::= "a" [b-c]*\n', capfd)[0]
    assert not llama_cpp_accepts("root ::= undefined-rule\n", capfd)[0]
    assert not llama_cpp_accepts('root ::= "a" (\n', capfd)[0]


@pytest.mark.parametrize(
    "tools",
    [[LOOKUP], [LOOKUP, ADD], [SHIP], [READ, PING], [LOOKUP, ADD, SHIP, READ, PING]],
    ids=["lookup", "lookup+add", "ship", "read+ping", "all"],
)
@pytest.mark.parametrize("allow_text", [True, False])
def test_tool_grammars_parse(
    tools: list[ToolDefinition], allow_text: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    grammar = build_tool_grammar(
        tools, allow_text=allow_text, output_schema=None, converter_factory=converter
    )

    assert_parses(grammar, capfd)
    assert declared_names(grammar) == [t.name for t in tools]


def test_auto_grammar_is_a_call_or_text_that_cannot_open_a_tag() -> None:
    grammar = build_tool_grammar(
        [LOOKUP, ADD], allow_text=True, output_schema=None, converter_factory=converter
    )
    rules = rules_of(grammar)

    assert rules["root"] == "shoal-call | shoal-text"
    assert rules["shoal-text"] == "[^<\\x00] [^\\x00]*"


def test_required_grammar_has_no_text_branch() -> None:
    grammar = build_tool_grammar(
        [LOOKUP, ADD], allow_text=False, output_schema=None, converter_factory=converter
    )
    rules = rules_of(grammar)

    assert rules["root"] == "shoal-call"
    assert "shoal-text" not in rules
    assert "shoal-answer" not in grammar


def test_call_rule_matches_the_rendered_hermes_form() -> None:
    grammar = build_tool_grammar(
        [LOOKUP], allow_text=False, output_schema=None, converter_factory=converter
    )
    rendered = render_call(ToolCall(name="lookup_order", arguments={"order_id": "1"}))

    call = rules_of(grammar)["shoal-call"]
    assert call.startswith(gbnf_literal(TOOL_CALL_OPEN + '\n{"name": ') + " ( ")
    assert call.endswith(" ) " + gbnf_literal("}\n" + TOOL_CALL_CLOSE))
    assert rendered.startswith(TOOL_CALL_OPEN + '\n{"name": "lookup_order", "arguments": ')
    assert rendered.endswith("}\n" + TOOL_CALL_CLOSE)


def test_argument_rules_name_every_parameter() -> None:
    grammar = build_tool_grammar(
        [SHIP], allow_text=False, output_schema=None, converter_factory=converter
    )

    for key in ("items", "address", "street", "city", "speed"):
        assert f'"\\"{key}\\""' in grammar
    assert '"\\"standard\\""' in grammar
    assert '"\\"express\\""' in grammar


def test_grammar_uses_strict_json_string_characters(capfd: pytest.CaptureFixture[str]) -> None:
    grammar = build_tool_grammar(
        [LOOKUP], allow_text=True, output_schema=None, converter_factory=converter
    )

    char_lines = [line for line in grammar.splitlines() if line.startswith("char ::=")]
    assert char_lines == [
        'char ::= [^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})'
    ]
    assert_parses(grammar, capfd)


def test_tool_grammar_with_output_schema_answers_in_json(
    capfd: pytest.CaptureFixture[str],
) -> None:
    schema = {
        "type": "object",
        "properties": {"status": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["status", "days"],
    }

    grammar = build_tool_grammar(
        [LOOKUP],
        allow_text=True,
        output_schema=schema,
        converter_factory=converter,
        copy_sources=["Where is order 1042?"],
    )

    rules = rules_of(grammar)
    assert rules["root"] == "shoal-call | shoal-answer"
    assert "shoal-text" not in rules
    assert not any(name.startswith("shoal-span") for name in rules)  # sources ignored
    assert_parses(grammar, capfd)


def test_tool_grammar_needs_a_tool() -> None:
    with pytest.raises(ValueError, match="at least one tool"):
        build_tool_grammar([], allow_text=True, output_schema=None, converter_factory=converter)


def test_each_grammar_gets_a_fresh_converter() -> None:
    made: list[llama_cpp.llama_grammar.SchemaConverter] = []

    def factory() -> llama_cpp.llama_grammar.SchemaConverter:
        made.append(converter())
        return made[-1]

    first = build_tool_grammar(
        [ADD], allow_text=True, output_schema=None, converter_factory=factory
    )
    second = build_tool_grammar(
        [LOOKUP], allow_text=True, output_schema=None, converter_factory=factory
    )

    assert len(made) == 2
    assert "integer" not in rules_of(second)  # nothing left over from the first grammar
    assert "integer" in rules_of(first)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
        Address.model_json_schema(),
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
        {"enum": ["yes", "no", "maybe"]},
        {
            "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "number"}}}},
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
        },
    ],
    ids=["object", "pydantic", "array", "enum", "refs"],
)
def test_output_grammars_parse(schema: dict[str, Any], capfd: pytest.CaptureFixture[str]) -> None:
    grammar = build_output_grammar(schema, converter_factory=converter)

    assert rules_of(grammar)["root"] == "shoal-answer"
    assert "shoal-call" not in grammar
    assert_parses(grammar, capfd)


def test_no_call_grammar_parses(capfd: pytest.CaptureFixture[str]) -> None:
    assert_parses(NO_CALL_GRAMMAR, capfd)
    assert NO_CALL_GRAMMAR.startswith("root ::= [^<")


# -- gbnf_literal and copied strings ------------------------------------------------------


def unescape_gbnf(literal: str) -> str:
    """The text a GBNF string literal (as gbnf_literal writes it) stands for."""
    assert literal.startswith('"')
    assert literal.endswith('"')
    mapping = {"\\": "\\", '"': '"', "n": "\n", "r": "\r"}
    return re.sub(r"\\(.)", lambda m: mapping[m.group(1)], literal[1:-1])


@pytest.mark.parametrize(
    "text",
    ["plain", 'a "quoted" word', "back\\slash", "two\nlines\r\n", "Zürich ✓ 注文 📦", "", "\\n"],
)
def test_gbnf_literal_round_trips_and_parses(text: str, capfd: pytest.CaptureFixture[str]) -> None:
    literal = gbnf_literal(text)

    assert unescape_gbnf(literal) == text
    assert "\n" not in literal
    assert_parses(f"root ::= {literal} | {literal} [a]\n", capfd)


def test_gbnf_literal_escapes() -> None:
    assert gbnf_literal('a"b\\c\nd\re') == '"a\\"b\\\\c\\nd\\re"'


def span_texts(rules: list[str]) -> dict[str, tuple[str, str | None]]:
    """Each span rule: the JSON-decoded unit, and the JSON-decoded gap after it (if any)."""
    spans: dict[str, tuple[str, str | None]] = {}
    pattern = re.compile(r'^(shoal-span-\S+) ::= ("(?:[^"\\]|\\.)*")(?: \( ("(?:[^"\\]|\\.)*") )?')
    for rule in rules:
        match = pattern.match(rule)
        if match is None:
            continue
        unit = json.loads('"' + unescape_gbnf(match.group(2)) + '"')
        gap = json.loads('"' + unescape_gbnf(match.group(3)) + '"') if match.group(3) else None
        spans[match.group(1)] = (unit, gap)
    return spans


def test_copied_string_rules_hold_every_word_of_the_source() -> None:
    source = "Where is my order 1042? Email bob.smith@example.com now"

    rules = copied_string_rules([source])

    units = [unit for unit, _ in span_texts(rules).values()]
    assert units == [
        *("Where", "is", "my", "order", "1042", "?"),
        *("Email", "bob.smith@example.com", "now"),
    ]
    string_rule = rules[-1]
    assert string_rule.startswith('string ::= "\\"" ( shoal-span-0-0 | ')
    assert string_rule.endswith(' ) "\\"" space')
    assert string_rule.count("shoal-span-") == len(units)


def test_copied_spans_rebuild_the_source() -> None:
    source = 'He said "ship it" to C:\\temp\nthen left — très bien ✓'

    spans = span_texts(copied_string_rules([source]))

    rebuilt = "".join(unit + (gap or "") for unit, gap in spans.values())
    assert rebuilt == source


def test_copied_strings_escape_for_json() -> None:
    rules = copied_string_rules(['say "hi"\\ ok\nnext é'])

    bodies = " ".join(rules)
    assert 'shoal-span-0-1 ::= "\\\\\\""' in bodies  # the unit '"' as JSON \" in GBNF
    assert '"\\\\n"' in bodies  # a newline gap as JSON \n
    assert '"é"' in bodies  # non-ASCII kept as is, not \u00e9
    assert "\\u00e9" not in bodies


def test_copied_strings_from_several_sources() -> None:
    rules = copied_string_rules(["order 7", "refund"])

    spans = span_texts(rules)
    assert [name for name in spans] == ["shoal-span-0-0", "shoal-span-0-1", "shoal-span-1-0"]
    assert spans["shoal-span-0-0"] == ("order", " ")
    assert spans["shoal-span-1-0"] == ("refund", None)
    assert "shoal-span-1-0" in rules[-1]


def test_copied_strings_without_words_leave_strings_free() -> None:
    assert copied_string_rules([]) == []
    assert copied_string_rules(["", "  ", "\n"]) == []


def test_tool_grammar_with_sources_replaces_the_string_rule(
    capfd: pytest.CaptureFixture[str],
) -> None:
    grammar = build_tool_grammar(
        [LOOKUP, ADD],
        allow_text=True,
        output_schema=None,
        converter_factory=converter,
        copy_sources=['Where is "my" order 1042?\nThanks \\ é ✓'],
    )

    rules = rules_of(grammar)  # also checks no rule is defined twice
    assert rules["string"].startswith('"\\"" ( shoal-span-0-0 ')
    assert "char*" not in rules["string"]
    assert "shoal-span-0-11" in rules
    assert_parses(grammar, capfd)


def test_tool_grammar_with_sources_and_no_string_parameter(
    capfd: pytest.CaptureFixture[str],
) -> None:
    grammar = build_tool_grammar(
        [ADD],
        allow_text=False,
        output_schema=None,
        converter_factory=converter,
        copy_sources=["add 2 and 3"],
    )

    assert_parses(grammar, capfd)


@pytest.mark.parametrize("source", ["", "   "])
def test_tool_grammar_with_a_blank_source_parses(
    source: str, capfd: pytest.CaptureFixture[str]
) -> None:
    grammar = build_tool_grammar(
        [ADD],
        allow_text=False,
        output_schema=None,
        converter_factory=converter,
        copy_sources=[source],
    )

    assert_parses(grammar, capfd)


def test_a_known_tools_call_is_head_arguments_tail(capfd: pytest.CaptureFixture[str]) -> None:
    """What an engine evaluates (the head), samples under the arguments grammar, then appends
    (the tail) is exactly the call the whole-call grammar allows for that tool."""
    arguments = build_arguments_grammar(LOOKUP, converter_factory=converter)
    whole = build_tool_grammar(
        [LOOKUP], allow_text=False, output_schema=None, converter_factory=converter
    )
    assert_parses(arguments, capfd)
    # the arguments object is the one rule the whole-call grammar uses for that tool
    assert rules_of(arguments)["root"] == "shoal-args-0"
    assert rules_of(arguments)["shoal-args-0"] == rules_of(whole)["shoal-args-0"]
    assert rules_of(whole)["shoal-call"].endswith(gbnf_literal(CALL_TAIL))
    text = call_head("lookup_order") + '{"order_id": "1042"}' + CALL_TAIL
    assert text == render_call(ToolCall(name="lookup_order", arguments={"order_id": "1042"}))
    parsed = parse_model_output(text, {"lookup_order": LOOKUP}, constrained=True)
    assert [(c.name, c.arguments) for c in parsed.calls] == [("lookup_order", {"order_id": "1042"})]


def test_arguments_grammar_copies_strings_from_the_sources(
    capfd: pytest.CaptureFixture[str],
) -> None:
    grammar = build_arguments_grammar(
        LOOKUP, converter_factory=converter, copy_sources=("Where is order 1042?",)
    )
    assert_parses(grammar, capfd)
    rules = rules_of(grammar)
    assert rules["string"].startswith('"\\"" ( shoal-span-0-0')
    assert any('"1042"' in body for name, body in rules.items() if name.startswith("shoal-span"))


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
             "required": ["a", "b"]},
            ["a", "b"],
        ),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
             "additionalProperties": False},
            ["a"],
        ),
        # an optional key, extra keys allowed, no keys, not an object, a reference: the
        # whole object is sampled under one grammar instead
        ({"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"]}, None),
        ({"type": "object", "properties": {"a": {}}, "required": ["a"],
          "additionalProperties": True}, None),
        ({"type": "object", "properties": {}}, None),
        ({"type": "string"}, None),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}, "required": ["a"]}, None),
    ],
)  # fmt: skip
def test_required_fields(schema: dict[str, Any], expected: list[str] | None) -> None:
    fields = required_fields(schema)
    assert (None if fields is None else [name for name, _ in fields]) == expected


def test_value_grammar_lets_the_model_cross_the_forced_boundaries(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """``"key":`` is forced; the value may start with the space and end with the comma the
    model would write in the same token as the quote."""
    grammar = build_value_grammar(
        {"type": "string"}, converter_factory=converter, leading_space=True, suffix=","
    )
    assert_parses(grammar, capfd)
    assert rules_of(grammar)["root"] == '" "? string ","'
    last = build_value_grammar(
        {"type": "integer"}, converter_factory=converter, leading_space=True, suffix="}"
    )
    assert_parses(last, capfd)
    assert rules_of(last)["root"].endswith(' "}"')
    plain = build_value_grammar({"type": "integer"}, converter_factory=converter)
    assert rules_of(plain)["root"] == "integer"
