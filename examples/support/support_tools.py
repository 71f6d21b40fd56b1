"""Tools for the example customer-support agent, over a small local SQLite database.

The database is a real file: ``$SHOAL_SUPPORT_DB`` if set, else ``support.db`` next to this
module. It is created and filled with sample data on first use (in one transaction, so two
processes starting at once cannot seed it twice); delete the file to start again.

Tables::

    customers  id "C001", name, email, tier (standard/silver/gold), status
    orders     id "1042", customer_id, status (shipped/processing/delivered/cancelled), item,
               total, eta, delivered_on, carrier, tracking
    tickets    id 1, 2, ... (shown as "T-0001"), customer_id or NULL, issue, priority
               (low/medium/high), status, created_at (UTC, ISO 8601)

The tools return small dicts, and ``{"error": "..."}`` instead of raising for an unknown id or a
malformed one: a small model copes better with an answer it can read than with a failure.
Their docstrings are short on purpose: they become the descriptions a 135M model reads.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from shoal.tools import tool

__all__ = ["create_ticket", "database_path", "lookup_customer", "lookup_order"]

#: Environment variable naming the database file.
DB_ENV = "SHOAL_SUPPORT_DB"

#: Bumped when the schema or the sample data change; a database with another version is left
#: alone only if it is newer (then this module is out of date).
SCHEMA_VERSION = 1

Priority = Literal["low", "medium", "high"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    email   TEXT NOT NULL UNIQUE,
    tier    TEXT NOT NULL CHECK (tier IN ('standard', 'silver', 'gold')),
    status  TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'closed'))
);
CREATE TABLE IF NOT EXISTS orders (
    id           TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL REFERENCES customers (id),
    status       TEXT NOT NULL
                 CHECK (status IN ('shipped', 'processing', 'delivered', 'cancelled')),
    item         TEXT NOT NULL,
    total        REAL NOT NULL,
    eta          TEXT,
    delivered_on TEXT,
    carrier      TEXT,
    tracking     TEXT
);
CREATE TABLE IF NOT EXISTS tickets (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id  TEXT REFERENCES customers (id),
    issue        TEXT NOT NULL,
    priority     TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high')),
    status       TEXT NOT NULL DEFAULT 'open',
    created_at   TEXT NOT NULL
);
"""

_CUSTOMERS = [
    ("C001", "Maria Garcia", "maria.garcia@example.com", "gold", "active"),
    ("C002", "James Chen", "james.chen@example.com", "standard", "active"),
    ("C003", "Aisha Okafor", "aisha.okafor@example.com", "silver", "active"),
    ("C004", "Lukas Weber", "lukas.weber@example.com", "standard", "suspended"),
    ("C005", "Priya Nair", "priya.nair@example.com", "gold", "active"),
    ("C006", "Tom Baker", "tom.baker@example.com", "standard", "closed"),
    ("C007", "Sofia Rossi", "sofia.rossi@example.com", "silver", "active"),
    ("C008", "Kenji Sato", "kenji.sato@example.com", "standard", "active"),
]

# id, customer, status, item, total, eta, delivered_on, carrier, tracking
_ORDERS = [
    ("1042", "C001", "shipped", "Wireless headphones", 89.99, "2025-06-14", None, "UPS",
     "1Z999AA10123456784"),
    ("1043", "C002", "processing", "Coffee grinder", 45.50, "2025-06-18", None, None, None),
    ("1044", "C001", "delivered", "Phone case", 19.99, None, "2025-06-02", "USPS",
     "9400111899223817"),
    ("1045", "C003", "cancelled", "Desk lamp", 34.00, None, None, None, None),
    ("1046", "C005", "shipped", "Running shoes", 120.00, "2025-06-13", None, "FedEx",
     "612999123456"),
    ("1047", "C004", "delivered", "Yoga mat", 25.00, None, "2025-05-28", "DHL", "JD0146000036"),
    ("1048", "C007", "processing", "Bluetooth speaker", 59.95, "2025-06-20", None, None, None),
    ("1049", "C008", "shipped", "Backpack", 74.90, "2025-06-15", None, "UPS",
     "1Z999AA10123456791"),
    ("1050", "C002", "delivered", "Water bottle", 15.00, None, "2025-06-05", "USPS",
     "9400111899223842"),
    ("1051", "C005", "processing", "Smart watch", 199.00, "2025-06-21", None, None, None),
    ("1052", "C006", "cancelled", "Keyboard", 49.99, None, None, None, None),
    ("1053", "C003", "shipped", "Office chair", 249.00, "2025-06-16", None, "FedEx",
     "612999123499"),
    ("1054", "C001", "processing", "USB-C cable", 9.99, "2025-06-19", None, None, None),
    ("1055", "C007", "delivered", "Cookbook", 28.50, None, "2025-06-01", "DHL", "JD0146000087"),
    ("1056", "C008", "shipped", "Electric kettle", 39.90, "2025-06-14", None, "UPS",
     "1Z999AA10123456808"),
]  # fmt: skip


# -- the database ---------------------------------------------------------------------------


