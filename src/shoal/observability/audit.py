"""A tamper-evident local log of every agent action, and the sink that writes it.

The file is JSON Lines, one record per line, each chained by hash to the one before::

    {"seq": 7, "at": "2025-05-01T12:00:03.120+00:00", "kind": "tool.call", "agent": "support",
     "run_id": "run_...", "thread_id": "thread_...", "data": {...},
     "prev": "<hash of record 6>", "hash": "<sha256 of this record without 'hash'>"}

``hash`` is the sha256 hex digest of the record *without* its ``hash`` key, serialised as
canonical JSON (keys sorted, separators ``,`` and ``:``, UTF-8, non-ASCII kept as is); ``prev``
is the previous record's ``hash`` (64 zeros for the first record); ``seq`` counts up by one.
Editing a record breaks its own hash; deleting, inserting or reordering records breaks the
chain at the next line. :func:`verify` walks the file and names the first line that does not
hold. Removing records from the *end* of the file leaves a shorter chain that is still
intact: keep :attr:`AuditReport.last_hash` somewhere else to detect that.

Writing (:class:`AuditLog`):

- :meth:`AuditLog.append` never blocks and never raises: it puts the record on a bounded queue
  that a background thread writes. If the queue is full (the disk cannot keep up) the record is
  dropped and counted; the writer then appends an ``audit.dropped`` record with the count, so
  the loss is visible in the chain.
- Each batch is written under an exclusive :func:`fcntl.flock` on the file, so several
  processes can append to one log: a writer that finds the file grown since its own last write
  re-reads the last line to chain from it. (Where ``fcntl`` is missing, e.g. Windows, a log
  must have one writing process.)
- fsync policy: after each batch the file is flushed and ``os.fsync``-ed (``fsync=False``
  leaves it to the operating system). A crash can lose the records still queued; at normal
  interpreter exit the queue is flushed (``atexit``).
- A write error (disk full, a directory in the way, no permission) is logged once as a warning
  (again only after a write has succeeded) and the batch is lost; the next batch tries again
  and, once one is written, its ``audit.dropped`` record counts the lost records too. Nothing
  reaches the run. :attr:`AuditLog.lost` counts the records lost so far.
- A log file that was moved away (rotated) or deleted is noticed before the next batch: the
  writer starts a new file, whose chain starts again from 64 zeros.
- A damaged last line (a write cut short) is closed with a newline before the next record, and
  the chain continues from the last intact record; :func:`verify` still reports the damage.

:class:`AuditSink` turns trace events into records: run start and end, each model request
(model, step, tokens, finish reason, the tools it called; never the prompt), each tool call
(validated arguments, outcome, result summary, error), guard verdicts, approvals, handoffs
and routing decisions.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import math
import os
import queue
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from shoal.observability.recorder import TraceEvent

try:  # POSIX: processes sharing a log take turns
    import fcntl
except ImportError:  # pragma: no cover - Windows: one writing process per log
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "GENESIS",
    "AuditLog",
    "AuditReport",
    "AuditSink",
    "canonical_json",
    "read",
    "record_hash",
    "verify",
]

logger = logging.getLogger("shoal.audit")

#: the ``prev`` of the first record
GENESIS = "0" * 64
#: keys every record has
FIELDS = ("seq", "at", "kind", "agent", "run_id", "thread_id", "data", "prev", "hash")
#: longest text kept in a record's summaries (results, outputs, messages)
SUMMARY_CHARS = 200
_DEFAULT_QUEUE = 10_000
_BATCH = 256
#: a writer thread idle this long ends (the next record starts another)
_IDLE_S = 2.0


def canonical_json(value: Any) -> str:
    """The one serialisation records are hashed (and written) in."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def record_hash(record: Mapping[str, Any]) -> str:
    """sha256 hex of the record without its ``hash`` key, as canonical JSON."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON types; anything else becomes ``str(value)``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth > 20:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, depth + 1) for v in value]
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        with contextlib.suppress(Exception):
            return json_safe(dump(mode="json"), depth + 1)
    return str(value)


def _summary(value: Any, limit: int = SUMMARY_CHARS) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else canonical_json(json_safe(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


# -- writing --------------------------------------------------------------------------------

_open_logs: weakref.WeakSet[AuditLog] = weakref.WeakSet()


@atexit.register
def _flush_open_logs() -> None:  # pragma: no cover - runs at interpreter exit
    for log in list(_open_logs):
        log.close(timeout=2.0)


class _Flush:
    """A marker in the queue: set once every record queued before it is written."""

    def __init__(self) -> None:
        self.done = threading.Event()


class AuditLog:
    """Appends records to the chained log at ``path`` from a background thread.

    ``max_queue`` bounds the records waiting to be written (beyond it they are dropped and
    counted); ``fsync`` syncs the file to disk after each written batch.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_queue: int = _DEFAULT_QUEUE, fsync: bool = True
    ) -> None:
        self.path = Path(path).expanduser()
        self.fsync = fsync
        self._queue: queue.Queue[dict[str, Any] | _Flush] = queue.Queue(max_queue)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: records dropped because the queue was full, not yet reported in the log
        self._dropped = 0
        #: records lost so far: dropped, or in a batch that failed to write
        self.lost = 0
        self._warned = False
        # the writer thread's view of the file
        self._file: IO[bytes] | None = None
        self._end = -1  # file size after our last write (-1: unknown, re-read the tail)
        self._prev = GENESIS
        self._seq = 0
        _open_logs.add(self)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    # -- the caller's side (never blocks, never raises) -------------------------------------

    def append(
        self,
        kind: str,
        data: Mapping[str, Any] | None = None,
        *,
        agent: str = "",
        run_id: str = "",
        thread_id: str | None = None,
        at: float | None = None,
    ) -> None:
        """Queue one record; ``seq``, ``prev`` and ``hash`` are filled in when it is written."""
        try:
            record = {
                "at": _iso(at if at is not None else _now()),
                "kind": kind,
                "agent": agent,
                "run_id": run_id,
                "thread_id": thread_id,
                "data": json_safe(dict(data or {})),
            }
            self._put(record)
        except Exception as exc:  # pragma: no cover - defensive: observing never breaks a run
            self._warn("could not queue an audit record", exc)

    def _put(self, record: dict[str, Any]) -> None:
        with self._lock:
            if self._closed:
                self._dropped += 1
                self.lost += 1
                return
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                self._dropped += 1
                self.lost += 1
                return
            if self._thread is None:  # under the lock: an idle writer cannot miss the record
                self._thread = threading.Thread(
                    target=self._run, name=f"shoal-audit:{self.path.name}", daemon=True
                )
                self._thread.start()

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every record queued so far is written (or failed); False on timeout."""
        marker = _Flush()
        with self._lock:
            if self._thread is None:  # the writer ends only when nothing is queued
                return True
            try:
                self._queue.put_nowait(marker)
                queued = True
            except queue.Full:
                queued = False
        if not queued:  # wait for room outside the lock
            try:
                self._queue.put(marker, timeout=timeout)
            except queue.Full:
                return False
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Write what is queued and close the file; later records are dropped (and counted)."""
        with self._lock:
            self._closed = True
        self.flush(timeout)
        _open_logs.discard(self)

    def _warn(self, what: str, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("%s %s (%s: %s)", what, self.path, type(exc).__name__, exc)

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        """Write batches until the queue has stayed empty for a while, then end (the next
        record starts a new writer)."""
        while True:
            try:
                item = self._queue.get(timeout=_IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        self._close_file()
                        return
                continue
            batch: list[dict[str, Any]] = []
            markers: list[_Flush] = []
            while True:
                if isinstance(item, _Flush):
                    markers.append(item)
                else:
                    batch.append(item)
                if len(batch) >= _BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            with self._lock:
                dropped, self._dropped = self._dropped, 0
            if dropped:
                batch.insert(0, _dropped_record(dropped))
            if batch:
                self._write(batch)
            with self._lock:
                done = self._closed and self._queue.empty()
                if done:
                    self._thread = None
                    self._close_file()
            for marker in markers:
                marker.done.set()
            if done:
                return

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            handle = self._open()
            with _locked(handle):
                self._sync_tail(handle)
                lines = []
                for record in batch:
                    self._seq += 1
                    full = {"seq": self._seq, **record, "prev": self._prev}
                    full["hash"] = record_hash(full)
                    self._prev = full["hash"]
                    lines.append(canonical_json(full) + "\n")
                handle.write("".join(lines).encode("utf-8"))
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
                self._end = handle.tell()
            self._warned = False
        except Exception as exc:
            count = sum(r["data"]["count"] if r["kind"] == "audit.dropped" else 1 for r in batch)
            with self._lock:  # the next record written says how many were lost
                self._dropped += count
                self.lost += sum(1 for r in batch if r["kind"] != "audit.dropped")
            self._warn(f"could not write {len(batch)} audit record(s) to", exc)
            self._close_file()

    def _open(self) -> IO[bytes]:
        handle = self._file
        if handle is not None:
            try:  # the file was moved or deleted: start on the new one
                same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except OSError:
                same = False
            if same:
                return handle
            self._close_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+b")  # noqa: SIM115 - kept open across batches
        self._file = handle
        self._end = -1
        return handle

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self._end = -1

    def _sync_tail(self, handle: IO[bytes]) -> None:
        """Chain from the file's last record if the file is not as we left it."""
        size = handle.seek(0, os.SEEK_END)
        if size == self._end:
            return
        self._seq, self._prev = 0, GENESIS
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) != b"\n":  # a write was cut short: close the damaged line first
            handle.write(b"\n")
        link = _last_link(handle, size)
        if link is not None:
            self._seq, self._prev = link


def _last_link(handle: IO[bytes], size: int, chunk: int = 65536) -> tuple[int, str] | None:
    """(seq, hash) of the last line of the file's first ``size`` bytes that parses as a
    record, reading backwards."""
    start, carry = size, b""
    while start > 0:
        step = min(chunk, start)
        start -= step
        handle.seek(start)
        lines = (handle.read(step) + carry).split(b"\n")
        carry = lines.pop(0) if start > 0 else b""  # maybe the end of an earlier line
        for line in reversed(lines):
            try:
                record = json.loads(line)
                return int(record["seq"]), str(record["hash"])
            except (ValueError, KeyError, TypeError):
                continue
    return None


@contextlib.contextmanager
def _locked(handle: IO[bytes]) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _dropped_record(count: int) -> dict[str, Any]:
    return {
        "at": _iso(_now()),
        "kind": "audit.dropped",
        "agent": "",
        "run_id": "",
        "thread_id": None,
        "data": {"count": count, "reason": "the queue was full or a write failed"},
    }


def _now() -> float:
    return datetime.now(UTC).timestamp()


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditReport:
    """What :func:`verify` found."""

    path: Path
    ok: bool
    #: records verified intact (before the first problem, if any)
    records: int
    #: 1-based line of the first problem; None when the log is intact
    first_bad_line: int | None = None
    problem: str | None = None
    #: hash of the last intact record (GENESIS for an empty log): keep it elsewhere to be able
    #: to tell later that no records were removed from the end
    last_hash: str = GENESIS

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.records} records, chain intact"
        return f"{self.problem} ({self.records} records intact before it)"


