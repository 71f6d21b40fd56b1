"""Everything both clients do, written once and free of I/O.

Each operation (create a thread, send a message, ...) is a generator, a *flow*: it yields what
it needs done, an ``httpx.Request`` to send or a :class:`Sleep` to wait out, and is resumed with
the ``httpx.Response`` (or None after a sleep); an ``httpx.RequestError`` raised while sending
is thrown back into it at the ``yield``. The flow's return value is the operation's result.

:class:`~shoal.client.ShoalClient` runs flows with ``httpx.Client`` and ``time.sleep``,
:class:`~shoal.client.AsyncShoalClient` with ``httpx.AsyncClient`` and ``asyncio.sleep``;
request building, retries, response parsing and metrics live here only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as _metadata
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from shoal.client._config import ClientConfig
from shoal.client._errors import (
    ClientUsageError,
    ShoalAPIError,
    ShoalClientError,
    ShoalConnectionError,
    api_error,
    retry_after_seconds,
)
from shoal.client._models import (
    AgentReply,
    DeletedOut,
    HealthOut,
    RunOut,
    ThreadInfo,
    ThreadOut,
    failed_reply,
    parse,
    reply_from_run,
    thread_info_from,
)

__all__ = ["Flow", "Metrics", "Operations", "Sleep"]

T = TypeVar("T")


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds before the next attempt."""

    seconds: float


Effect = httpx.Request | Sleep
#: an operation: yields effects, is sent their results, returns ``T``
Flow = Generator[Effect, httpx.Response | None, T]

#: statuses worth another attempt: the queue is full (429), the model is loading or its
#: engine was restarted (503). Nothing was done for the failed attempt, so retrying is safe.
_RETRY_STATUSES = frozenset({429, 503})
#: transport errors raised before the request left: any request may be sent again
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: the connection broke after the request left: only a read may be sent again
_BROKEN = (httpx.ReadError, httpx.RemoteProtocolError)
_IDEMPOTENT = frozenset({"GET", "HEAD"})


def _user_agent() -> str:
    try:
        return f"shoal-client/{_metadata.version('shoal')}"
    except _metadata.PackageNotFoundError:
        return "shoal-client"


_USER_AGENT = _user_agent()

#: the clock of the latency metrics (tests replace it)
_clock = time.monotonic


