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

Connections, migrations and transactions are :mod:`shoal.threads.database`'s, as for the
thread store (ordered functions, each applied once and recorded), but migrations are recorded
in their own table, ``_response_migrations``: the thread store
refuses a file whose ``_migrations`` lists names it does not know, and both share the file.

Every call runs on a worker thread (``asyncio.to_thread``) over one connection guarded by a
lock, so the event loop never waits on the disk.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from shoal.exceptions import StoreError
from shoal.messages import MESSAGE_LIST_ADAPTER, Message
from shoal.threads.database import MEMORY, Database, Migration, open_database, transaction

__all__ = ["MEMORY", "ResponseStore", "StoredResponse"]

T = TypeVar("T")

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
        connection = open_database(
            self.path,
            what="response database",
            migrations=_MIGRATIONS,
            table="_response_migrations",
        )
        self._database = Database(
            connection, what=f"response database {self.path}", owner=repr(self)
        )

    def __repr__(self) -> str:
        return f"ResponseStore({self.path!r})"

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._database.call(work)

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
            with transaction(db):
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
            with transaction(db):
                cursor = db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
                return cursor.rowcount > 0

        return await self._call(work)

    async def close(self) -> None:
        """Close the database. Safe to call twice; other calls afterwards raise StoreError."""
        await self._database.close()
