"""Threads in a SQLite file, with the standard library's ``sqlite3``.

Data model
----------
``threads``
    ``id`` (text primary key), ``metadata`` (a JSON object, as text), ``created_at`` and
    ``updated_at`` (ISO 8601 UTC text with microseconds, so text order is time order).
``messages``
    ``id`` (integer primary key, autoincrement), ``thread_id`` (foreign key to ``threads``,
    ``ON DELETE CASCADE``), ``position`` (0, 1, 2... within the thread; unique together with
    ``thread_id``, which is also the index every read uses), ``role``, ``data`` (the message's
    ``model_dump_json()``, read back with ``MESSAGE_ADAPTER``) and ``created_at``.

Every write runs in one ``BEGIN IMMEDIATE`` transaction, so a failure half-way leaves the file as
it was, and a batch of messages is appended whole or not at all. The file is opened in WAL mode
with foreign keys on and a busy timeout, so several processes can share it.

Migrations
----------
The schema is built by the ordered functions in :data:`MIGRATIONS` (the approach of simonw/llm).
Each runs once, in its own transaction, and is then recorded by name with the time it was
applied in the ``_migrations`` table. Opening a file applies the ones it has not seen yet. To
change the schema, append a new function decorated with ``@migration``; never edit or reorder
one that has shipped. A file whose ``_migrations`` lists a name this code does not know was
written by a newer Shoal, and is refused rather than misread. The connection, migration and
transaction plumbing lives in :mod:`shoal.threads.database`, shared with the server's stores.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from shoal.exceptions import StoreError, ThreadNotFoundError
from shoal.messages import Message
from shoal.threads.base import (
    ClosingStore,
    MonotonicClock,
    Thread,
    check_paging,
    check_thread_id,
    decode_message,
    dump_metadata,
    encode_messages,
    encode_trace,
    metadata_matches,
    new_thread_id,
    normalise_metadata,
)
from shoal.threads.database import BUSY_TIMEOUT_MS, Database, Migration, open_database, transaction

__all__ = ["BUSY_TIMEOUT_MS", "MIGRATIONS", "SQLiteThreadStore", "migration"]

T = TypeVar("T")

#: The schema, in order. Append only.
MIGRATIONS: list[Migration] = []


def migration(function: Migration) -> Migration:
    """Register ``function`` as the next migration; its ``__name__`` is what gets recorded."""
    MIGRATIONS.append(function)
    return function


@migration
def m001_threads_and_messages(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE threads (
            id TEXT PRIMARY KEY,
            metadata TEXT NOT NULL CHECK (json_valid(metadata)),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX threads_updated_at ON threads (updated_at)")
    db.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            role TEXT NOT NULL,
            data TEXT NOT NULL CHECK (json_valid(data)),
            created_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE UNIQUE INDEX messages_thread_position ON messages (thread_id, position)")


@migration
def m002_trace(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE trace (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            thread_id TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            data TEXT NOT NULL CHECK (json_valid(data)),
            created_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX trace_thread ON trace (thread_id, id)")


def _timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _connect(path: Path) -> sqlite3.Connection:
    # MIGRATIONS is read at call time: tests append to it
    return open_database(path, what="thread database", migrations=MIGRATIONS)


_THREAD_COLUMNS = "id, metadata, created_at, updated_at"


def _thread_from_row(row: tuple[Any, ...]) -> Thread:
    try:
        return Thread(
            id=row[0],
            metadata=json.loads(row[1]),
            created_at=datetime.fromisoformat(row[2]),
            updated_at=datetime.fromisoformat(row[3]),
        )
    except ValueError as error:
        raise StoreError(f"the stored thread {row[0]!r} is corrupt: {error}") from error


def _require_thread(db: sqlite3.Connection, thread_id: str) -> tuple[Any, ...]:
    row = db.execute(f"SELECT {_THREAD_COLUMNS} FROM threads WHERE id = ?", (thread_id,))
    found: tuple[Any, ...] | None = row.fetchone()
    if found is None:
        raise ThreadNotFoundError(f"no thread with id {thread_id!r}")
    return found


class SQLiteThreadStore(ClosingStore):
    """A :class:`~shoal.threads.ThreadStore` in a SQLite file (created, with its directory,
    if missing). Opening applies pending migrations; use ``async with`` or :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._clock = MonotonicClock()
        self._database = Database(
            _connect(self.path), what=f"thread database {self.path}", owner=repr(self)
        )

    def __repr__(self) -> str:
        return f"SQLiteThreadStore({str(self.path)!r})"

    # -- plumbing ----------------------------------------------------------------------------

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._database.call(work)

    # -- the ThreadStore protocol ------------------------------------------------------------

    async def create_thread(
        self, *, metadata: Mapping[str, Any] | None = None, thread_id: str | None = None
    ) -> Thread:
        check_thread_id(thread_id)
        clean = normalise_metadata(metadata or {})
        new_id = thread_id or new_thread_id()

        def work(db: sqlite3.Connection) -> Thread:
            with transaction(db):
                if db.execute("SELECT 1 FROM threads WHERE id = ?", (new_id,)).fetchone():
                    raise StoreError(f"a thread with id {new_id!r} already exists")
                now = self._clock()
                db.execute(
                    f"INSERT INTO threads ({_THREAD_COLUMNS}) VALUES (?, ?, ?, ?)",
                    (new_id, dump_metadata(clean), _timestamp(now), _timestamp(now)),
                )
            return Thread(id=new_id, metadata=clean, created_at=now, updated_at=now)

        return await self._call(work)

    async def get_thread(self, thread_id: str) -> Thread:
        return _thread_from_row(await self._call(lambda db: _require_thread(db, thread_id)))

    async def list_threads(
        self, *, limit: int = 100, offset: int = 0, metadata: Mapping[str, Any] | None = None
    ) -> list[Thread]:
        check_paging(limit=limit, offset=offset)
        wanted = normalise_metadata(metadata or {}, "metadata filter")
        order = "ORDER BY updated_at DESC, rowid DESC"
        if not wanted:
            query = f"SELECT {_THREAD_COLUMNS} FROM threads {order} LIMIT ? OFFSET ?"
            rows = await self._call(lambda db: db.execute(query, (limit, offset)).fetchall())
            return [_thread_from_row(row) for row in rows]

        # SQL narrows the candidates (key present; same string, boolean or null); Python then
        # checks exact JSON equality and pages, so numbers and nested values match correctly.
        clauses: list[str] = []
        params: list[Any] = []
        for key, value in wanted.items():
            clause = "SELECT 1 FROM json_each(threads.metadata) AS j WHERE j.key = ?"
            params.append(key)
            if isinstance(value, bool):
                clause += f" AND j.type = '{'true' if value else 'false'}'"
            elif value is None:
                clause += " AND j.type = 'null'"
            elif isinstance(value, str):
                clause += " AND j.type = 'text' AND j.atom = ?"
                params.append(value)
            clauses.append(f"EXISTS ({clause})")
        query = f"SELECT {_THREAD_COLUMNS} FROM threads WHERE {' AND '.join(clauses)} {order}"

        def work(db: sqlite3.Connection) -> list[Thread]:
            found: list[Thread] = []
            skipped = 0
            for row in db.execute(query, params):
                if len(found) >= limit:
                    break
                thread = _thread_from_row(row)
                if not metadata_matches(thread.metadata, wanted):
                    continue
                if skipped < offset:
                    skipped += 1
                else:
                    found.append(thread)
            return found

        return await self._call(work)

    async def update_thread(self, thread_id: str, *, metadata: Mapping[str, Any]) -> Thread:
        clean = normalise_metadata(metadata)

        def work(db: sqlite3.Connection) -> Thread:
            with transaction(db):
                row = _require_thread(db, thread_id)
                now = self._clock()
                db.execute(
                    "UPDATE threads SET metadata = ?, updated_at = ? WHERE id = ?",
                    (dump_metadata(clean), _timestamp(now), thread_id),
                )
            return _thread_from_row((thread_id, dump_metadata(clean), row[2], _timestamp(now)))

        return await self._call(work)

    async def delete_thread(self, thread_id: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            with transaction(db):
                if db.execute("DELETE FROM threads WHERE id = ?", (thread_id,)).rowcount == 0:
                    raise ThreadNotFoundError(f"no thread with id {thread_id!r}")

        await self._call(work)

    async def append_messages(self, thread_id: str, messages: Sequence[Message]) -> None:
        encoded = encode_messages(messages)  # raises before anything is written

        def work(db: sqlite3.Connection) -> None:
            with transaction(db):
                _require_thread(db, thread_id)
                if not encoded:
                    return
                start = db.execute(
                    "SELECT COALESCE(MAX(position) + 1, 0) FROM messages WHERE thread_id = ?",
                    (thread_id,),
                ).fetchone()[0]
                now = _timestamp(self._clock())
                db.executemany(
                    "INSERT INTO messages (thread_id, position, role, data, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [
                        (thread_id, start + i, role, data, now)
                        for i, (role, data) in enumerate(encoded)
                    ],
                )
                db.execute("UPDATE threads SET updated_at = ? WHERE id = ?", (now, thread_id))

        await self._call(work)

    async def get_messages(self, thread_id: str, *, limit: int | None = None) -> list[Message]:
        check_paging(limit=limit)
        if limit is None:
            query = "SELECT data FROM messages WHERE thread_id = ? ORDER BY position"
            params: tuple[Any, ...] = (thread_id,)
        else:
            query = (
                "SELECT data FROM (SELECT data, position FROM messages WHERE thread_id = ?"
                " ORDER BY position DESC LIMIT ?) ORDER BY position"
            )
            params = (thread_id, limit)

        def work(db: sqlite3.Connection) -> list[str]:
            with transaction(db, write=False):
                _require_thread(db, thread_id)
                return [row[0] for row in db.execute(query, params)]

        return [decode_message(data) for data in await self._call(work)]

    async def append_trace(self, thread_id: str, events: Sequence[Mapping[str, Any]]) -> None:
        encoded = encode_trace(events)  # raises before anything is written

        def work(db: sqlite3.Connection) -> None:
            with transaction(db):
                _require_thread(db, thread_id)
                now = _timestamp(self._clock())
                db.executemany(
                    "INSERT INTO trace (thread_id, data, created_at) VALUES (?, ?, ?)",
                    [(thread_id, data, now) for data in encoded],
                )

        await self._call(work)

    async def get_trace(self, thread_id: str) -> list[dict[str, Any]]:
        def work(db: sqlite3.Connection) -> list[str]:
            with transaction(db, write=False):
                _require_thread(db, thread_id)
                rows = db.execute(
                    "SELECT data FROM trace WHERE thread_id = ? ORDER BY id", (thread_id,)
                )
                return [row[0] for row in rows]

        return [json.loads(data) for data in await self._call(work)]

    async def close(self) -> None:
        """Close the file. Safe to call twice; any other use afterwards raises ``StoreError``."""
        await self._database.close()
