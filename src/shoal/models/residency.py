"""Which models stay loaded: several at once within a memory budget, idle ones unloaded.

A :class:`Resident` is a model that can free its memory and still answer: its next request
loads it again (:class:`~shoal.models.worker.WorkerModel` stops its child process; the embedded
engine releases its weights). A :class:`ResidencyManager` decides when. Every request runs
inside ``async with manager.use(model):``, which

- loads the model first if it is not loaded, after making room: idle models (no request on
  them) are unloaded, least recently used first, until the newcomer's estimated size fits
  ``max_memory_bytes`` and the count fits ``max_loaded_models``. A model with a request on it
  is never unloaded: if room cannot be made from idle models, or the model is bigger than the
  whole budget, the request fails at once with :class:`~shoal.exceptions.MemoryBudgetError`
  (HTTP 503, exit code 9), whose message names the busy models;
- counts the request as in flight until the block ends, then stamps the model's last use.

Concurrent requests for an unloaded model load it once; the others wait for that load (and
get its error). Models that are not Residents (``TestModel``, ``FunctionModel``) pass through
unmanaged, and so does a ``use`` nested in another ``use`` of the same model in the same task:
an in-process model that guards its own requests with :func:`default_residency` is not managed
twice when a server already holds it under the server's manager.

Keep-alive: a model idle for ``keep_alive_s`` seconds is unloaded (``None``: never; ``0``: as
soon as its last request ends). The reaper is an asyncio task that ``use`` starts in the running
loop when a model becomes idle; it sleeps until the next expiry and ends when no idle model is
left to watch, so no thread runs and nothing outlives its event loop;
:meth:`ResidencyManager.reap` does one pass on demand. The clock is injectable (tests advance a
fake one).

Memory: a loaded model counts with what it measures now (a worker's child-process RSS) or, when
it cannot measure itself (an in-process model shares this process's RSS), its estimate; a model
about to load counts with its estimate. Bookkeeping is under one :class:`threading.Lock`, never
held across an ``await``; waits use running :class:`concurrent.futures.Future` objects (which
a waiter's cancellation cannot cancel), so one manager can serve several event loops, as the
process-wide :func:`default_residency` may.

Settings (:func:`residency_settings`), each an argument (the ``shoal serve`` option) or else an
environment variable, else the default:

- ``SHOAL_MAX_MEMORY``: ``6GB``, ``6000MB``, ``75%`` (of total RAM) or ``none``; default 75 %;
- ``SHOAL_MAX_LOADED_MODELS``: a positive number or ``none``; default 3;
- ``SHOAL_KEEP_ALIVE``: ``5m``, ``300`` (seconds), ``1h30m``, ``0``, ``-1`` (never); default 5
  minutes, as in Ollama.

Sizes use binary units (``1GB`` is 1024 MB), as the operating system's memory tools do.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import psutil

from shoal.exceptions import MemoryBudgetError, UserError
from shoal.models.base import Model
from shoal.observability.metrics import set_model_memory

__all__ = [
    "DEFAULT_KEEP_ALIVE_S",
    "DEFAULT_MAX_LOADED_MODELS",
    "DEFAULT_MAX_MEMORY_PERCENT",
    "UNLOAD_REASONS",
    "ResidencyEvent",
    "ResidencyManager",
    "ResidencySettings",
    "ResidencySnapshot",
    "Resident",
    "ResidentState",
    "ResidentStatus",
    "UnloadReason",
    "default_residency",
    "format_duration",
    "parse_keep_alive",
    "parse_max_loaded_models",
    "parse_max_memory",
    "residency_settings",
    "set_default_residency",
]

#: share of total RAM the loaded models may take when nothing else is configured
DEFAULT_MAX_MEMORY_PERCENT = 75
DEFAULT_MAX_LOADED_MODELS = 3
#: seconds an idle model stays loaded (Ollama's default too)
DEFAULT_KEEP_ALIVE_S = 300.0
#: seconds before the reaper tries again to unload a model whose unload failed
UNLOAD_RETRY_S = 30.0

#: why a model was unloaded: its keep-alive ran out; room was made for another model under
#: ``max_loaded_models`` (``lru``) or under ``max_memory`` (``budget``); the manager was closed
UnloadReason = Literal["idle", "lru", "budget", "shutdown"]
UNLOAD_REASONS: tuple[UnloadReason, ...] = ("idle", "lru", "budget", "shutdown")
ResidencyEvent = Literal["load", "unload"]
ResidentState = Literal["loading", "ready", "unloading", "unloaded"]
#: ``on_event(kind, model, reason)``: ``load`` (reason ``request``) once a load succeeded,
#: ``unload`` with an :data:`UnloadReason` once an unload did
OnEvent = Callable[[ResidencyEvent, "Resident", str], None]

_MB = 2**20
_log = logging.getLogger(__name__)
#: ids of the models the current task holds through ``use`` (a nested ``use`` passes through)
_HELD: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "shoal_residency_held", default=frozenset()
)


@runtime_checkable
class Resident(Protocol):
    """A model that can free its memory and load again on its next request."""

    @property
    def name(self) -> str: ...

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory now."""
        ...

    def memory_bytes(self) -> int | None:
        """Memory the loaded model takes now, measured; None when not loaded or not measurable
        (an in-process model shares the process's memory)."""
        ...

    def estimated_bytes(self) -> int:
        """Memory the model is expected to take once loaded (used to make room before it is)."""
        ...

    async def prepare(self) -> None:
        """Load now; nothing to do when loaded."""
        ...

    async def unload(self) -> None:
        """Free the memory. The model stays usable: its next request loads it again. Called
        by the manager only when no request is running on the model (and on shutdown)."""
        ...


