"""GBNF grammars that make a tool call impossible to get wrong.

:func:`build_tool_grammar` composes one grammar from the offered tools' JSON schemas:

- ``auto``: the output is either free text (which may not open with ``<``) or exactly one
  Hermes call: ``<tool_call>``, ``{"name": "<declared tool>", "arguments": <valid object>}``,
  ``</tool_call>`` on three lines;
- ``required`` / a tool name: only the call branch (restricted to that tool when named);
- with ``output_schema``: the text branch becomes a JSON value matching that schema.

The per-schema rules come from a :class:`SchemaConverter`, the interface of llama.cpp's own
JSON-schema-to-GBNF converter (``llama_cpp.llama_grammar.SchemaConverter``). It is injected by
the embedded backend so that this module stays free of the native library, and so that the
converter llama.cpp maintains is used rather than a hand-written one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from shoal.messages import ToolDefinition
from shoal.toolcalls.hermes import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

__all__ = [
    "CALL_TAIL",
    "NO_CALL_GRAMMAR",
    "SchemaConverter",
    "build_arguments_grammar",
    "build_output_grammar",
    "build_tool_grammar",
    "build_value_grammar",
    "call_head",
    "gbnf_literal",
    "required_fields",
]

#: what follows a call's arguments object, always
CALL_TAIL = "}\n" + TOOL_CALL_CLOSE


def call_head(tool_name: str) -> str:
    """What precedes a call's arguments object when the tool is known: the text a grammar
    for that one tool forces anyway, so an engine can evaluate it as prompt instead of
    sampling it token by token."""
    return TOOL_CALL_OPEN + '\n{"name": "' + tool_name + '", "arguments": '


#: free text that does not start like a tag; the engine stops it at end-of-turn
_FREE_TEXT = "[^<\\x00] [^\\x00]*"
#: free text that cannot open a tool call (the answer when tools exist but may not be called):
#: not a tag, and not a JSON object, list or code fence either, which is how small models
#: (Qwen's) write a call in their own format when told they may not call
NO_CALL_GRAMMAR = "root ::= [^<{[`\\x00] [^\\x00]*\n"


class SchemaConverter(Protocol):
    """The part of llama.cpp's ``SchemaConverter`` this module uses."""

    def resolve_refs(self, schema: dict[str, Any], url: str) -> dict[str, Any]: ...

    def visit(self, schema: dict[str, Any], name: str) -> str: ...

    def format_grammar(self) -> str: ...


def gbnf_literal(text: str) -> str:
    """``text`` as a quoted GBNF string literal."""
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


#: JSON forbids raw control characters inside strings; llama.cpp's older converters allow them,
#: which lets a small model run a string on across lines and never close it
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def _rules(converter: SchemaConverter) -> str:
    lines = converter.format_grammar().rstrip().splitlines()
    return "\n".join(_JSON_CHAR if line.startswith("char ::=") else line for line in lines)


def _visit(converter: SchemaConverter, schema: dict[str, Any], name: str) -> str:
    resolved = converter.resolve_refs(json.loads(json.dumps(schema)), name)
    return converter.visit(resolved, name)


#: a unit a copied string can start or end at: a word (which may hold @ . + - / : ' inside,
#: so emails, ids and paths stay whole) or one punctuation mark
_UNIT = re.compile(r"\w(?:[\w@.+\-/:']*\w)?|[^\w\s]")


