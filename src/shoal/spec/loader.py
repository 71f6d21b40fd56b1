"""Read an agent spec from YAML, with errors that point at the offending line.

An agent spec is a small YAML file that describes one agent (``docs/agent-spec.md`` has the
long version)::

    name: support                       # required, letters, digits, '_' and '-'
    model: smollm2-135m                 # optional, default "smollm2-135m"; any model reference
    instructions: |                     # optional system prompt
      You help customers with their orders.
    tools:                              # optional; "module:function" strings or mappings
      - support_tools:lookup_order
      - ref: support_tools:create_ticket
        timeout: 10                     # optional, seconds (> 0)
        name: open_ticket               # optional, the name the model sees
        description: Open a ticket.     # optional, replaces the docstring's summary
    settings:                           # optional: the fields of shoal.settings.ModelSettings
      temperature: 0
      max_tokens: 256
    tool_choice: auto                   # optional: auto | none | required | a declared tool name
    max_steps: 6                        # optional, 1..50 (default 8)
    retries: 2                          # optional, 0..10 (default 2)

Tool modules are looked up in the spec file's directory first, then on ``sys.path``; they are
imported by :meth:`AgentSpec.build_agent`, never by :func:`load_agent_spec`.

How line numbers are found: the text is composed into a YAML node tree (every node knows where
it starts), the Python data is constructed from that same tree and validated by pydantic, and
each pydantic error's ``loc`` (``("tools", 1, "timeout")``) is followed down the tree as far as
it goes. The deepest node reached gives the line, so a missing key points at its mapping and an
unknown or wrong key at the key itself.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from shoal.exceptions import SpecError
from shoal.spec.schema import AT_KEY, AgentSpec, Loc

__all__ = ["load_agent_spec"]

#: Keys a spec file may not set although AgentSpec has them.
_RESERVED_KEYS = frozenset({"source"})


def load_agent_spec(path: str | Path) -> AgentSpec:
    """Read and validate the agent spec at ``path``.

    Raises :class:`~shoal.exceptions.SpecError` (its ``location`` is ``"file:line"``) when the
    file is missing or unreadable, not UTF-8, not valid YAML, or does not describe an agent.
    No tool is imported: see :meth:`AgentSpec.build_agent`.
    """
    display = str(path)
    source = Path(path).absolute()  # tools are imported from its directory, whatever the cwd
    raw = _read(source, display)
    text = _decode(raw, display)
    root, data = _parse(text, display)

    if root is None or not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        found = "an empty file" if root is None else f"a {_kind(data)}"
        line = f":{_line(root)}" if root is not None else ""
        raise SpecError(
            f"the top level must be a mapping with at least a 'name:' key, found {found}",
            location=display + line,
        )
    _check_duplicate_keys(root, display)
    reserved = sorted(_RESERVED_KEYS & data.keys())
    if reserved:
        key = reserved[0]
        raise SpecError(
            _unknown_key_message(key, ()), location=f"{display}:{_line(_node_at(root, (key,)))}"
        )

    try:
        spec = AgentSpec.model_validate({**_drop_empty_sections(data), "source": source})
    except ValidationError as exc:
        raise _spec_error(exc, root, display) from None

    lines: dict[Loc, int] = {("tool_choice",): _line(_node_at(root, ("tool_choice",)))}
    for index in range(len(spec.tools)):
        lines["tools", index] = _line(_node_at(root, ("tools", index)))
    spec._set_locations(display, lines)
    return spec


# -- reading --------------------------------------------------------------------------------


def _read(source: Path, display: str) -> bytes:
    try:
        return source.read_bytes()
    except FileNotFoundError:
        raise SpecError("no such file", location=display) from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a spec file", location=display) from None
    except OSError as exc:
        raise SpecError(f"cannot read the file: {exc.strerror or exc}", location=display) from exc


def _decode(raw: bytes, display: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError(
            f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} cannot be decoded); "
            "save it as UTF-8",
            location=f"{display}:{line}",
        ) from None


def _parse(text: str, display: str) -> tuple[yaml.Node | None, Any]:
    """The node tree and the data built from it (both ``None`` for an empty document)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        if exc.context and exc.problem:
            problem = f"{problem} ({exc.context})"
        location = f"{display}:{mark.line + 1}" if mark is not None else display
        raise SpecError(f"invalid YAML: {problem}", location=location) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", location=display) from None
    finally:
        loader.dispose()
    return root, data


