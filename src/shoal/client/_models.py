"""What the client returns (:class:`AgentReply`, :class:`ThreadInfo` and their parts), and the
pydantic models that read the server's JSON into them.

The wire models ignore fields they do not know, so a newer server with more fields still works;
a missing required field is an :class:`~shoal.client.ShoalAPIError` with code
``unexpected_response``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shoal.client._errors import ShoalClientError, unexpected_response

__all__ = [
    "AgentReply",
    "PendingCall",
    "ThreadInfo",
    "ToolCallInfo",
    "failed_reply",
    "parse",
    "reply_from_run",
    "thread_info_from",
]

#: outcomes of a tool call in which the function ran (``invalid`` and ``repeated`` did not run)
_RAN = frozenset({"ok", "failed", "timeout"})


@dataclass(frozen=True)
class PendingCall:
    """A call to a client-side tool (one passed in ``tools=``): the model asked for it, and the
    run stopped so that the caller can run it."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolCallInfo:
    """One call the agent made to a tool it runs itself, and what came of it."""

    name: str
    arguments: Any
    #: ``ok``, ``failed``, ``timeout``, ``invalid`` (not run) or ``repeated`` (not run again)
    outcome: str
    #: what the model was shown: the result, or the error message
    content: str


@dataclass(frozen=True)
class AgentReply:
    """The outcome of :meth:`ShoalClient.send_message`. Check ``success`` first.

    ``success`` is True when the run finished (``status == "completed"``) or stopped at calls to
    client tools (``status == "requires_action"``: run the ``pending_calls`` and send their
    results with :meth:`ShoalClient.submit_tool_outputs`). It is False when the run stopped
    early (``status == "incomplete"``) or failed; ``error`` then says why, and ``exception``
    holds the error for :meth:`raise_for_error`.
    """

    #: the answer as text (a structured answer is JSON text; the value itself is ``output``)
    content: str
    #: None only when the thread could not be created
    thread_id: str | None
    #: the hosted agent (or model) that ran, as the server names it
    agent: str | None
    model: str | None
    #: names of the agent's tools that ran, in order of first use
    tools_used: list[str]
    #: calls to client tools the model made; the run stopped at them
    pending_calls: list[PendingCall]
    #: ``prompt_tokens``, ``completion_tokens``, ``total_tokens`` of the run
    usage: dict[str, int]
    success: bool
    error: str | None = None
    run_id: str | None = None
    #: the run's status: ``completed``, ``requires_action``, ``incomplete``; None if none ran
    status: str | None = None
    #: ``final``, ``tool_calls`` or ``max_steps`` (Shoal's stop reasons)
    stop_reason: str | None = None
    #: the answer as the server sent it: text, or a JSON value for a structured answer
    output: Any = None
    tool_calls: list[ToolCallInfo] = field(default_factory=list)
    #: decisions the agent loop made in code (forced answers, repeated calls)
    notes: list[str] = field(default_factory=list)
    exception: ShoalClientError | None = field(default=None, repr=False, compare=False)

    def raise_for_error(self) -> AgentReply:
        """Raise the error of a failed reply; return the reply itself when it succeeded."""
        if self.success:
            return self
        if self.exception is not None:
            raise self.exception
        raise ShoalClientError(self.error or "the run failed")


@dataclass(frozen=True)
class ThreadInfo:
    """A thread as the server keeps it. Times are timezone-aware (UTC)."""

    id: str
    metadata: dict[str, Any]
    created_at: datetime
    #: when the thread last changed (a message added); the creation time for a new thread
    updated_at: datetime
    message_count: int


# -- the wire --------------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ThreadOut(_Wire):
    id: str
    created_at: float
    metadata: dict[str, Any] | None = None
    message_count: int = 0
    updated_at: float | None = None


class DeletedOut(_Wire):
    id: str | None = None
    deleted: bool


class HealthOut(_Wire):
    ready: bool = False


class _FunctionCall(_Wire):
    name: str
    arguments: str = "{}"


class _ToolCallOut(_Wire):
    id: str
    function: _FunctionCall


