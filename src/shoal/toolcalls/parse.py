"""Reading tool calls back out of a model's text.

On the embedded engine a grammar guarantees the Hermes shape, so parsing is exact; the same
parser also reads unconstrained output (a server that cannot constrain, a model that wraps the
call in prose or a code fence, a model trained on another call format), trying strategies from
strictest to loosest. The first strategy that finds a call wins, and ``ParsedOutput.extra``
records its name under ``"strategy"``:

1. ``"hermes"``: ``<tool_call>{...}</tool_call>`` blocks (an unclosed last block is accepted;
   several blocks, or a list or several objects in one block, are several calls);
2. ``"qwen_xml"``: Qwen3-Coder's ``<function=NAME><parameter=P>VALUE</parameter></function>``,
   with or without the ``<tool_call>`` wrapper (also Llama 3.1's ``<function=NAME>{json}``);
3. ``"json"``: a call-shaped JSON object, or list of them, as the whole answer, in a fenced code
   block, or embedded in prose. Accepted shapes: ``{"name", "arguments"}``,
   ``{"name", "parameters"}``, ``{"function": {"name", "arguments"}}``,
   ``{"tool" | "tool_name", "args" | "arguments"}`` and ``{"tool_calls": [...]}``;
   arguments given as a JSON string are decoded;
4. ``"python"`` (only when tool names are known): ``name(a=1, b="x")`` calls, alone or in a
   list, as the whole answer, a whole fenced block or whole lines. Read with :mod:`ast`, never
   evaluated.

A call-shaped region that does not decode (trailing commas, single quotes, unquoted keys,
Python ``True``/``None``, missing closing brackets) is repaired, first as a Python literal and
then with ``json_repair``, and ``extra["repaired"]`` is set. A region cut off in the middle of
a value (after ``,`` or ``:``, inside a string, after a bare key) is not repaired: the
arguments would be guessed, so the model is asked again instead.

Anything else is text. Output that opens a call but cannot be read yields ``error`` so the loop
can ask the model again with a short message.

When ``tool_names`` is given, names are matched loosely (``math.factorial`` finds a tool
``math_factorial``, ``functions.get_weather`` finds ``get_weather``); JSON and Python calls to
unknown names are not calls (their names are listed in ``extra["ignored_calls"]``), while
calls in explicit call markup (Hermes, Qwen XML) keep an unknown name so the loop can tell the
model that the tool does not exist. ``tool_names`` may be a mapping from names to
:class:`~shoal.messages.ToolDefinition` (or to parameter schemas): positional arguments of a
Python-style call are then mapped onto the schema's properties in order.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import json_repair

from shoal.messages import ToolCall, ToolDefinition
from shoal.toolcalls.hermes import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

__all__ = ["ParsedOutput", "TextStreamSplitter", "parse_model_output"]

_HERMES_BLOCK = re.compile(
    re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)",
    re.DOTALL,
)
_FENCE = re.compile(r"^```(?:json|tool_call)?\s*(.*?)\s*```$", re.DOTALL)
#: any fenced block: the info string, then the body up to the closing fence (or the end)
_ANY_FENCE = re.compile(r"```[ \t]*([\w.+-]*)[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_QWEN_FUNCTION = re.compile(
    r"<function=\s*([^>\s]+)\s*>(.*?)(?:</function>|(?=<function=)|(?="
    + re.escape(TOOL_CALL_CLOSE)
    + r")|\Z)",
    re.DOTALL,
)
_QWEN_PARAMETER = re.compile(
    r"<parameter=\s*([^>\n]+?)\s*>(.*?)(?:</parameter>|(?=<parameter=)|(?=</function>)|\Z)",
    re.DOTALL,
)
#: where JSON embedded in prose may start: an object, or a list whose first item is an object
_JSON_START = re.compile(r"\{|\[(?=\s*\{)")
_NAME_KEY = re.compile(r"""(?:^|[{,\s])["']?(?:name|tool_name|tool|function)["']?\s*:""")
_ARGUMENTS_KEY = re.compile(r"""(?:^|[{,\s])["']?(?:arguments|parameters|args)["']?\s*:""")
_NAME_KEYS = ("name", "tool_name", "tool", "function_name")
_ARGUMENT_KEYS = ("arguments", "parameters", "args")
#: keys a call without arguments may carry (``{"name": "ping"}`` for a tool with no parameters)
_NAME_ONLY_KEYS = frozenset({"name", "tool_name", "tool", "function_name", "type", "id"})
_SEPARATORS = " \t\r\n,;"
_JSON_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}
#: limits on the work spent on broken JSON embedded in prose (each costs a pass over the text)
_MAX_BROKEN_SCANS = 32
_MAX_REPAIRS = 4


@dataclass(frozen=True)
class ParsedOutput:
    """What a model's output says: text before any call, the calls, or why it is unreadable."""

    text: str | None
    calls: tuple[ToolCall, ...] = ()
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- known tools --------------------------------------------------------------------------


def _name_key(name: str) -> str:
    return re.sub(r"[.\-\s/]+", "_", name.strip().lower())


@dataclass
class _Tools:
    """The tool names the caller knows of (``None``: any name), and what was ignored."""

    names: frozenset[str] | None
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, tool_names: Collection[str] | None) -> _Tools:
        if tool_names is None:
            return cls(names=None)
        schemas: dict[str, dict[str, Any]] = {}
        if isinstance(tool_names, Mapping):
            for name, value in tool_names.items():
                params = value.parameters if isinstance(value, ToolDefinition) else value
                if isinstance(params, dict):
                    schemas[name] = params
        return cls(names=frozenset(tool_names), schemas=schemas)

    def resolve(self, name: str) -> str | None:
        """The known tool ``name`` stands for, or ``None`` (any name when none are known)."""
        if self.names is None or name in self.names:
            return name
        for candidate in (name, name.removeprefix("functions.")):
            if candidate in self.names:
                return candidate
            key = _name_key(candidate)
            matches = [known for known in self.names if _name_key(known) == key]
            if len(matches) == 1:
                return matches[0]
        return None

    def explicit(self, name: str) -> str:
        """The name of a call in explicit call markup: resolved if possible, else kept."""
        return self.resolve(name) or name


