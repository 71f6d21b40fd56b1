"""A thread store in a dict: for tests, and for runs that need no history after they end.

It behaves like :class:`~shoal.threads.SQLiteThreadStore` in every observable way: messages
are kept as the same JSON text the SQLite store writes, and threads are copied on the way in
and out, so a caller mutating what it passed or got back cannot change what is stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from shoal.exceptions import StoreError, ThreadNotFoundError
from shoal.messages import Message
from shoal.threads.base import (
    ClosingStore,
    MonotonicClock,
    Thread,
    check_paging,
    check_thread_id,
    decode_message,
    encode_messages,
    encode_trace,
    metadata_matches,
    new_thread_id,
    normalise_metadata,
)

__all__ = ["InMemoryThreadStore"]


class InMemoryThreadStore(ClosingStore):
    """A :class:`~shoal.threads.ThreadStore` that keeps everything in memory."""

    def __init__(self) -> None:
        self._threads: dict[str, Thread] = {}
        self._messages: dict[str, list[str]] = {}
        self._traces: dict[str, list[str]] = {}
        self._clock = MonotonicClock()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("this InMemoryThreadStore is closed")

    def _thread(self, thread_id: str) -> Thread:
        self._check_open()
        try:
            return self._threads[thread_id]
        except KeyError:
            raise ThreadNotFoundError(f"no thread with id {thread_id!r}") from None

    async def create_thread(
        self, *, metadata: Mapping[str, Any] | None = None, thread_id: str | None = None
    ) -> Thread:
        check_thread_id(thread_id)
        clean = normalise_metadata(metadata or {})
        self._check_open()
        thread_id = thread_id or new_thread_id()
        if thread_id in self._threads:
            raise StoreError(f"a thread with id {thread_id!r} already exists")
        now = self._clock()
        thread = Thread(id=thread_id, metadata=clean, created_at=now, updated_at=now)
        self._threads[thread_id] = thread
        self._messages[thread_id] = []
        return thread.model_copy(deep=True)

    async def get_thread(self, thread_id: str) -> Thread:
        return self._thread(thread_id).model_copy(deep=True)

    async def list_threads(
        self, *, limit: int = 100, offset: int = 0, metadata: Mapping[str, Any] | None = None
    ) -> list[Thread]:
        check_paging(limit=limit, offset=offset)
        wanted = normalise_metadata(metadata or {}, "metadata filter")
        self._check_open()
        newest_first = sorted(self._threads.values(), key=lambda t: t.updated_at, reverse=True)
        matching = [t for t in newest_first if metadata_matches(t.metadata, wanted)]
        return [t.model_copy(deep=True) for t in matching[offset : offset + limit]]

    async def update_thread(self, thread_id: str, *, metadata: Mapping[str, Any]) -> Thread:
        clean = normalise_metadata(metadata)
        thread = self._thread(thread_id)
        updated = thread.model_copy(update={"metadata": clean, "updated_at": self._clock()})
        self._threads[thread_id] = updated
        return updated.model_copy(deep=True)

    async def delete_thread(self, thread_id: str) -> None:
        self._thread(thread_id)
        del self._threads[thread_id]
        del self._messages[thread_id]
        self._traces.pop(thread_id, None)

    async def append_messages(self, thread_id: str, messages: Sequence[Message]) -> None:
        encoded = encode_messages(messages)  # raises before anything is stored
        thread = self._thread(thread_id)
        if not encoded:
            return
        self._messages[thread_id].extend(data for _role, data in encoded)
        self._threads[thread_id] = thread.model_copy(update={"updated_at": self._clock()})

    async def get_messages(self, thread_id: str, *, limit: int | None = None) -> list[Message]:
        check_paging(limit=limit)
        self._thread(thread_id)
        stored = self._messages[thread_id]
        if limit is not None:
            stored = stored[max(len(stored) - limit, 0) :] if limit else []
        return [decode_message(data) for data in stored]

    async def append_trace(self, thread_id: str, events: Sequence[Mapping[str, Any]]) -> None:
        encoded = encode_trace(events)
        self._thread(thread_id)
        self._traces.setdefault(thread_id, []).extend(encoded)

    async def get_trace(self, thread_id: str) -> list[dict[str, Any]]:
        self._thread(thread_id)
        return [json.loads(data) for data in self._traces.get(thread_id, [])]

    async def close(self) -> None:
        self._closed = True
