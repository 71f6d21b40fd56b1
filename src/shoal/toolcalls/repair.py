"""Bringing a small model's tool arguments in line with the tool's JSON schema.

Small models get the shape of a call right more often than its types: ``"5"`` for an integer,
``"yes"`` for a boolean, one string where a list is expected, ``"Celsius"`` for the enum value
``"celsius"``, ``"City"`` for the property ``city``. :func:`coerce_arguments` fixes such slips
(and says what it changed); :func:`validate_arguments` turns what is still wrong into one short
message the model can act on.

Coercion only touches a value that does not already validate against its property's schema;
it never invents a value and never drops a key (an unknown key stays for validation to report).

Unknown keys: when a schema lists ``properties``, :func:`validate_arguments` treats any other
top-level key as an error unless the schema allows it explicitly (``additionalProperties`` set
to ``true`` or to a schema, or ``patternProperties``). Top-level keys become the tool's keyword
arguments, so an unknown one would fail the call anyway, and a small model that invents an
argument is usually confusing it with another one. Nested objects follow their own schema
(extra keys there are an error only with ``additionalProperties: false``).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

__all__ = ["coerce_arguments", "validate_arguments"]

_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_BOOLEANS = {"true": True, "yes": True, "false": False, "no": False}
_KINDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "a boolean (true or false)",
    "array": "an array",
    "object": "an object",
    "null": "null",
}
_NO_CHANGE: Any = object()


# -- schema helpers -----------------------------------------------------------------------


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    """``schema`` with local ``$ref`` (and a lone ``allOf`` wrapper) followed."""
    for _ in range(32):
        if not isinstance(schema, dict):
            return schema
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            target: Any = root
            for part in ref.lstrip("#").split("/"):
                if not part:
                    continue
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    return schema
                target = target[part]
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **siblings} if isinstance(target, dict) else target
            continue
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and "type" not in schema:
            siblings = {k: v for k, v in schema.items() if k != "allOf"}
            inner = _resolve(all_of[0], root)
            schema = {**inner, **siblings} if isinstance(inner, dict) else inner
            continue
        return schema
    return schema


def _with_definitions(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``schema`` carrying the root's definitions, so its local ``$ref`` still resolve."""
    if schema is root:
        return schema
    extra: dict[str, Any] = {
        k: root[k] for k in ("$defs", "definitions") if k in root and k not in schema
    }
    return {**schema, **extra} if extra else schema


def _is_valid(value: Any, schema: Any, root: dict[str, Any]) -> bool:
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, dict):
        return True
    validator = jsonschema.Draft202012Validator(_with_definitions(schema, root))
    return bool(validator.is_valid(value))