# -- call shapes --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    name: str
    arguments: Any
    has_arguments: bool
    keys: frozenset[str]


def _shape(item: object) -> _Shape | None:
    """The name and raw arguments of a call-shaped object, or ``None``."""
    if not isinstance(item, dict):
        return None
    function = item.get("function")
    if isinstance(function, dict):  # OpenAI: {"type": "function", "function": {...}}
        return _shape(function)
    name = next((item[k] for k in _NAME_KEYS if isinstance(item.get(k), str)), None)
    if name is None and isinstance(function, str):
        name = function
    if name is None or not name.strip():
        return None
    for key in _ARGUMENT_KEYS:
        if key in item:
            return _Shape(name.strip(), item[key], True, frozenset(item))
    return _Shape(name.strip(), None, False, frozenset(item))


def _decode_arguments(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):  # some models double-encode the arguments
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, dict):
        raise ValueError('"arguments" must be a JSON object')
    return value


def _items(payload: Any) -> list[Any]:
    if isinstance(payload, dict) and isinstance(payload.get("tool_calls"), list):
        return list(payload["tool_calls"])
    return list(payload) if isinstance(payload, list) else [payload]


def _calls_from_json(payload: Any, tools: _Tools) -> list[ToolCall]:
    """Calls from a payload the model marked as a call (a Hermes block): strict shapes."""
    calls = []
    for item in _items(payload):
        shape = _shape(item)
        if shape is None:
            raise ValueError('a call must be an object with a string "name"')
        arguments = _decode_arguments(shape.arguments)
        calls.append(ToolCall(name=tools.explicit(shape.name), arguments=arguments))
    return calls


@dataclass
class _Found:
    calls: list[ToolCall]
    ignored: list[str]


