"""Deterministic routes: requests a rule can decide go to a tool without the model.

A :class:`Route` is a regular expression over the user's message and the tool it calls, with
the arguments taken from the match (its named groups by default, or a function of the match).
A ``first`` route is tried before the model is asked at all (``calc: 2+2`` needs no model to
know it is a calculation); a ``fallback`` route is used only when the model has exhausted its
retry budget on unusable output, so a run that a rule can still save ends with a call rather
than an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shoal.exceptions import UserError
from shoal.messages import ToolCall

__all__ = ["Route", "match_route"]


@dataclass(frozen=True)
class Route:
    """``pattern`` (searched, case-insensitive) in the user's message calls ``tool``."""

    pattern: str
    tool: str
    #: the call's arguments from the match; default: the match's named groups
    arguments: Callable[[re.Match[str]], dict[str, Any]] | None = None
    #: ``first``: before the model is asked; ``fallback``: after it exhausted its retries
    when: Literal["first", "fallback"] = "first"
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.when not in ("first", "fallback"):
            raise UserError(f"route for {self.tool!r}: when must be 'first' or 'fallback'")
        try:
            compiled = re.compile(self.pattern, re.IGNORECASE)
        except re.error as exc:
            raise UserError(
                f"route for {self.tool!r}: bad pattern {self.pattern!r}: {exc}"
            ) from None
        object.__setattr__(self, "_compiled", compiled)

    def match(self, text: str) -> ToolCall | None:
        """The call this route makes for ``text``, or None if it does not apply."""
        found = self._compiled.search(text)
        if found is None:
            return None
        if self.arguments is not None:
            arguments = self.arguments(found)
        else:
            arguments = {k: v for k, v in found.groupdict().items() if v is not None}
        return ToolCall(name=self.tool, arguments=arguments)


def match_route(routes: Sequence[Route], text: str, when: str) -> tuple[Route, ToolCall] | None:
    """The first route of kind ``when`` that matches ``text``, with its call."""
    for route in routes:
        if route.when == when:
            call = route.match(text)
            if call is not None:
                return route, call
    return None
