"""Code steps of the research desk's pipeline (work code does better than a small model).

:func:`brief` turns the planner's structured plan (a JSON object with ``question``,
``technology`` and ``money_and_rules``, enforced by the planner's ``output_schema``) into the
plain-text brief every later agent reads::

    Question: Should we get a heat pump?
    Technology search: heat pump cost efficiency
    Money and rules search: heat pump grant planning noise

A plan that is not such an object (a planner without its schema) is passed on as it is.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["brief"]

_LINES = (
    ("question", "Question"),
    ("technology", "Technology search"),
    ("money_and_rules", "Money and rules search"),
)


def brief(plan: str) -> str:
    """The planner's JSON plan as a plain-text brief, one labelled line per field."""
    try:
        value: Any = json.loads(plan)
    except ValueError:
        return plan
    if not isinstance(value, dict):
        return plan
    lines = [f"{label}: {str(value.get(key, '')).strip()}" for key, label in _LINES]
    return "\n".join(line for line in lines if not line.endswith(": "))
