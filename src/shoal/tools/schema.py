"""From a Python function to a tool's arguments model and JSON schema.

One pydantic model per tool does both jobs: its JSON schema is what the model is told, and
``model_validate`` (lax mode, so ``"1042"`` becomes ``1042`` for an ``int``) checks what the
model answered. Both therefore always agree. :func:`function_schema` builds it:

1. ``inspect.signature`` gives the parameters, ``typing.get_type_hints(include_extras=True)``
   their types (``Annotated[...]`` metadata such as ``Field(description=...)`` is kept).
   Parameters must be plain named ones with a type hint: no ``*args``/``**kwargs``, no
   positional-only parameters, no unbound ``self``/``cls``; anything else is a
   :class:`~shoal.exceptions.ToolDefinitionError` naming the function and the parameter.
2. The docstring (Google, NumPy or reST, via ``docstring_parser``) gives the tool description
   (short + long description, without the sections) and parameter descriptions. An explicit
   ``Field(description=...)`` wins over the docstring.
3. ``pydantic.create_model`` builds the model. Fields are named ``a0, a1, ...`` with the
   parameter name as alias, so any parameter name works (``_private``, ``json``, ``copy``,
   ``model_config``) without pydantic's leading-underscore rule or shadowing warnings. The
   model forbids extra keys: an argument the function does not take is an error.
4. The JSON schema is cleaned for small models (:func:`clean_json_schema`): ``title`` keys are
   dropped, non-recursive ``$defs`` are inlined, only recursive ones stay as ``$ref``.

Validation errors become one short line for the model, e.g.
``lookup_order: argument 'order_id': field required`` (see :func:`format_validation_error`).

Known limit: pydantic rejects ``typing.TypedDict`` before Python 3.12; use
``typing_extensions.TypedDict`` (the error says so).
"""

from __future__ import annotations

import functools
import inspect
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic.json_schema import PydanticJsonSchemaWarning

from shoal.exceptions import ToolArgumentsError, ToolDefinitionError

__all__ = [
    "FunctionSchema",
    "clean_json_schema",
    "format_validation_error",
    "function_schema",
    "parse_docstring",
]

#: How many validation errors one message lists before summarising the rest.
MAX_REPORTED_ERRORS = 4

_UNBOUND_NAMES = ("self", "cls")


@dataclass(frozen=True)
class FunctionSchema:
    """Everything derived from one function's signature and docstring."""

    #: docstring short + long description ("" when there is none)
    description: str
    #: the pydantic model that validates the arguments (fields aliased by parameter name)
    arguments_model: type[BaseModel]
    #: the cleaned JSON schema of the arguments object
    parameters: dict[str, Any]
    #: model field name -> function parameter name, in signature order
    field_names: Mapping[str, str]

    def validate(self, arguments: Any, *, tool_name: str) -> dict[str, Any]:
        """Validate and coerce ``arguments``; return keyword arguments for the function.

        Raises :class:`~shoal.exceptions.ToolArgumentsError` with a one-line message.
        """
        if not isinstance(arguments, Mapping):
            raise ToolArgumentsError(
                f"{tool_name}: arguments must be a JSON object, not {type(arguments).__name__}",
                tool_name=tool_name,
            )
        try:
            instance = self.arguments_model.model_validate(dict(arguments))
        except ValidationError as exc:
            message = format_validation_error(tool_name, exc, list(self.field_names.values()))
            raise ToolArgumentsError(message, tool_name=tool_name) from exc
        return {param: getattr(instance, field) for field, param in self.field_names.items()}


# -- building ------------------------------------------------------------------------------


