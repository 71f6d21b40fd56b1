"""Thread stores: one behavioural suite run against every store, then SQLite-only checks."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pydantic
import pytest

import shoal
from shoal.exceptions import StoreError, ThreadNotFoundError
from shoal.messages import (
    MESSAGE_LIST_ADAPTER,
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from shoal.threads import InMemoryThreadStore, SQLiteThreadStore, Thread, ThreadStore
from shoal.threads import sqlite as sqlite_module


def conversation() -> list[Message]:
    """Every message kind, with nested tool-call arguments and non-ASCII text."""
    weather = ToolCall(
        id="call_0123456789abcdef01234567",
        name="get_weather",
        arguments={
            "city": "Zürich",
            "days": 3,
            "options": {"units": "metric", "hours": [0, 6.5, None, True], "empty": {}},
        },
    )
    ping = ToolCall(id="call_ping", name="ping")
    return [
        SystemMessage(content="You are terse."),
        UserMessage(content="Weather in Zürich? 🌧\nAnd ping."),
        AssistantMessage(content=None, tool_calls=(weather, ping)),
        ToolMessage(tool_call_id=weather.id, name="get_weather", content='{"temp_c": 12}'),
        ToolMessage(tool_call_id=ping.id, name="ping", content="timed out", is_error=True),
        AssistantMessage(content="12 °C, rain. Ping failed."),
    ]


def user(text: str) -> UserMessage:
    return UserMessage(content=text)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ThreadStore]:
    made: ThreadStore
    if request.param == "memory":
        made = InMemoryThreadStore()
    else:
        made = SQLiteThreadStore(tmp_path / "nested" / "dir" / "threads.db")
    yield made
    await made.close()


# -- the Thread model ---------------------------------------------------------------------------


def test_thread_defaults_and_validation() -> None:
    thread = Thread()
    assert re.fullmatch(r"thread_[0-9a-f]{24}", thread.id)
    assert thread.metadata == {}
    assert thread.updated_at == thread.created_at
    assert thread.created_at.utcoffset() == timedelta(0)

    cet = timezone(timedelta(hours=1))
    shifted = Thread(created_at=datetime(2024, 1, 1, 12, tzinfo=cet))
    assert shifted.created_at == datetime(2024, 1, 1, 11, tzinfo=UTC)
    assert shifted.created_at.tzinfo is UTC

    with pytest.raises(pydantic.ValidationError, match="timezone-aware"):
        Thread(created_at=datetime(2024, 1, 1))
    with pytest.raises(pydantic.ValidationError):
        thread.metadata = {"x": 1}  # type: ignore[misc]
    assert Thread(metadata={"t": (1, 2)}).metadata == {"t": [1, 2]}


@pytest.mark.parametrize(
    ("metadata", "complaint"),
    [
        ({"tags": {"a", "b"}}, r"metadata\['tags'\] is a set"),
        ({"score": math.nan}, "NaN or infinity"),
        ({"deep": {"x": [1, math.inf]}}, "NaN or infinity"),
        ({"deep": {1: "one"}}, "JSON keys must be strings"),
        ({"when": datetime.now(UTC)}, "is a datetime"),
    ],
)
async def test_metadata_must_be_json(
    store: ThreadStore, metadata: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        await store.create_thread(metadata=metadata)
    assert await store.list_threads() == []

    thread = await store.create_thread(metadata={"ok": True})
    with pytest.raises(ValueError, match=complaint):
        await store.update_thread(thread.id, metadata=metadata)
    assert (await store.get_thread(thread.id)).metadata == {"ok": True}


async def test_cyclic_metadata_is_rejected(store: ThreadStore) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        await store.create_thread(metadata={"loop": loop})


# -- the behavioural suite, for every store -----------------------------------------------------


async def test_stores_satisfy_the_protocol(store: ThreadStore) -> None:
    assert isinstance(store, ThreadStore)


async def test_create_and_get(store: ThreadStore) -> None:
    thread = await store.create_thread(metadata={"user": "ana", "n": [1, 2.5, None]})
    assert re.fullmatch(r"thread_[0-9a-f]{24}", thread.id)
    assert thread.metadata == {"user": "ana", "n": [1, 2.5, None]}
    assert thread.created_at == thread.updated_at
    assert thread.created_at.tzinfo is UTC
    assert abs(datetime.now(UTC) - thread.created_at) < timedelta(minutes=1)
    assert await store.get_thread(thread.id) == thread

    other = await store.create_thread()
    assert other.id != thread.id
    assert other.metadata == {}


async def test_explicit_id_and_duplicate(store: ThreadStore) -> None:
    thread = await store.create_thread(thread_id="support-42", metadata={"v": 1})
    assert thread.id == "support-42"
    with pytest.raises(StoreError, match="'support-42' already exists") as info:
        await store.create_thread(thread_id="support-42", metadata={"v": 2})
    assert not isinstance(info.value, ThreadNotFoundError)
    assert await store.get_thread("support-42") == thread
    with pytest.raises(ValueError, match="non-empty string"):
        await store.create_thread(thread_id="")


async def test_missing_thread_raises_not_found(store: ThreadStore) -> None:
    await store.create_thread(thread_id="present")
    missing = "thread_000000000000000000000000"
    with pytest.raises(ThreadNotFoundError, match=missing):
        await store.get_thread(missing)
    with pytest.raises(ThreadNotFoundError):
        await store.update_thread(missing, metadata={})
    with pytest.raises(ThreadNotFoundError):
        await store.delete_thread(missing)
    with pytest.raises(ThreadNotFoundError):
        await store.append_messages(missing, [user("hi")])
    with pytest.raises(ThreadNotFoundError):
        await store.append_messages(missing, [])
    with pytest.raises(ThreadNotFoundError):
        await store.get_messages(missing)
    assert [t.id for t in await store.list_threads()] == ["present"]


async def test_messages_round_trip_exactly(store: ThreadStore) -> None:
    thread = await store.create_thread()
    messages = conversation()
    await store.append_messages(thread.id, messages[:2])
    await store.append_messages(thread.id, messages[2:])
    got = await store.get_messages(thread.id)
    assert got == messages
    assert [type(m) for m in got] == [type(m) for m in messages]
    assert [m.model_dump_json() for m in got] == [m.model_dump_json() for m in messages]
    assert await store.get_messages((await store.create_thread()).id) == []


async def test_get_messages_limit_is_the_newest_in_order(store: ThreadStore) -> None:
    thread = await store.create_thread()
    await store.append_messages(thread.id, [user(str(i)) for i in range(5)])
    assert await store.get_messages(thread.id, limit=2) == [user("3"), user("4")]
    assert await store.get_messages(thread.id, limit=1) == [user("4")]
    assert await store.get_messages(thread.id, limit=0) == []
    assert await store.get_messages(thread.id, limit=50) == [user(str(i)) for i in range(5)]
    with pytest.raises(ValueError, match="limit"):
        await store.get_messages(thread.id, limit=-1)


async def test_updates_bump_updated_at_and_reorder(store: ThreadStore) -> None:
    a = await store.create_thread(thread_id="a")
    b = await store.create_thread(thread_id="b")
    c = await store.create_thread(thread_id="c")
    assert [t.id for t in await store.list_threads()] == ["c", "b", "a"]

    await store.append_messages("a", [user("hello")])
    a2 = await store.get_thread("a")
    assert a2.updated_at > c.updated_at
    assert a2.created_at == a.created_at
    assert [t.id for t in await store.list_threads()] == ["a", "c", "b"]

    b2 = await store.update_thread("b", metadata={"title": "renamed"})
    assert b2.metadata == {"title": "renamed"}
    assert b2.created_at == b.created_at
    assert b2.updated_at > a2.updated_at
    assert await store.get_thread("b") == b2
    assert [t.id for t in await store.list_threads()] == ["b", "a", "c"]

    await store.append_messages("c", [])  # nothing to append: no bump
    assert await store.get_thread("c") == c


async def test_update_replaces_metadata(store: ThreadStore) -> None:
    thread = await store.create_thread(metadata={"keep": 1, "drop": 2})
    updated = await store.update_thread(thread.id, metadata={"keep": 1, "new": [3]})
    assert updated.metadata == {"keep": 1, "new": [3]}
    assert (await store.get_thread(thread.id)).metadata == {"keep": 1, "new": [3]}
    assert (await store.update_thread(thread.id, metadata={})).metadata == {}


async def test_pagination(store: ThreadStore) -> None:
    for i in range(5):
        await store.create_thread(thread_id=f"t{i}")
    assert [t.id for t in await store.list_threads()] == ["t4", "t3", "t2", "t1", "t0"]
    pages = [await store.list_threads(limit=2, offset=o) for o in (0, 2, 4, 5)]
    assert [[t.id for t in page] for page in pages] == [["t4", "t3"], ["t2", "t1"], ["t0"], []]
    assert await store.list_threads(limit=0) == []
    with pytest.raises(ValueError, match="offset"):
        await store.list_threads(offset=-1)
    with pytest.raises(ValueError, match="limit"):
        await store.list_threads(limit=-5)


async def test_metadata_filter(store: ThreadStore) -> None:
    await store.create_thread(
        thread_id="a",
        metadata={"user": "alice", "tier": 1, "beta": True, "tags": ["x", "y"], "note": None},
    )
    await store.create_thread(thread_id="b", metadata={"user": "bob", "tier": 1.0, "beta": False})
    await store.create_thread(thread_id="c", metadata={"user": "alice", "tier": 2, "beta": 1})
    await store.create_thread(thread_id="d")

    async def ids(**kwargs: Any) -> list[str]:
        return [t.id for t in await store.list_threads(**kwargs)]

    assert await ids(metadata={"user": "alice"}) == ["c", "a"]
    assert await ids(metadata={"user": "Alice"}) == []
    assert await ids(metadata={"user": "alice", "tier": 1}) == ["a"]
    assert await ids(metadata={"tier": 1}) == ["b", "a"]  # 1 and 1.0 are the same number
    assert await ids(metadata={"beta": True}) == ["a"]  # but true is not 1
    assert await ids(metadata={"beta": 1}) == ["c"]
    assert await ids(metadata={"beta": False}) == ["b"]
    assert await ids(metadata={"tags": ["x", "y"]}) == ["a"]
    assert await ids(metadata={"tags": ("x", "y")}) == ["a"]
    assert await ids(metadata={"tags": ["y", "x"]}) == []
    assert await ids(metadata={"note": None}) == ["a"]  # a missing key is not null
    assert await ids(metadata={"missing": None}) == []
    assert await ids(metadata={}) == ["d", "c", "b", "a"]
    assert await ids(metadata={"user": "alice"}, limit=1) == ["c"]
    assert await ids(metadata={"user": "alice"}, limit=1, offset=1) == ["a"]
    assert await ids(metadata={"user": "alice"}, offset=2) == []
    with pytest.raises(ValueError, match="metadata filter"):
        await store.list_threads(metadata={"user": {"alice"}})


async def test_bad_message_mid_batch_writes_nothing(store: ThreadStore) -> None:
    thread = await store.create_thread()
    await store.append_messages(thread.id, [user("first")])
    before = await store.get_thread(thread.id)
    lossy = AssistantMessage(tool_calls=(ToolCall(name="f", arguments={"xs": (1, 2)}),))
    with pytest.raises(ValueError, match=r"messages\[1\] would not read back equal"):
        await store.append_messages(thread.id, [user("a"), lossy, user("b")])
    with pytest.raises(TypeError, match=r"messages\[1\] is a dict"):
        await store.append_messages(thread.id, [user("a"), {"role": "user", "content": "b"}])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="sequence of messages"):
        await store.append_messages(thread.id, user("alone"))  # type: ignore[arg-type]
    assert await store.get_messages(thread.id) == [user("first")]
    assert await store.get_thread(thread.id) == before


async def test_delete_removes_thread_and_messages(store: ThreadStore) -> None:
    doomed = await store.create_thread(thread_id="doomed")
    kept = await store.create_thread(thread_id="kept")
    await store.append_messages(doomed.id, conversation())
    await store.append_messages(kept.id, [user("stay")])
    await store.delete_thread(doomed.id)
    with pytest.raises(ThreadNotFoundError):
        await store.get_thread(doomed.id)
    with pytest.raises(ThreadNotFoundError):
        await store.get_messages(doomed.id)
    assert [t.id for t in await store.list_threads()] == ["kept"]
    assert await store.get_messages(kept.id) == [user("stay")]
    await store.create_thread(thread_id="doomed")  # same id again starts empty
    assert await store.get_messages("doomed") == []


async def test_callers_cannot_mutate_stored_state(store: ThreadStore) -> None:
    metadata: dict[str, Any] = {"tags": ["a"], "owner": {"name": "ana"}}
    thread = await store.create_thread(metadata=metadata)
    metadata["tags"].append("sneaky")
    metadata["owner"]["name"] = "mallory"
    thread.metadata["tags"].append("also sneaky")
    got = await store.get_thread(thread.id)
    assert got.metadata == {"tags": ["a"], "owner": {"name": "ana"}}
    got.metadata.clear()
    assert (await store.list_threads())[0].metadata == {"tags": ["a"], "owner": {"name": "ana"}}

    arguments: dict[str, Any] = {"q": "shoal"}
    await store.append_messages(
        thread.id,
        [AssistantMessage(tool_calls=(ToolCall(id="c1", name="s", arguments=arguments),))],
    )
    arguments["q"] = "changed"
    read = await store.get_messages(thread.id)
    read[0].tool_calls[0].arguments["q"] = "changed too"  # type: ignore[union-attr]
    again = await store.get_messages(thread.id)
    assert again == [
        AssistantMessage(tool_calls=(ToolCall(id="c1", name="s", arguments={"q": "shoal"}),))
    ]


async def test_concurrent_appends_keep_order_per_thread(store: ThreadStore) -> None:
    threads = [(await store.create_thread(thread_id=f"t{i}")).id for i in range(3)]

    async def one_by_one(thread_id: str, writer: str) -> None:
        for i in range(12):
            await store.append_messages(thread_id, [user(f"{writer}:{i}")])

    async def batches(thread_id: str) -> None:
        for b in range(4):
            await store.append_messages(thread_id, [user(f"batch{b}:{i}") for i in range(3)])

    await asyncio.gather(
        *(one_by_one(t, w) for t in threads for w in ("w1", "w2")),
        *(batches(t) for t in threads),
    )
    for thread_id in threads:
        contents = [m.content for m in await store.get_messages(thread_id)]
        assert len(contents) == 2 * 12 + 4 * 3
        for writer in ("w1", "w2"):
            assert [c for c in contents if c.startswith(writer)] == [
                f"{writer}:{i}" for i in range(12)
            ]
        for b in range(4):
            start = contents.index(f"batch{b}:0")
            assert contents[start : start + 3] == [f"batch{b}:{i}" for i in range(3)]
        assert [c for c in contents if c.startswith("batch")] == [
            f"batch{b}:{i}" for b in range(4) for i in range(3)
        ]


async def test_close_is_idempotent_and_final(store: ThreadStore) -> None:
    thread = await store.create_thread()
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get_thread(thread.id)
    with pytest.raises(StoreError, match="closed"):
        await store.create_thread()
    with pytest.raises(StoreError, match="closed"):
        await store.append_messages(thread.id, [user("late")])


async def test_async_with_closes(tmp_path: Path) -> None:
    for made in (InMemoryThreadStore(), SQLiteThreadStore(tmp_path / "ctx.db")):
        async with made as opened:
            assert opened is made
            await opened.create_thread()
        with pytest.raises(StoreError, match="closed"):
            await made.list_threads()


# -- SQLite only --------------------------------------------------------------------------------


async def test_sqlite_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    async with SQLiteThreadStore(path) as first:
        thread = await first.create_thread(metadata={"user": "ana", "ratio": 0.1, "ü": "ß"})
        await first.append_messages(thread.id, conversation())
        other = await first.create_thread(thread_id="other")
        saved = await first.list_threads()
    async with SQLiteThreadStore(str(path)) as second:
        assert await second.list_threads() == saved
        assert await second.get_thread("other") == other
        reopened = await second.get_thread(thread.id)
        assert reopened == saved[1]
        assert reopened.created_at == thread.created_at
        assert reopened.updated_at > thread.updated_at  # bumped by the append
        messages = await second.get_messages(thread.id)
        assert messages == conversation()
        assert [m.model_dump_json() for m in messages] == [
            m.model_dump_json() for m in conversation()
        ]
        await second.append_messages(thread.id, [user("after restart")])
        assert (await second.get_messages(thread.id, limit=2))[-1] == user("after restart")


_SRC = str(Path(shoal.__file__).resolve().parents[1])  # where the child imports shoal from

_CHILD = """
import asyncio, sys
from shoal.messages import MESSAGE_LIST_ADAPTER
from shoal.threads import SQLiteThreadStore

