"""Tools of the customer-service agent: orders, accounts and returns (see ``lumo_data``).

Each returns a small dict, and ``{"error": "..."}`` instead of raising for an unknown or
malformed id: a small model copes better with an answer it can read. The rules (is a return
allowed? how much is refunded?) are decided here, in code, not left to the model. Docstrings
are short on purpose: they are what the model reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import lumo_data as data

from shoal.tools import tool

__all__ = ["lookup_account", "lookup_order", "return_order"]


def _item_names(items: list[dict[str, Any]]) -> list[str]:
    out = []
    for item in items:
        found = data.product(item["sku"])
        name = found["name"] if found else item["sku"]
        out.append(f"{item['qty']} x {name}" if item["qty"] > 1 else name)
    return out


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by its number: status, items, total, delivery, carrier and tracking.

    Args:
        order_id: The order number the customer gave.
    """
    found = data.order(order_id)
    if found is None:
        customer = data.account(order_id) if _names_a_customer(order_id) else None
        if customer is not None:  # forgiving: a customer id or email lists their orders
            orders = [o for o in data.load("orders") if o["customer"] == customer["id"]]
            return {
                "customer_id": customer["id"],
                "orders": [{"order_id": o["id"], "status": o["status"]} for o in orders],
            }
        number = data.digits(order_id)
        if number is None:
            return {"error": f"{order_id!r} is not an order number; they have four digits"}
        return {"error": f"no order {number}"}
    row = {"order_id": found["id"], "customer_id": found["customer"]}
    row.update((k, v) for k, v in found.items() if k not in ("id", "customer"))
    row["items"] = _item_names(found["items"])
    return data.without_empty(row)


def _names_a_customer(text: str) -> bool:
    return "@" in text or text.strip().upper().startswith("C")


@tool
def lookup_account(customer: str) -> dict[str, Any]:
    """Look up a customer account by id or email: plan, status, balance, card, orders.

    Args:
        customer: The customer id (C and three digits) or email address the customer gave.
    """
    found = data.account(customer)
    if found is None:
        return {"error": f"no customer {customer!r}; ids look like C101"}
    orders = [o["id"] for o in data.load("orders") if o["customer"] == found["id"]]
    row = {"customer_id": found["id"], **{k: v for k, v in found.items() if k != "id"}}
    return data.without_empty({**row, "orders": orders})


@tool
def return_order(order_id: str, reason: str = "") -> dict[str, Any]:
    """Return an order the customer wants to send back, and refund it.

    Args:
        order_id: The order number the customer gave.
        reason: Why the customer returns it, in a few words.
    """
    found = data.order(order_id)
    if found is None:
        return {"error": f"no order {data.digits(order_id) or order_id!r}"}
    status = found["status"]
    if status == "cancelled":
        return {"error": f"order {found['id']} was cancelled: {found.get('refund', 'no charge')}"}
    if status != "delivered":
        return {
            "error": f"order {found['id']} is {status}, not delivered yet; "
            "it can be returned once it arrives"
        }
    window = int(data.shop()["return_window_days"])
    last_day = dt.date.fromisoformat(found["delivered_on"]) + dt.timedelta(days=window)
    if data.today() > last_day:
        return {
            "error": f"order {found['id']} was delivered on {found['delivered_on']}; the "
            f"{window}-day return window ended on {last_day}. A faulty device is covered "
            "by the warranty: technical support can help."
        }
    number = data.record_request(
        "return", {"order_id": found["id"], "reason": reason.strip(), "refund": found["total"]}
    )
    customer = data.account(found["customer"]) or {}
    return data.without_empty(
        {
            "return_id": f"R-{number:04d}",
            "order_id": found["id"],
            "refund": found["total"],
            "refund_to": customer.get("card"),
            "label": f"a prepaid return label was emailed to {customer.get('email')}",
            "return_by": str(last_day),
        }
    )