class Metrics:
    """Counts of this client's operations (health checks excluded). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._ok = 0
        self._seconds = 0.0
        self._retries = 0
        self._tokens = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

    def record(self, *, ok: bool, seconds: float, usage: Mapping[str, int] | None = None) -> None:
        with self._lock:
            self._total += 1
            self._ok += ok
            self._seconds += seconds
            for key in self._tokens:
                self._tokens[key] += int((usage or {}).get(key, 0))

    def retried(self) -> None:
        with self._lock:
            self._retries += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            total = self._total
            return {
                "total_requests": total,
                "successful_requests": self._ok,
                "failed_requests": total - self._ok,
                "success_rate": self._ok / total if total else 0.0,
                "average_latency": self._seconds / total if total else 0.0,
                "retries": self._retries,
                **self._tokens,
            }


class Operations:
    """The flows of one client, with its configuration and metrics."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self._headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if config.api_key is not None:
            self._headers["Authorization"] = f"Bearer {config.api_key}"

    # -- operations ------------------------------------------------------------------------
    # Each public method checks its arguments at once (misuse raises before any request and is
    # not counted), then returns the flow.

    def create_thread(self, metadata: Mapping[str, Any] | None = None) -> Flow[str]:
        body = {"metadata": _check_metadata(metadata)}
        return self._measured(self._create_thread(body))

    def get_thread_info(self, thread_id: str) -> Flow[ThreadInfo]:
        return self._measured(self._get_thread_info(_text(thread_id, "thread_id")))

    def delete_thread(self, thread_id: str) -> Flow[bool]:
        return self._measured(self._delete_thread(_text(thread_id, "thread_id")))

    def send_message(
        self,
        message: str,
        *,
        thread_id: str | None = None,
        agent: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        instructions: str | None = None,
    ) -> Flow[AgentReply]:
        _text(message, "message")
        if thread_id is not None:
            _text(thread_id, "thread_id")
        run = _run_body(agent, tools, instructions)
        user = {"role": "user", "content": message}
        return self._measured(self._converse(thread_id, [user], agent, run))

    def submit_tool_outputs(
        self,
        thread_id: str,
        outputs: Mapping[str, Any],
        *,
        agent: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        instructions: str | None = None,
    ) -> Flow[AgentReply]:
        _text(thread_id, "thread_id")
        results = _tool_messages(outputs)
        run = _run_body(agent, tools, instructions)
        return self._measured(self._converse(thread_id, results, agent, run))

    def health_check(self) -> Flow[bool]:
        """True when the server answers that it is ready; one attempt, never raises."""
        try:
            response = yield from self._exchange("GET", "/health", retries=0)
        except ShoalClientError:
            return False
        if response.status_code != 200:
            return False
        try:
            return parse(response, HealthOut).ready
        except ShoalAPIError:
            return False

    # -- flows -----------------------------------------------------------------------------

    def _create_thread(self, body: dict[str, Any]) -> Flow[str]:
        response = yield from self._call("POST", "/v1/threads", body)
        return parse(response, ThreadOut).id

    def _get_thread_info(self, thread_id: str) -> Flow[ThreadInfo]:
        response = yield from self._call("GET", _thread_path(thread_id))
        return thread_info_from(parse(response, ThreadOut))

    def _delete_thread(self, thread_id: str) -> Flow[bool]:
        try:
            response = yield from self._call("DELETE", _thread_path(thread_id))
        except ShoalAPIError as exc:
            if exc.status == 404:
                return False
            raise
        return parse(response, DeletedOut).deleted

    def _converse(
        self,
        thread_id: str | None,
        messages: list[dict[str, Any]],
        agent: str | None,
        run: dict[str, Any],
    ) -> Flow[AgentReply]:
        """Create the thread if needed, add the messages, run. Failures become the reply."""
        try:
            if thread_id is None:
                thread_id = yield from self._create_thread({"metadata": {}})
            path = _thread_path(thread_id)
            for message in messages:
                yield from self._call("POST", f"{path}/messages", message)
            response = yield from self._call("POST", f"{path}/runs", run)
            return reply_from_run(parse(response, RunOut), response)
        except (ShoalAPIError, ShoalConnectionError) as exc:
            return failed_reply(exc, thread_id=thread_id, agent=agent)

    def _measured(self, flow: Flow[T]) -> Flow[T]:
        """``flow``, timed and counted in the metrics (a failed reply counts as a failure)."""
        started = _clock()
        try:
            result = yield from flow
        except Exception:
            self.metrics.record(ok=False, seconds=_clock() - started)
            raise
        if isinstance(result, AgentReply):
            ok, usage = result.success, result.usage
        else:
            ok, usage = True, None
        self.metrics.record(ok=ok, seconds=_clock() - started, usage=usage)
        return result

    # -- HTTP ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> Flow[httpx.Response]:
        """One request, retried as the configuration allows; an HTTP error raises."""
        response = yield from self._exchange(method, path, body, retries=self.config.max_retries)
        if response.is_error:
            raise api_error(response)
        return response

    def _exchange(
        self, method: str, path: str, body: Any = None, *, retries: int
    ) -> Flow[httpx.Response]:
        """The last response to the request after up to ``retries`` retries.

        Retried: a connection that could not be made (any method), one that broke while a
        ``GET`` was answered, and the statuses 429 and 503, after ``Retry-After`` seconds when
        the server says so, else after an exponential backoff; both capped by
        ``max_retry_delay``. Timeouts are not retried: the server may still be working.
        """
        request = httpx.Request(
            method,
            self.config.endpoint + path,
            json=body,
            headers=self._headers,
        )
        attempt = 0
        while True:
            try:
                response = yield request
            except httpx.RequestError as exc:
                retryable = isinstance(exc, _NOT_SENT) or (
                    isinstance(exc, _BROKEN) and method in _IDEMPOTENT
                )
                if not retryable or attempt >= retries:
                    raise self._connection_error(exc, attempt + 1) from exc
                delay = self._backoff(attempt)
            else:
                if not isinstance(response, httpx.Response):
                    raise TypeError(f"a flow was resumed with {response!r}, not a response")
                if response.status_code not in _RETRY_STATUSES or attempt >= retries:
                    return response
                hint = retry_after_seconds(response)
                delay = self._backoff(attempt) if hint is None else hint
            attempt += 1
            self.metrics.retried()
            yield Sleep(min(delay, self.config.max_retry_delay))

    def _backoff(self, attempt: int) -> float:
        return float(self.config.backoff * 2**attempt)

    def _connection_error(self, exc: httpx.RequestError, attempts: int) -> ShoalConnectionError:
        endpoint = self.config.endpoint
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, _NOT_SENT):
            return ShoalConnectionError(
                f"the Shoal server at {endpoint} did not answer within "
                f"{self.config.timeout:g} s ({type(exc).__name__}); raise the timeout "
                "(timeout= or SHOAL_TIMEOUT) for long runs"
            )
        detail = str(exc) or type(exc).__name__
        return ShoalConnectionError(f"cannot reach the Shoal server at {endpoint}{tries}: {detail}")