def verify(path: str | os.PathLike[str]) -> AuditReport:
    """Check every record's hash and the chain; the report names the first bad line.

    Raises :class:`FileNotFoundError` if there is no file at ``path``."""
    target = Path(path).expanduser()
    prev, seq, count = GENESIS, 0, 0
    with open(target, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            cut = not line.endswith(b"\n")  # only the last line can lack its newline
            checked = _check_line(line.rstrip(b"\n"), number, prev, seq, cut=cut)
            if isinstance(checked, str):
                return AuditReport(target, False, count, number, checked, prev)
            prev, seq = checked["hash"], checked["seq"]
            count += 1
    return AuditReport(target, True, count, None, None, prev)


def _check_line(
    line: bytes, number: int, prev: str, seq: int, *, cut: bool
) -> dict[str, Any] | str:
    """The record on the line, or what is wrong with it."""
    where = f"line {number}"
    if not line.strip():
        return f"{where}: empty line"
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        if cut:
            return f"{where}: truncated (the last record is incomplete: a write cut short?)"
        return f"{where}: not JSON"
    if not isinstance(record, dict):
        return f"{where}: not a JSON object"
    missing = [f for f in FIELDS if f not in record]
    if missing:
        return f"{where}: missing {', '.join(missing)}"
    try:
        digest = record_hash(record)
    except ValueError:
        return f"{where}: not canonical JSON"
    if digest != record["hash"]:
        return f"{where}: hash does not match its content (edited?)"
    if record["prev"] != prev:
        if number == 1:
            return f"{where}: chain broken: the first record does not start the chain"
        return f"{where}: chain broken: prev does not match line {number - 1}"
    if record["seq"] != seq + 1:
        return f"{where}: sequence broken: seq {record['seq']} follows {seq}"
    return record


def read(path: str | os.PathLike[str], *, thread_id: str | None = None) -> list[dict[str, Any]]:
    """The records in the log (lines that are not records are skipped; :func:`verify` reports
    them), optionally only those of one thread."""
    out: list[dict[str, Any]] = []
    with open(Path(path).expanduser(), encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if thread_id is None or record.get("thread_id") == thread_id:
                out.append(record)
    return out


# -- the sink -------------------------------------------------------------------------------

#: point events recorded as they are
_POINT_KINDS = frozenset(
    {"guard", "approval.requested", "approval.decided", "handoff", "agent.route", "route"}
)


_RUN_END_KEYS = (
    "stop_reason",
    "steps",
    "prompt_tokens",
    "completion_tokens",
    "tool_calls",
    "retries",
)


class AuditSink:
    """Writes a record to ``log`` for every agent action (see the module docstring)."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def __repr__(self) -> str:
        return f"AuditSink({self.log!r})"

    def start(self, event: TraceEvent) -> None:
        if event.kind == "run":
            d = event.data
            self._write(
                event,
                "run.start",
                {
                    "model": d.get("model"),
                    "role": d.get("role"),
                    "message": _summary(d.get("message")),
                    "parent_id": event.parent_id,
                },
                at=event.at,
            )

    def end(self, event: TraceEvent) -> None:
        d = event.data
        if event.kind == "run":
            data = {k: d.get(k) for k in _RUN_END_KEYS}
            data["output"] = _summary(d.get("output"))
            self._write(event, "run.end", data | _ending(event))
        elif event.kind == "model.request":
            data = {
                k: d.get(k)
                for k in ("model", "step", "prompt_tokens", "completion_tokens", "finish_reason")
            }
            data["calls"] = d.get("calls") or []
            if d.get("parse_error"):
                data["parse_error"] = _summary(d.get("parse_error"))
            self._write(event, "model.request", data | _ending(event))
        elif event.kind == "tool.call":
            data = {
                "tool": d.get("tool"),
                "call_id": d.get("call_id"),
                "arguments": d.get("arguments"),
                "outcome": d.get("outcome") or ("error" if event.error else None),
                "result": _summary(d.get("result")),
                "error": _summary(d.get("error")),
            }
            self._write(event, "tool.call", data | _ending(event))

    def emit(self, event: TraceEvent) -> None:
        if event.kind in _POINT_KINDS:
            self._write(event, event.kind, dict(event.data), at=event.at)

    def _write(
        self, event: TraceEvent, kind: str, data: dict[str, Any], *, at: float | None = None
    ) -> None:
        if at is None:  # an ended span: when it ended
            at = event.at + (event.duration or 0.0)
        self.log.append(
            kind, data, agent=event.agent, run_id=event.run_id, thread_id=event.thread_id, at=at
        )


def _ending(event: TraceEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": round(event.duration or 0.0, 6)}
    if event.error:
        out["exception"] = _summary(event.error)
    return out
