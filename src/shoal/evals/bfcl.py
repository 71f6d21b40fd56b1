"""The Berkeley Function Calling Leaderboard (BFCL) data: loading a suite and scoring calls.

A BFCL suite directory holds, per category, a question file ``BFCL_v4_<category>.json`` and
an answer file ``possible_answer/BFCL_v4_<category>.json``, both JSON Lines matched by ``id``.
A question record is ``{"id", "question": [[{"role", "content"}, ...], ...], "function": [...]}``
(one list of messages per turn; only the first turn is used) and an answer record is
``{"id", "ground_truth": [{"<function name>": {"<param>": [acceptable values...]}}, ...]}``.

- :func:`load_suite` reads a directory into :class:`BfclItem` values, with each function doc
  converted to a :class:`~shoal.messages.ToolDefinition` (:func:`tool_name`,
  :func:`bfcl_to_json_schema`).
- :func:`irrelevance_items` builds development cases where no offered tool fits.
- :func:`score_calls` scores the calls a model made with BFCL's AST rules and puts every
  failure in one :data:`ErrorBucket`.

Scoring follows BFCL's own checker (``bfcl_eval/eval_checker/ast_eval/ast_checker.py``):

- the call count must equal the expected count; with several expected calls the match is
  order-free (a one-to-one pairing of calls and expected calls);
- the function name must equal the expected one as sent (``.`` becomes ``_``);
- every required parameter is present, and no parameter lies outside the function doc or
  outside the ground truth's keys; a parameter may be left out only when ``""`` is among its
  acceptable values;
- types are strict (``bool`` is not ``int``; a ``str`` is not an ``integer``), except that an
  ``int`` is accepted for a ``float`` parameter at top level (not inside lists), and that, as in
  BFCL, a value whose type equals the type of the ground truth's own acceptable values is
  accepted (BFCL's "variable" rule, e.g. a string answer for an ``any`` parameter);
- strings are compared after removing spaces and ``,./-_*^``, lower-casing, and reading ``'``
  as ``"``; lists element by element in order (string elements standardised too); dicts key by
  key, recursively, where each ground-truth key maps to a list of acceptable values and ``""``
  among them makes the key optional. Inside dicts, as in BFCL, values are compared against
  the acceptable values only (no type check against the doc), so ``3`` equals ``3.0`` there
  while ``True`` never equals ``1``.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shoal.exceptions import UserError
from shoal.messages import ToolCall, ToolDefinition

__all__ = [
    "CATEGORIES",
    "BfclItem",
    "ErrorBucket",
    "Score",
    "SuiteError",
    "bfcl_to_json_schema",
    "irrelevance_items",
    "load_suite",
    "score_calls",
    "tool_name",
]

#: The single-turn BFCL categories this module understands. :func:`load_suite` also accepts
#: any other category whose question file exists in the suite directory.
CATEGORIES: tuple[str, ...] = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
    "live_irrelevance",
)

#: Categories (by prefix) whose questions have no answer file: no call is the right answer.
_NO_ANSWER_PREFIXES = ("irrelevance", "live_irrelevance")

_FILE_PREFIX = "BFCL_v4_"
_ANSWER_DIR = "possible_answer"

#: Why a scored item failed; ``None`` in a :class:`Score` means it was correct.
ErrorBucket = Literal[
    "no_call",
    "wrong_function",
    "wrong_arguments",
    "wrong_count",
    "invalid_output",
    "called_when_should_not",
]

#: Longest ``detail`` a :class:`Score` carries, in characters.
_MAX_DETAIL = 240


class SuiteError(UserError):
    """A BFCL suite directory or file that cannot be read; the message says which and why."""


# -- tool definitions -----------------------------------------------------------------------


def tool_name(name: str) -> str:
    """The name a BFCL function is offered under: ``.`` is not allowed in tool names, so
    ``math.factorial`` becomes ``math_factorial`` (as BFCL does for OpenAI-style models)."""
    return name.replace(".", "_")


#: BFCL type name -> JSON Schema type name; ``None`` means any value (no ``type`` key).
_JSON_TYPES: dict[str, str | None] = {
    "dict": "object",
    "object": "object",
    "float": "number",
    "number": "number",
    "tuple": "array",
    "array": "array",
    "integer": "integer",
    "string": "string",
    "boolean": "boolean",
    "any": None,
}


def bfcl_to_json_schema(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a BFCL parameter schema to standard JSON Schema.

    ``dict`` becomes ``object``, ``float`` ``number``, ``tuple`` ``array`` and ``any`` the
    empty schema ``{}`` (its description and default are dropped: llama.cpp's converter
    rejects a schema without type or structure that has other keys); ``integer``, ``string``,
    ``boolean`` and ``array`` are kept. The
    conversion recurses into ``properties`` and ``items``, keeps ``description``, ``enum``,
    ``required`` (restricted to declared properties) and ``default``, and drops everything
    else, BFCL's non-standard ``optional`` key included, so that the result suits both
    ``jsonschema`` and llama.cpp's JSON-schema-to-grammar converter.

    Raises:
        SuiteError: an unknown type name, or a schema that is not a JSON object.
    """
    if not isinstance(parameters, Mapping):
        raise SuiteError(f"a parameter schema must be a JSON object, got {parameters!r}")
    out: dict[str, Any] = {}
    bfcl_type = parameters.get("type")
    if bfcl_type is not None:
        if not isinstance(bfcl_type, str) or bfcl_type not in _JSON_TYPES:
            known = ", ".join(sorted(_JSON_TYPES))
            raise SuiteError(f"unsupported parameter type {bfcl_type!r} (known: {known})")
        json_type = _JSON_TYPES[bfcl_type]
        if json_type is not None:
            out["type"] = json_type
    description = parameters.get("description")
    if isinstance(description, str):
        out["description"] = description
    if isinstance(parameters.get("enum"), list):
        out["enum"] = list(parameters["enum"])
    properties = parameters.get("properties")
    if isinstance(properties, Mapping):
        out["properties"] = {
            str(name): bfcl_to_json_schema(schema) for name, schema in properties.items()
        }
    items = parameters.get("items")
    if isinstance(items, Mapping):
        out["items"] = bfcl_to_json_schema(items)
    required = parameters.get("required")
    if isinstance(required, list):
        declared = out.get("properties", {})
        out["required"] = [name for name in required if name in declared]
    if "default" in parameters:
        out["default"] = parameters["default"]
    if not any(key in out for key in ("type", "enum", "properties", "items")):
        # any value: exactly {}, since llama.cpp's converter rejects a schema that has
        # neither a type nor structure but does have other keys (such as a description)
        return {}
    return out


