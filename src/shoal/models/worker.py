"""A model run in a child process, so that the engine dying never takes its caller down.

:class:`WorkerModel` resolves a model reference in a child started with the ``spawn`` method
(never ``fork``: llama.cpp runs threads) and forwards every request to it over one duplex
:func:`multiprocessing.Pipe`. A native crash, an out-of-memory kill or a ``SIGKILL`` of the
child fails only the requests it was serving (:class:`~shoal.exceptions.ModelCrashedError`);
a new child is started at once and later requests wait for it.

Protocol: pickled tuples; ``rid`` is a request id chosen by the parent, unique per child.

- child → parent, once: ``("ready", ModelProfile, load_seconds)`` after ``await
  model.prepare()``, or ``("failed", class_name, message)``, after which the child exits;
- parent → child: ``("generate", rid, messages, params)``, ``("count", rid, messages,
  params)``, ``("cancel", rid)`` (stop that generation: the task iterating the model's stream
  is cancelled, which closes the stream and so stops the engine), ``("exit",)``;
- child → parent: ``("delta", rid, text)`` any number of times then ``("done", rid,
  ModelResponse)`` for a generation; ``("count", rid, n)`` for a count; ``("error", rid,
  class_name, message)`` for either. Only an error's class name and message cross the pipe;
  the parent raises the :mod:`shoal.exceptions` class of that name (else :class:`ModelError`).

Residency: a :class:`WorkerModel` is a :class:`~shoal.models.residency.Resident`.
:meth:`WorkerModel.unload` stops the child to free its memory (state ``unloaded``) and the next
request starts a new one, where :meth:`WorkerModel.close` leaves it ``stopped``;
:meth:`WorkerModel.memory_bytes` is the child's resident set size (with any processes it
started), and the largest measured becomes :meth:`WorkerModel.estimated_bytes` for later loads
(before the first: the caller's ``estimated_bytes``, else the registry's estimate for the
reference, from a GGUF path's size or an installed alias's chosen variant, else
:data:`DEFAULT_ESTIMATED_BYTES`). The child installs an unlimited
default residency manager: what stays loaded is the parent's decision.

Parent: one reader thread per child routes replies by id, to an :class:`asyncio.Queue` (by
``loop.call_soon_threadsafe``) for streams, to a :class:`concurrent.futures.Future` for the
synchronous :meth:`WorkerModel.count_tokens` and :attr:`WorkerModel.profile` (the only places
that wait on the pipe). Child: a reader thread feeds commands to an asyncio loop that runs
each generation and count as a task, so counts and new requests overlap a generation. The
child ignores ``SIGINT`` (Ctrl-C reaches the whole process group; the parent decides), exits
when the pipe closes (it never outlives its parent), and inherits the parent's
no-real-models switch (:mod:`shoal.models.guard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib
import itertools
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import psutil

from shoal import exceptions
from shoal.exceptions import ModelCrashedError, ModelError, ModelLoadError, ShoalError
from shoal.messages import Message
from shoal.models.base import Model, ModelRequestParameters, ResponseDone, TextDelta
from shoal.models.guard import allow_model_requests, model_requests_allowed
from shoal.models.profiles import ModelProfile
from shoal.models.registry import estimated_memory_mb
from shoal.models.residency import ResidencyManager, set_default_residency

__all__ = ["DEFAULT_ESTIMATED_BYTES", "WorkerModel", "WorkerState"]

#: ``stopped``: no child (never started, or closed); ``unloaded``: the child was stopped to free
#: memory and the next request starts another; ``loading``, ``ready``, ``failed`` (a load failed)
WorkerState = Literal["stopped", "unloaded", "loading", "ready", "failed"]
Msg: TypeAlias = tuple[Any, ...]
if TYPE_CHECKING:
    Pipe: TypeAlias = Connection[Msg, Msg]

#: seconds :meth:`WorkerModel.close` gives a child to exit before terminating it
CLOSE_GRACE = 10.0
#: seconds :meth:`WorkerModel.count_tokens` waits for the child's answer
COUNT_TIMEOUT = 60.0
#: memory assumed for a model before its first load when nothing better is known: a 0.5B model
#: at 4 bits with a 4096-token context takes about 700 MB in its own process
DEFAULT_ESTIMATED_BYTES = 2**30

_CTX = multiprocessing.get_context("spawn")
_log = logging.getLogger(__name__)


class WorkerModel(Model):
    """The model ``reference`` names, run by ``factory(reference)`` in a child process.

    ``on_event`` is called, from any thread, with ``load`` (a child starts), ``ready``,
    ``failed`` (a load failed), ``crash`` and ``restart`` (a loaded child died and another
    is starting; a ``load`` follows), and ``unload`` (:meth:`unload` stopped the child). Keep it
    cheap. ``estimated_bytes`` is the memory the caller expects the loaded model to take.
    """

    def __init__(
        self,
        reference: str,
        *,
        factory: str = "shoal.models.registry:resolve_model",
        start_timeout: float = 300.0,
        on_event: Callable[[str], None] | None = None,
        estimated_bytes: int | None = None,
    ) -> None:
        if ":" not in factory:
            raise ValueError(f"factory must be 'module:callable', got {factory!r}")
        self.name = reference
        self.factory = factory
        self.start_timeout = start_timeout
        self.on_event = on_event
        self.state: WorkerState = "stopped"
        self.last_error: str | None = None
        self.restarts = 0
        self.load_seconds: float | None = None
        self._estimated_bytes = estimated_bytes
        self._measured_bytes: int | None = None  # the largest RSS measured so far
        self._profile: ModelProfile | None = None
        self._worker: _Worker | None = None
        self._readers: set[threading.Thread] = set()
        self._lock = threading.Lock()  # guards _worker, state, restarts, _readers

    @property
    def pid(self) -> int | None:
        """The current child's pid (None when there is none)."""
        worker = self._worker
        return worker.pid if worker is not None else None

    @property
    def loaded(self) -> bool:
        """Whether a child has the model loaded now."""
        worker = self._worker
        return worker is not None and self.state == "ready" and worker.loaded and not worker.dead

    def memory_bytes(self) -> int | None:
        """The child's resident memory now, with its own children (None when not loaded)."""
        worker = self._worker
        if worker is None or not self.loaded:
            return None
        return self._measure(worker)

    def estimated_bytes(self) -> int:
        """The memory a load is expected to take: the largest measured so far, else the
        caller's estimate, else a guess from the GGUF file's size, else the default."""
        if self._measured_bytes is not None:
            return self._measured_bytes
        if self._estimated_bytes is None:
            self._estimated_bytes = _estimate_from_reference(self.name)
        return self._estimated_bytes

    @property
    def profile(self) -> ModelProfile:  # type: ignore[override]
        """The child's model profile. Blocks until it is loaded: call :meth:`prepare` first."""
        if self._profile is None:
            _raise_unless_ready(self._start().ready.result(self.start_timeout + CLOSE_GRACE))
        assert self._profile is not None
        return self._profile

    async def prepare(self) -> None:
        """Start the child if needed and wait until its model is loaded (or raise why not)."""
        await self._ready_worker()

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[TextDelta | ResponseDone]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        sink = functools.partial(_to_queue, loop, queue)
        for attempt in range(2):  # a child that died before the request reached it: retry once
            worker = await self._ready_worker()
            try:
                rid = worker.open(sink)
                break
            except ModelCrashedError:
                if attempt:
                    raise
        finished = False
        try:
            worker.send(("generate", rid, list(messages), _picklable(params)))
            while True:
                message = await queue.get()
                if message[0] == "delta":
                    yield TextDelta(message[2])
                    continue
                finished = True
                if message[0] == "done":
                    yield ResponseDone(message[2])
                    return
                raise _rebuild(message[2], message[3])
        finally:
            if not finished:  # the consumer went away (closed, cancelled): stop the engine
                worker.forget(rid)
                with contextlib.suppress(ModelCrashedError):
                    worker.send(("cancel", rid))

    def count_tokens(self, messages: Sequence[Message], params: ModelRequestParameters) -> int:
        """The child model's count. Blocks until it answers (it counts alongside a running
        generation); the base estimate while the child is not ready or if it dies meanwhile."""
        worker = self._worker
        if worker is None or self.state != "ready" or not worker.loaded:
            return super().count_tokens(messages, params)
        reply: Future[Msg] = Future()
        reply.set_running_or_notify_cancel()
        try:
            rid = worker.open(reply.set_result)
            worker.send(("count", rid, list(messages), _picklable(params)))
            message = reply.result(COUNT_TIMEOUT)
        except ModelCrashedError:
            return super().count_tokens(messages, params)
        except TimeoutError:
            raise ModelError(f"{self.name} did not count tokens in {COUNT_TIMEOUT:g} s") from None
        if message[0] == "count":
            return int(message[2])
        if message[2] == ModelCrashedError.__name__:
            return super().count_tokens(messages, params)
        raise _rebuild(message[2], message[3])

    async def close(self) -> None:
        """Ask the child to exit and wait for it (terminated, then killed, if it lingers)."""
        await self._stop_child("stopped")

    async def unload(self) -> None:
        """Stop the child to free its memory; the next request starts a new one. Requests in
        flight fail as on :meth:`close`: call it when the model is idle (the residency manager
        does). Nothing to do when no child runs."""
        worker = self._worker
        if worker is not None and self.loaded:
            self._measure(worker)  # remembered as the estimate of the next load
        if await self._stop_child("unloaded"):
            self._emit("unload")

    async def _stop_child(self, state: WorkerState) -> bool:
        """Stop the current child, if any; ``state`` afterwards. Whether there was one."""
        with self._lock:
            worker, self._worker = self._worker, None
            if worker is not None:
                worker.closing = state
            if worker is not None or state == "stopped":
                self.state = state
            readers = set(self._readers)
        await asyncio.to_thread(_stop, worker, readers)
        return worker is not None

    def _measure(self, worker: _Worker) -> int | None:
        rss = _tree_rss(worker.pid)
        if rss is not None:
            with self._lock:
                self._measured_bytes = max(self._measured_bytes or 0, rss)
        return rss

    # -- lifecycle --------------------------------------------------------------------------

    async def _ready_worker(self) -> _Worker:
        worker = self._start()
        _raise_unless_ready(await asyncio.wrap_future(worker.ready))
        return worker

    def _start(self) -> _Worker:
        """The current child, starting one if there is none (first use, after a failure)."""
        with self._lock:
            worker, started = self._worker, self._worker is None
            if worker is None:
                worker = self._worker = self._spawn_locked()
        if started:
            self._emit("load")
        return worker

    def _spawn_locked(self) -> _Worker:
        parent_end, child_end = _CTX.Pipe()
        process = _CTX.Process(
            target=_child_main,
            args=(child_end, self.name, self.factory, model_requests_allowed()),
            name=f"shoal-worker {self.name}",
            daemon=True,
        )
        process.start()
        child_end.close()  # the child's end lives in the child only: its death is our EOF
        worker = _Worker(self.name, process, parent_end)
        reader = threading.Thread(target=self._read, args=(worker,), name=process.name, daemon=True)
        self._readers.add(reader)
        self.state = "loading"
        reader.start()
        return worker

    def _read(self, worker: _Worker) -> None:
        """The reader thread of one child: its load outcome, its replies, then its end."""
        try:
            outcome = self._first_message(worker)
            if outcome[0] == "ready":
                with self._lock:
                    self._profile, self.load_seconds = outcome[1], outcome[2]
                    if self._worker is worker:
                        self.state = "ready"
                self._emit("ready")  # before the waiters wake: events stay in order
                worker.ready.set_result(outcome)
                self._measure(worker)
                while True:
                    try:
                        worker.deliver(worker.conn.recv())
                    except (EOFError, OSError):
                        break
                    except Exception:  # unreadable: treat the child as dead (it is reaped)
                        _log.exception("bad message from the engine process for %s", self.name)
                        break
            self._exited(worker, outcome)
        finally:
            with self._lock:
                self._readers.discard(threading.current_thread())

    def _first_message(self, worker: _Worker) -> Msg:
        try:
            if worker.conn.poll(self.start_timeout):
                message: Msg = worker.conn.recv()
                return message
        except (EOFError, OSError):
            return ("died", "ModelLoadError", f"the engine process for {self.name} died loading")
        except Exception as exc:  # an unreadable report: the child is reaped
            return ("failed", "ModelLoadError", f"bad load report from {self.name}: {exc!r}")
        with self._lock:
            if not worker.closing:
                worker.process.kill()
        return ("failed", "ModelLoadError", f"{self.name} did not load in {self.start_timeout:g} s")

    def _exited(self, worker: _Worker, outcome: Msg) -> None:
        """A child's pipe closed: it exited, failed to load, was closed, or crashed."""
        loaded = outcome[0] == "ready"
        with self._lock:
            worker.dead = True  # requests that find it now go to the next child
            closing = worker.closing
            if not closing:
                self._worker, self.state = None, "failed"
            if not closing and loaded:  # a crash: start the next child at once
                self.restarts += 1
                with contextlib.suppress(Exception):  # else the next request starts one
                    self._worker = self._spawn_locked()
        if closing:  # close() or unload() reaps the process
            why = f"{self.name} was {'unloaded' if closing == 'unloaded' else 'closed'}"
            worker.fail_all("ModelError", why)
            worker.close_conn()
            if not loaded:
                worker.ready.set_result(("failed", "ModelError", why))
            return
        if loaded:
            self._emit("crash", "restart", "load")
        how = _exit_status(_reap(worker.process))
        worker.close_conn()
        if loaded:
            self.last_error = (
                f"the engine process for {self.name} died ({how}); the request was lost, "
                "the engine is restarting"
            )
            worker.fail_all(ModelCrashedError.__name__, self.last_error)
            return
        text = f"{outcome[2]} ({how})" if outcome[0] == "died" else str(outcome[2])
        self.last_error = f"{outcome[1]}: {text}"
        self._emit("failed")
        worker.ready.set_result(("failed", outcome[1], text))

    def _emit(self, *events: str) -> None:
        callback = self.on_event
        if callback is None:
            return
        for event in events:
            try:
                callback(event)
            except Exception:
                _log.exception("on_event(%r) failed for %s", event, self.name)


