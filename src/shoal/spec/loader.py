"""Read an agent spec or a deployment file from YAML, with errors that point at the offending line.

An agent spec is a small YAML file that describes one agent (``docs/agent-spec.md`` has the
long version)::

    name: support                       # required, letters, digits, '_' and '-'
    model: smollm2-135m                 # optional, default "smollm2-135m"; any model reference,
                                        # or the name of an entry of models:
    models:                             # optional: named models, routers, fallbacks, ...
      small: smollm2-135m               # (see shoal.spec.models)
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
    routes:                             # optional: rules that call a tool without the model
      - pattern: "order (?P<order_id>[0-9]+)"     # a regex over the user's message
        tool: lookup_order              # its named groups are the call's arguments
        when: first                     # first (before the model) | fallback (after it failed)
    max_steps: 6                        # optional, 1..50 (default 8)
    retries: 2                          # optional, 0..10 (default 2)

Tool modules (and a route's ``arguments: module:function``) are looked up in the spec file's
directory first, then on ``sys.path``; they are imported by :meth:`AgentSpec.build_agent`,
never by :func:`load_agent_spec`.

A deployment file (:func:`load_deployment`) is a ``models:`` section on its own, with an
optional ``default:`` naming one of its entries.

How line numbers are found: the text is composed into a YAML node tree (every node knows where
it starts), the Python data is constructed from that same tree and validated by pydantic, and
each pydantic error's ``loc`` (``("tools", 1, "timeout")``) is followed down the tree as far as
it goes. The deepest node reached gives the line, so a missing key points at its mapping and an
unknown or wrong key at the key itself. A check inside a nested model that means a place
below the one pydantic reports puts the rest of the path in the error's context
(:data:`~shoal.spec.models.BELOW_KEY`).

System files (:mod:`shoal.spec.system`) are read the same way, through the public helpers
here: :func:`read_document`, :func:`node_at` and :func:`node_line`, :func:`error_loc`,
:func:`error_message`, :func:`known_keys`, :func:`keys_at` and :func:`format_loc`.
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
from shoal.spec.models import BELOW_KEY, DeploymentSpec, ModelEntry, entry_keys, entry_kind
from shoal.spec.schema import AT_KEY, AgentSpec, Loc

__all__ = [
    "error_loc",
    "error_message",
    "format_loc",
    "keys_at",
    "known_keys",
    "load_agent_spec",
    "load_deployment",
    "node_at",
    "node_line",
    "read_document",
]

#: Keys a spec file may not set although AgentSpec has them.
_RESERVED_KEYS = frozenset({"source"})
#: the keys of a route that building may complain about
_ROUTE_KEYS = ("tool", "pattern", "arguments")


def load_agent_spec(path: str | Path) -> AgentSpec:
    """Read and validate the agent spec at ``path``.

    Raises :class:`~shoal.exceptions.SpecError` (its ``location`` is ``"file:line"``) when the
    file is missing or unreadable, not UTF-8, not valid YAML, or does not describe an agent.
    No tool is imported: see :meth:`AgentSpec.build_agent`.
    """
    display = str(path)
    source = Path(path).absolute()  # tools are imported from its directory, whatever the cwd
    root, data = read_document(source, display, AgentSpec, "at least a 'name:' key")

    try:
        spec = AgentSpec.model_validate({**_drop_empty_sections(data), "source": source})
    except ValidationError as exc:
        raise _spec_error(exc, root, display) from None

    lines: dict[Loc, int] = {("tool_choice",): node_line(node_at(root, ("tool_choice",)))}
    for index in range(len(spec.tools)):
        lines["tools", index] = node_line(node_at(root, ("tools", index)))
    for index in range(len(spec.routes)):
        for loc in [("routes", index), *(("routes", index, key) for key in _ROUTE_KEYS)]:
            lines[loc] = node_line(node_at(root, loc))
    lines.update(_model_lines(root, spec.models))
    spec._set_locations(display, lines)
    return spec


def load_deployment(path: str | Path) -> DeploymentSpec:
    """Read and validate the deployment file at ``path``: a ``models:`` section (see
    :mod:`shoal.spec.models`) and an optional ``default:`` entry name.

    Raises :class:`~shoal.exceptions.SpecError` (``location`` ``"file:line"``) as
    :func:`load_agent_spec` does. Nothing is built and nothing is sent.
    """
    display = str(path)
    source = Path(path).absolute()
    root, data = read_document(source, display, DeploymentSpec, "a 'models:' key")

    try:
        spec = DeploymentSpec.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise _spec_error(exc, root, display, DeploymentSpec) from None

    lines = _model_lines(root, spec.models)
    lines["default",] = node_line(node_at(root, ("default",)))
    spec._set_locations(display, lines)
    return spec


def read_document(
    source: Path, display: str, schema: type[BaseModel], expected: str
) -> tuple[yaml.Node, dict[Any, Any]]:
    """The file's node tree and data: a mapping with no duplicate or reserved keys."""
    raw = _read(source, display)
    text = _decode(raw, display)
    root, data = _parse(text, display)

    if root is None or not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        found = "an empty file" if root is None else f"a {_kind(data)}"
        line = f":{node_line(root)}" if root is not None else ""
        raise SpecError(
            f"the top level must be a mapping with {expected}, found {found}",
            location=display + line,
        )
    _check_duplicate_keys(root, display)
    reserved = sorted(_RESERVED_KEYS & data.keys())
    if reserved:
        key = reserved[0]
        raise SpecError(
            _unknown_key_message(key, (), schema),
            location=f"{display}:{node_line(node_at(root, (key,)))}",
        )
    return root, data