def _tool_definition(function: Mapping[str, Any]) -> ToolDefinition:
    parameters = function.get("parameters") or {}
    schema = bfcl_to_json_schema(parameters)
    schema["type"] = "object"
    schema.setdefault("properties", {})
    description = function.get("description")
    return ToolDefinition(
        name=tool_name(function["name"]),
        description=description if isinstance(description, str) else "",
        parameters=schema,
    )


# -- items and loading ----------------------------------------------------------------------


@dataclass(frozen=True)
class BfclItem:
    """One BFCL question with its functions and its acceptable answers.

    ``ground_truth`` is BFCL's list of expected calls, each ``{name: {param: [acceptable
    values...]}}`` with the raw (dotted) function name; ``()`` means no call is correct.
    """

    id: str
    category: str
    #: the first turn's messages, ``{"role", "content"}``, in order
    messages: tuple[dict[str, str], ...]
    #: the raw BFCL function docs
    functions: tuple[dict[str, Any], ...]
    #: the functions as offered to a model
    tools: tuple[ToolDefinition, ...]
    ground_truth: tuple[dict[str, Any], ...]

    @property
    def question(self) -> str:
        """The content of the last user message (of the last message if none is a user's)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return message.get("content", "")
        return self.messages[-1].get("content", "") if self.messages else ""


def _available_categories(directory: Path) -> list[str]:
    names = (p.name for p in directory.glob(f"{_FILE_PREFIX}*.json") if p.is_file())
    return sorted(name[len(_FILE_PREFIX) : -len(".json")] for name in names)


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The records of a JSON Lines file with their line numbers; blank lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SuiteError(f"{path}: cannot read: {error}") from None
    records: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise SuiteError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise SuiteError(f"{path}:{number}: expected a JSON object per line")
        records.append((number, record))
    return records


def _require_keys(record: Mapping[str, Any], keys: Iterable[str], where: str) -> None:
    missing = [key for key in keys if key not in record]
    if missing:
        raise SuiteError(f"{where}: record is missing key(s): {', '.join(missing)}")


def _parse_messages(question: Any, where: str) -> tuple[dict[str, str], ...]:
    if not isinstance(question, list) or not question or not isinstance(question[0], list):
        raise SuiteError(f"{where}: 'question' must be a list of turns, each a list of messages")
    messages: list[dict[str, str]] = []
    for message in question[0]:
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise SuiteError(f"{where}: each message needs string 'role' and 'content'")
        messages.append({"role": message["role"], "content": message["content"]})
    if not messages:
        raise SuiteError(f"{where}: the first turn has no messages")
    return tuple(messages)


def _parse_functions(functions: Any, where: str) -> tuple[dict[str, Any], ...]:
    if isinstance(functions, dict):  # a few BFCL files hold a single function doc
        functions = [functions]
    if not isinstance(functions, list):
        raise SuiteError(f"{where}: 'function' must be a list of function docs")
    for function in functions:
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise SuiteError(f"{where}: each function doc needs a string 'name'")
    return tuple(functions)


def _parse_ground_truth(
    ground_truth: Any, functions: Sequence[Mapping[str, Any]], where: str
) -> tuple[dict[str, Any], ...]:
    if not isinstance(ground_truth, list):
        raise SuiteError(f"{where}: 'ground_truth' must be a list of expected calls")
    names = {function["name"] for function in functions}
    for call in ground_truth:
        if not (isinstance(call, dict) and len(call) == 1):
            raise SuiteError(f"{where}: each expected call must be {{name: {{param: [...]}}}}")
        ((name, arguments),) = call.items()
        if not isinstance(arguments, dict) or not all(
            isinstance(values, list) for values in arguments.values()
        ):
            raise SuiteError(
                f"{where}: expected call {name!r} must map each parameter to a list of values"
            )
        if name not in names:
            raise SuiteError(f"{where}: expected call {name!r} is not among the functions")
    return tuple(ground_truth)


def _spread(count: int, limit: int | None) -> list[int]:
    """``limit`` indexes out of ``range(count)``, evenly spread (every k-th), in order."""
    if limit is None or limit >= count:
        return list(range(count))
    return [i * count // limit for i in range(limit)]


def _load_category(directory: Path, category: str, limit: int | None) -> list[BfclItem]:
    question_path = directory / f"{_FILE_PREFIX}{category}.json"
    answer_path = directory / _ANSWER_DIR / f"{_FILE_PREFIX}{category}.json"
    needs_answers = not category.startswith(_NO_ANSWER_PREFIXES)

    answers: dict[str, tuple[int, dict[str, Any]]] = {}
    if needs_answers:
        if not answer_path.is_file():
            raise SuiteError(f"{answer_path}: answer file not found for category {category!r}")
        for number, record in _read_jsonl(answer_path):
            where = f"{answer_path}:{number}"
            _require_keys(record, ("id", "ground_truth"), where)
            answers[str(record["id"])] = (number, record)

    questions = _read_jsonl(question_path)
    items: list[BfclItem] = []
    seen: set[str] = set()
    for index in _spread(len(questions), limit):
        number, record = questions[index]
        where = f"{question_path}:{number}"
        _require_keys(record, ("id", "question", "function"), where)
        item_id = str(record["id"])
        if item_id in seen:
            raise SuiteError(f"{where}: duplicate id {item_id!r}")
        seen.add(item_id)
        messages = _parse_messages(record["question"], where)
        functions = _parse_functions(record["function"], where)
        ground_truth: tuple[dict[str, Any], ...] = ()
        if needs_answers:
            if item_id not in answers:
                raise SuiteError(f"{where}: question {item_id!r} has no answer in {answer_path}")
            answer_number, answer = answers[item_id]
            ground_truth = _parse_ground_truth(
                answer["ground_truth"], functions, f"{answer_path}:{answer_number}"
            )
        try:
            tools = tuple(_tool_definition(function) for function in functions)
        except SuiteError as error:
            raise SuiteError(f"{where}: {error}") from None
        items.append(
            BfclItem(
                id=item_id,
                category=category,
                messages=messages,
                functions=functions,
                tools=tools,
                ground_truth=ground_truth,
            )
        )
    return items


def load_suite(
    directory: str | Path,
    *,
    categories: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[BfclItem]:
    """Read a BFCL suite directory.

    Args:
        directory: holds ``BFCL_v4_<category>.json`` and ``possible_answer/`` (JSON Lines).
        categories: the categories to read, in this order; ``None`` reads every
            ``BFCL_v4_*.json`` in the directory, sorted by name.
        limit: at most this many questions per category, every k-th one so that a small run
            still covers the whole file (deterministic).

    Categories starting with ``irrelevance`` (or ``live_irrelevance``) need no answer file:
    their ground truth is ``()``, no call is correct. Every other question must have an
    answer with the same ``id``.

    Raises:
        SuiteError: a missing directory, no question files, an unknown category (the message
            lists the available ones), a line that is not JSON (file and line number), a
            record without its keys, or a question without an answer.
    """
    root = Path(directory)
    if not root.is_dir():
        raise SuiteError(f"BFCL suite directory not found: {root}")
    if limit is not None and limit < 0:
        raise SuiteError(f"limit must be zero or more, got {limit}")
    available = _available_categories(root)
    if not available:
        raise SuiteError(f"no {_FILE_PREFIX}*.json question files in {root}")
    if categories is None:
        wanted = available
    else:
        wanted = list(dict.fromkeys([categories] if isinstance(categories, str) else categories))
        unknown = [category for category in wanted if category not in available]
        if unknown:
            raise SuiteError(
                f"unknown BFCL categor{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(map(repr, unknown))} in {root}; available: {', '.join(available)}"
            )
    items: list[BfclItem] = []
    for category in wanted:
        items.extend(_load_category(root, category, limit))
    return items


# -- irrelevance pairing --------------------------------------------------------------------

_STOPWORDS = frozenset(
    """
    a an the and or of to in on at by for from with without into onto over under about as is
    are be been being was were it its this that these those there their they them which who
    whom whose what when where why how all any each every some such than then also not no
    can could may might will would should shall must do does did done has have had having
    if else given based using use used via per between within across up down out off only
    one two three more most less least other another same new specific specified certain
    particular provided provide provides default defaults optional required value values
    number numbers string list lists type types name names data info information detail
    details result results function functions return returns returned get gets fetch
    retrieve retrieves find finds calculate calculates calculation compute computes search
    searches look lookup check checks make makes set sets show shows display tool api
    method request query user users my your you i me we us our e g eg ie etc
    """.split()
)

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def _stem(word: str) -> str:
    """A crude stem: strip one plural/verb suffix and a final ``e``, keep six letters."""
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word[:6]


_STOP_STEMS = frozenset(_stem(word) for word in _STOPWORDS)


def _content_words(text: str) -> frozenset[str]:
    """Lower-cased, crudely stemmed words of ``text`` (camelCase split), without stopwords."""
    stems = (_stem(word.lower()) for word in _WORD.findall(text) if len(word) > 2)
    return frozenset(stem for stem in stems if stem not in _STOP_STEMS)


@dataclass(frozen=True)
class _Topic:
    names: frozenset[str]
    descriptions: frozenset[str]
    question: frozenset[str]


def _topic(item: BfclItem) -> _Topic:
    names: set[str] = set()
    descriptions: set[str] = set()
    for function in item.functions:
        names |= _content_words(function["name"].replace(".", " ").replace("_", " "))
        descriptions |= _content_words(str(function.get("description", "")))
    return _Topic(frozenset(names), frozenset(descriptions), _content_words(item.question))


#: Largest share of the smaller description word set two paired items may have in common.
_MAX_DESCRIPTION_OVERLAP = 0.2


def _unrelated(question: _Topic, partner: _Topic) -> bool:
    if question.names & partner.names or partner.names & question.question:
        return False
    smaller = min(len(question.descriptions), len(partner.descriptions))
    shared = len(question.descriptions & partner.descriptions)
    return smaller == 0 or shared / smaller <= _MAX_DESCRIPTION_OVERLAP


def irrelevance_items(items: Sequence[BfclItem], *, seed: int = 0) -> list[BfclItem]:
    """Development cases where no offered tool fits: each question with another's functions.

    Every item's question (its messages) is paired with the functions of a partner item
    chosen by a ``random.Random(seed)`` shuffle of the other items: the first candidate in
    that order that is *unrelated* is taken. Words are compared as content words: lower-cased,
    split at ``.``/``_``/camelCase, stopwords and generic API verbs (get, find, calculate,
    ...) dropped, crudely stemmed (suffix stripped, six letters kept). A partner is unrelated
    when, over all functions of both items:

    - the partner's function-name words share nothing with the item's function-name words
      (so near-duplicate topics, e.g. two quadratic-equation solvers, are never paired);
    - the partner's function-name words share nothing with the question's own words;
    - the two items' function descriptions share at most 20% of the smaller word set.

    An item for which no partner qualifies is left out. The new items have category
    ``"irrelevance_dev"``, id ``"irrelevance_dev_<original id>"`` and ground truth ``()``.
    The result is deterministic for a given ``items`` order and ``seed``.
    """
    topics = [_topic(item) for item in items]
    rng = random.Random(seed)
    out: list[BfclItem] = []
    for index, item in enumerate(items):
        candidates = [other for other in range(len(items)) if other != index]
        rng.shuffle(candidates)
        partner = next(
            (other for other in candidates if _unrelated(topics[index], topics[other])), None
        )
        if partner is None:
            continue
        out.append(
            BfclItem(
                id=f"irrelevance_dev_{item.id}",
                category="irrelevance_dev",
                messages=item.messages,
                functions=items[partner].functions,
                tools=items[partner].tools,
                ground_truth=(),
            )
        )
    return out


# -- scoring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """The verdict on one item: ``bucket`` and ``detail`` say why it failed."""

    correct: bool
    bucket: ErrorBucket | None
    detail: str


_CORRECT = Score(correct=True, bucket=None, detail="")


def _fail(bucket: ErrorBucket, detail: str) -> Score:
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 3] + "..."
    return Score(correct=False, bucket=bucket, detail=detail)


_STANDARDIZE = re.compile(r"[ ,./\-_*^]")


def _standardize(text: str) -> str:
    """BFCL's string form for comparison: no spaces or ``,./-_*^``, lower case, ``'`` as ``"``."""
    return _STANDARDIZE.sub("", text).lower().replace("'", '"')