class _SubmitToolOutputs(_Wire):
    tool_calls: list[_ToolCallOut] = Field(default_factory=list)


class _RequiredAction(_Wire):
    submit_tool_outputs: _SubmitToolOutputs | None = None


class _Usage(_Wire):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _ToolCallRecordOut(_Wire):
    name: str
    arguments: Any = None
    outcome: str = "ok"
    content: str = ""


class _ShoalRunDetail(_Wire):
    output: Any = None
    stop_reason: str | None = None
    tool_calls: list[_ToolCallRecordOut] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class _IncompleteDetails(_Wire):
    reason: str | None = None


class RunOut(_Wire):
    id: str
    thread_id: str
    assistant_id: str | None = None
    model: str | None = None
    status: str
    required_action: _RequiredAction | None = None
    incomplete_details: _IncompleteDetails | None = None
    usage: _Usage | None = None
    shoal: _ShoalRunDetail = Field(default_factory=_ShoalRunDetail)


WireT = TypeVar("WireT", bound=BaseModel)


def parse(response: httpx.Response, model: type[WireT]) -> WireT:
    """``response``'s JSON body as ``model``; an unreadable body is a ShoalAPIError."""
    try:
        body = response.json()
    except ValueError:
        raise unexpected_response(response, "the body is not JSON") from None
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise unexpected_response(response, f"{where}: {first['msg']}") from None


def failed_reply(
    error: ShoalClientError, *, thread_id: str | None, agent: str | None
) -> AgentReply:
    """The reply for a request that failed before the run could finish."""
    return AgentReply(
        content="",
        thread_id=thread_id,
        agent=agent,
        model=None,
        tools_used=[],
        pending_calls=[],
        usage={},
        success=False,
        error=str(error),
        exception=error,
    )


def thread_info_from(thread: ThreadOut) -> ThreadInfo:
    created = _utc(thread.created_at)
    return ThreadInfo(
        id=thread.id,
        metadata=dict(thread.metadata or {}),
        created_at=created,
        updated_at=created if thread.updated_at is None else _utc(thread.updated_at),
        message_count=thread.message_count,
    )


def reply_from_run(run: RunOut, response: httpx.Response) -> AgentReply:
    """The reply for a run the server finished, stopped early, or stopped at client tools."""
    detail = run.shoal
    output = detail.output
    if output is None:
        content = ""
    elif isinstance(output, str):
        content = output
    else:
        content = json.dumps(output, ensure_ascii=False)
    pending: list[PendingCall] = []
    if run.required_action is not None and run.required_action.submit_tool_outputs is not None:
        for call in run.required_action.submit_tool_outputs.tool_calls:
            pending.append(_pending_call(call, response))
    success = run.status in ("completed", "requires_action")
    error = None
    if not success:
        reason = (
            run.incomplete_details.reason if run.incomplete_details is not None else None
        ) or (detail.stop_reason or "no reason given")
        error = f"the run ended with status {run.status!r} ({reason})"
    return AgentReply(
        content=content,
        thread_id=run.thread_id,
        agent=run.assistant_id,
        model=run.model,
        tools_used=list(dict.fromkeys(c.name for c in detail.tool_calls if c.outcome in _RAN)),
        pending_calls=pending,
        usage=run.usage.model_dump() if run.usage is not None else {},
        success=success,
        error=error,
        run_id=run.id,
        status=run.status,
        stop_reason=detail.stop_reason,
        output=output,
        tool_calls=[
            ToolCallInfo(name=c.name, arguments=c.arguments, outcome=c.outcome, content=c.content)
            for c in detail.tool_calls
        ],
        notes=list(detail.notes),
        exception=None if success else ShoalClientError(error or "the run failed"),
    )


def _pending_call(call: _ToolCallOut, response: httpx.Response) -> PendingCall:
    try:
        arguments = json.loads(call.function.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise unexpected_response(
            response, f"the arguments of tool call {call.id!r} are not a JSON object"
        )
    return PendingCall(id=call.id, name=call.function.name, arguments=arguments)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)