def _types(schema: dict[str, Any]) -> list[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return [t for t in declared if isinstance(t, str)]
    if "properties" in schema:
        return ["object"]
    if "items" in schema or "prefixItems" in schema:
        return ["array"]
    return []


def _show(value: Any) -> str:
    """A value as a short quote for a note or an error message."""
    if isinstance(value, str):
        text = repr(value if len(value) <= 40 else value[:37] + "...")
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
        if len(text) > 40:
            text = text[:37] + "..."
    return text


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _key_form(key: str) -> str:
    return re.sub(r"[-\s]+", "_", key.strip().lower())


# -- coercion -----------------------------------------------------------------------------


def coerce_arguments(
    arguments: dict[str, Any], schema: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """``arguments`` coerced toward ``schema``, and short notes of what was changed.

    Applied only where a value does not validate already: numeric strings to numbers
    (``"5.0"`` to an integer only when integral), ``"true"``/``"false"``/``"yes"``/``"no"`` to
    booleans, numbers to strings, a JSON-encoded string to the array or object it encodes, a
    lone value to a one-item array, an enum value in another case (or spelling of the same
    JSON value) to the enum's own; keys that match a property but for case, ``-``, spaces or
    ``_`` are renamed. Nested objects and arrays are handled recursively. The input is not
    modified.
    """
    if not isinstance(arguments, dict) or not isinstance(schema, dict):
        return arguments, []
    notes: list[str] = []
    coerced = _coerce_object(dict(arguments), _resolve(schema, schema), schema, "", notes)
    return coerced, notes


def _coerce(value: Any, schema: Any, root: dict[str, Any], path: str, notes: list[str]) -> Any:
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return value
    if _is_valid(value, schema, root):
        if not isinstance(value, dict | list):
            return value
        # a valid container may still hold misspelt keys that its schema lets through
        trial: list[str] = []
        candidate = _coerce_invalid(value, schema, root, path, trial)
        if trial and _is_valid(candidate, schema, root):
            notes.extend(trial)
            return candidate
        return value
    return _coerce_invalid(value, schema, root, path, notes)


def _coerce_invalid(
    value: Any, schema: dict[str, Any], root: dict[str, Any], path: str, notes: list[str]
) -> Any:
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list) and branches:
        fallback: tuple[Any, list[str]] | None = None
        for branch in branches:
            trial: list[str] = []
            candidate = _coerce(value, branch, root, path, trial)
            if trial and _is_valid(candidate, schema, root):
                notes.extend(trial)
                return candidate
            if trial and fallback is None:
                fallback = (candidate, trial)
        if fallback is not None:
            notes.extend(fallback[1])
            return fallback[0]
        return value
    enum = schema.get("enum")
    if isinstance(enum, list) and isinstance(value, str):
        match = _enum_match(value, enum)
        if match is not _NO_CHANGE:
            notes.append(f"'{path}': {_show(value)} -> {_show(match)}")
            return match
    types = _types(schema)
    fallback_value: Any = _NO_CHANGE
    fallback_notes: list[str] = []
    for kind in types:
        attempt: list[str] = []
        candidate = _coerce_to(value, kind, schema, root, path, attempt)
        if candidate is _NO_CHANGE:
            continue
        if _is_valid(candidate, schema, root):
            notes.extend(attempt)
            return candidate
        if fallback_value is _NO_CHANGE:
            fallback_value, fallback_notes = candidate, attempt
    if fallback_value is not _NO_CHANGE:
        notes.extend(fallback_notes)
        return fallback_value
    return value


def _enum_match(value: str, enum: Sequence[Any]) -> Any:
    wanted = value.strip()
    matches = [
        option
        for option in enum
        if (isinstance(option, str) and option.lower() == wanted.lower())
        or (not isinstance(option, str) and json.dumps(option).lower() == wanted.lower())
    ]
    return matches[0] if len(matches) == 1 else _NO_CHANGE


def _number_from(text: str, kind: str) -> Any:
    text = text.strip()
    if _INTEGER.match(text):
        return int(text)
    if not _NUMBER.match(text):
        return _NO_CHANGE
    number = float(text)
    if not math.isfinite(number):
        return _NO_CHANGE
    if kind == "integer":
        return int(number) if number.is_integer() else _NO_CHANGE
    return number


def _coerce_to(
    value: Any, kind: str, schema: dict[str, Any], root: dict[str, Any], path: str, notes: list[str]
) -> Any:
    """``value`` converted to the JSON type ``kind`` (recursing into containers)."""
    if kind in ("integer", "number") and isinstance(value, str):
        number = _number_from(value, kind)
        if number is not _NO_CHANGE:
            notes.append(f"'{path}': {_show(value)} -> {_show(number)}")
        return number
    if kind == "boolean" and isinstance(value, str):
        flag = _BOOLEANS.get(value.strip().lower(), _NO_CHANGE)
        if flag is not _NO_CHANGE:
            notes.append(f"'{path}': {_show(value)} -> {_show(flag)}")
        return flag
    if kind == "string" and isinstance(value, int | float) and not isinstance(value, bool):
        text = json.dumps(value)
        notes.append(f"'{path}': {_show(value)} -> {_show(text)}")
        return text
    if kind == "object":
        if isinstance(value, str):
            decoded = _decode(value)
            if not isinstance(decoded, dict):
                return _NO_CHANGE
            notes.append(f"'{path}': decoded a JSON-encoded object")
            value = decoded
        if isinstance(value, dict):
            return _coerce_object(dict(value), schema, root, path, notes)
        return _NO_CHANGE
    if kind == "array":
        if isinstance(value, str) and value.strip().startswith("["):
            decoded = _decode(value)
            if isinstance(decoded, list):
                notes.append(f"'{path}': decoded a JSON-encoded array")
                value = decoded
        if not isinstance(value, list):
            notes.append(f"'{path}': wrapped {_show(value)} in a list")
            value = [value]
        return _coerce_array(list(value), schema, root, path, notes)
    return _NO_CHANGE


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NO_CHANGE


def _coerce_object(
    value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any], path: str, notes: list[str]
) -> dict[str, Any]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return value
    renamed: dict[str, Any] = {}
    for key, item in value.items():
        target = key
        if key not in properties and isinstance(key, str):
            matches = [name for name in properties if _key_form(name) == _key_form(key)]
            if len(matches) == 1 and matches[0] not in value and matches[0] not in renamed:
                target = matches[0]
                notes.append(f"renamed '{_join(path, key)}' to '{_join(path, target)}'")
        renamed[target] = item
    for key, item in renamed.items():
        if key in properties:
            renamed[key] = _coerce(item, properties[key], root, _join(path, key), notes)
    return renamed


