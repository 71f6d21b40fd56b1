"""A temporary tools module and system file, for the tests of system files, routes, roles,
``shoal run SYSTEM`` and ``shoal serve --system`` (each test file keeps its own ``SYSTEM`` text;
``{m}`` in it stands for the tools module's name)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["TOOLS", "tools_module", "write_system"]

#: the tools module: two plain tools and one that always waits for a person's approval
TOOLS = '''\
from shoal.tools import tool


def lookup_order(order_id: str) -> dict:
    """Look up an order.

    Args:
        order_id: The order number.
    """
    return {"order_id": order_id, "status": "shipped"}


def refund(order_id: str) -> str:
    """Refund an order.

    Args:
        order_id: The order number.
    """
    return f"refunded {order_id}"


@tool(requires_approval=True)
def delete_account(customer_id: str) -> str:
    """Delete a customer's account.

    Args:
        customer_id: The customer.
    """
    return f"deleted {customer_id}"
'''


@contextmanager
def tools_module(directory: Path, prefix: str, extra: str = "") -> Iterator[str]:
    """:data:`TOOLS`, followed by the test's own ``extra`` source, written to ``directory`` under
    a name no other test uses (yielded); the module is forgotten afterwards so that the next test
    imports its own file."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    text = TOOLS + (f"\n\n{extra}" if extra else "")
    (directory / f"{name}.py").write_text(text, encoding="utf-8")
    try:
        yield name
    finally:
        sys.modules.pop(name, None)


def write_system(directory: Path, text: str, tools: str) -> Path:
    """``directory/system.yaml`` with ``text``, ``{m}`` replaced by the module ``tools``."""
    path = directory / "system.yaml"
    path.write_text(text.replace("{m}", tools), encoding="utf-8")
    return path