def database_path() -> Path:
    """The database file: ``$SHOAL_SUPPORT_DB``, else ``support.db`` next to this module."""
    explicit = os.environ.get(DB_ENV)
    return Path(explicit).expanduser() if explicit else Path(__file__).with_name("support.db")


@contextmanager
def _connect() -> Iterator[sqlite3.Connection]:
    """A connection to the (seeded) database, closed afterwards. One per tool call: tools run
    in worker threads, and a sqlite3 connection belongs to the thread that opened it."""
    path = database_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions, so BEGIN/COMMIT below mean what they say
    with closing(sqlite3.connect(path, timeout=10, isolation_level=None)) as conn:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        _ensure_seeded(conn)
        yield conn


def _ensure_seeded(conn: sqlite3.Connection) -> None:
    """Create the tables and the sample data unless they are there: all of it or none."""
    if _user_version(conn) >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")  # takes the write lock: a second process waits here
    try:
        if _user_version(conn) < SCHEMA_VERSION:  # not seeded while we waited
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            # rows already there are kept; any other constraint failure aborts the seeding
            conn.executemany(
                "INSERT INTO customers VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", _CUSTOMERS
            )
            conn.executemany(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                _ORDERS,
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _order_number(text: str) -> str | None:
    """``"1042"``, ``"#1042"``, ``"order 1042"`` -> ``"1042"``; no digits -> None."""
    match = re.search(r"\d+", text)
    return match.group() if match else None


def _customer_key(text: str) -> tuple[str, str] | None:
    """``("email", ...)`` or ``("id", "C001")`` for ``"C001"``, ``"c1"``, ``"customer C-001"``."""
    text = text.strip()
    if "@" in text:
        return "email", text.lower()
    match = re.search(r"(?:\b[Cc]\s*-?\s*)?(\d+)", text)
    if match is None:
        return None
    return "id", f"C{int(match.group(1)):03d}"


def _ticket_id(number: int) -> str:
    return f"T-{number:04d}"


def _without_empty(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if value is not None}


# -- the tools ------------------------------------------------------------------------------


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Get the status of an order: item, total, carrier, tracking and delivery date.

    Args:
        order_id: The order number, for example 1042.
    """
    number = _order_number(order_id)
    if number is None:
        return {"error": f"{order_id!r} is not an order number; they look like 1042"}
    with _connect() as conn:
        row = conn.execute(
            "SELECT id AS order_id, status, item, total, eta, delivered_on, carrier, tracking,"
            " customer_id FROM orders WHERE id = ?",
            (number,),
        ).fetchone()
    if row is None:
        return {"error": f"no order {number}"}
    return _without_empty(dict(row))


@tool
def lookup_customer(customer_id: str) -> dict[str, Any]:
    """Get a customer's details and their order numbers.

    Args:
        customer_id: The customer id like C001, or their email address.
    """
    key = _customer_key(customer_id)
    if key is None:
        return {"error": f"{customer_id!r} is not a customer id or email; ids look like C001"}
    column, value = key
    with _connect() as conn:
        row = conn.execute(
            f"SELECT id AS customer_id, name, email, tier, status FROM customers "
            f"WHERE {column} = ?",
            (value,),
        ).fetchone()
        if row is None:
            return {"error": f"no customer {value}"}
        orders = conn.execute(
            "SELECT id FROM orders WHERE customer_id = ? ORDER BY id", (row["customer_id"],)
        ).fetchall()
    return {**dict(row), "orders": [order["id"] for order in orders]}


@tool
def create_ticket(
    issue: str, priority: Priority = "medium", customer_id: str | None = None
) -> dict[str, Any]:
    """Open a support ticket for a problem the tools cannot solve.

    Args:
        issue: What the customer needs, in one sentence.
        priority: low, medium or high.
        customer_id: The customer id like C001, if known.
    """
    issue = issue.strip()
    if not issue:
        return {"error": "describe the issue in a sentence"}
    if priority not in ("low", "medium", "high"):
        return {"error": f"priority must be low, medium or high, not {priority!r}"}
    with _connect() as conn:
        customer: str | None = None
        if customer_id is not None and customer_id.strip():
            key = _customer_key(customer_id)
            if key is None:
                return {"error": f"{customer_id!r} is not a customer id; they look like C001"}
            found = conn.execute(
                f"SELECT id FROM customers WHERE {key[0]} = ?", (key[1],)
            ).fetchone()
            if found is None:
                return {"error": f"no customer {key[1]}; leave customer_id out if unknown"}
            customer = found["id"]
        created_at = datetime.now(UTC).isoformat(timespec="seconds")
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.execute(
                "INSERT INTO tickets (customer_id, issue, priority, status, created_at)"
                " VALUES (?, ?, ?, 'open', ?)",
                (customer, issue, priority, created_at),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    ticket = {"ticket_id": _ticket_id(cursor.lastrowid or 0), "status": "open"}
    return _without_empty({**ticket, "priority": priority, "customer_id": customer})


if __name__ == "__main__":
    # ``python support_tools.py [--reset]``: create (or recreate) the database, print its path
    target = database_path()
    if "--reset" in sys.argv[1:]:
        target.unlink(missing_ok=True)
    with _connect() as _conn:
        counts = {
            table: _conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("customers", "orders", "tickets")
        }
    print(target, counts)