def _model_lines(root: yaml.Node, models: Mapping[str, ModelEntry]) -> dict[Loc, int]:
    """The lines of ``model:`` and of each entry of ``models:`` (where building may fail)."""
    lines: dict[Loc, int] = {("model",): node_line(node_at(root, ("model",)))}
    for name in models:
        lines["models", name] = node_line(node_at(root, ("models", name)))
    return lines


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
    """``tools:``, ``routes:``, ``settings:``, ``models:`` or ``instructions:`` with nothing
    after them mean "none"."""
    optional = ("instructions", "tools", "routes", "settings", "models")
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
            first = seen.setdefault((key.tag, key.value), node_line(key))
            if first != node_line(key):
                raise SpecError(
                    f"duplicate key {key.value!r} (first set on line {first})",
                    location=f"{display}:{node_line(key)}",
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


def _spec_error(
    exc: ValidationError,
    root: yaml.Node,
    display: str,
    schema: type[BaseModel] = AgentSpec,
) -> SpecError:
    """One SpecError for all of pydantic's errors: the first by line, the others listed."""
    found: list[tuple[int, str]] = []
    for error in exc.errors(include_url=False):
        loc = error_loc(error)
        found.append((node_line(node_at(root, loc)), error_message(error, loc, schema, root)))
    found.sort(key=lambda item: item[0])
    (line, message), rest = found[0], found[1:]
    if rest:
        message += "".join(f"\n  also line {n}: {m}" for n, m in rest)
    return SpecError(message, location=f"{display}:{line}")


def error_loc(error: ErrorDetails) -> Loc:
    """The place a pydantic error means: its ``loc``, or the absolute place under
    :data:`~shoal.spec.schema.AT_KEY`, plus the relative path under ``BELOW_KEY``."""
    ctx = error.get("ctx") or {}
    at = ctx.get(AT_KEY)
    loc = tuple(at) if at is not None else tuple(error["loc"])
    return loc + tuple(ctx.get(BELOW_KEY) or ())


def error_message(error: ErrorDetails, loc: Loc, schema: type[BaseModel], root: yaml.Node) -> str:
    """One pydantic error at ``loc`` as a line for a person (``tools[1].timeout: ...``)."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key_message(str(loc[-1]), loc[:-1], schema, root)
    if kind == "invalid_key":
        where = f" in {format_loc(loc[:-1])}" if len(loc) > 1 else ""
        return f"key {loc[-1]!r}{where} must be a string"
    if kind == "missing":
        where = f" in {format_loc(loc[:-1])}" if len(loc) > 1 else ""
        return f"missing required key {loc[-1]!r}{where}"
    message = error["msg"].replace("a valid tuple", "a list")
    if kind == "string_type" and not isinstance(error.get("input"), dict | list | None):
        message += " (put the value in quotes)"
    path = format_loc(loc)
    return f"{path}: {message}" if path else message


def _unknown_key_message(
    key: str, parent: Loc, schema: type[BaseModel] = AgentSpec, root: yaml.Node | None = None
) -> str:
    known = known_keys(parent, schema, root)
    where = f" in {format_loc(parent)}" if parent else ""
    message = f"unknown key {key!r}{where}"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    return f"{message}; expected one of: {', '.join(known)}" if known else message


def known_keys(parent: Loc, schema: type[BaseModel], root: yaml.Node | None) -> list[str]:
    """The keys the mapping at ``parent`` accepts, found by walking the schema's field types
    (an entry of ``models:`` accepts the keys of the kind its own keys say it is)."""
    model: type[BaseModel] | None = schema
    mapping_key = False  # the next part is a key of a dict field (an entry's name)
    for depth, part in enumerate(parent):
        if isinstance(part, int) or model is None:
            continue
        if mapping_key:
            mapping_key = False
            continue
        if model is ModelEntry:  # which fields depends on the kind the entry's keys say
            model = entry_kind(keys_at(root, parent[:depth]))
            if model is None:
                continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
        mapping_key = field is not None and typing.get_origin(field.annotation) is dict
    if model is ModelEntry:
        return entry_keys(keys_at(root, parent))
    if model is None:
        return []
    return [name for name in model.model_fields if name not in _RESERVED_KEYS]


def keys_at(root: yaml.Node | None, loc: Loc) -> list[str]:
    """The keys of the mapping at ``loc`` (none if there is no mapping there)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = _mapping_entry(node.value, str(part))
            node = match[1] if match is not None else None
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if 0 <= part < len(node.value) else None
        else:
            node = None
    if not isinstance(node, yaml.MappingNode):
        return []
    return [key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode)]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (tuple, list, dict, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def format_loc(loc: Loc) -> str:
    """``("tools", 1, "timeout")`` as ``tools[1].timeout``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# -- nodes ----------------------------------------------------------------------------------


def node_at(root: yaml.Node, loc: Loc) -> yaml.Node:
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


def node_line(node: yaml.Node) -> int:
    """The 1-based line ``node`` starts on."""
    return int(node.start_mark.line) + 1


def _kind(value: object) -> str:
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null value"
    return f"single {type(value).__name__} value"