# -- snapshots ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResidentStatus:
    """One managed model, as the manager sees it now."""

    name: str
    state: ResidentState
    #: requests running on the model now
    in_use: int
    #: measured now while loaded (None: not loaded, or the model cannot measure itself)
    memory_bytes: int | None
    estimated_bytes: int
    #: the manager clock's reading at the model's last use
    last_used: float
    #: seconds since the last request ended (None while a request runs)
    idle_seconds: float | None
    loads: int
    #: unloads so far by :data:`UnloadReason`
    unloads: Mapping[str, int]

    @property
    def loaded(self) -> bool:
        return self.state in ("ready", "unloading")

    @property
    def resident_bytes(self) -> int:
        """What the model counts for against the budget: measured, else estimated, while loaded
        or loading; 0 when unloaded."""
        if self.state == "unloaded":
            return 0
        return self.memory_bytes if self.memory_bytes is not None else self.estimated_bytes


@dataclass(frozen=True)
class ResidencySnapshot:
    """The limits and every managed model (see :meth:`ResidencyManager.snapshot`)."""

    max_memory_bytes: int | None
    max_loaded_models: int | None
    keep_alive_s: float | None
    models: tuple[ResidentStatus, ...]

    @property
    def loaded_models(self) -> int:
        return sum(1 for m in self.models if m.loaded)

    @property
    def used_bytes(self) -> int:
        return sum(m.resident_bytes for m in self.models)


# -- the manager --------------------------------------------------------------------------------


@dataclass(eq=False)
class _Entry:
    """The manager's record of one model; mutated under ``ResidencyManager._lock`` only."""

    model: Resident
    last_used: float
    in_use: int = 0
    #: set while the model loads (waiters wait on it); resolved when the load ends either way
    loading: Future[None] | None = None
    #: set while the model unloads (it is then neither used nor counted)
    unloading: Future[None] | None = None
    loads: int = 0
    unloads: dict[str, int] = field(default_factory=dict)
    #: no keep-alive unload before this clock reading (after a failed unload)
    not_before: float = -math.inf

    @property
    def busy(self) -> bool:
        return self.in_use > 0 or self.loading is not None