def _drop_empty_sections(data: dict[Any, Any]) -> dict[Any, Any]:
    """``tools:``, ``settings:`` or ``instructions:`` with nothing after them mean "none"."""
    optional = ("instructions", "tools", "settings")
    return {k: v for k, v in data.items() if not (k in optional and v is None)}


def _check_duplicate_keys(node: yaml.Node, display: str) -> None:
    """YAML keeps the last of two equal keys silently; in a spec that is always a mistake."""
    for child in _walk(node):
        if not isinstance(child, yaml.MappingNode):
            continue
        seen: dict[tuple[str, Any], int] = {}
        for key, _value in child.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            first = seen.setdefault((key.tag, key.value), _line(key))
            if first != _line(key):
                raise SpecError(
                    f"duplicate key {key.value!r} (first set on line {first})",
                    location=f"{display}:{_line(key)}",
                )


def _walk(node: yaml.Node) -> Iterator[yaml.Node]:
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:  # aliases share nodes
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                stack.extend((key, value))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


# -- errors ---------------------------------------------------------------------------------


def _spec_error(exc: ValidationError, root: yaml.Node, display: str) -> SpecError:
    """One SpecError for all of pydantic's errors: the first by line, the others listed."""
    found: list[tuple[int, str]] = []
    for error in exc.errors(include_url=False):
        loc = _error_loc(error)
        found.append((_line(_node_at(root, loc)), _error_message(error, loc)))
    found.sort(key=lambda item: item[0])
    (line, message), rest = found[0], found[1:]
    if rest:
        message += "".join(f"\n  also line {n}: {m}" for n, m in rest)
    return SpecError(message, location=f"{display}:{line}")


def _error_loc(error: ErrorDetails) -> Loc:
    ctx = error.get("ctx") or {}
    at = ctx.get(AT_KEY)
    return tuple(at) if at is not None else tuple(error["loc"])


def _error_message(error: ErrorDetails, loc: Loc) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key_message(str(loc[-1]), loc[:-1])
    if kind == "invalid_key":
        where = f" in {_format_loc(loc[:-1])}" if len(loc) > 1 else ""
        return f"key {loc[-1]!r}{where} must be a string"
    if kind == "missing":
        where = f" in {_format_loc(loc[:-1])}" if len(loc) > 1 else ""
        return f"missing required key {loc[-1]!r}{where}"
    message = error["msg"].replace("a valid tuple", "a list")
    if kind == "string_type" and not isinstance(error.get("input"), dict | list | None):
        message += " (put the value in quotes)"
    path = _format_loc(loc)
    return f"{path}: {message}" if path else message


def _unknown_key_message(key: str, parent: Loc) -> str:
    known = _known_keys(parent)
    where = f" in {_format_loc(parent)}" if parent else ""
    message = f"unknown key {key!r}{where}"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    return f"{message}; expected one of: {', '.join(known)}" if known else message


def _known_keys(parent: Loc) -> list[str]:
    """The keys the mapping at ``parent`` accepts, found by walking AgentSpec's field types."""
    model: type[BaseModel] | None = AgentSpec
    for part in parent:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return []
    return [name for name in model.model_fields if name not in _RESERVED_KEYS]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (tuple, list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# -- nodes ----------------------------------------------------------------------------------


def _node_at(root: yaml.Node, loc: Loc) -> yaml.Node:
    """The deepest node along ``loc``; for a final mapping key, the key node itself."""
    node = root
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        if isinstance(node, yaml.MappingNode):
            match = _mapping_entry(node.value, str(part))
            if match is None:
                return node
            key, value = match
            node = key if last else value
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _mapping_entry(
    pairs: list[tuple[yaml.Node, yaml.Node]], key: str
) -> tuple[yaml.Node, yaml.Node] | None:
    for key_node, value_node in pairs:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _kind(value: object) -> str:
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null value"
    return f"single {type(value).__name__} value"
