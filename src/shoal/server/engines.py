"""The models a server runs, each behind a bounded queue.

An :class:`Engine` is one served model plus its admission control: at most ``max_active``
requests run on it at once (the embedded engine generates for one sequence at a time, so more
would only interleave), at most ``max_queue`` wait; the next one gets
:class:`~shoal.exceptions.OverloadedError` (HTTP 429) with a ``Retry-After`` estimated from the
recent service time. The :class:`EnginePool` creates engines on first use, from the references
the server was started with or any alias the registry knows, and reports their readiness.

With ``isolate=True`` (the default of ``shoal serve``) every model is a
:class:`~shoal.models.WorkerModel`: the engine runs in a child process, and a crash there fails
only the request in flight (503) while the worker restarts.

Residency: the pool's one :class:`~shoal.models.ResidencyManager` (limits from the server
settings) holds the model of every admitted request. A model that is not loaded (never yet, or
unloaded) is loaded first, after idle models are unloaded to make room, least recently used
first; a request that cannot be given room fails with
:class:`~shoal.exceptions.MemoryBudgetError` (503). Idle models are unloaded when their
keep-alive runs out. The queue comes first: a request waiting for a slot holds no model, so only
running requests keep a model loaded. Models that are not Residents (test models) are not
managed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from shoal.exceptions import MemoryBudgetError, OverloadedError, UnknownModelError, UserError
from shoal.models import (
    ALIASES,
    Model,
    ResidencyManager,
    ResidencySettings,
    ResidencySnapshot,
    WorkerModel,
    is_remote_reference,
    resolve_model,
)
from shoal.models.catalog import split_reference
from shoal.server.metrics import ServerMetrics

__all__ = ["Engine", "EnginePool", "ModelFactory"]

ModelFactory = Callable[[str], Model]

_MB = 2**20
log = logging.getLogger("shoal.server")


class Engine:
    """One served model and its queue."""

    def __init__(
        self,
        reference: str,
        model: Model,
        *,
        max_active: int,
        max_queue: int,
        metrics: ServerMetrics,
        residency: ResidencyManager | None = None,
    ) -> None:
        self.reference = reference
        self.model = model
        self.max_active = max_active
        self.max_queue = max_queue
        self.metrics = metrics
        self.residency = residency or ResidencyManager()
        self._slots = asyncio.Semaphore(max_active)
        self.active = 0
        self.waiting = 0
        #: moving average of how long an admitted request holds its slot, in seconds
        self.service_seconds = 2.0
        self._prepared = False
        self.load_error: str | None = None

    @property
    def state(self) -> str:
        """``stopped`` (not loaded yet), ``loading``, ``ready``, ``unloaded`` (by the residency
        limits: the next request loads it again) or ``failed`` (see ``GET /health``)."""
        if isinstance(self.model, WorkerModel):
            return self.model.state
        if self.load_error is not None:
            return "failed"
        status = self.residency.status(self.model)
        if status is not None:
            return "unloaded" if status.state == "unloading" else status.state
        return "ready" if self._prepared else "stopped"

    async def prepare(self) -> None:
        """Load the model (in its worker) now rather than on the first request, making room
        for it under the residency limits as a request would."""
        try:
            await self.residency.load(self.model)
        except MemoryBudgetError:
            raise  # not a load failure: the model itself is fine
        except Exception as exc:
            self._load_failed(exc)
            raise
        self._prepared = True
        self._loaded()

    def _loaded(self) -> None:
        self.load_error = None
        self.metrics.model_ready.labels(self.reference).set(1)

    def _load_failed(self, exc: Exception) -> None:
        self.load_error = str(exc)
        self.metrics.model_ready.labels(self.reference).set(0)

    def retry_after(self) -> float:
        """Seconds until a queue slot is likely to free up."""
        ahead = self.waiting + self.active
        return max(1.0, self.service_seconds * ahead / self.max_active)

    def check_capacity(self) -> None:
        """Raise :class:`OverloadedError` if a request arriving now would be refused (a stream
        checks before it starts, so the refusal is a 429 status rather than an event)."""
        if self.active >= self.max_active and self.waiting >= self.max_queue:
            self.metrics.rejected.labels(self.reference, "queue_full").inc()
            raise OverloadedError(
                f"{self.reference} is busy: {self.active} running, {self.waiting} waiting "
                f"(queue limit {self.max_queue}); retry later",
                retry_after=self.retry_after(),
            )

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold one of the model's slots for the body; 429 when the queue is full."""
        self.check_capacity()
        self.waiting += 1
        self._gauges()
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        self._gauges()
        started = time.monotonic()
        try:
            if not self._prepared:
                await self.prepare()
            async with self._held():
                yield
        finally:
            self.active -= 1
            self._slots.release()
            elapsed = time.monotonic() - started
            self.service_seconds = 0.8 * self.service_seconds + 0.2 * elapsed
            self._gauges()

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[None]:
        """The model held by the residency manager for one request (loaded again first if it
        was unloaded); a failed reload is recorded as a failed load."""
        held = False
        try:
            async with self.residency.use(self.model):
                held = True
                if self.load_error is not None:
                    self._loaded()
                yield
        except Exception as exc:
            if not held and not isinstance(exc, MemoryBudgetError):
                self._load_failed(exc)
            raise

    def _gauges(self) -> None:
        self.metrics.queue_depth.labels(self.reference).set(self.waiting)
        self.metrics.active.labels(self.reference).set(self.active)

    def health(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "state": self.state,
            "active": self.active,
            "waiting": self.waiting,
        }
        if isinstance(self.model, WorkerModel):
            info["restarts"] = self.model.restarts
            info["pid"] = self.model.pid
            if self.model.last_error:
                info["last_error"] = self.model.last_error
            if self.model.load_seconds is not None:
                info["load_seconds"] = round(self.model.load_seconds, 3)
        elif self.load_error:
            info["last_error"] = self.load_error
        status = self.residency.status(self.model)
        if status is not None:
            info["memory_mb"] = round(status.resident_bytes / _MB) if status.loaded else 0
            idle = status.idle_seconds
            info["idle_s"] = None if idle is None else round(idle, 1)
            info["loads"] = status.loads
            info["unloads"] = sum(status.unloads.values())
        return info