class ResidencyManager:
    """Keeps the loaded models within limits; see the module docstring.

    ``max_memory_bytes`` / ``max_loaded_models`` None: no limit. ``keep_alive_s`` None (or
    negative): idle models stay loaded; 0: unloaded as soon as they are idle.
    """

    def __init__(
        self,
        max_memory_bytes: int | None = None,
        max_loaded_models: int | None = None,
        keep_alive_s: float | None = None,
        *,
        on_event: OnEvent | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_memory_bytes is not None and max_memory_bytes <= 0:
            raise ValueError(f"max_memory_bytes must be positive or None, not {max_memory_bytes}")
        if max_loaded_models is not None and max_loaded_models < 1:
            raise ValueError(f"max_loaded_models must be at least 1, not {max_loaded_models}")
        self.max_memory_bytes = max_memory_bytes
        self.max_loaded_models = max_loaded_models
        self.keep_alive_s = None if keep_alive_s is None or keep_alive_s < 0 else keep_alive_s
        self.on_event = on_event
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[bool]] = set()

    @classmethod
    def from_settings(
        cls,
        settings: ResidencySettings,
        *,
        on_event: OnEvent | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> ResidencyManager:
        memory = settings.max_memory_mb
        return cls(
            None if memory is None else memory * _MB,
            settings.max_loaded_models,
            settings.keep_alive_s,
            on_event=on_event,
            clock=clock,
        )

    # -- using models ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(self, model: Model | Resident) -> AsyncIterator[None]:
        """Hold ``model`` for one request: loaded first (making room) if it is not, never
        unloaded while held. Raises :class:`MemoryBudgetError` if it cannot be made to fit."""
        held = _HELD.get()
        if id(model) in held or not isinstance(model, Resident):
            yield
            return
        entry = await self._acquire(model)
        _HELD.set(held | {id(model)})
        try:
            yield
        finally:
            _HELD.set(held)
            self._release(entry)

    async def load(self, model: Model | Resident) -> None:
        """Load ``model`` now as a request would (making room); it then idles under the
        keep-alive. A model that is not a Resident is just prepared."""
        if isinstance(model, Resident):
            async with self.use(model):
                return
        await model.prepare()

    async def reap(self) -> list[str]:
        """Unload every model idle longer than the keep-alive now; returns their names."""
        if self.keep_alive_s is None:
            return []
        now = self._clock()
        with self._lock:
            expired = [e for e in self._entries.values() if self._expiry(e) <= now]
            for entry in expired:
                entry.unloading = _running_future()
        unloaded = await asyncio.gather(*(self._unload(e, "idle") for e in expired))
        return [e.model.name for e, ok in zip(expired, unloaded, strict=True) if ok]

    async def aclose(self) -> None:
        """Stop the reaper and unload every loaded model (reason ``shutdown``), busy or not."""
        with self._lock:
            reaper, self._reaper = self._reaper, None
        if reaper is not None and not reaper.done() and _in_running_loop(reaper):
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
        with self._lock:
            victims = [
                e
                for e in self._entries.values()
                if e.unloading is None and (e.busy or e.model.loaded)
            ]
            for entry in victims:
                entry.unloading = _running_future()
        await asyncio.gather(*(self._unload(e, "shutdown") for e in victims))

    # -- reporting ------------------------------------------------------------------------

    def status(self, model: object) -> ResidentStatus | None:
        """How ``model`` stands now; None if the manager has not seen it."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(id(model))
            return None if entry is None else _status(entry, now)

    def snapshot(self) -> ResidencySnapshot:
        """The limits and every model the manager has seen (for metrics and health)."""
        now = self._clock()
        with self._lock:
            models = tuple(_status(e, now) for e in self._entries.values())
        return ResidencySnapshot(
            self.max_memory_bytes, self.max_loaded_models, self.keep_alive_s, models
        )

    # -- internals ------------------------------------------------------------------------

    async def _acquire(self, model: Resident) -> _Entry:
        while True:
            with self._lock:
                entry = self._entries.get(id(model))
                if entry is None:
                    entry = self._entries[id(model)] = _Entry(model, self._clock())
                wait = entry.loading or entry.unloading
                if wait is None and (entry.in_use > 0 or model.loaded):
                    entry.in_use += 1
                    entry.last_used = self._clock()
                    return entry
                if wait is None:
                    victims, pending = self._make_room(entry)
            if wait is not None:  # another request loads it, or the reaper unloads it
                await asyncio.wrap_future(wait)
                continue
            await self._load(entry, victims, pending)
            return entry

    def _make_room(
        self, entry: _Entry
    ) -> tuple[list[tuple[_Entry, UnloadReason]], list[Future[None]]]:
        """Choose the idle models to unload so that ``entry`` fits, and reserve its place.
        Called under the lock; raises :class:`MemoryBudgetError` when it cannot fit."""
        name, need = entry.model.name, entry.model.estimated_bytes()
        budget, most = self.max_memory_bytes, self.max_loaded_models
        if budget is not None and need > budget:
            raise MemoryBudgetError(
                f"{name} needs about {_mb(need)}, more than the whole memory budget of "
                f"{_mb(budget)}; raise it with --max-memory or SHOAL_MAX_MEMORY"
            )
        pending = [e.unloading for e in self._entries.values() if e.unloading is not None]
        others = [
            e
            for e in self._entries.values()
            if e is not entry and e.unloading is None and (e.busy or e.model.loaded)
        ]
        sizes = {id(e): _current_bytes(e) for e in others}
        count, used = len(others), sum(sizes.values())
        victims: list[tuple[_Entry, UnloadReason]] = []
        for idle in sorted((e for e in others if not e.busy), key=lambda e: e.last_used):
            reason: UnloadReason
            if most is not None and count + 1 > most:
                reason = "lru"
            elif budget is not None and used + need > budget:
                reason = "budget"
            else:
                break
            victims.append((idle, reason))
            count, used = count - 1, used - sizes[id(idle)]
        over_count = most is not None and count + 1 > most
        over_budget = budget is not None and used + need > budget
        if over_count or over_budget:
            chosen = {id(e) for e, _ in victims}
            busy = [e for e in others if id(e) not in chosen]
            raise MemoryBudgetError(
                _refusal(name, need, busy, sizes, count=count, used=used, limits=(budget, most))
            )
        for victim, _ in victims:
            victim.unloading = _running_future()
        entry.loading = _running_future()
        return victims, [f for f in pending if f is not None]

    async def _load(
        self,
        entry: _Entry,
        victims: list[tuple[_Entry, UnloadReason]],
        pending: list[Future[None]],
    ) -> None:
        """Unload the victims, wait for other unloads in progress, then load ``entry``."""
        done = entry.loading
        assert done is not None
        try:
            await asyncio.gather(*(self._unload(e, reason) for e, reason in victims))
            for unloading in pending:  # memory others are freeing is not free yet
                await asyncio.wrap_future(unloading)
            await entry.model.prepare()
        except BaseException as exc:
            with self._lock:
                entry.loading = None
            if isinstance(exc, Exception):
                done.set_exception(exc)  # the waiters fail the same way
            else:  # cancelled: a waiter tries the load itself
                done.set_result(None)
            raise
        with self._lock:
            entry.loading = None
            entry.loads += 1
            entry.in_use += 1
            entry.last_used = self._clock()
        done.set_result(None)
        set_model_memory(entry.model.name, _current_bytes(entry))
        self._emit("load", entry.model, "request")

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.in_use -= 1
            entry.last_used = self._clock()
            idle = entry.in_use == 0
        if idle and self.keep_alive_s is not None:
            self._ensure_reaper()

    async def _unload(self, entry: _Entry, reason: UnloadReason) -> bool:
        """Unload a model whose ``unloading`` future the caller set (under the lock); whether
        it worked. The unload runs as a task of its own: a caller's cancellation does not
        interrupt it."""
        task = asyncio.ensure_future(self._unload_now(entry, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _unload_now(self, entry: _Entry, reason: UnloadReason) -> bool:
        done = entry.unloading
        assert done is not None
        unloaded = False
        try:
            await entry.model.unload()
            unloaded = True
        except Exception:  # the memory may still be held: counted as loaded, retried later
            _log.exception("unloading %s failed", entry.model.name)
        finally:
            with self._lock:
                entry.unloading = None
                if unloaded:
                    entry.unloads[reason] = entry.unloads.get(reason, 0) + 1
                else:
                    entry.not_before = self._clock() + UNLOAD_RETRY_S
            done.set_result(None)
        if unloaded:
            set_model_memory(entry.model.name, 0)
            _log.info("unloaded %s (%s)", entry.model.name, reason)
            self._emit("unload", entry.model, reason)
        return unloaded

    def _expiry(self, entry: _Entry) -> float:
        """When the keep-alive unloads ``entry`` (infinity: not an idle loaded model now)."""
        if self.keep_alive_s is None or entry.busy or entry.unloading is not None:
            return math.inf
        if not entry.model.loaded:
            return math.inf
        return max(entry.last_used + self.keep_alive_s, entry.not_before)

    def _ensure_reaper(self) -> None:
        """Start the keep-alive reaper in the running loop unless one is alive."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # released outside a loop (a generator finalised late)
            return
        with self._lock:
            reaper = self._reaper
            if reaper is not None and not reaper.done() and not reaper.get_loop().is_closed():
                return
            self._reaper = loop.create_task(self._reap_until_idle(), name="shoal-residency-reaper")

    async def _reap_until_idle(self) -> None:
        """Unload models as their keep-alive runs out; end when no idle model is loaded."""
        while True:
            await self.reap()
            with self._lock:
                expiry = min((self._expiry(e) for e in self._entries.values()), default=math.inf)
            if expiry == math.inf:
                return
            await asyncio.sleep(max(expiry - self._clock(), 0.01))

    def _emit(self, kind: ResidencyEvent, model: Resident, reason: str) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, model, reason)
        except Exception:
            _log.exception("residency on_event(%r) failed for %s", kind, model.name)


