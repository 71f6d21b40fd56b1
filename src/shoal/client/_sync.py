""":class:`ShoalClient`: the flows of :mod:`shoal.client._flows`, run with ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from shoal.client._config import ClientConfig, configure
from shoal.client._flows import Flow, Operations, Sleep
from shoal.client._models import AgentReply, ThreadInfo

__all__ = ["ShoalClient"]

T = TypeVar("T")

#: how the client waits between attempts (tests replace it)
_sleep = time.sleep


class ShoalClient:
    """A client of a Shoal server (``shoal serve``), for synchronous code.

    Arguments that are not None win over the environment (``SHOAL_ENDPOINT``,
    ``SHOAL_API_KEY``, ``SHOAL_TIMEOUT``, ``SHOAL_MAX_RETRIES``); ``config`` replaces the
    environment altogether. ``transport`` replaces httpx's network transport (tests pass an
    ``httpx.MockTransport``). The client is safe to share between threads; close it, or use it
    as a context manager, to release its connections.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        *,
        config: ClientConfig | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._ops = Operations(configure(config, endpoint, api_key, timeout, max_retries))
        self._http = httpx.Client(timeout=self.config.timeout, transport=transport)

    @property
    def config(self) -> ClientConfig:
        return self._ops.config

    def create_thread(self, metadata: Mapping[str, Any] | None = None) -> str:
        """A new, empty thread; returns its id."""
        return self._run(self._ops.create_thread(metadata))

    def send_message(
        self,
        message: str,
        thread_id: str | None = None,
        agent: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        instructions: str | None = None,
    ) -> AgentReply:
        """Add ``message`` to the thread (a new one when ``thread_id`` is None) and run the
        agent on it: ``agent`` names a hosted agent or a model (the server's default if None);
        ``tools`` are OpenAI function definitions the caller runs (see ``pending_calls``).

        A failure of the server or the run does not raise: the reply has ``success=False``
        and ``error``. Bad arguments raise :class:`~shoal.client.ClientUsageError`.
        """
        flow = self._ops.send_message(
            message, thread_id=thread_id, agent=agent, tools=tools, instructions=instructions
        )
        return self._run(flow)

    def submit_tool_outputs(
        self,
        thread_id: str,
        outputs: Mapping[str, Any],
        agent: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        instructions: str | None = None,
    ) -> AgentReply:
        """Continue a run that stopped at client tools: add each call's result (``outputs``
        maps :attr:`PendingCall.id` to the result; a result that is not text is sent as JSON)
        and run again. Pass the same ``agent`` and ``tools`` as the call that stopped. Failures
        come back in the reply, as for :meth:`send_message`.
        """
        flow = self._ops.submit_tool_outputs(
            thread_id, outputs, agent=agent, tools=tools, instructions=instructions
        )
        return self._run(flow)

    def get_thread_info(self, thread_id: str) -> ThreadInfo:
        """The thread's metadata, times and message count (404: ShoalAPIError)."""
        return self._run(self._ops.get_thread_info(thread_id))

    def delete_thread(self, thread_id: str) -> bool:
        """Delete the thread; False when there was no such thread."""
        return self._run(self._ops.delete_thread(thread_id))

    def health_check(self) -> bool:
        """True when the server is up and its default model loaded; never raises."""
        return self._run(self._ops.health_check())

    def get_metrics(self) -> dict[str, Any]:
        """Counts and times of this client's calls (see docs/client.md)."""
        return self._ops.metrics.snapshot()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShoalClient({self.config.endpoint!r})"

    def _run(self, flow: Flow[T]) -> T:
        """Do what ``flow`` asks until it returns."""
        result: httpx.Response | None = None
        error: httpx.RequestError | None = None
        try:
            while True:
                effect = flow.send(result) if error is None else flow.throw(error)
                result, error = None, None
                if isinstance(effect, Sleep):
                    _sleep(effect.seconds)
                    continue
                try:
                    result = self._http.send(effect)
                except httpx.RequestError as exc:
                    error = exc
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            flow.close()