def _calls_from_payload(payload: Any, tools: _Tools, *, whole: bool) -> _Found | None:
    """Calls from JSON that may or may not be a call: ``None`` unless it is call-shaped.

    Each item needs a name and an arguments key; a name alone is enough only for a known
    tool when the JSON is the whole answer (or a whole fenced block).
    """
    items = _items(payload)
    if not items:
        return None
    found = _Found([], [])
    for item in items:
        shape = _shape(item)
        if shape is None:
            return None
        name = tools.resolve(shape.name)
        if not shape.has_arguments and not (
            whole and tools.names is not None and name and shape.keys <= _NAME_ONLY_KEYS
        ):
            return None
        try:
            arguments = _decode_arguments(shape.arguments)
        except (ValueError, TypeError, RecursionError):
            return None
        if name is None:
            found.ignored.append(shape.name)
        else:
            found.calls.append(ToolCall(name=name, arguments=arguments))
    return found


def _looks_like_call(text: str) -> bool:
    return bool(_NAME_KEY.search(text) and _ARGUMENTS_KEY.search(text))


# -- JSON repair --------------------------------------------------------------------------


def _scan_region(text: str, start: int) -> tuple[int | None, bool]:
    """Follow the JSON-ish value opening at ``text[start]`` (a bracket).

    Returns the index just past its matching closing bracket (``None`` if it is never
    closed) and, for an unclosed value, whether the text stops right after a complete value
    (so that only closing brackets are missing). Strings in double or single quotes and bare
    words are skipped as tokens.
    """
    kinds: list[str] = []
    states: list[str] = []  # object: key, colon, value, done; array: value, done
    i, n = start, len(text)
    while i < n:
        ch = text[i]
        if ch in "{[":
            kinds.append(ch)
            states.append("key" if ch == "{" else "value")
            i += 1
            continue
        if ch in "}]":
            if kinds:
                kinds.pop()
                states.pop()
            if not kinds:
                return i + 1, True
            states[-1] = "done"
            i += 1
            continue
        if ch.isspace():
            i += 1
            continue
        if ch == ",":
            if kinds:
                states[-1] = "key" if kinds[-1] == "{" else "value"
            i += 1
            continue
        if ch == ":":
            if kinds:
                states[-1] = "value"
            i += 1
            continue
        expects_token = bool(kinds) and states[-1] in ("key", "value")
        if ch == '"' or (ch == "'" and expects_token):
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                return None, False  # cut off inside a string
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ',:[]{}"':
                j += 1
            i = j
        if kinds:
            states[-1] = "colon" if kinds[-1] == "{" and states[-1] == "key" else "done"
    return None, bool(kinds) and states[-1] == "done"


def _repair(region: str) -> dict[str, Any] | list[Any] | None:
    """``region`` (JSON that failed to decode) repaired, or ``None`` when it cannot be."""
    region = region.strip()
    if not region.startswith(("{", "[")):
        return None
    end, complete = _scan_region(region, 0)
    if end is None and not complete:
        return None  # cut off mid-value: the arguments would be guessed
    if end is not None:
        try:  # single quotes, True/None, trailing commas: a Python literal
            value = _jsonable(ast.literal_eval(region[:end]))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
        else:
            if isinstance(value, dict | list) and end == len(region):
                return value
    try:
        repaired = json_repair.loads(region)
    except Exception:  # the library's own failure must not break parsing
        return None
    return repaired if isinstance(repaired, dict | list) else None