class EnginePool:
    """Engines by model reference, created on first use."""

    def __init__(
        self,
        references: tuple[str, ...],
        *,
        metrics: ServerMetrics,
        max_active: int = 1,
        max_queue: int = 32,
        isolate: bool = True,
        load_timeout: float = 300.0,
        factory: ModelFactory | None = None,
        residency: ResidencySettings | None = None,
    ) -> None:
        self.references = references
        self.metrics = metrics
        self.max_active = max_active
        self.max_queue = max_queue
        self.isolate = isolate
        self.load_timeout = load_timeout
        self._factory = factory
        self._engines: dict[str, Engine] = {}
        #: models built from a deployment file or an agent spec's ``models:``, by name
        self._named: dict[str, Model] = {}
        #: keeps the loaded models within the limits (None settings: no limits)
        self.residency = (
            ResidencyManager(on_event=self._on_residency)
            if residency is None
            else ResidencyManager.from_settings(residency, on_event=self._on_residency)
        )
        metrics.watch_residency(self.residency_snapshot)

    @property
    def default(self) -> str:
        return self.references[0]

    def servable(self) -> list[str]:
        """What ``GET /v1/models`` lists: the configured models, the named ones, then every
        known alias."""
        return list(dict.fromkeys([*self.references, *self._named, *ALIASES]))

    def add_named(self, name: str, model: Model) -> None:
        """Serve ``model`` (built from a deployment or a spec's ``models:``) as ``name``."""
        if name in self._named or name in ALIASES:
            what = "another named model" if name in self._named else "a catalog alias"
            raise UserError(f"the model name {name!r} is already {what}; rename it")
        self._named[name] = model

    def get(self, reference: str | None) -> Engine:
        """The engine for ``reference`` (None: the default model), created if needed."""
        ref = (reference or self.default).strip()
        engine = self._engines.get(ref)
        if engine is None:
            named = self._named.get(ref)
            if (
                named is None
                and ref not in self.references
                and split_reference(ref)[0] not in ALIASES
            ):
                raise UnknownModelError(
                    f"the model {ref!r} is not served here; "
                    f"models: {', '.join(self.servable())} (see GET /v1/models)"
                )
            engine = self._engines[ref] = Engine(
                ref,
                named if named is not None else self.make_model(ref),
                max_active=self.max_active,
                max_queue=self.max_queue,
                metrics=self.metrics,
                residency=self.residency,
            )
        return engine

    def make_model(self, reference: str) -> Model:
        """The model for a reference, as this server runs it: in a worker process when
        isolating (embedded engines), in-process otherwise; a remote endpoint is a client
        either way (nothing of it runs here to isolate)."""
        if self._factory is not None:
            return self._factory(reference)
        if not self.isolate or is_remote_reference(reference):
            return resolve_model(reference)
        if reference.endswith(".gguf") and not Path(reference).expanduser().is_file():
            raise UnknownModelError(f"model file not found: {reference}")

        def on_event(event: str) -> None:
            self.metrics.model_events.labels(reference, event).inc()
            if event in ("crash", "failed", "unload"):
                self.metrics.model_ready.labels(reference).set(0)
            elif event == "ready":
                self.metrics.model_ready.labels(reference).set(1)

        return WorkerModel(reference, start_timeout=self.load_timeout, on_event=on_event)

    def engines(self) -> dict[str, Engine]:
        return dict(self._engines)

    def residency_snapshot(self) -> ResidencySnapshot:
        """The residency manager's view of the served models, named by their references."""
        models = []
        for reference, engine in self.engines().items():
            status = self.residency.status(engine.model)
            if status is not None:
                models.append(dataclasses.replace(status, name=reference))
        return dataclasses.replace(self.residency.snapshot(), models=tuple(models))

    def _on_residency(self, kind: str, model: object, reason: str) -> None:
        for reference, engine in self.engines().items():
            if engine.model is model:
                self.metrics.model_ready.labels(reference).set(1 if kind == "load" else 0)
                if kind == "unload":
                    log.info("unloaded %s (%s)", reference, reason)

    async def close(self) -> None:
        """Stop the keep-alive reaper, unload the loaded models (reason ``shutdown``), then
        close every model."""
        with contextlib.suppress(Exception):
            await self.residency.aclose()
        for engine in self._engines.values():
            with contextlib.suppress(Exception):
                await engine.model.close()