# -- argument checks -------------------------------------------------------------------------


def _thread_path(thread_id: str) -> str:
    return f"/v1/threads/{quote(thread_id, safe='')}"


def _text(value: object, what: str) -> str:
    """``value`` if it is a string with something in it; else a ClientUsageError."""
    if not isinstance(value, str) or not value.strip():
        raise ClientUsageError(f"{what} must be a non-empty string, not {value!r}")
    return value


def _run_body(
    agent: object, tools: Sequence[Mapping[str, Any]] | None, instructions: object
) -> dict[str, Any]:
    """The body of ``POST /v1/threads/{id}/runs``."""
    body: dict[str, Any] = {}
    if agent is not None:
        body["assistant_id"] = _text(agent, "agent")
    if tools:
        body["tools"] = _check_tools(tools)
    if instructions is not None:
        if not isinstance(instructions, str):
            raise ClientUsageError("instructions must be a string")
        body["instructions"] = instructions
    return body


def _tool_messages(outputs: object) -> list[dict[str, Any]]:
    """One ``role: "tool"`` message per call id; a result that is not text is sent as JSON."""
    if not isinstance(outputs, Mapping) or not outputs:
        raise ClientUsageError(
            "outputs must be a non-empty mapping of tool call id to result "
            "({call.id: result for call in reply.pending_calls})"
        )
    messages = []
    for call_id, result in outputs.items():
        _text(call_id, "a tool call id")
        if not isinstance(result, str):
            try:
                result = json.dumps(result, ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                raise ClientUsageError(
                    f"the result of {call_id!r} is neither text nor JSON-serialisable: {exc}"
                ) from None
        messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
    return messages


def _check_metadata(metadata: object) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise ClientUsageError("metadata must be a mapping with string keys")
    try:
        json.dumps(dict(metadata))
    except (TypeError, ValueError) as exc:
        raise ClientUsageError(f"metadata must be JSON-serialisable: {exc}") from None
    return dict(metadata)


def _check_tools(tools: object) -> list[dict[str, Any]]:
    """OpenAI function tools; a bare function (``{"name", "parameters", ...}``) is wrapped."""
    if isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Sequence):
        raise ClientUsageError("tools must be a list of OpenAI function tool definitions")
    checked: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise ClientUsageError(
                f"tools[{i}] must be a tool definition "
                '({"type": "function", "function": {"name": ..., "parameters": {...}}}), '
                f"not {tool!r}"
            )
        definition = dict(tool)
        if "function" not in definition and "name" in definition:
            definition = {"type": "function", "function": definition}
        function = definition.get("function")
        if definition.get("type", "function") != "function" or not isinstance(function, Mapping):
            raise ClientUsageError(f"tools[{i}] is not a function tool definition")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ClientUsageError(f"tools[{i}].function.name must be a non-empty string")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ClientUsageError(f"tools[{i}].function.parameters must be a JSON schema object")
        try:
            json.dumps(definition)
        except (TypeError, ValueError) as exc:
            raise ClientUsageError(f"tools[{i}] must be JSON-serialisable: {exc}") from None
        checked.append({"type": "function", **definition})
    return checked