def _json_inner(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def copied_string_rules(sources: Sequence[str]) -> list[str]:
    """GBNF rules for a JSON string that is a run of whole words copied from ``sources``.

    A model of ~100M parameters asked for ``order_id`` given "Where is my order 1042?" often
    closes the string at once or writes noise; restricted to spans of the request it writes
    ``"1042"``. Replaces the converter's ``string`` rule.
    """
    rules: list[str] = []
    starts: list[str] = []
    for s_index, source in enumerate(sources):
        units = list(_UNIT.finditer(source))
        for u_index, unit in enumerate(units):
            name = f"shoal-span-{s_index}-{u_index}"
            starts.append(name)
            rule = f"{name} ::= {gbnf_literal(_json_inner(unit.group()))}"
            if u_index + 1 < len(units):
                gap = source[unit.end() : units[u_index + 1].start()]
                rule += f" ( {gbnf_literal(_json_inner(gap))} shoal-span-{s_index}-{u_index + 1} )?"
            rules.append(rule)
    if not starts:
        return []  # nothing to copy from: strings stay free
    rules.append(f'string ::= "\\"" ( {" | ".join(starts)} ) "\\"" space')
    return rules


_NUMBER_WORDS = {
    word: index
    for index, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve".split()
    )
}
#: a number in digits (``1,000``, ``-3``, ``2.50``) or a lower-case word (checked against
#: :data:`_NUMBER_WORDS`), in one pass so the order of appearance is kept
_NUMBER_OR_WORD = re.compile(
    r"(?<![\w.])(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?)(?![\d])|([a-z]+)"
)


def numbers_in(sources: Sequence[str]) -> list[str]:
    """The numbers written in ``sources``, as JSON literals, in order of first appearance.

    Digits (``1,000`` → ``1000``, ``2.50`` → ``2.5``, a leading ``-`` kept; integers of any
    size exactly) and the number words zero to twelve.
    """
    found: dict[str, None] = {}
    for source in sources:
        for match in _NUMBER_OR_WORD.finditer(source.lower()):
            digits, word = match.groups()
            if digits is not None:
                text = digits.replace(",", "")
                literal = str(int(text)) if "." not in text else _decimal_literal(text)
                found[literal] = None
            elif word in _NUMBER_WORDS:
                found[str(_NUMBER_WORDS[word])] = None
    return list(found)


def _decimal_literal(text: str) -> str:
    """A decimal as JSON writes it: ``2.50`` → ``2.5``, ``3.0`` → ``3.0``, exact digits."""
    sign = "-" if text.startswith("-") else ""
    whole, _, fraction = text.lstrip("-").partition(".")
    return f"{sign}{int(whole or '0')}.{fraction.rstrip('0') or '0'}"


def copied_number_rules(sources: Sequence[str]) -> list[str]:
    """GBNF ``integer`` and ``number`` rules that allow only the numbers in ``sources``.

    Replaces the converter's rules (each only when ``sources`` hold a number of its kind), so a
    tiny model fills ``base`` in "a base of 10 units" with ``10`` rather than an invented value.
    """
    literals = numbers_in(sources)
    integers = [n for n in literals if "." not in n and "e" not in n]
    rules = []
    if integers:
        rules.append(f"integer ::= ( {' | '.join(gbnf_literal(n) for n in integers)} ) space")
    if literals:
        rules.append(f"number ::= ( {' | '.join(gbnf_literal(n) for n in literals)} ) space")
    return rules


def build_tool_grammar(
    tools: Sequence[ToolDefinition],
    *,
    allow_text: bool,
    output_schema: dict[str, Any] | None,
    converter_factory: Callable[[], SchemaConverter],
    copy_sources: Sequence[str] = (),
) -> str:
    """A grammar for one turn: a call to one of ``tools``, or (``allow_text``) an answer.

    With ``copy_sources`` (and no ``output_schema``), free-form string and number arguments
    must be copied from those texts (:func:`copied_string_rules`, :func:`copied_number_rules`).
    """
    if not tools:
        raise ValueError("build_tool_grammar needs at least one tool")
    converter = converter_factory()
    branches = []
    for index, tool in enumerate(tools):
        args_rule = _visit(converter, tool.parameters, f"shoal-args-{index}")
        head = gbnf_literal(f'"{tool.name}", "arguments": ')
        branches.append(f"{head} {args_rule}")
    rules = [
        "shoal-call ::= "
        + gbnf_literal(TOOL_CALL_OPEN + '\n{"name": ')
        + " ( "
        + " | ".join(branches)
        + " ) "
        + gbnf_literal(CALL_TAIL),
    ]
    if not allow_text:
        root = "shoal-call"
    elif output_schema is not None:
        answer = _visit(converter, output_schema, "shoal-answer")
        root = f"shoal-call | {answer}"
    else:
        rules.append(f"shoal-text ::= {_FREE_TEXT}")
        root = "shoal-call | shoal-text"
    lines = _rules(converter).splitlines()
    if output_schema is None:
        copied = [*copied_string_rules(copy_sources), *copied_number_rules(copy_sources)]
        lines = _replace_rules(lines, copied)
    return "\n".join([*lines, f"root ::= {root}", *rules]) + "\n"