def function_schema(func: Callable[..., Any], *, tool_name: str) -> FunctionSchema:
    """Build the :class:`FunctionSchema` of ``func``; ``tool_name`` is used in messages."""
    label = f"tool {tool_name!r} ({_qualname(func)})"
    target = _introspection_target(func)
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise ToolDefinitionError(f"{label}: cannot read the signature: {exc}") from exc
    try:
        # like inspect.signature, look through functools.wraps to the original function
        hints = typing.get_type_hints(inspect.unwrap(target), include_extras=True)
    except Exception as exc:
        raise ToolDefinitionError(
            f"{label}: cannot resolve the type hints ({type(exc).__name__}: {exc}); "
            "define the types at module level or import them"
        ) from exc

    description, param_docs = parse_docstring(_docstring(func))
    fields: dict[str, Any] = {}
    field_names: dict[str, str] = {}
    hinted: dict[str, Any] = {}
    for index, param in enumerate(signature.parameters.values()):
        _check_parameter(label, index, param, hints)
        hint = hints[param.name]
        hinted[param.name] = hint
        field_kwargs: dict[str, Any] = {"alias": param.name}
        if param.default is not inspect.Parameter.empty:
            field_kwargs["default"] = param.default
        doc = param_docs.get(param.name)
        if doc and not _has_explicit_description(hint):
            field_kwargs["description"] = doc
        field = f"a{index}"
        fields[field] = (hint, Field(**field_kwargs))
        field_names[field] = param.name

    model_name = "".join(c if c.isalnum() else "_" for c in tool_name) + "_arguments"
    try:
        with warnings.catch_warnings():
            # a default that JSON cannot represent is left out of the schema, which is fine
            warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
            model: type[BaseModel] = create_model(
                model_name,
                __config__=ConfigDict(extra="forbid"),
                **fields,
            )
            raw_schema = model.model_json_schema()
    except Exception as exc:
        raise ToolDefinitionError(_diagnose(label, hinted, exc)) from exc

    parameters = clean_json_schema(raw_schema)
    parameters["type"] = "object"
    parameters.setdefault("properties", {})
    parameters.setdefault("required", [])
    parameters["additionalProperties"] = False
    parameters.pop("description", None)
    order = ("type", "properties", "required", "additionalProperties", "$defs")
    parameters = {key: parameters[key] for key in order if key in parameters}
    return FunctionSchema(description, model, parameters, field_names)


def _check_parameter(
    label: str, index: int, param: inspect.Parameter, hints: Mapping[str, Any]
) -> None:
    name = param.name
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        raise ToolDefinitionError(f"{label}: *{name} is not supported; use named parameters")
    if param.kind is inspect.Parameter.VAR_KEYWORD:
        raise ToolDefinitionError(f"{label}: **{name} is not supported; use named parameters")
    if index == 0 and name in _UNBOUND_NAMES and name not in hints:
        raise ToolDefinitionError(
            f"{label}: parameter {name!r} looks like an unbound method; pass a bound method "
            "(instance.method) or a plain function"
        )
    if param.kind is inspect.Parameter.POSITIONAL_ONLY:
        raise ToolDefinitionError(
            f"{label}: parameter {name!r} is positional-only; tools are called by keyword"
        )
    if name not in hints:
        raise ToolDefinitionError(f"{label}: parameter {name!r} has no type hint")


def _has_explicit_description(hint: Any) -> bool:
    if typing.get_origin(hint) is not typing.Annotated:
        return False
    return any(
        isinstance(meta, FieldInfo) and meta.description is not None for meta in hint.__metadata__
    )


def _diagnose(label: str, hinted: Mapping[str, Any], exc: Exception) -> str:
    """Name the parameter whose type pydantic cannot validate or describe."""
    for name, hint in hinted.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
                TypeAdapter(hint).json_schema()
        except Exception as param_exc:
            return f"{label}: parameter {name!r} has an unsupported type {hint!r}: {param_exc}"
    return f"{label}: cannot build the arguments schema: {exc}"


def _introspection_target(func: Callable[..., Any]) -> Any:
    """The object whose annotations and docstring describe ``func``."""
    target: Any = func
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.isroutine(target):
        return target
    return type(target).__call__


def _docstring(func: Callable[..., Any]) -> str | None:
    """The docstring of a function, or of a callable object's ``__call__`` (else its class)."""
    target = _introspection_target(func)
    doc = inspect.getdoc(target)
    if doc is None and not inspect.isroutine(func) and not isinstance(func, functools.partial):
        doc = inspect.getdoc(type(func))
    return doc


def _qualname(func: Callable[..., Any]) -> str:
    target = _introspection_target(func)
    qualname = getattr(target, "__qualname__", None)
    return str(qualname) if qualname else repr(func)


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """``(description, {parameter: description})`` from a Google, NumPy or reST docstring."""
    if not doc or not doc.strip():
        return "", {}
    try:
        parsed = docstring_parser.parse(doc)
    except docstring_parser.ParseError:
        return doc.strip(), {}
    parts = [str(p).strip() for p in (parsed.short_description, parsed.long_description) if p]
    # a summary wrapped over several lines comes back cut in two (short = its first line):
    # it is one paragraph, joined by a space, not two
    joiner = "\n\n" if parsed.blank_after_short_description else " "
    params = {
        str(p.arg_name): " ".join(str(p.description).split())
        for p in parsed.params
        if p.description
    }
    return joiner.join(part for part in parts if part), params


