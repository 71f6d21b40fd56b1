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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from shoal.exceptions import OverloadedError, UnknownModelError
from shoal.models import ALIASES, Model, WorkerModel, resolve_model
from shoal.server.metrics import ServerMetrics

__all__ = ["Engine", "EnginePool", "ModelFactory"]

ModelFactory = Callable[[str], Model]


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
    ) -> None:
        self.reference = reference
        self.model = model
        self.max_active = max_active
        self.max_queue = max_queue
        self.metrics = metrics
        self._slots = asyncio.Semaphore(max_active)
        self.active = 0
        self.waiting = 0
        #: moving average of how long an admitted request holds its slot, in seconds
        self.service_seconds = 2.0
        self._prepared = False
        self.load_error: str | None = None

    @property
    def state(self) -> str:
        """``stopped``, ``loading``, ``ready`` or ``failed`` (see ``GET /health``)."""
        if isinstance(self.model, WorkerModel):
            return self.model.state
        if self.load_error is not None:
            return "failed"
        return "ready" if self._prepared else "stopped"

    async def prepare(self) -> None:
        """Load the model (in its worker) now rather than on the first request."""
        try:
            await self.model.prepare()
        except Exception as exc:
            self.load_error = str(exc)
            self.metrics.model_ready.labels(self.reference).set(0)
            raise
        self._prepared = True
        self.load_error = None
        self.metrics.model_ready.labels(self.reference).set(1)

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
            yield
        finally:
            self.active -= 1
            self._slots.release()
            elapsed = time.monotonic() - started
            self.service_seconds = 0.8 * self.service_seconds + 0.2 * elapsed
            self._gauges()

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
    ) -> None:
        self.references = references
        self.metrics = metrics
        self.max_active = max_active
        self.max_queue = max_queue
        self.isolate = isolate
        self.load_timeout = load_timeout
        self._factory = factory
        self._engines: dict[str, Engine] = {}

    @property
    def default(self) -> str:
        return self.references[0]

    def servable(self) -> list[str]:
        """What ``GET /v1/models`` lists: the configured models, then every known alias."""
        return list(dict.fromkeys([*self.references, *ALIASES]))

    def get(self, reference: str | None) -> Engine:
        """The engine for ``reference`` (None: the default model), created if needed."""
        ref = (reference or self.default).strip()
        engine = self._engines.get(ref)
        if engine is None:
            if ref not in self.references and ref not in ALIASES:
                raise UnknownModelError(
                    f"the model {ref!r} is not served here; "
                    f"models: {', '.join(self.servable())} (see GET /v1/models)"
                )
            engine = self._engines[ref] = Engine(
                ref,
                self._make_model(ref),
                max_active=self.max_active,
                max_queue=self.max_queue,
                metrics=self.metrics,
            )
        return engine

    def _make_model(self, reference: str) -> Model:
        if self._factory is not None:
            return self._factory(reference)
        if not self.isolate:
            return resolve_model(reference)
        if reference.endswith(".gguf") and not Path(reference).expanduser().is_file():
            raise UnknownModelError(f"model file not found: {reference}")

        def on_event(event: str) -> None:
            self.metrics.model_events.labels(reference, event).inc()
            if event in ("crash", "failed"):
                self.metrics.model_ready.labels(reference).set(0)
            elif event == "ready":
                self.metrics.model_ready.labels(reference).set(1)

        return WorkerModel(reference, start_timeout=self.load_timeout, on_event=on_event)

    def engines(self) -> dict[str, Engine]:
        return dict(self._engines)

    async def close(self) -> None:
        for engine in self._engines.values():
            with contextlib.suppress(Exception):
                await engine.model.close()