def _coerce_array(
    value: list[Any], schema: dict[str, Any], root: dict[str, Any], path: str, notes: list[str]
) -> list[Any]:
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    items = schema.get("items")
    coerced = []
    for index, item in enumerate(value):
        item_schema = prefix[index] if index < len(prefix) else items
        if isinstance(item_schema, dict):
            item = _coerce(item, item_schema, root, _join(path, index), notes)
        coerced.append(item)
    return coerced


# -- validation ---------------------------------------------------------------------------

_PRIORITY = {
    "additionalProperties": 6,
    "unevaluatedProperties": 6,
    "required": 5,
    "type": 4,
    "enum": 3,
    "const": 3,
    "anyOf": 0,
    "oneOf": 0,
}


def _relevance(error: ValidationError) -> tuple[int, int]:
    """Shallow errors first (what is missing or unknown at the top), then by kind."""
    return -len(error.path), _PRIORITY.get(str(error.validator), 1)


def validate_arguments(arguments: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """``None`` when ``arguments`` satisfy ``schema``, else one short message for the model.

    For instance ``missing required argument 'city'``, ``'count' must be an integer, got
    'many'``, ``unknown argument 'foo'; expected one of: a, b`` or ``'unit' must be one of:
    celsius, fahrenheit``. Top-level keys not in ``properties`` are errors unless the schema
    allows extra keys explicitly (see the module docstring).
    """
    if not isinstance(arguments, dict):
        return "the arguments must be a JSON object"
    if not isinstance(schema, dict):
        return None
    checked = schema
    if (
        isinstance(schema.get("properties"), dict)
        and "additionalProperties" not in schema
        and "patternProperties" not in schema
        and "unevaluatedProperties" not in schema
    ):
        checked = {**schema, "additionalProperties": False}
    validator = jsonschema.Draft202012Validator(checked)
    error = best_match(validator.iter_errors(arguments), key=_relevance)
    if error is None:
        return None
    return _describe(error, schema)


def _where(error: ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path = _join(path, part)
    return path


def _kind(schema: Any, root: dict[str, Any]) -> str | None:
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return _show(schema["const"])
    types = _types(schema)
    if not types:
        return None
    return " or ".join(_KINDS.get(t, t) for t in types)


#: how a failed JSON-schema keyword reads, after "<argument> must "
_PHRASES = {
    "minLength": "be at least {value} characters long",
    "maxLength": "be at most {value} characters long",
    "minItems": "have at least {value} item{s}",
    "maxItems": "have at most {value} item{s}",
    "uniqueItems": "not contain duplicates",
    "pattern": "match the pattern {value}",
    "format": "be a valid {value}",
    "multipleOf": "be a multiple of {value}",
}


def _describe(error: ValidationError, root: dict[str, Any]) -> str:
    where = _where(error)
    subject = f"'{where}'" if where else "the arguments"
    instance = error.instance
    value = error.validator_value
    validator = str(error.validator)
    if validator in ("additionalProperties", "unevaluatedProperties") and isinstance(
        instance, dict
    ):
        properties = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        known = list(properties) if isinstance(properties, dict) else []
        unknown = [k for k in instance if k not in known]
        names = ", ".join(f"'{k}'" for k in unknown)
        noun = "argument" if not where else "key"
        plural = "s" if len(unknown) > 1 else ""
        inside = f" in {subject}" if where else ""
        if not known:
            return f"unknown {noun}{plural} {names}{inside}; it takes none"
        return f"unknown {noun}{plural} {names}{inside}; expected one of: {', '.join(known)}"
    if validator == "required" and isinstance(instance, dict) and isinstance(value, list):
        missing = [k for k in value if k not in instance]
        names = ", ".join(f"'{k}'" for k in missing)
        plural = "s" if len(missing) > 1 else ""
        if not where:
            return f"missing required argument{plural} {names}"
        return f"{subject} is missing required key{plural} {names}"
    if validator == "type":
        kind = _kind(error.schema, root) or str(value)
        if not where:
            return f"the arguments must be {kind}"
        return f"{subject} must be {kind}, got {_show(instance)}"
    if validator == "enum" and isinstance(value, list):
        options = ", ".join(v if isinstance(v, str) else json.dumps(v) for v in value)
        return f"{subject} must be one of: {options}"
    if validator == "const":
        return f"{subject} must be {_show(value)}"
    if validator in ("anyOf", "oneOf") and isinstance(value, list):
        return _describe_alternatives(error, value, subject, root)
    bounds = {
        "minimum": ">=",
        "maximum": "<=",
        "exclusiveMinimum": ">",
        "exclusiveMaximum": "<",
    }
    if validator in bounds:
        return f"{subject} must be {bounds[validator]} {value}, got {_show(instance)}"
    if validator in _PHRASES:
        plural = "s" if value != 1 else ""
        return f"{subject} must " + _PHRASES[validator].format(value=value, s=plural)
    message = error.message if len(error.message) <= 120 else error.message[:117] + "..."
    return f"{subject}: {message}" if where else message


def _describe_alternatives(
    error: ValidationError, branches: list[Any], subject: str, root: dict[str, Any]
) -> str:
    """An ``anyOf``/``oneOf`` failure: the branch the value was meant for, or the choices."""
    by_branch: dict[int, list[ValidationError]] = defaultdict(list)
    for sub in error.context or ():
        index = sub.relative_schema_path[0] if sub.relative_schema_path else None
        if isinstance(index, int):
            by_branch[index].append(sub)
    meant = [
        index
        for index, branch in enumerate(branches)
        if by_branch.get(index) and _matches_type(error.instance, branch, root)
    ]
    if len(meant) == 1:
        best = best_match(by_branch[meant[0]], key=_relevance)
        if best is not None:
            return _describe(best, root)
    kinds = [_kind(branch, root) for branch in branches]
    if all(kinds):
        unique = list(dict.fromkeys(k for k in kinds if k))
        return f"{subject} must be {' or '.join(unique)}, got {_show(error.instance)}"
    if str(error.validator) == "oneOf" and not error.context:
        return f"{subject} matches more than one of the allowed forms"
    return f"{subject} does not match any of the allowed forms"


def _matches_type(value: Any, schema: Any, root: dict[str, Any]) -> bool:
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return False
    types = _types(schema)
    checker = jsonschema.Draft202012Validator.TYPE_CHECKER
    return any(checker.is_type(value, t) for t in types if t in _KINDS)
