"""The thread model and the store protocol every backend implements.

A :class:`Thread` is a conversation's identity: an id, JSON metadata (owner, title, tags...) and
two UTC timestamps. Its messages are stored separately, in order, by a :class:`ThreadStore`.

The helpers below the protocol are shared by the backends in this package so they agree on the
details: what counts as valid metadata, how a metadata filter matches, and how a message is
turned into JSON and checked to read back equal.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shoal.exceptions import StoreError
from shoal.messages import (
    MESSAGE_ADAPTER,
    AssistantMessage,
    Message,
    SystemMessage,
    ToolMessage,
    UserMessage,
)

__all__ = ["Thread", "ThreadStore", "new_thread_id"]

_MESSAGE_TYPES = (SystemMessage, UserMessage, AssistantMessage, ToolMessage)


def new_thread_id() -> str:
    """A fresh thread id: ``thread_`` + 24 hex digits."""
    return "thread_" + uuid.uuid4().hex[:24]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Thread(BaseModel):
    """One conversation. Messages live in the store; see :meth:`ThreadStore.get_messages`.

    ``metadata`` must be JSON: dicts with string keys, lists, strings, finite numbers, booleans
    and ``None``. It is normalised on the way in (tuples become lists) so every store returns
    exactly what it would after a trip through JSON.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=new_thread_id, min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="before")
    @classmethod
    def _updated_defaults_to_created(cls, data: Any) -> Any:
        if isinstance(data, dict) and "updated_at" not in data:
            created = data.get("created_at") or utc_now()
            return {**data, "created_at": created, "updated_at": created}
        return data

    @field_validator("metadata", mode="after")
    @classmethod
    def _metadata_is_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        return normalise_metadata(value)

    @field_validator("created_at", "updated_at", mode="after")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC)


@runtime_checkable
class ThreadStore(Protocol):
    """Where threads and their messages live. Every method is a coroutine.

    Missing threads raise :class:`~shoal.exceptions.ThreadNotFoundError`; other failures of
    the store raise :class:`~shoal.exceptions.StoreError`. Invalid arguments (bad metadata, a
    negative limit, something that is not a message) raise ``ValueError`` or ``TypeError``
    before anything is written.
    """

    async def create_thread(
        self, *, metadata: Mapping[str, Any] | None = None, thread_id: str | None = None
    ) -> Thread:
        """A new, empty thread. An existing ``thread_id`` raises ``StoreError``."""
        ...

    async def get_thread(self, thread_id: str) -> Thread: ...

    async def list_threads(
        self, *, limit: int = 100, offset: int = 0, metadata: Mapping[str, Any] | None = None
    ) -> list[Thread]:
        """Newest ``updated_at`` first. ``metadata``: every given key must equal the thread's."""
        ...

    async def update_thread(self, thread_id: str, *, metadata: Mapping[str, Any]) -> Thread:
        """Replace the metadata and bump ``updated_at``."""
        ...

    async def delete_thread(self, thread_id: str) -> None:
        """Delete the thread and all its messages."""
        ...

    async def append_messages(self, thread_id: str, messages: Sequence[Message]) -> None:
        """Append all of ``messages`` or none of them; bumps ``updated_at``."""
        ...

    async def get_messages(self, thread_id: str, *, limit: int | None = None) -> list[Message]:
        """Messages in order; with ``limit``, the newest ``limit`` ones, still oldest first."""
        ...

    async def append_trace(self, thread_id: str, events: Sequence[Mapping[str, Any]]) -> None:
        """Append trace events (JSON objects: what agents did in the thread's runs, see
        :class:`shoal.observability.TraceEvent`); all or none. Deleted with the thread."""
        ...

    async def get_trace(self, thread_id: str) -> list[dict[str, Any]]:
        """The thread's trace events, in the order they were appended."""
        ...

    async def close(self) -> None: ...


# -- helpers shared by the backends -------------------------------------------------------------


class ClosingStore:
    """``async with store:`` closes the store on the way out (both stores share this)."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class MonotonicClock:
    """UTC now, but strictly increasing per instance, so "newest first" never ties."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: datetime | None = None

    def __call__(self) -> datetime:
        with self._lock:
            now = utc_now()
            if self._last is not None and now <= self._last:
                now = self._last + timedelta(microseconds=1)
            self._last = now
            return now


def _check_json(value: Any, where: str, path: list[int]) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}; JSON has no NaN or infinity")
        return
    if isinstance(value, list | tuple | dict):
        if id(value) in path:
            raise ValueError(f"{where} contains itself; JSON cannot represent a cycle")
        path.append(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ValueError(f"{where} has the key {key!r}; JSON keys must be strings")
                _check_json(item, f"{where}[{key!r}]", path)
        else:
            for index, item in enumerate(value):
                _check_json(item, f"{where}[{index}]", path)
        path.pop()
        return
    raise ValueError(f"{where} is a {type(value).__name__}, which is not a JSON value")


def normalise_metadata(metadata: Mapping[str, Any], name: str = "metadata") -> dict[str, Any]:
    """A deep copy of ``metadata`` as it reads back from JSON; ``ValueError`` if it is not JSON."""
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{name} must be a mapping, not {type(metadata).__name__}")
    _check_json(dict(metadata), name, [])
    result: dict[str, Any] = json.loads(dump_metadata(metadata))
    return result


def dump_metadata(metadata: Mapping[str, Any]) -> str:
    return json.dumps(dict(metadata), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``1 == 1.0`` but ``True != 1``, as in PostgreSQL's jsonb."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def metadata_matches(metadata: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """True if every key of ``wanted`` is in ``metadata`` with an equal JSON value."""
    return all(key in metadata and _json_equal(metadata[key], v) for key, v in wanted.items())


def check_paging(*, limit: int | None, offset: int = 0) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer, not {limit!r}")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative integer, not {offset!r}")


def check_thread_id(thread_id: str | None) -> None:
    if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
        raise ValueError(f"thread_id must be a non-empty string, not {thread_id!r}")


def encode_messages(messages: Sequence[Message]) -> list[tuple[str, str]]:
    """``(role, json)`` for each message, checked to read back equal; raises before any write."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a sequence of messages, not {type(messages).__name__}")
    encoded: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, _MESSAGE_TYPES):
            raise TypeError(
                f"messages[{index}] is a {type(message).__name__}, not a shoal.messages Message"
            )
        try:
            data = message.model_dump_json()
            same = MESSAGE_ADAPTER.validate_json(data) == message
        except ValueError as error:  # pydantic's serialisation and validation errors
            raise ValueError(f"messages[{index}] cannot be stored as JSON: {error}") from error
        if not same:
            raise ValueError(
                f"messages[{index}] would not read back equal from JSON; tool-call arguments must "
                "be plain JSON values (dict, list, str, int, finite float, bool, None)"
            )
        encoded.append((message.role, data))
    return encoded


def encode_trace(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """Trace events as JSON text (values JSON cannot hold are written as their ``str``)."""
    encoded: list[str] = []
    for event in events:
        if not isinstance(event, Mapping):
            raise TypeError(f"a trace event must be a JSON object, not {type(event).__name__}")
        encoded.append(json.dumps(dict(event), ensure_ascii=False, default=str))
    return encoded


def decode_message(data: str | bytes) -> Message:
    try:
        return MESSAGE_ADAPTER.validate_json(data)
    except ValidationError as error:
        raise StoreError(f"a stored message is corrupt: {error}") from error
