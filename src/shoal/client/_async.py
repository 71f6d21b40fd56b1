""":class:`AsyncShoalClient`: the flows of :mod:`shoal.client._flows`, run with
``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from shoal.client._config import ClientConfig, configure
from shoal.client._flows import Flow, Operations, Sleep
from shoal.client._models import AgentReply, ThreadInfo

__all__ = ["AsyncShoalClient"]

T = TypeVar("T")

#: how the client waits between attempts (tests replace it)
_sleep = asyncio.sleep


class AsyncShoalClient:
    """:class:`~shoal.client.ShoalClient` for asyncio code: the same arguments, the same
    methods as coroutines (``get_metrics`` excepted), ``async with`` and ``await aclose()``."""

    def __init__(
        self,
        endpoint: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        *,
        config: ClientConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._ops = Operations(configure(config, endpoint, api_key, timeout, max_retries))
        self._http = httpx.AsyncClient(timeout=self.config.timeout, transport=transport)

    @property
    def config(self) -> ClientConfig:
        return self._ops.config

    async def create_thread(self, metadata: Mapping[str, Any] | None = None) -> str:
        """A new, empty thread; returns its id."""
        return await self._run(self._ops.create_thread(metadata))

    async def send_message(
        self,
        message: str,
        thread_id: str | None = None,
        agent: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        instructions: str | None = None,
    ) -> AgentReply:
        """See :meth:`ShoalClient.send_message`: failures come back in the reply."""
        flow = self._ops.send_message(
            message, thread_id=thread_id, agent=agent, tools=tools, instructions=instructions
        )
        return await self._run(flow)

    async def submit_tool_outputs(
        self,
        thread_id: str,
        outputs: Mapping[str, Any],
        agent: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        instructions: str | None = None,
    ) -> AgentReply:
        """See :meth:`ShoalClient.submit_tool_outputs`."""
        flow = self._ops.submit_tool_outputs(
            thread_id, outputs, agent=agent, tools=tools, instructions=instructions
        )
        return await self._run(flow)

    async def get_thread_info(self, thread_id: str) -> ThreadInfo:
        """The thread's metadata, times and message count (404: ShoalAPIError)."""
        return await self._run(self._ops.get_thread_info(thread_id))

    async def delete_thread(self, thread_id: str) -> bool:
        """Delete the thread; False when there was no such thread."""
        return await self._run(self._ops.delete_thread(thread_id))

    async def health_check(self) -> bool:
        """True when the server is up and its default model loaded; never raises."""
        return await self._run(self._ops.health_check())

    def get_metrics(self) -> dict[str, Any]:
        """Counts and times of this client's calls (see docs/client.md)."""
        return self._ops.metrics.snapshot()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def close(self) -> None:
        """The same as :meth:`aclose`."""
        await self.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncShoalClient({self.config.endpoint!r})"

    async def _run(self, flow: Flow[T]) -> T:
        """Do what ``flow`` asks until it returns (see ``ShoalClient._run``)."""
        result: httpx.Response | None = None
        error: httpx.RequestError | None = None
        try:
            while True:
                effect = flow.send(result) if error is None else flow.throw(error)
                result, error = None, None
                if isinstance(effect, Sleep):
                    await _sleep(effect.seconds)
                    continue
                try:
                    result = await self._http.send(effect)
                except httpx.RequestError as exc:
                    error = exc
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            flow.close()
