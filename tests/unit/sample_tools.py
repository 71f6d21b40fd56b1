"""Small tools several unit test files share (their schemas, not their results, matter)."""

from __future__ import annotations

from typing import Any

from shoal.tools import tool


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by its id.

    Args:
        order_id: The order number.
    """
    return {}


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b
