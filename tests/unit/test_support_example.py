"""The customer-support example: its tools over a real SQLite file, and its agent spec."""

from __future__ import annotations

import importlib
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from shoal.messages import Message, ToolCall, ToolMessage
from shoal.models import FunctionModel, ModelRequestParameters, TestModel
from shoal.settings import ModelSettings
from shoal.spec import ToolSpec, load_agent_spec
from shoal.tools import Tool

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support"


@pytest.fixture
def db_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data" / "support.db"
    monkeypatch.setenv("SHOAL_SUPPORT_DB", str(path))
    return path


@pytest.fixture
def tools(db_file: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    return importlib.import_module("support_tools")


def query(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def counts(path: Path) -> tuple[int, int, int]:
    (row,) = query(
        path,
        "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders),"
        " (SELECT count(*) FROM tickets)",
    )
    return row[0], row[1], row[2]


# -- the database ---------------------------------------------------------------------------


def test_database_path_defaults_to_next_to_the_module(
    tools: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOAL_SUPPORT_DB")

    assert tools.database_path() == EXAMPLE / "support.db"


def test_first_use_creates_and_seeds_the_database(tools: ModuleType, db_file: Path) -> None:
    assert not db_file.exists()

    tools.lookup_order("1042")

    assert db_file.is_file()
    assert counts(db_file) == (8, 15, 0)
    assert query(db_file, "PRAGMA user_version") == [(tools.SCHEMA_VERSION,)]
    statuses = {row[0] for row in query(db_file, "SELECT status FROM orders")}
    assert statuses == {"shipped", "processing", "delivered", "cancelled"}


def test_seeding_is_idempotent(tools: ModuleType, db_file: Path) -> None:
    tools.lookup_order("1042")
    tools.lookup_customer("C001")
    assert counts(db_file) == (8, 15, 0)

    # even when the version marker is lost, seeding again adds nothing
    query(db_file, "PRAGMA user_version = 0")
    tools.lookup_customer("C002")

    assert counts(db_file) == (8, 15, 0)
    assert query(db_file, "PRAGMA user_version") == [(tools.SCHEMA_VERSION,)]


def test_seeding_is_one_transaction(
    tools: ModuleType, db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = tools._ORDERS
    bad_row = ("1999", "C001", "lost", "Umbrella", 1.0, None, None, None, None)
    monkeypatch.setattr(tools, "_ORDERS", [*orders, bad_row])

    with pytest.raises(sqlite3.IntegrityError):
        tools.lookup_order("1042")

    assert query(db_file, "SELECT name FROM sqlite_master") == []  # no table, no customer
    monkeypatch.setattr(tools, "_ORDERS", orders)
    assert tools.lookup_order("1042")["status"] == "shipped"
    assert counts(db_file) == (8, 15, 0)


def test_concurrent_first_use_seeds_once(tools: ModuleType, db_file: Path) -> None:
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def worker() -> None:
        try:
            start.wait()
            results.append(tools.lookup_order("1042"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert [r["status"] for r in results] == ["shipped"] * 6
    assert counts(db_file) == (8, 15, 0)


# -- the tools ------------------------------------------------------------------------------


@pytest.mark.parametrize("order_id", ["1042", "#1042", "order 1042", "  Order #1042 ", "1042."])
def test_lookup_order_normalises_the_number(tools: ModuleType, order_id: str) -> None:
    assert tools.lookup_order(order_id) == {
        "order_id": "1042",
        "status": "shipped",
        "item": "Wireless headphones",
        "total": 89.99,
        "eta": "2025-06-14",
        "carrier": "UPS",
        "tracking": "1Z999AA10123456784",
        "customer_id": "C001",
    }


def test_lookup_order_leaves_out_empty_fields(tools: ModuleType) -> None:
    delivered = tools.lookup_order("1044")
    cancelled = tools.lookup_order("1045")

    assert delivered["status"] == "delivered"
    assert delivered["delivered_on"] == "2025-06-02"
    assert "eta" not in delivered
    assert cancelled == {
        "order_id": "1045",
        "status": "cancelled",
        "item": "Desk lamp",
        "total": 34.0,
        "customer_id": "C003",
    }


def test_lookup_order_unknown_or_malformed(tools: ModuleType) -> None:
    assert tools.lookup_order("order 9999") == {"error": "no order 9999"}
    assert tools.lookup_order("my headphones") == {
        "error": "'my headphones' is not an order number; they look like 1042"
    }


@pytest.mark.parametrize(
    "customer_id", ["C001", "c001", "C1", "customer C-001", "Maria.Garcia@Example.com "]
)
def test_lookup_customer_by_id_or_email(tools: ModuleType, customer_id: str) -> None:
    assert tools.lookup_customer(customer_id) == {
        "customer_id": "C001",
        "name": "Maria Garcia",
        "email": "maria.garcia@example.com",
        "tier": "gold",
        "status": "active",
        "orders": ["1042", "1044", "1054"],
    }


def test_lookup_customer_unknown_or_malformed(tools: ModuleType) -> None:
    assert tools.lookup_customer("C099") == {"error": "no customer C099"}
    assert tools.lookup_customer("nobody@example.com") == {
        "error": "no customer nobody@example.com"
    }
    assert "is not a customer id or email" in tools.lookup_customer("Maria")["error"]


def test_create_ticket_persists_and_numbers_tickets(tools: ModuleType, db_file: Path) -> None:
    first = tools.create_ticket("Charged twice for order 1045", "high", "c3")
    second = tools.create_ticket("Where do I change my address?")

    assert first == {
        "ticket_id": "T-0001",
        "status": "open",
        "priority": "high",
        "customer_id": "C003",
    }
    assert second == {"ticket_id": "T-0002", "status": "open", "priority": "medium"}
    rows = query(
        db_file, "SELECT id, customer_id, issue, priority, status, created_at FROM tickets"
    )
    assert [row[:5] for row in rows] == [
        (1, "C003", "Charged twice for order 1045", "high", "open"),
        (2, None, "Where do I change my address?", "medium", "open"),
    ]
    assert all(datetime.fromisoformat(row[5]).tzinfo is not None for row in rows)


def test_create_ticket_by_customer_email(tools: ModuleType) -> None:
    ticket = tools.create_ticket("Late delivery", customer_id="kenji.sato@example.com")

    assert ticket["customer_id"] == "C008"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("Refund", "low", "C099"), "no customer C099; leave customer_id out if unknown"),
        (("Refund", "low", "someone"), "'someone' is not a customer id; they look like C001"),
        (("   ",), "describe the issue in a sentence"),
        (("Refund", "urgent"), "priority must be low, medium or high, not 'urgent'"),
    ],
)
def test_create_ticket_rejects_bad_input_without_writing(
    tools: ModuleType, db_file: Path, args: tuple[str, ...], error: str
) -> None:
    tools.lookup_order("1042")  # the database exists

    assert tools.create_ticket(*args) == {"error": error}
    assert counts(db_file)[2] == 0


def test_tools_are_described_briefly_for_a_small_model(tools: ModuleType) -> None:
    for name in ("lookup_order", "lookup_customer", "create_ticket"):
        tool = getattr(tools, name)
        assert isinstance(tool, Tool)
        assert tool.name == name
        assert 0 < len(tool.description) <= 90
        assert "\n" not in tool.description
        for parameter in tool.definition.parameters["properties"].values():
            assert 0 < len(parameter["description"]) <= 60

    parameters = tools.create_ticket.definition.parameters
    assert parameters["required"] == ["issue"]
    assert parameters["properties"]["priority"]["enum"] == ["low", "medium", "high"]


# -- the agent spec -------------------------------------------------------------------------


def test_example_spec_validates() -> None:
    spec = load_agent_spec(EXAMPLE / "agent.yaml")

    assert spec.name == "support"
    assert spec.model == "smollm2-135m"
    assert spec.tools == tuple(
        ToolSpec(ref=f"support_tools:{name}")
        for name in ("lookup_order", "lookup_customer", "create_ticket")
    )
    assert spec.settings == ModelSettings(temperature=0, max_tokens=256)
    assert 1 <= spec.instructions.count(".") <= 3
    assert spec.tool_choice == "auto"


async def test_example_agent_answers_from_the_database(db_file: Path) -> None:
    spec = load_agent_spec(EXAMPLE / "agent.yaml")

    def script(messages: list[Message], params: ModelRequestParameters) -> str | ToolCall:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            return ToolCall(name="lookup_order", arguments={"order_id": "#1042"})
        return "It shipped with UPS."

    model = FunctionModel(script)
    agent = spec.build_agent(model=model)
    result = await agent.run("Where is my order 1042?")

    assert [t.name for t in model.requests[0].params.tools] == [
        "lookup_order",
        "lookup_customer",
        "create_ticket",
    ]
    (record,) = result.tool_calls
    assert record.ok
    assert record.result["eta"] == "2025-06-14"
    assert result.output == "It shipped with UPS."


async def test_example_agent_runs_every_tool_with_a_test_model(db_file: Path) -> None:
    agent = load_agent_spec(EXAMPLE / "agent.yaml").build_agent(model=TestModel())

    result = await agent.run("Help")

    outcomes = {r.call.name: r for r in result.tool_calls}
    assert set(outcomes) == {"lookup_order", "lookup_customer", "create_ticket"}
    assert all(r.ok for r in outcomes.values())
    assert outcomes["create_ticket"].result["ticket_id"] == "T-0001"
    assert query(db_file, "SELECT issue, priority FROM tickets") == [("a", "medium")]