def _running_future() -> Future[None]:
    """A future a waiter's cancellation cannot cancel (it is already running)."""
    future: Future[None] = Future()
    future.set_running_or_notify_cancel()
    return future


def _in_running_loop(task: asyncio.Task[None]) -> bool:
    try:
        return task.get_loop() is asyncio.get_running_loop()
    except RuntimeError:
        return False


def _current_bytes(entry: _Entry) -> int:
    """What a loaded (or loading, or busy) model counts for now: measured, else estimated."""
    measured = entry.model.memory_bytes() if entry.model.loaded else None
    return measured if measured is not None else entry.model.estimated_bytes()


def _status(entry: _Entry, now: float) -> ResidentStatus:
    model = entry.model
    loaded = model.loaded
    state: ResidentState
    if entry.unloading is not None:
        state = "unloading"
    elif entry.loading is not None:
        state = "loading"
    else:
        state = "ready" if loaded else "unloaded"
    return ResidentStatus(
        name=model.name,
        state=state,
        in_use=entry.in_use,
        memory_bytes=model.memory_bytes() if loaded else None,
        estimated_bytes=model.estimated_bytes(),
        last_used=entry.last_used,
        idle_seconds=None if entry.busy else max(0.0, now - entry.last_used),
        loads=entry.loads,
        unloads=dict(entry.unloads),
    )