# -- JSON schema cleanup --------------------------------------------------------------------

# keywords whose value is a schema, a list of schemas, or a name -> schema mapping
_SCHEMA_KEYS = ("items", "additionalProperties", "not", "contains", "propertyNames")
_SCHEMA_LIST_KEYS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SCHEMA_MAP_KEYS = ("properties", "patternProperties")
_REF_PREFIX = "#/$defs/"


def clean_json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ``title`` keywords and inline every ``$defs`` entry that is not recursive.

    Only schema keywords are touched: a property called ``title`` or a default value that
    contains a ``"title"`` key is left alone. Definitions that reach themselves (a tree node
    with children of its own type) stay in ``$defs`` and are referenced by ``$ref``.
    """
    defs: Mapping[str, Any] = schema.get("$defs", {})
    recursive = _recursive_defs(defs)

    def visit(node: Any) -> Any:
        if not isinstance(node, Mapping):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            def_name = ref[len(_REF_PREFIX) :]
            siblings = visit_keys({k: v for k, v in node.items() if k != "$ref"})
            if def_name in defs and def_name not in recursive:
                return {**visit(defs[def_name]), **siblings}
            return {"$ref": ref, **siblings}
        return visit_keys(node)

    def visit_keys(node: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("title", "$defs"):
                continue
            if key in _SCHEMA_KEYS:
                out[key] = visit(value)
            elif key in _SCHEMA_LIST_KEYS and isinstance(value, list):
                out[key] = [visit(item) for item in value]
            elif key in _SCHEMA_MAP_KEYS and isinstance(value, Mapping):
                out[key] = {name: visit(sub) for name, sub in value.items()}
            else:
                out[key] = value
        return out

    result: dict[str, Any] = visit(schema)
    if recursive:
        result["$defs"] = {name: visit(defs[name]) for name in defs if name in recursive}
    return result


def _recursive_defs(defs: Mapping[str, Any]) -> set[str]:
    """Names of the definitions that reference themselves, directly or through others."""
    edges = {name: _refs_in(body) for name, body in defs.items()}
    recursive: set[str] = set()
    for start in defs:
        seen: set[str] = set()
        todo = list(edges[start])
        while todo:
            name = todo.pop()
            if name == start:
                recursive.add(start)
                break
            if name in seen or name not in edges:
                continue
            seen.add(name)
            todo.extend(edges[name])
    return recursive


def _refs_in(node: Any) -> set[str]:
    if isinstance(node, Mapping):
        found = {name for value in node.values() for name in _refs_in(value)}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            found.add(ref[len(_REF_PREFIX) :])
        return found
    if isinstance(node, list):
        return {name for item in node for name in _refs_in(item)}
    return set()


# -- error messages -------------------------------------------------------------------------


def format_validation_error(tool_name: str, error: ValidationError, allowed: list[str]) -> str:
    """One short line a small model can act on, e.g.

    ``lookup_order: unexpected argument 'orderId' (allowed: order_id, verbose); argument
    'order_id': field required``
    """
    parts: list[str] = []
    unexpected: list[str] = []
    for err in error.errors(include_url=False, include_context=False, include_input=False):
        loc = err["loc"]
        if err["type"] == "extra_forbidden" and len(loc) == 1:
            unexpected.append(f"'{loc[0]}'")
            continue
        message = err["msg"]
        message = message[:1].lower() + message[1:]
        parts.append(f"argument '{_format_loc(loc)}': {message}")
    if unexpected:  # first: a misnamed argument usually explains the missing one
        noun = "argument" if len(unexpected) == 1 else "arguments"
        hint = f"allowed: {', '.join(allowed)}" if allowed else "this tool takes no arguments"
        parts.insert(0, f"unexpected {noun} {', '.join(unexpected)} ({hint})")
    if len(parts) > MAX_REPORTED_ERRORS:
        more = len(parts) - MAX_REPORTED_ERRORS
        parts = [*parts[:MAX_REPORTED_ERRORS], f"and {more} more error{'s' if more > 1 else ''}"]
    return f"{tool_name}: " + "; ".join(parts)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for item in loc:
        if isinstance(item, int):
            text += f"[{item}]"
        else:
            text += f".{item}" if text else str(item)
    return text