class _Worker:
    """One child process, its pipe and the requests in flight on it (parent side)."""

    def __init__(self, name: str, process: BaseProcess, conn: Pipe) -> None:
        self.name = name
        self.process = process
        self.pid = process.pid
        self.conn = conn
        #: the load outcome; running from the start, so a waiter's cancellation cannot cancel it
        self.ready: Future[Msg] = Future()
        self.ready.set_running_or_notify_cancel()
        #: why the parent stops it (``stopped``: closed, ``unloaded``), set under
        #: WorkerModel._lock; empty while it runs
        self.closing = ""
        self.dead = False  # set before fail_all(): open() then refuses
        self._ids = itertools.count(1)
        self._sinks: dict[int, Callable[[Msg], object]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self.ready.done() and self.ready.result()[0] == "ready"

    def open(self, sink: Callable[[Msg], object]) -> int:
        with self._lock:
            if self.dead:
                raise ModelCrashedError(f"the engine process for {self.name} died")
            rid = next(self._ids)
            self._sinks[rid] = sink
            return rid

    def forget(self, rid: int) -> None:
        with self._lock:
            self._sinks.pop(rid, None)

    def send(self, message: Msg) -> None:
        try:
            with self._send_lock:
                self.conn.send(message)
        except OSError as exc:
            raise ModelCrashedError(
                f"the engine process for {self.name} died; the request was lost"
            ) from exc

    def deliver(self, message: Msg) -> None:
        with self._lock:
            if message[0] == "delta":
                sink = self._sinks.get(message[1])
            else:
                sink = self._sinks.pop(message[1], None)
        if sink is not None:
            sink(message)

    def fail_all(self, class_name: str, text: str) -> None:
        with self._lock:
            sinks, self._sinks = self._sinks, {}
        for rid, sink in sinks.items():
            sink(("error", rid, class_name, text))

    def close_conn(self) -> None:
        with self._send_lock:
            self.conn.close()


def _tree_rss(pid: int | None) -> int | None:
    """Resident memory of a process and its descendants (None if it is gone)."""
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        total = process.memory_info().rss
        children = process.children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return int(total)


def _estimate_from_reference(reference: str) -> int:
    """What the registry expects the reference to take (a GGUF path's size, an installed
    alias's chosen variant); the default for anything it does not know."""
    estimate = estimated_memory_mb(reference)
    return DEFAULT_ESTIMATED_BYTES if estimate is None else estimate * 2**20


def _stop(worker: _Worker | None, readers: set[threading.Thread]) -> None:
    if worker is not None:
        grace = 0.0  # a child still loading reads no commands: terminate it
        if worker.loaded:
            with contextlib.suppress(ModelCrashedError):
                worker.send(("exit",))
                grace = CLOSE_GRACE
        _reap(worker.process, grace)
    for reader in readers:
        reader.join()


def _reap(process: BaseProcess, grace: float = 5.0) -> int | None:
    """Wait for ``process`` (terminate, then kill it after ``grace``) and release it."""
    process.join(grace)
    if process.exitcode is None:
        process.terminate()
        process.join(2.0)
    if process.exitcode is None:
        process.kill()
        process.join()
    code = process.exitcode
    process.close()
    return code


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by signal {-code} ({signal.Signals(-code).name})"
    return f"exit code {code}"


def _to_queue(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Msg], message: Msg) -> None:
    with contextlib.suppress(RuntimeError):  # the consumer's event loop is gone
        loop.call_soon_threadsafe(queue.put_nowait, message)