def _refusal(
    name: str,
    need: int,
    busy: list[_Entry],
    sizes: Mapping[int, int],
    *,
    count: int,
    used: int,
    limits: tuple[int | None, int | None],
) -> str:
    budget, most = limits
    reasons = []
    if most is not None and count + 1 > most:
        reasons.append(f"{count} of at most {most} models are loaded")
    if budget is not None and used + need > budget:
        reasons.append(f"{_mb(used)} of the {_mb(budget)} memory budget is taken")
    described = []
    for e in busy:
        doing = "loading" if e.loading is not None else f"{e.in_use} request(s) running"
        described.append(f"{e.model.name} ({doing}, {_mb(sizes[id(e)])})")
    return (
        f"cannot load {name} (about {_mb(need)}): {' and '.join(reasons)}, and the loaded "
        f"models are busy: {', '.join(described) or 'none'}; retry when they finish, or "
        "raise --max-memory / SHOAL_MAX_MEMORY or --max-loaded-models / SHOAL_MAX_LOADED_MODELS"
    )


def _mb(n: int) -> str:
    return f"{n / _MB:.0f} MB"


# -- settings -----------------------------------------------------------------------------------

_ENV_MEMORY = "SHOAL_MAX_MEMORY"
_ENV_COUNT = "SHOAL_MAX_LOADED_MODELS"
_ENV_KEEP_ALIVE = "SHOAL_KEEP_ALIVE"
_NO_LIMIT = frozenset({"none", "unlimited", "off"})
_NEVER = frozenset({"never", "forever", "inf", "infinite"})
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(%|b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)")
_UNIT_BYTES = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class ResidencySettings:
    """How many models may stay loaded, in how much memory, for how long when idle.

    None means no limit (memory, count) or never unloading when idle (keep-alive).
    :func:`residency_settings` builds one from options and the environment.
    """

    max_memory_mb: int | None = None
    max_loaded_models: int | None = DEFAULT_MAX_LOADED_MODELS
    keep_alive_s: float | None = DEFAULT_KEEP_ALIVE_S

    def __post_init__(self) -> None:
        if self.max_memory_mb is not None and self.max_memory_mb < 1:
            raise UserError(f"the memory budget must be at least 1 MB, not {self.max_memory_mb}")
        if self.max_loaded_models is not None and self.max_loaded_models < 1:
            raise UserError(
                f"at least one model must be allowed to load, not {self.max_loaded_models}"
            )
        if self.keep_alive_s is not None and not 0 <= self.keep_alive_s < math.inf:
            raise UserError(
                f"keep-alive must be 0 or more seconds (None: never), not {self.keep_alive_s}"
            )

    def describe(self) -> str:
        """One line for humans (``shoal doctor``, ``shoal serve``)."""
        memory = (
            "no memory budget"
            if self.max_memory_mb is None
            else f"a memory budget of {self.max_memory_mb} MB"
        )
        count = (
            "any number of models"
            if self.max_loaded_models is None
            else f"up to {self.max_loaded_models} model{'s' * (self.max_loaded_models != 1)}"
        )
        if self.keep_alive_s is None:
            idle = "idle models stay loaded"
        elif self.keep_alive_s == 0:
            idle = "models unload after each request"
        else:
            idle = f"idle models unload after {format_duration(self.keep_alive_s)}"
        return f"{count} loaded within {memory}; {idle}"


