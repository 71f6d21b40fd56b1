"""Constructor checks shared by the built-in guards: bad values raise :class:`UserError`."""

from __future__ import annotations

import math
from collections.abc import Iterable

from shoal.exceptions import UserError
from shoal.guards.base import TEXT_STAGES, Guard, TextStage


def set_name(guard: Guard, name: str | None) -> None:
    """Give a built-in guard its ``name`` (``None``: keep the class name)."""
    if name is None:
        return
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{type(guard).__name__}: name must be a non-empty string, got {name!r}")
    guard.name = name


def positive_int(owner: str, arg: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{owner}: {arg} must be a whole number of at least 1, got {value!r}")
    return value


def optional_positive_int(owner: str, arg: str, value: object) -> int | None:
    return None if value is None else positive_int(owner, arg, value)


def positive_seconds(owner: str, arg: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise UserError(f"{owner}: {arg} must be a positive number of seconds, got {value!r}")
    return float(value)


def choice(owner: str, arg: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise UserError(f"{owner}: {arg} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def text_stages(owner: str, value: object) -> frozenset[TextStage]:
    """A non-empty set of text stages (``input``, ``tool_result``, ``output``)."""
    if isinstance(value, str):
        raise UserError(f"{owner}: stages must be a list of stages, not the string {value!r}")
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise UserError(f"{owner}: stages must be a list of stages, got {value!r}") from None
    unknown = [item for item in items if item not in TEXT_STAGES]
    if unknown:
        raise UserError(
            f"{owner}: unknown stage {unknown[0]!r}; expected some of {', '.join(TEXT_STAGES)}"
        )
    if not items:
        raise UserError(f"{owner}: stages is empty; the guard would never run")
    return frozenset(items)


def names(owner: str, arg: str, value: object) -> tuple[str, ...]:
    """A list of non-empty strings (tool names or fnmatch patterns); a bare string is refused
    because iterating it would yield its characters."""
    if isinstance(value, str):
        raise UserError(f"{owner}: {arg} must be a list of names, not the string {value!r}")
    if not isinstance(value, Iterable):
        raise UserError(f"{owner}: {arg} must be a list of names, got {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise UserError(f"{owner}: {arg} must hold non-empty strings, got {item!r}")
    return items


def plural(count: int, word: str, words: str | None = None) -> str:
    """``"1 email"``, ``"2 emails"``; ``words`` for irregular plurals."""
    return f"{count:,} {word if count == 1 else words or word + 's'}"
