"""The local data of the customer-service example: a small smart-home shop, "Lumo Home".

Read-only data are JSON files in ``data/`` next to this module (``$SHOAL_CS_DATA`` to use
another directory with the same files)::

    products.json         {"shop": {name, today, return_window_days, ...}, "products": [...]}
                          product: sku "LC-30", name, price, latest_firmware, warranty_years,
                          wifi, needs_hub, in_stock
    accounts.json         customer: id "C101", name, email, plan, plan_price, status
                          (active/locked/closed), balance_due, card, address, note?
    orders.json           order: id "7301", customer, items [{sku, qty}], total, status
                          (processing/shipped/delivered/cancelled), ordered_on, eta?,
                          delivered_on?, carrier?, tracking?, refund?, note?
    devices.json          registered device: serial "LC30-58211", sku, owner, firmware,
                          registered_on, last_seen, status, last_error?, ...
    troubleshooting.json  article: id "KB-101", title, products [sku], keywords, steps

``shop.today`` is the date the data are "as of", so answers (is a return still in its window?
is a warranty still valid?) are the same whenever the example runs.

What the tools write (returns, tickets) goes to a SQLite file: ``$SHOAL_CS_STATE`` if set, else
``examples/customer_service.db`` under Shoal's data directory (``$SHOAL_HOME``), never into
the repository. Table ``requests``: id, kind (return/ticket), number (1, 2, ... per kind;
shown as ``R-0001`` for a return and ``T-0001`` for a ticket), created_at (UTC), body (JSON).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from shoal.settings import data_dir

__all__ = [
    "account",
    "customer_key",
    "data_path",
    "device",
    "digits",
    "load",
    "order",
    "product",
    "record_request",
    "shop",
    "state_path",
    "today",
    "without_empty",
]

DATA_ENV = "SHOAL_CS_DATA"
STATE_ENV = "SHOAL_CS_STATE"


def data_path() -> Path:
    explicit = os.environ.get(DATA_ENV)
    return Path(explicit).expanduser() if explicit else Path(__file__).with_name("data")


@functools.cache
def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load(name: str) -> Any:
    """The parsed JSON file ``data/<name>.json`` (read once per process)."""
    return _load(data_path() / f"{name}.json")


def shop() -> dict[str, Any]:
    shop_info: dict[str, Any] = load("products")["shop"]
    return shop_info


def today() -> dt.date:
    return dt.date.fromisoformat(shop()["today"])


def without_empty(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if value not in (None, "", [])}


def digits(text: str) -> str | None:
    """``"7301"``, ``"#7301"``, ``"order 7301"`` -> ``"7301"``; no digits -> None."""
    match = re.search(r"\d{3,}", text) or re.search(r"\d+", text)
    return match.group() if match else None


def customer_key(text: str) -> tuple[str, str] | None:
    """``("email", ...)`` or ``("id", "C101")`` for ``"C101"``, ``"c 101"``, ``"customer 101"``."""
    text = text.strip()
    if "@" in text:
        return "email", text.lower()
    number = digits(text)
    return ("id", f"C{int(number)}") if number else None


def order(order_id: str) -> dict[str, Any] | None:
    number = digits(order_id)
    return next((o for o in load("orders") if o["id"] == number), None)


def account(customer: str) -> dict[str, Any] | None:
    key = customer_key(customer)
    if key is None:
        return None
    column, value = key
    return next((a for a in load("accounts") if a[column].lower() == value.lower()), None)


def product(sku: str) -> dict[str, Any] | None:
    return next((p for p in load("products")["products"] if p["sku"] == sku), None)


def device(serial: str) -> dict[str, Any] | None:
    """A registered device by serial: ``"LC30-58211"``, ``"lc30 58211"`` or ``"58211"``."""
    wanted = re.sub(r"[^0-9a-z]", "", serial.lower())
    if not wanted:
        return None
    for record in load("devices"):
        full = re.sub(r"[^0-9a-z]", "", record["serial"].lower())
        if wanted == full or (wanted.isdigit() and full.endswith(wanted) and len(wanted) >= 4):
            return dict(record)
    return None


# -- what the tools write ------------------------------------------------------------------


def state_path() -> Path:
    explicit = os.environ.get(STATE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return data_dir() / "examples" / "customer_service.db"


def record_request(kind: str, body: Mapping[str, Any]) -> int:
    """Store a return or a ticket; its number among requests of its kind (1, 2, ...)."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    # isolation_level=None: BEGIN IMMEDIATE takes the write lock before counting, so two
    # processes cannot hand out the same number
    with closing(sqlite3.connect(path, timeout=10, isolation_level=None)) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " kind TEXT NOT NULL, number INTEGER NOT NULL, created_at TEXT NOT NULL,"
            " body TEXT NOT NULL)"
        )
        conn.execute("BEGIN IMMEDIATE")
        try:
            (count,) = conn.execute(
                "SELECT count(*) FROM requests WHERE kind = ?", (kind,)
            ).fetchone()
            conn.execute(
                "INSERT INTO requests (kind, number, created_at, body) VALUES (?, ?, ?, ?)",
                (kind, count + 1, created_at, json.dumps(dict(body))),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return int(count) + 1