def build_arguments_grammar(
    tool: ToolDefinition,
    *,
    converter_factory: Callable[[], SchemaConverter],
    copy_sources: Sequence[str] = (),
) -> str:
    """A grammar for the arguments object of a call to ``tool`` alone: what remains to sample
    of a call whose :func:`call_head` is already written (and :data:`CALL_TAIL` follows). The
    object is the one :func:`build_tool_grammar` allows for that tool, copy rules included."""
    return build_value_grammar(
        tool.parameters, converter_factory=converter_factory, copy_sources=copy_sources
    )


def build_value_grammar(
    schema: dict[str, Any],
    *,
    converter_factory: Callable[[], SchemaConverter],
    copy_sources: Sequence[str] = (),
    leading_space: bool = False,
    suffix: str = "",
) -> str:
    """A grammar for one JSON value matching ``schema``, strings and numbers copied from
    ``copy_sources`` when given (a call's arguments object, or one argument's value).

    For sampling one value between forced text (an argument whose key was written for the
    model), the grammar must let the model cross the boundaries in the tokens it would use:
    ``leading_space`` lets the value start with one space (the forced text ends at the ``:``,
    and the model writes `` "`` as one token, as it would), and ``suffix`` is what follows the
    value (``,`` or ``}``), so that ``",`` or ``"}`` can be one token too. A forced space
    followed by a bare quote, or a quote that may not be followed by its comma, reads to a
    small model as text it has never seen, and it derails (runs the string on)."""
    converter = converter_factory()
    args_rule = _visit(converter, schema, "shoal-args-0")
    lines = _replace_rules(
        _rules(converter).splitlines(),
        [*copied_string_rules(copy_sources), *copied_number_rules(copy_sources)],
    )
    root = f'" "? {args_rule}' if leading_space else args_rule
    if suffix:
        root += f" {gbnf_literal(suffix)}"
    return "\n".join([*lines, f"root ::= {root}"]) + "\n"


def required_fields(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]] | None:
    """The properties of an arguments schema in order, if every one is required and the
    object may hold nothing else (so ``{"k1": v1, "k2": v2}`` is the whole choice and only the
    values need sampling); None otherwise (optional keys, or not a plain object)."""
    if schema.get("type") != "object" or "$ref" in json.dumps(schema):
        return None
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    if not properties or sorted(required) != sorted(properties):
        return None
    if schema.get("additionalProperties", True) is not False and "additionalProperties" in schema:
        return None
    if any(not isinstance(value, dict) for value in properties.values()):
        return None
    return [(str(name), value) for name, value in properties.items()]


def _replace_rules(lines: list[str], replacements: list[str]) -> list[str]:
    """``lines`` with each rule defined in ``replacements`` swapped in, if ``lines`` has it.

    A replacement may bring helper rules (``shoal-span-*``); they are kept only with the rule
    they serve.
    """
    defined = {line.split(" ::= ", 1)[0]: index for index, line in enumerate(lines)}
    replaced = {r.split(" ::= ", 1)[0] for r in replacements if not r.startswith("shoal-")}
    replaced &= set(defined)
    if not replaced:
        return lines
    kept = [line for line in lines if line.split(" ::= ", 1)[0] not in replaced]
    helpers = [r for r in replacements if r.startswith("shoal-")] if "string" in replaced else []
    chosen = [r for r in replacements if r.split(" ::= ", 1)[0] in replaced]
    return [*kept, *helpers, *chosen]


def build_output_grammar(
    output_schema: dict[str, Any], *, converter_factory: Callable[[], SchemaConverter]
) -> str:
    """A grammar for a structured answer with no tools offered."""
    converter = converter_factory()
    answer = _visit(converter, output_schema, "shoal-answer")
    return _rules(converter) + f"\nroot ::= {answer}\n"