def _type_name(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        tuple: "array",
        dict: "dict",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _has_type(value: Any, bfcl_type: Any, *, top_level: bool) -> bool:
    """Whether ``value`` has the BFCL type (strict; int for float only at top level)."""
    if bfcl_type == "string":
        return isinstance(value, str)
    if bfcl_type == "integer":
        return type(value) is int
    if bfcl_type in ("float", "number"):
        return type(value) is float or (top_level and type(value) is int)
    if bfcl_type == "boolean":
        return type(value) is bool
    if bfcl_type in ("array", "tuple"):
        return isinstance(value, list | tuple)
    if bfcl_type in ("dict", "object"):
        return isinstance(value, dict)
    return True  # "any", no type, or a type this module does not know


def _type_error(
    value: Any, schema: Mapping[str, Any], acceptable: Sequence[Any], *, top_level: bool
) -> str | None:
    """Why ``value`` has the wrong type for ``schema``, or ``None``.

    As in BFCL, a value whose exact type is that of an acceptable value (``""`` aside) passes
    even when the doc says otherwise (BFCL's "variable" rule). List elements are checked
    against ``items``, with the elements of the acceptable lists as their acceptable values.
    """
    bfcl_type = schema.get("type")
    if _has_type(value, bfcl_type, top_level=top_level):
        items = schema.get("items")
        if isinstance(value, list | tuple) and isinstance(items, Mapping):
            pool = [e for a in acceptable if isinstance(a, list) for e in a]
            for element in value:
                error = _type_error(element, items, pool, top_level=False)
                if error is not None:
                    return error
        return None
    if any(type(a) is type(value) for a in acceptable if not (isinstance(a, str) and a == "")):
        return None
    return f"got {value!r} ({_type_name(value)}), expected type {bfcl_type}"


def _matches(value: Any, acceptable: Any) -> bool:
    """Whether ``value`` equals one acceptable value, BFCL-style (see the module docstring)."""
    if isinstance(acceptable, bool) or isinstance(value, bool):
        return type(value) is bool and type(acceptable) is bool and value == acceptable
    if acceptable is None or value is None:
        return value is None and acceptable is None
    if isinstance(acceptable, int | float):
        return isinstance(value, int | float) and value == acceptable
    if isinstance(acceptable, str):
        return isinstance(value, str) and _standardize(value) == _standardize(acceptable)
    if isinstance(acceptable, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(acceptable)
            and all(_matches(v, a) for v, a in zip(value, acceptable, strict=True))
        )
    if isinstance(acceptable, dict):
        return isinstance(value, dict) and _dict_error(value, acceptable) is None
    return bool(value == acceptable)


def _options(acceptable: Any) -> list[Any]:
    """A ground-truth entry as a list of acceptable values (a bare value is a list of one)."""
    return list(acceptable) if isinstance(acceptable, list) else [acceptable]


def _dict_error(value: Mapping[str, Any], acceptable: Mapping[str, Any]) -> str | None:
    """Why a dict does not match a ground-truth dict ``{key: [acceptable values]}``."""
    for key, item in value.items():
        if key not in acceptable:
            return f"unexpected key {key!r}"
        options = _options(acceptable[key])
        if not any(_matches(item, option) for option in options):
            return f"key {key!r}: got {item!r}, expected one of {options!r}"
    for key, options in acceptable.items():
        if key not in value and "" not in _options(options):
            return f"missing key {key!r}"
    return None


def _argument_error(
    arguments: Mapping[str, Any], expected: Mapping[str, list[Any]], doc: Mapping[str, Any]
) -> str | None:
    """Why ``arguments`` do not match the expected call, or ``None`` when they do."""
    parameters = doc.get("parameters") or {}
    properties: Mapping[str, Any] = parameters.get("properties") or {}
    for name in parameters.get("required") or ():
        if name not in arguments:
            return f"missing required parameter {name!r}"
    for name, value in arguments.items():
        if name not in properties:
            return f"unexpected parameter {name!r} (not in the function doc)"
        if name not in expected:
            return f"unexpected parameter {name!r} (not expected here)"
        options = expected[name]
        error = _type_error(value, properties[name], options, top_level=True)
        if error is not None:
            return f"{name}: {error}"
        if not any(_matches(value, option) for option in options):
            shown = [option for option in options if option != ""]
            return f"{name}: got {value!r}, expected one of {shown!r}"
    for name, options in expected.items():
        if name not in arguments and "" not in options:
            return f"missing parameter {name!r} (expected one of {options!r})"
    return None


def _find_doc(item: BfclItem, name: str) -> Mapping[str, Any]:
    for function in item.functions:
        if function.get("name") == name:
            return function
    return {}


@dataclass(frozen=True)
class _Expected:
    name: str  # as offered: tool_name() of the ground truth's name
    arguments: Mapping[str, list[Any]]
    doc: Mapping[str, Any]


def _expected_calls(item: BfclItem) -> list[_Expected]:
    expected: list[_Expected] = []
    for call in item.ground_truth:
        ((name, arguments),) = call.items()
        expected.append(_Expected(tool_name(name), arguments, _find_doc(item, name)))
    return expected


def _call_error(call: ToolCall, expected: _Expected) -> str | None:
    if call.name != expected.name:
        return f"called {call.name}, expected {expected.name}"
    return _argument_error(call.arguments, expected.arguments, expected.doc)


def _matching(allowed: list[list[bool]], size: int) -> list[int | None]:
    """A maximum one-to-one matching (Kuhn's algorithm): ``owner[expected] = call index``."""
    owner: list[int | None] = [None] * size

    def assign(call: int, visited: set[int]) -> bool:
        for target in range(size):
            if allowed[call][target] and target not in visited:
                visited.add(target)
                current = owner[target]
                if current is None or assign(current, visited):
                    owner[target] = call
                    return True
        return False

    for call in range(len(allowed)):
        assign(call, set())
    return owner


def _score_parallel(calls: Sequence[ToolCall], expected: list[_Expected]) -> Score:
    errors = [[_call_error(call, want) for want in expected] for call in calls]
    owner = _matching([[error is None for error in row] for row in errors], len(expected))
    if all(index is not None for index in owner):
        return _CORRECT
    got_names = Counter(call.name for call in calls)
    want_names = Counter(want.name for want in expected)
    if got_names != want_names:
        return _fail(
            "wrong_function",
            f"called {sorted(got_names.elements())}, expected {sorted(want_names.elements())}",
        )
    used = {index for index in owner if index is not None}
    for target, index in enumerate(owner):
        if index is not None:
            continue
        for call_index, call in enumerate(calls):
            error = errors[call_index][target]
            if call_index not in used and call.name == expected[target].name and error:
                return _fail("wrong_arguments", f"{call.name}: {error}")
    return _fail("wrong_arguments", "no one-to-one match between calls and expected calls")


def score_calls(
    item: BfclItem, calls: Sequence[ToolCall], *, invalid_output: bool = False
) -> Score:
    """Score the calls a model made for ``item`` with BFCL's AST rules.

    Args:
        item: the question, its function docs and its ground truth.
        calls: the calls the model made, in order (names as offered, see :func:`tool_name`).
        invalid_output: the run failed on output that could not be read (no answer at all);
            with no calls this is ``"invalid_output"``, also where no call was expected.

    Returns:
        ``Score(correct=True, bucket=None, detail="")`` or a failed score whose bucket is
        ``"called_when_should_not"`` (a call where no call is correct), ``"invalid_output"``,
        ``"no_call"``, ``"wrong_count"``, ``"wrong_function"`` or ``"wrong_arguments"``, with a
        short reason in ``detail``.
    """
    if not item.ground_truth:
        if calls:
            names = ", ".join(call.name for call in calls)
            return _fail("called_when_should_not", f"called {names}; no offered tool fits")
        if invalid_output:
            return _fail("invalid_output", "the model gave no readable answer")
        return _CORRECT
    expected = _expected_calls(item)
    if not calls:
        wanted = ", ".join(want.name for want in expected)
        if invalid_output:
            return _fail("invalid_output", f"output could not be read as calls to {wanted}")
        return _fail("no_call", f"no call; expected {wanted}")
    if len(calls) != len(expected):
        return _fail("wrong_count", f"{len(calls)} calls, expected {len(expected)}")
    if len(expected) == 1:
        call, want = calls[0], expected[0]
        if call.name != want.name:
            return _fail("wrong_function", f"called {call.name}, expected {want.name}")
        error = _argument_error(call.arguments, want.arguments, want.doc)
        return _CORRECT if error is None else _fail("wrong_arguments", error)
    return _score_parallel(calls, expected)
