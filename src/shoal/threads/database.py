"""The SQLite plumbing shared by Shoal's stores (threads here, stored responses in the server).

- :func:`open_database`: a connection in autocommit mode (transactions are explicit), with a
  busy timeout, foreign keys on and WAL journaling for files (several processes can share one),
  its directory created if missing, and its schema brought up to date by :func:`migrate`.
- :func:`migrate`: ordered migration functions (the approach of simonw/llm), each applied once
  in its own transaction and recorded by name in a table of the caller's choosing, so two stores
  can share a file, each with its own record. A file that records a name the code does not know
  was written by a newer Shoal and is refused rather than misread.
- :func:`transaction`: ``BEGIN IMMEDIATE`` (``BEGIN`` for reads) ... ``COMMIT``, rolled back on
  any error, so a failure half-way leaves the file as it was.
- :class:`Database`: one connection behind a lock, used from worker threads
  (``asyncio.to_thread``) so the event loop never waits on the disk; ``sqlite3`` errors become
  :class:`~shoal.exceptions.StoreError`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from shoal.exceptions import StoreError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "MEMORY",
    "Database",
    "Migration",
    "migrate",
    "open_database",
    "transaction",
]

T = TypeVar("T")
Migration = Callable[[sqlite3.Connection], None]

#: Milliseconds a statement waits for another connection's lock before failing.
BUSY_TIMEOUT_MS = 5000

#: the path of a database kept in memory
MEMORY = ":memory:"


@contextmanager
def transaction(db: sqlite3.Connection, *, write: bool = True) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (or a plain ``BEGIN`` for reads) ... ``COMMIT``; rollback on error."""
    db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise


def migrate(
    db: sqlite3.Connection, migrations: Sequence[Migration], *, table: str, where: str
) -> None:
    """Apply the ``migrations`` not yet recorded in ``table``, in order."""
    db.execute(
        f"CREATE TABLE IF NOT EXISTS {table} (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    known = [m.__name__ for m in migrations]
    applied = {row[0] for row in db.execute(f"SELECT name FROM {table}")}
    unknown = sorted(applied - set(known))
    if unknown:
        raise StoreError(
            f"{where} was created by a newer version of Shoal (unknown migrations in {table}: "
            f"{', '.join(unknown)}); upgrade Shoal to open it"
        )
    for function in migrations:
        if function.__name__ in applied:
            continue
        with transaction(db):
            # Another process may have applied it since we looked.
            done = db.execute(f"SELECT 1 FROM {table} WHERE name = ?", (function.__name__,))
            if done.fetchone() is None:
                function(db)
                db.execute(
                    f"INSERT INTO {table} (name, applied_at) VALUES (?, ?)",
                    (function.__name__, datetime.now(UTC).isoformat(timespec="microseconds")),
                )


def open_database(
    path: str | Path, *, what: str, migrations: Sequence[Migration], table: str = "_migrations"
) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path`` (:data:`MEMORY` for one in
    memory). ``what`` names it in errors (``"thread database"``)."""
    memory = str(path) == MEMORY
    try:
        if not memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
        )
    except (OSError, sqlite3.Error) as error:
        raise StoreError(f"cannot open the {what} {path}: {error}") from error
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA foreign_keys = ON")
        if not memory:
            db.execute("PRAGMA journal_mode = WAL")
        migrate(db, migrations, table=table, where=str(path))
    except sqlite3.DatabaseError as error:
        db.close()
        if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
            raise StoreError(f"{path} is not a SQLite database ({error})") from error
        raise StoreError(f"cannot open the {what} {path}: {error}") from error
    except BaseException:
        db.close()
        raise
    return db


class Database:
    """One connection, used by one thread at a time, from the event loop through threads."""

    def __init__(self, db: sqlite3.Connection, *, what: str, owner: str) -> None:
        self._db: sqlite3.Connection | None = db
        self._lock = threading.Lock()
        #: names the database in errors (``"thread database /path"``)
        self._what = what
        #: names the store in "is closed" errors
        self._owner = owner

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` under the lock, in the calling thread."""
        with self._lock:
            if self._db is None:
                raise StoreError(f"{self._owner} is closed")
            try:
                return work(self._db)
            except sqlite3.Error as error:
                raise StoreError(f"{self._what}: {error}") from error

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`run` on a worker thread."""
        return await asyncio.to_thread(self.run, work)

    async def close(self) -> None:
        """Close the connection. Safe to call twice; any other use afterwards raises."""

        def work() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(work)