async def main() -> None:
    async with SQLiteThreadStore(sys.argv[1]) as store:
        await store.create_thread(thread_id="from-child", metadata={"pid": int(sys.argv[3])})
        await store.append_messages("from-child", MESSAGE_LIST_ADAPTER.validate_json(sys.argv[2]))

asyncio.run(main())
"""


async def test_sqlite_sees_writes_from_another_process(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_SRC, os.environ.get("PYTHONPATH", "")])}
    payload = MESSAGE_LIST_ADAPTER.dump_json(conversation()).decode()
    async with SQLiteThreadStore(path) as store:  # open while the other process writes
        await store.create_thread(thread_id="from-parent")
        child = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", _CHILD, str(path), payload, "4242"),
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await child.communicate()
        assert child.returncode == 0, stderr.decode()
        assert (await store.get_thread("from-child")).metadata == {"pid": 4242}
        assert await store.get_messages("from-child") == conversation()
        assert [t.id for t in await store.list_threads()] == ["from-child", "from-parent"]


async def test_sqlite_connection_settings(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "threads.db"
    async with SQLiteThreadStore(path) as store:
        assert path.is_file()
        db = store._database._db
        assert db is not None
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == sqlite_module.BUSY_TIMEOUT_MS
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persisted in the file
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"threads", "messages", "_migrations"} <= tables
        indexes = raw.execute("PRAGMA index_list(messages)").fetchall()
        columns = [[c[2] for c in raw.execute(f"PRAGMA index_info({ix[1]})")] for ix in indexes]
        assert ["thread_id", "position"] in columns
    finally:
        raw.close()


def _migration_rows(path: Path) -> list[tuple[str, str]]:
    raw = sqlite3.connect(path)
    try:
        return raw.execute("SELECT name, applied_at FROM _migrations ORDER BY rowid").fetchall()
    finally:
        raw.close()


async def test_sqlite_migrations_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    await SQLiteThreadStore(path).close()
    rows = _migration_rows(path)
    assert [name for name, _ in rows] == [m.__name__ for m in sqlite_module.MIGRATIONS]
    assert rows[0][0] == "m001_threads_and_messages"
    assert datetime.fromisoformat(rows[0][1]).tzinfo is not None
    await SQLiteThreadStore(path).close()
    assert _migration_rows(path) == rows


async def test_sqlite_new_migration_applied_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "threads.db"
    async with SQLiteThreadStore(path) as store:
        await store.create_thread(thread_id="old")
    calls: list[str] = []

    def m003_add_labels(db: sqlite3.Connection) -> None:
        calls.append("m003")
        db.execute("CREATE TABLE labels (thread_id TEXT, label TEXT)")

    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*sqlite_module.MIGRATIONS, m003_add_labels])
    for _ in range(2):
        async with SQLiteThreadStore(path) as store:
            assert [t.id for t in await store.list_threads()] == ["old"]
    assert calls == ["m003"]
    assert [n for n, _ in _migration_rows(path)] == [
        "m001_threads_and_messages",
        "m002_trace",
        "m003_add_labels",
    ]


async def test_sqlite_failing_migration_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "threads.db"
    await SQLiteThreadStore(path).close()

    def m003_broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        db.execute("THIS IS NOT SQL")

    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*sqlite_module.MIGRATIONS, m003_broken])
    with pytest.raises(StoreError, match="syntax error") as info:
        SQLiteThreadStore(path)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    raw = sqlite3.connect(path)
    try:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        raw.close()
    assert "half_done" not in tables
    assert [n for n, _ in _migration_rows(path)] == ["m001_threads_and_messages", "m002_trace"]


async def test_sqlite_refuses_a_newer_database(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    await SQLiteThreadStore(path).close()
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("INSERT INTO _migrations VALUES ('m999_from_the_future', '2099-01-01')")
    raw.close()
    with pytest.raises(StoreError, match="newer version of Shoal") as info:
        SQLiteThreadStore(path)
    assert "m999_from_the_future" in str(info.value)
    assert str(path) in str(info.value)


async def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    text = "these are my notes, not a database\n" * 40
    path.write_text(text)
    with pytest.raises(StoreError, match="not a SQLite database") as info:
        SQLiteThreadStore(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert path.read_text() == text

    with pytest.raises(StoreError, match=re.escape(str(tmp_path))):
        SQLiteThreadStore(tmp_path)  # a directory


async def test_sqlite_failure_mid_batch_leaves_the_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    async with SQLiteThreadStore(path) as store:
        thread = await store.create_thread()
        await store.append_messages(thread.id, [user("before")])
        before = await store.get_thread(thread.id)
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute(
            "CREATE TRIGGER explode BEFORE INSERT ON messages"
            " WHEN json_extract(NEW.data, '$.content') = 'explode'"
            " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        batch = [user("one"), user("two"), user("explode"), user("four")]
        with pytest.raises(StoreError, match="injected failure") as info:
            await store.append_messages(thread.id, batch)
        assert isinstance(info.value.__cause__, sqlite3.Error)
        assert raw.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
        raw.execute("DROP TRIGGER explode")
        raw.close()
        assert await store.get_messages(thread.id) == [user("before")]
        assert await store.get_thread(thread.id) == before
        await store.append_messages(thread.id, [user("after")])
        assert await store.get_messages(thread.id) == [user("before"), user("after")]


async def test_sqlite_delete_cascades_rows(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    async with SQLiteThreadStore(path) as store:
        await store.create_thread(thread_id="gone")
        await store.create_thread(thread_id="kept")
        await store.append_messages("gone", conversation())
        await store.append_messages("kept", [user("x")])
        await store.delete_thread("gone")
    raw = sqlite3.connect(path)
    try:
        rows = raw.execute("SELECT thread_id, position, role FROM messages").fetchall()
    finally:
        raw.close()
    assert rows == [("kept", 0, "user")]


async def test_sqlite_waits_for_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    async with SQLiteThreadStore(path) as store:
        await store.create_thread(thread_id="t")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        task = asyncio.create_task(store.append_messages("t", [user("waited")]))
        await asyncio.sleep(0.3)
        assert not task.done()  # blocked on the other writer, not failed
        other.execute("COMMIT")
        other.close()
        await task
        assert await store.get_messages("t") == [user("waited")]


async def test_sqlite_errors_are_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    async with SQLiteThreadStore(path) as store:
        await store.create_thread(thread_id="t")
        raw = sqlite3.connect(path)
        with raw:
            raw.execute("DROP TABLE messages")
        raw.close()
        with pytest.raises(StoreError, match="no such table: messages") as info:
            await store.get_messages("t")
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)


async def test_sqlite_corrupt_rows_raise_store_error(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    async with SQLiteThreadStore(path) as store:
        await store.create_thread(thread_id="t")
        await store.append_messages("t", [user("ok")])
        raw = sqlite3.connect(path)
        with raw:
            raw.execute("UPDATE messages SET data = ?", (json.dumps({"role": "robot"}),))
            raw.execute("UPDATE threads SET created_at = 'yesterday'")
        raw.close()
        with pytest.raises(StoreError, match="stored message is corrupt"):
            await store.get_messages("t")
        with pytest.raises(StoreError, match="stored thread 't' is corrupt"):
            await store.get_thread("t")


# -- trace ------------------------------------------------------------------------------------


async def test_trace_is_appended_in_order_and_deleted_with_the_thread(store: ThreadStore) -> None:
    thread = await store.create_thread()
    other = await store.create_thread()
    assert await store.get_trace(thread.id) == []
    await store.append_trace(thread.id, [{"kind": "run", "n": 1}, {"kind": "note", "n": 2}])
    await store.append_trace(thread.id, [{"kind": "handoff", "data": {"target": "é"}}])
    await store.append_trace(other.id, [{"kind": "run"}])
    trace = await store.get_trace(thread.id)
    assert [e["kind"] for e in trace] == ["run", "note", "handoff"]
    assert trace[2]["data"] == {"target": "é"}
    await store.delete_thread(thread.id)
    with pytest.raises(ThreadNotFoundError):
        await store.get_trace(thread.id)
    assert await store.get_trace(other.id) == [{"kind": "run"}]


async def test_trace_of_a_missing_thread_or_not_an_object_is_refused(store: ThreadStore) -> None:
    with pytest.raises(ThreadNotFoundError):
        await store.append_trace("thread_nope", [{"kind": "run"}])
    thread = await store.create_thread()
    with pytest.raises(TypeError):
        await store.append_trace(thread.id, [{"kind": "run"}, "not an object"])  # type: ignore[list-item]
    assert await store.get_trace(thread.id) == []