def _decode_values(text: str) -> list[Any] | None:
    """Several JSON values one after another (separated by blanks or commas), or ``None``."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _SEPARATORS:
            i += 1
        if i >= n:
            return values or None
        try:
            value, i = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            return None
        values.append(value)


# -- strategy 1: Hermes -------------------------------------------------------------------


def _parse_hermes(raw: str, tools: _Tools) -> ParsedOutput | None:
    start = raw.find(TOOL_CALL_OPEN)
    if start < 0:
        return None
    bodies = [match.group(1).strip() for match in _HERMES_BLOCK.finditer(raw, start)]
    if any(body.startswith("<function=") for body in bodies):
        return None  # Qwen3-Coder XML inside the wrapper
    text = raw[:start].strip() or None
    extra: dict[str, Any] = {"strategy": "hermes"}
    calls: list[ToolCall] = []
    for body in bodies:
        fenced = _FENCE.match(body)
        if fenced:
            body = fenced.group(1)
        if not body:
            continue
        try:
            payload: Any = json.loads(body)
        except (ValueError, RecursionError) as exc:
            values = _decode_values(body)
            python = None
            if values is None and not body.startswith(("{", "[")) and tools.names is not None:
                python = _python_calls(body, tools)  # <tool_call>name(a=1)</tool_call>
            if values is not None:
                payload = values
            elif python is not None and python.calls:
                calls.extend(python.calls)
                continue
            else:
                payload = _repair(body)
                if payload is None:
                    return ParsedOutput(
                        text=text, error=f"the tool call is not valid JSON: {exc}", extra=extra
                    )
                extra["repaired"] = True
        try:
            calls.extend(_calls_from_json(payload, tools))
        except (ValueError, TypeError, RecursionError) as exc:
            return ParsedOutput(
                text=text, error=f"the tool call is not valid JSON: {exc}", extra=extra
            )
    if not calls:
        return ParsedOutput(text=text, error="the tool call is empty", extra=extra)
    return ParsedOutput(text=text, calls=tuple(calls), extra=extra)


# -- strategy 2: Qwen3-Coder XML ----------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _xml_value(raw: str) -> Any:
    """A parameter value: JSON when it decodes as JSON, else the text itself."""
    value = raw[2:] if raw.startswith("\r\n") else raw.removeprefix("\n")
    value = value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    candidate = value.strip()
    if candidate:
        try:
            return json.loads(candidate, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            pass
    return value


def _parse_qwen_xml(raw: str, tools: _Tools) -> ParsedOutput | None:
    first = _QWEN_FUNCTION.search(raw)
    if first is None:
        return None
    cut = first.start()
    wrapper = raw.find(TOOL_CALL_OPEN, 0, cut)
    if wrapper >= 0:
        cut = wrapper
    text = raw[:cut].strip() or None
    extra: dict[str, Any] = {"strategy": "qwen_xml"}
    calls: list[ToolCall] = []
    for match in _QWEN_FUNCTION.finditer(raw, first.start()):
        name, body = match.group(1).strip(), match.group(2)
        arguments: Any
        if "<parameter=" in body:
            arguments = {
                param.group(1): _xml_value(param.group(2))
                for param in _QWEN_PARAMETER.finditer(body)
            }
        elif not body.strip():
            arguments = {}
        else:  # Llama 3.1: <function=name>{"arg": ...}</function>
            body = body.strip()
            try:
                arguments = json.loads(body)
            except (ValueError, RecursionError) as exc:
                arguments = _repair(body)
                if arguments is None:
                    return ParsedOutput(
                        text=text,
                        error=f"the arguments of {name} are not valid JSON: {exc}",
                        extra=extra,
                    )
                extra["repaired"] = True
            if not isinstance(arguments, dict):
                return ParsedOutput(
                    text=text, error=f"the arguments of {name} must be a JSON object", extra=extra
                )
        calls.append(ToolCall(name=tools.explicit(name), arguments=arguments))
    return ParsedOutput(text=text, calls=tuple(calls), extra=extra)


# -- strategy 3: JSON ---------------------------------------------------------------------


def _json_result(
    found: _Found, text: str | None, tools: _Tools, *, repaired: bool = False
) -> ParsedOutput | None:
    tools.ignored.extend(found.ignored)
    if not found.calls:
        return None
    extra: dict[str, Any] = {"strategy": "json"}
    if repaired:
        extra["repaired"] = True
    if found.ignored:
        extra["ignored_calls"] = list(dict.fromkeys(found.ignored))
    return ParsedOutput(text=text, calls=tuple(found.calls), extra=extra)


def _from_broken_json(
    region: str, text: str | None, tools: _Tools, *, whole: bool, error: str
) -> ParsedOutput | None:
    """A call-shaped region that failed to decode: repaired calls, an error, or ``None``."""
    repaired = _repair(region)
    found = None if repaired is None else _calls_from_payload(repaired, tools, whole=whole)
    if found is None:
        return ParsedOutput(
            text=text, error=f"the tool call is not valid JSON: {error}", extra={"strategy": "json"}
        )
    return _json_result(found, text, tools, repaired=True)


def _parse_whole_json(region: str, text: str | None, tools: _Tools) -> ParsedOutput | None:
    """A whole answer (or a whole fenced block) that may be JSON calls."""
    try:
        payload = json.loads(region)
    except (ValueError, RecursionError) as exc:
        try:
            json.JSONDecoder().raw_decode(region)
        except (ValueError, RecursionError):
            if _looks_like_call(region):
                return _from_broken_json(region, text, tools, whole=True, error=str(exc))
        return None  # valid JSON followed by more: left to the prose scan
    found = _calls_from_payload(payload, tools, whole=True)
    return None if found is None else _json_result(found, text, tools)


def _parse_embedded_json(raw: str, tools: _Tools) -> ParsedOutput | None:
    """The first call-shaped JSON in prose (and any calls right after it)."""
    decoder = json.JSONDecoder()
    pending_error: ParsedOutput | None = None
    scans, repairs = _MAX_BROKEN_SCANS, _MAX_REPAIRS
    pos = 0
    while (match := _JSON_START.search(raw, pos)) is not None:
        start = match.start()
        try:
            payload, end = decoder.raw_decode(raw, start)
        except (ValueError, RecursionError) as exc:
            scans -= 1
            if scans < 0:
                break  # pathological input: give up rather than go quadratic
            closed, _ = _scan_region(raw, start)
            region = raw[start:closed] if closed is not None else raw[start:]
            if not _looks_like_call(region):
                pos = closed if closed is not None else start + 1
                continue
            repairs -= 1
            if repairs < 0:
                pos = start + 1
                continue
            text = raw[:start].strip() or None
            result = _from_broken_json(region, text, tools, whole=False, error=str(exc))
            if result is not None and result.calls:
                return result
            if result is not None and pending_error is None:
                pending_error = result
            pos = start + 1
            continue
        found = _calls_from_payload(payload, tools, whole=False)
        if found is None:
            pos = end
            continue
        # more calls right after this one ({...}\n{...})
        while True:
            nxt = end
            while nxt < len(raw) and raw[nxt] in _SEPARATORS:
                nxt += 1
            if nxt >= len(raw) or raw[nxt] not in "{[":
                break
            try:
                more_payload, more_end = decoder.raw_decode(raw, nxt)
            except (ValueError, RecursionError):
                break
            more = _calls_from_payload(more_payload, tools, whole=False)
            if more is None:
                break
            found.calls.extend(more.calls)
            found.ignored.extend(more.ignored)
            end = more_end
        result = _json_result(found, raw[:start].strip() or None, tools)
        if result is not None:
            return result
        pos = end
    return pending_error


def _parse_json(raw: str, tools: _Tools) -> ParsedOutput | None:
    body = raw.strip()
    if body.startswith(("{", "[")):
        result = _parse_whole_json(body, None, tools)
        if result is not None:
            return result
    for fence in _ANY_FENCE.finditer(raw):
        content = fence.group(2).strip()
        if content.startswith(("{", "[")):
            result = _parse_whole_json(content, raw[: fence.start()].strip() or None, tools)
            if result is not None:
                return result
    if not _looks_like_call(raw):
        return None
    return _parse_embedded_json(raw, tools)


# -- strategy 4: Python-style calls -------------------------------------------------------


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        owner = _dotted_name(node.value)
        return None if owner is None else f"{owner}.{node.attr}"
    return None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v) for k, v in value.items()}
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def _literal(node: ast.expr) -> Any:
    """The JSON value a literal expression stands for (``true``/``false``/``null`` too)."""
    if isinstance(node, ast.Constant) and (
        node.value is None or isinstance(node.value, bool | int | float | str)
    ):
        return node.value
    if isinstance(node, ast.Name) and node.id in _JSON_WORDS:
        return _JSON_WORDS[node.id]
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [_literal(element) for element in node.elts]
    if isinstance(node, ast.Dict):
        result: dict[str, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise ValueError("dictionary keys must be strings")
            result[key.value] = _literal(value)
        return result
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub | ast.UAdd)
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, int | float)
        and not isinstance(node.operand.value, bool)
    ):
        number = node.operand.value
        return -number if isinstance(node.op, ast.USub) else number
    raise ValueError("not a literal")


@dataclass
class _PythonCalls:
    calls: list[ToolCall]
    problems: list[str]


def _python_call(node: ast.Call, name: str, tools: _Tools) -> ToolCall | str:
    """One call, or what is wrong with it."""
    arguments: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            return f"the call {name}(**...) cannot be read; name each argument: {name}(arg=value)"
        try:
            arguments[keyword.arg] = _literal(keyword.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return f"the value of '{keyword.arg}' in {name}(...) must be a literal value"
    if node.args:
        properties = list(tools.schemas.get(name, {}).get("properties", {}) or {})
        targets = properties[: len(node.args)]
        if len(targets) < len(node.args) or any(t in arguments for t in targets):
            hint = ", ".join(properties) if properties else "arg=value"
            return f"the call {name}(...) has positional arguments; name them: {name}({hint})"
        for target, arg in zip(targets, node.args, strict=True):
            if isinstance(arg, ast.Starred):
                return f"the call {name}(*...) cannot be read; name each argument"
            try:
                arguments[target] = _literal(arg)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return f"the value of '{target}' in {name}(...) must be a literal value"
        positional = {t: arguments.pop(t) for t in targets}
        arguments = positional | arguments
    return ToolCall(name=name, arguments=arguments)


def _python_calls(source: str, tools: _Tools) -> _PythonCalls | None:
    """The calls ``source`` consists of, or ``None`` when it is anything but known calls."""
    source = source.strip()
    if "(" not in source:
        return None
    try:
        module = ast.parse(source, mode="exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    nodes: list[ast.Call] = []
    for statement in module.body:
        if not isinstance(statement, ast.Expr):
            return None
        value = statement.value
        elements = value.elts if isinstance(value, ast.List | ast.Tuple) else [value]
        if not elements or not all(isinstance(e, ast.Call) for e in elements):
            return None
        nodes.extend(e for e in elements if isinstance(e, ast.Call))
    if not nodes:
        return None
    result = _PythonCalls([], [])
    ignored: list[str] = []
    for node in nodes:
        dotted = _dotted_name(node.func)
        name = tools.resolve(dotted) if dotted else None
        if name is None:
            ignored.append(dotted or ast.unparse(node.func))
            continue
        call = _python_call(node, name, tools)
        if isinstance(call, str):
            result.problems.append(call)
        else:
            result.calls.append(call)
    if not result.calls and not result.problems:
        return None  # only unknown functions: code, not a call
    tools.ignored.extend(ignored)
    return result


def _python_result(found: _PythonCalls, text: str | None) -> ParsedOutput:
    extra: dict[str, Any] = {"strategy": "python"}
    if not found.calls:
        return ParsedOutput(text=text, error=found.problems[0], extra=extra)
    if found.problems:
        extra["skipped_calls"] = list(found.problems)
    return ParsedOutput(text=text, calls=tuple(found.calls), extra=extra)


def _call_line(line: str) -> str | None:
    """A line that may be a whole call (``name(...)`` or ``[name(...), ...]``), unwrapped."""
    line = line.strip().strip("`").strip().rstrip(";").strip()
    if "(" not in line or not line.endswith((")", "]")):
        return None
    return line


def _parse_python(raw: str, tools: _Tools) -> ParsedOutput | None:
    if tools.names is None:
        return None
    body = raw.strip()
    whole = _call_line(body) if "\n" not in body else body
    if whole:
        found = _python_calls(whole, tools)
        if found is not None:
            return _python_result(found, None)
    fenced: _PythonCalls | None = None
    fence_text: str | None = None
    for fence in _ANY_FENCE.finditer(raw):
        found = _python_calls(fence.group(2), tools)
        if found is None:
            continue
        if fenced is None:
            fenced, fence_text = found, raw[: fence.start()].strip() or None
        else:
            fenced.calls.extend(found.calls)
            fenced.problems.extend(found.problems)
    if fenced is not None:
        return _python_result(fenced, fence_text)
    lines = raw.splitlines()
    collected: _PythonCalls | None = None
    first_line = 0
    for index, line in enumerate(lines):
        candidate = _call_line(line)
        found = None if candidate is None else _python_calls(candidate, tools)
        if found is None:
            continue
        if collected is None:
            collected, first_line = found, index
        else:
            collected.calls.extend(found.calls)
            collected.problems.extend(found.problems)
    if collected is None:
        return None
    return _python_result(collected, "\n".join(lines[:first_line]).strip() or None)


# -- entry point --------------------------------------------------------------------------


def parse_model_output(
    raw: str, tool_names: Collection[str] | None = None, *, constrained: bool = False
) -> ParsedOutput:
    """Split ``raw`` into text and tool calls (see the module docstring for the strategies).

    ``tool_names``: the tools on offer. When given, JSON and Python-style calls count only
    for these names, and Python-style calls are read at all. ``constrained``: the output was
    decoded under a tool grammar, so a call is a Hermes block and anything else is the
    model's text (JSON it wrote as its answer is not a call).
    """
    tools = _Tools.of(tool_names)
    strategies = (
        (_parse_hermes,)
        if constrained
        else (_parse_hermes, _parse_qwen_xml, _parse_json, _parse_python)
    )
    for strategy in strategies:
        try:
            parsed = strategy(raw, tools)
        except RecursionError:  # absurdly deep nesting somewhere a call was looked for
            return ParsedOutput(text=raw.strip(), error="the tool call is nested too deeply")
        if parsed is not None:
            return parsed
    if tools.ignored:
        ignored = list(dict.fromkeys(tools.ignored))
        return ParsedOutput(text=raw.strip(), extra={"ignored_calls": ignored})
    return ParsedOutput(text=raw.strip())


class TextStreamSplitter:
    """Lets answer text stream out while holding back anything that may open a tool call.

    Feed decoded pieces with :meth:`feed`; it returns the text that is safe to show now. Once
    the output is known to be a call, nothing more is released.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._released = 0
        self.is_call = False

    def feed(self, piece: str) -> str:
        self._buffer += piece
        if self.is_call:
            return ""
        stripped = self._buffer.lstrip()
        if stripped.startswith(TOOL_CALL_OPEN):
            self.is_call = True
            return ""
        if TOOL_CALL_OPEN.startswith(stripped):
            return ""  # may still become a call
        # hold back a tail that could be the start of an embedded call tag
        hold = 0
        for size in range(min(len(TOOL_CALL_OPEN) - 1, len(self._buffer)), 0, -1):
            if TOOL_CALL_OPEN.startswith(self._buffer[-size:]):
                hold = size
                break
        safe_end = len(self._buffer) - hold
        tag = self._buffer.find(TOOL_CALL_OPEN, self._released)
        if tag >= 0:
            safe_end = min(safe_end, tag)
            self.is_call = True
        out = self._buffer[self._released : safe_end]
        self._released = max(self._released, safe_end)
        return out

    def flush(self) -> str:
        """The held-back text once the stream has ended (nothing if it became a call)."""
        if self.is_call:
            return ""
        out = self._buffer[self._released :]
        self._released = len(self._buffer)
        return out