def _picklable(params: ModelRequestParameters) -> ModelRequestParameters:
    if type(params.call_schemas) is dict:
        return params
    return dataclasses.replace(params, call_schemas=dict(params.call_schemas))


def _rebuild(class_name: str, message: str, default: type[ShoalError] = ModelError) -> ShoalError:
    """The error a child reported: the :mod:`shoal.exceptions` class of that name, if any."""
    cls = getattr(exceptions, class_name, None)
    if isinstance(cls, type) and issubclass(cls, ShoalError):
        return cls(message)
    return default(f"{class_name}: {message}")


def _raise_unless_ready(outcome: Msg) -> None:
    if outcome[0] != "ready":
        raise _rebuild(outcome[1], outcome[2], ModelLoadError)


# -- the child process ------------------------------------------------------------------------


def _child_main(conn: Pipe, reference: str, factory: str, allowed: bool) -> None:
    """The child's entry point: load the model, report, serve commands until ``exit``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_default_residency(ResidencyManager())  # no limits, no keep-alive: the parent decides
    try:
        with allow_model_requests(allowed):
            asyncio.run(_child_serve(conn, reference, factory))
    finally:
        conn.close()


async def _child_serve(conn: Pipe, reference: str, factory: str) -> None:
    started = time.perf_counter()
    try:
        module_name, _, attribute = factory.partition(":")
        make: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            make = getattr(make, part)
        model: Model = make(reference)
        await model.prepare()
        profile = model.profile
    except Exception as exc:
        conn.send(("failed", type(exc).__name__, str(exc)))
        return
    conn.send(("ready", profile, time.perf_counter() - started))
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Msg] = asyncio.Queue()
    threading.Thread(target=_child_read, args=(conn, loop, inbox), daemon=True).start()
    tasks: dict[int, asyncio.Task[None]] = {}
    while (message := await inbox.get())[0] != "exit":
        kind, rid = message[0], message[1]
        if kind == "cancel":
            if (running := tasks.get(rid)) is not None:
                running.cancel()
            continue
        task = tasks[rid] = asyncio.create_task(_child_job(conn, model, *message))
        task.add_done_callback(functools.partial(_forget_task, tasks, rid))
    for task in list(tasks.values()):
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    await model.close()


def _child_read(conn: Pipe, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[Msg]) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            message = ("exit",)
        loop.call_soon_threadsafe(inbox.put_nowait, message)
        if message[0] == "exit":
            return


def _forget_task(tasks: dict[int, asyncio.Task[None]], rid: int, _: object) -> None:
    tasks.pop(rid, None)


def _child_send(conn: Pipe, message: Msg) -> None:
    with contextlib.suppress(OSError):  # the parent is gone; the reader ends the loop
        conn.send(message)


async def _child_job(
    conn: Pipe, model: Model, kind: str, rid: int, messages: list[Message], params: Any
) -> None:
    """One ``generate`` or ``count`` command; errors go back as class name and message."""
    stream = model.request_stream(messages, params) if kind == "generate" else None
    try:
        if stream is None:
            count = await asyncio.to_thread(model.count_tokens, messages, params)
            return _child_send(conn, ("count", rid, count))
        async for event in stream:
            if isinstance(event, ResponseDone):
                return _child_send(conn, ("done", rid, event.response))
            _child_send(conn, ("delta", rid, event.text))
        raise ModelError(f"{model.name} ended its stream without a response")
    except Exception as exc:
        _child_send(conn, ("error", rid, type(exc).__name__, str(exc)))
    finally:  # also on cancellation: closing the stream stops the engine
        if (aclose := getattr(stream, "aclose", None)) is not None:
            await aclose()