def residency_settings(
    *,
    max_memory: str | None = None,
    max_loaded_models: str | None = None,
    keep_alive: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResidencySettings:
    """The residency settings: each argument if given (the ``shoal serve`` options), else its
    environment variable (``SHOAL_MAX_MEMORY``, ``SHOAL_MAX_LOADED_MODELS``,
    ``SHOAL_KEEP_ALIVE``; empty counts as unset), else the default (75 % of total RAM, 3
    models, 5 minutes). A value that does not parse is a :class:`UserError` naming it."""
    env = os.environ if environ is None else environ

    def pick(value: str | None, option: str, variable: str) -> tuple[str | None, str]:
        if value is not None:
            return value, option
        return (env.get(variable) or None), variable

    memory_text, memory_label = pick(max_memory, "--max-memory", _ENV_MEMORY)
    count_text, count_label = pick(max_loaded_models, "--max-loaded-models", _ENV_COUNT)
    keep_text, keep_label = pick(keep_alive, "--keep-alive", _ENV_KEEP_ALIVE)
    if memory_text is None:
        memory_mb: int | None = _total_memory_bytes() * DEFAULT_MAX_MEMORY_PERCENT // 100 // _MB
    else:
        memory_mb = parse_max_memory(memory_text, label=memory_label)
    return ResidencySettings(
        max_memory_mb=memory_mb,
        max_loaded_models=(
            DEFAULT_MAX_LOADED_MODELS
            if count_text is None
            else parse_max_loaded_models(count_text, label=count_label)
        ),
        keep_alive_s=(
            DEFAULT_KEEP_ALIVE_S
            if keep_text is None
            else parse_keep_alive(keep_text, label=keep_label)
        ),
    )


def parse_max_memory(
    text: str, *, label: str = _ENV_MEMORY, total_bytes: int | None = None
) -> int | None:
    """A memory budget in MB from ``6GB``, ``6000MB``, ``512MiB``, ``75%`` (of ``total_bytes``,
    default the machine's RAM) or ``none`` (no budget, None). Binary units: 1GB = 1024 MB."""
    value = text.strip().lower()
    if value in _NO_LIMIT:
        return None
    hint = "use a size such as 6GB or 6000MB, a share of RAM such as 75%, or none"
    match = _SIZE.fullmatch(value)
    if match is None:
        if re.fullmatch(r"\d+(?:\.\d+)?", value):
            raise UserError(f"{label}={text!r} needs a unit: {value}MB, {value}GB or {value}%")
        raise UserError(f"{label}={text!r} is not a memory size: {hint}")
    number, unit = float(match[1]), match[2]
    if unit == "%":
        if not 0 < number <= 100:
            raise UserError(f"{label}={text!r}: a share of RAM must be between 0 and 100%")
        total = _total_memory_bytes() if total_bytes is None else total_bytes
        size = total * number / 100
    else:
        size = number * _UNIT_BYTES[unit[0]]
    mb = int(size // _MB)
    if mb < 1:
        raise UserError(f"{label}={text!r} is less than 1 MB: {hint}")
    return mb


def parse_max_loaded_models(text: str, *, label: str = _ENV_COUNT) -> int | None:
    """How many models may be loaded at once: a positive whole number, or ``none`` (no limit)."""
    value = text.strip().lower()
    if value in _NO_LIMIT:
        return None
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{label}={text!r} is not a number of models: use 1 or more, or none")
    return int(value)


def parse_keep_alive(text: str, *, label: str = _ENV_KEEP_ALIVE) -> float | None:
    """Seconds an idle model stays loaded, from ``300`` (seconds), ``30s``, ``5m``, ``1h30m``,
    ``0`` (unload after each request), or ``-1`` / any negative / ``never`` (None: never)."""
    value = text.strip().lower().replace(" ", "")
    if value in _NEVER:
        return None
    negative = value.startswith("-")
    body = value.removeprefix("-")
    seconds: float | None = None
    if re.fullmatch(r"\d+(?:\.\d+)?", body):
        seconds = float(body)
    elif _DURATION.fullmatch(body):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(body))
    if seconds is None:
        raise UserError(
            f"{label}={text!r} is not a duration: use seconds (300) or 30s, 5m, 1h; "
            "0 unloads after each request, -1 never unloads"
        )
    return None if negative and seconds > 0 else seconds


def format_duration(seconds: float) -> str:
    """``300`` -> ``5m``, ``5400`` -> ``1h30m``, ``45.5`` -> ``45.5s``."""
    if seconds < 60 or seconds != int(seconds):
        return f"{seconds:g}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts)


def _total_memory_bytes() -> int:
    return int(psutil.virtual_memory().total)


# -- the process-wide manager ------------------------------------------------------------------

_default: ResidencyManager | None = None
_default_lock = threading.Lock()


def default_residency() -> ResidencyManager:
    """The manager in-process models use outside a server: built on first use from
    :func:`residency_settings` (the environment), then shared by the whole process."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ResidencyManager.from_settings(residency_settings())
        return _default


def set_default_residency(manager: ResidencyManager | None) -> None:
    """Replace the process-wide manager (None: rebuild it from the environment on next use).
    A worker's child process installs an unlimited one: its parent decides what stays loaded."""
    global _default
    with _default_lock:
        _default = manager
