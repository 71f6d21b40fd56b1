"""Stored responses of ``POST /v1/responses``, in SQLite (the standard library's ``sqlite3``).

Data model
----------
``responses``
    ``id`` (text primary key, ``resp_...``), ``created_at`` (unix seconds), ``response`` (the
    response object exactly as the client received it, JSON text) and ``conversation`` (the
    whole conversation up to and including this response's output, as a JSON list of Shoal
    :data:`~shoal.messages.Message` values written with ``MESSAGE_LIST_ADAPTER``).

``conversation`` holds the turns of the response chain it continues (``previous_response_id``),
this request's input and every message the run added (tool calls and results of a hosted
agent's own tools included, as the model saw them); it leaves out the request's
``instructions``, which OpenAI does not carry over to the next response either. A chained
request therefore reads one row and never walks the chain, and deleting a response does not
break the responses that continued it. The price is that each row repeats the conversation
before it; conversations on a local server are short enough for that to be the right trade.

The server keeps this table in its SQLite file next to the threads (``ServerSettings.database``)
so stored responses survive restarts; ``ResponseStore(":memory:")`` keeps them in memory, which
the server does when its thread store is in memory.

Migrations follow :mod:`shoal.threads.sqlite` (ordered functions, each applied once and
recorded), but are recorded in their own table, ``_response_migrations``: the thread store
refuses a file whose ``_migrations`` lists names it does not know, and both share the file.

Every call runs on a worker thread (``asyncio.to_thread``) over one connection guarded by a
lock, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from shoal.exceptions import StoreError
from shoal.messages import MESSAGE_LIST_ADAPTER, Message

__all__ = ["MEMORY", "ResponseStore", "StoredResponse"]

T = TypeVar("T")
Migration = Callable[[sqlite3.Connection], None]

#: the path that keeps the responses in memory
MEMORY = ":memory:"

#: milliseconds a statement waits for another connection's lock before failing
BUSY_TIMEOUT_MS = 5000

_MIGRATIONS: list[Migration] = []


def _migration(function: Migration) -> Migration:
    _MIGRATIONS.append(function)
    return function


@_migration
def r001_responses(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            created_at INTEGER NOT NULL,
            response TEXT NOT NULL CHECK (json_valid(response)),
            conversation TEXT NOT NULL CHECK (json_valid(conversation))
        )
        """
    )


@dataclass(frozen=True)
class StoredResponse:
    """One response as stored: what was returned and the conversation it ends."""

    id: str
    created_at: int
    #: the response object as returned to the client
    response: dict[str, Any]
    #: every message of the conversation so far, this response's output included
    conversation: list[Message]


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise


def _migrate(db: sqlite3.Connection, where: str) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS _response_migrations"
        " (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    known = {m.__name__ for m in _MIGRATIONS}
    applied = {row[0] for row in db.execute("SELECT name FROM _response_migrations")}
    unknown = sorted(applied - known)
    if unknown:
        raise StoreError(
            f"{where} was created by a newer version of Shoal (unknown response migrations: "
            f"{', '.join(unknown)}); upgrade Shoal to open it"
        )
    for function in _MIGRATIONS:
        if function.__name__ in applied:
            continue
        with _transaction(db):
            done = db.execute(
                "SELECT 1 FROM _response_migrations WHERE name = ?", (function.__name__,)
            )
            if done.fetchone() is None:
                function(db)
                db.execute(
                    "INSERT INTO _response_migrations (name, applied_at) VALUES (?, ?)",
                    (function.__name__, int(time.time())),
                )


def _connect(path: str) -> sqlite3.Connection:
    try:
        if path != MEMORY:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
        )
    except (OSError, sqlite3.Error) as error:
        raise StoreError(f"cannot open the response database {path}: {error}") from error
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path != MEMORY:
            db.execute("PRAGMA journal_mode = WAL")
        _migrate(db, path)
    except sqlite3.DatabaseError as error:
        db.close()
        raise StoreError(f"cannot open the response database {path}: {error}") from error
    except BaseException:
        db.close()
        raise
    return db


def _from_row(row: tuple[Any, ...]) -> StoredResponse:
    try:
        response = json.loads(row[2])
        conversation = MESSAGE_LIST_ADAPTER.validate_json(row[3])
    except (ValueError, ValidationError) as error:
        raise StoreError(f"the stored response {row[0]!r} is corrupt: {error}") from error
    return StoredResponse(
        id=row[0], created_at=int(row[1]), response=response, conversation=conversation
    )


class ResponseStore:
    """Responses by id, in a SQLite file (created with its directory if missing) or, with
    ``path=":memory:"`` (the default), in memory. Close it with :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str] = MEMORY) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = _connect(self.path)

    def __repr__(self) -> str:
        return f"ResponseStore({self.path!r})"

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._db is None:
                raise StoreError(f"{self!r} is closed")
            try:
                return work(self._db)
            except sqlite3.Error as error:
                raise StoreError(f"response database {self.path}: {error}") from error

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._run, work)

    async def put(
        self,
        *,
        response_id: str,
        created_at: int,
        response: dict[str, Any],
        conversation: Sequence[Message],
    ) -> None:
        """Store a response (replacing one with the same id). Raises ``ValueError`` before
        writing if ``response`` is not JSON."""
        data = json.dumps(response, ensure_ascii=False, allow_nan=False)
        messages = MESSAGE_LIST_ADAPTER.dump_json(list(conversation)).decode()

        def work(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(
                    "INSERT OR REPLACE INTO responses (id, created_at, response, conversation)"
                    " VALUES (?, ?, ?, ?)",
                    (response_id, created_at, data, messages),
                )

        await self._call(work)

    async def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, or None if there is none with that id."""

        def work(db: sqlite3.Connection) -> tuple[Any, ...] | None:
            cursor = db.execute(
                "SELECT id, created_at, response, conversation FROM responses WHERE id = ?",
                (response_id,),
            )
            row: tuple[Any, ...] | None = cursor.fetchone()
            return row

        row = await self._call(work)
        return None if row is None else _from_row(row)

    async def delete(self, response_id: str) -> bool:
        """Delete a response; False if there was none with that id."""

        def work(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                cursor = db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
                return cursor.rowcount > 0

        return await self._call(work)

    async def close(self) -> None:
        """Close the database. Safe to call twice; other calls afterwards raise StoreError."""

        def work() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(work)
