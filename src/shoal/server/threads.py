"""``/v1/threads``: persistent conversations in the shapes of OpenAI's Assistants API.

Data model
----------
A thread is a :class:`~shoal.threads.Thread` in the server's thread store (the SQLite file of
``ServerSettings.database`` in production, so threads survive restarts): an id, JSON metadata
and two timestamps. Its messages are the store's Shoal messages, in order; nothing else is kept.
On the wire:

- a message's id is ``msg_<thread id without "thread_">_<position>`` (0, 1, 2...), so ids are
  stable and ``after``/``before`` cursors need no lookup table. The store keeps no time per
  message, so a listed message's ``created_at`` is its thread's creation time; nor metadata
  per message, so a message with non-empty ``metadata`` is refused (400) rather than have it
  silently dropped.
- an assistant message shows its calls as ``tool_calls`` (OpenAI chat shape); a tool result is
  a message with role ``tool``, ``tool_call_id`` and ``name``.
- a run (``POST /v1/threads/{id}/runs``) is synchronous and not stored: it answers the thread
  with a hosted agent or a model and returns the run object once the agent has appended its
  messages to the thread. When the model calls client tools the run ends ``requires_action``
  with the calls; the client adds each result as a ``role: "tool"`` message and runs again
  (there is no ``submit_tool_outputs``, since runs are not kept). Engine errors (a crash, a
  full queue, the deadline) are HTTP errors, never "failed" runs. The extension field
  ``shoal`` carries the final output, the stop reason and the server-side tool calls; the
  run's ``instructions`` are the request's (a hosted agent's own are not shown).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shoal.agent import RunResult, ToolCallRecord
from shoal.messages import AssistantMessage, Message, ToolMessage, UserMessage
from shoal.models.wire import call_json as wire_call_json
from shoal.orchestration import FlowResult
from shoal.server.auth import caller_role
from shoal.server.convert import (
    now,
    output_schema_of,
    settings_of,
    text_of,
    tool_choice_of,
    tools_of,
)
from shoal.server.errors import ApiError
from shoal.server.schemas import ContentPart, NamedToolChoice, ResponseFormat, ToolIn
from shoal.server.state import ServerState
from shoal.server.systems import call_json, flow_extension, refuse_options
from shoal.threads import Thread

__all__ = ["router", "run_object"]

router = APIRouter(tags=["threads"])

_MAX_PAGE = 100


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MessageIn(_Lenient):
    """A message added to a thread: a user or assistant turn, or a client tool's result."""

    role: Literal["user", "assistant", "tool"]
    content: str | list[ContentPart]
    tool_call_id: str | None = None
    metadata: dict[str, Any] | None = None


class ThreadCreate(_Lenient):
    metadata: dict[str, Any] | None = None
    messages: list[MessageIn] | None = None


class ThreadUpdate(_Lenient):
    metadata: dict[str, Any]


class RunCreate(_Lenient):
    """``POST /v1/threads/{id}/runs``: ``assistant_id`` or ``model`` names a hosted agent or a
    model (neither: the default model)."""

    assistant_id: str | None = None
    model: str | None = None
    instructions: str | None = None
    additional_instructions: str | None = None
    tools: list[ToolIn] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    response_format: Literal["auto"] | ResponseFormat | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False


# -- wire shapes ------------------------------------------------------------------------------


def _thread_object(thread: Thread) -> dict[str, Any]:
    return {
        "id": thread.id,
        "object": "thread",
        "created_at": int(thread.created_at.timestamp()),
        "updated_at": int(thread.updated_at.timestamp()),
        "metadata": thread.metadata,
        "tool_resources": None,
    }


def _message_prefix(thread_id: str) -> str:
    return f"msg_{thread_id.removeprefix('thread_')}_"


def _message_object(
    thread_id: str, index: int, message: Message, created_at: int
) -> dict[str, Any]:
    text = message.content or ""
    body: dict[str, Any] = {
        "id": f"{_message_prefix(thread_id)}{index}",
        "object": "thread.message",
        "created_at": created_at,
        "thread_id": thread_id,
        "role": message.role,
        "status": "completed",
        "content": [{"type": "text", "text": {"value": text, "annotations": []}}] if text else [],
        "assistant_id": None,
        "run_id": None,
        "attachments": [],
        "metadata": {},
    }
    if isinstance(message, AssistantMessage) and message.tool_calls:
        body["tool_calls"] = [wire_call_json(call) for call in message.tool_calls]
    if isinstance(message, ToolMessage):
        body["tool_call_id"] = message.tool_call_id
        body["name"] = message.name
        body["is_error"] = message.is_error
    return body


def _listing(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


# -- threads ----------------------------------------------------------------------------------


def _metadata_error(error: Exception, param: str = "metadata") -> ApiError:
    return ApiError(400, f"{param}: {error}", param=param)


@router.post("/v1/threads")
async def create_thread(request: Request, body: ThreadCreate | None = None) -> dict[str, Any]:
    """A new thread, optionally with metadata and first messages (user or assistant)."""
    state: ServerState = request.app.state.shoal
    body = body or ThreadCreate()
    items = body.messages or []
    if len(items) > state.settings.max_messages:
        raise ApiError(
            400,
            f"too many messages: {len(items)} (this server takes at most "
            f"{state.settings.max_messages})",
            param="messages",
        )
    messages: list[Message] = []
    for index, item in enumerate(items):
        where = f"messages[{index}]"
        if item.role == "tool":
            raise ApiError(
                400, f"{where}: a new thread takes user and assistant messages", param=where
            )
        _check_message_metadata(item, where)
        messages.append(_text_message(item, where))
    try:
        thread = await state.store.create_thread(metadata=body.metadata or {})
    except ValueError as exc:
        raise _metadata_error(exc) from None
    if messages:
        await state.store.append_messages(thread.id, messages)
        thread = await state.store.get_thread(thread.id)
    return _thread_object(thread)


@router.get("/v1/threads")
async def list_threads(
    request: Request,
    limit: int = Query(20, ge=1, le=_MAX_PAGE),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """Threads, most recently updated first. Filter with ``metadata[key]=value`` parameters
    (string values only)."""
    state: ServerState = request.app.state.shoal
    wanted: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        found = re.fullmatch(r"metadata\[(.+)\]", key)
        if found:
            wanted[found.group(1)] = value
    threads = await state.store.list_threads(limit=limit + 1, offset=offset, metadata=wanted)
    return _listing([_thread_object(t) for t in threads[:limit]], len(threads) > limit)


@router.get("/v1/threads/{thread_id}")
async def get_thread(thread_id: str, request: Request) -> dict[str, Any]:
    """One thread, with how many messages it has."""
    state: ServerState = request.app.state.shoal
    thread = await state.store.get_thread(thread_id)
    messages = await state.store.get_messages(thread_id)
    return {**_thread_object(thread), "message_count": len(messages)}


@router.post("/v1/threads/{thread_id}")
async def update_thread(thread_id: str, body: ThreadUpdate, request: Request) -> dict[str, Any]:
    """Replace a thread's metadata."""
    state: ServerState = request.app.state.shoal
    try:
        thread = await state.store.update_thread(thread_id, metadata=body.metadata)
    except ValueError as exc:
        raise _metadata_error(exc) from None
    return _thread_object(thread)


@router.delete("/v1/threads/{thread_id}")
async def delete_thread(thread_id: str, request: Request) -> dict[str, Any]:
    """Delete a thread and its messages."""
    state: ServerState = request.app.state.shoal
    await state.store.delete_thread(thread_id)
    return {"id": thread_id, "object": "thread.deleted", "deleted": True}


# -- messages ---------------------------------------------------------------------------------


def _check_message_metadata(item: MessageIn, where: str) -> None:
    if item.metadata:
        raise ApiError(
            400,
            f"{where}.metadata: this server does not store metadata on messages "
            "(put it on the thread)",
            param=f"{where}.metadata",
        )


def _text_message(item: MessageIn, where: str) -> Message:
    text = text_of(item.content, where)
    if item.role == "user":
        return UserMessage(content=text)
    return AssistantMessage(content=text)


def _tool_result(item: MessageIn, history: Sequence[Message], where: str) -> ToolMessage:
    """A client tool's result, named after the assistant call it answers."""
    if not item.tool_call_id:
        raise ApiError(400, f"{where}: a tool message needs tool_call_id", param="tool_call_id")
    calls = {
        call.id: call.name
        for message in history
        if isinstance(message, AssistantMessage)
        for call in message.tool_calls
    }
    if item.tool_call_id not in calls:
        raise ApiError(
            400,
            f"tool_call_id {item.tool_call_id!r} does not match a tool call in this thread",
            param="tool_call_id",
        )
    answered = {m.tool_call_id for m in history if isinstance(m, ToolMessage)}
    if item.tool_call_id in answered:
        raise ApiError(
            400,
            f"the tool call {item.tool_call_id!r} already has a result in this thread",
            param="tool_call_id",
        )
    return ToolMessage(
        tool_call_id=item.tool_call_id,
        name=calls[item.tool_call_id],
        content=text_of(item.content, where),
    )


@router.post("/v1/threads/{thread_id}/messages")
async def add_message(thread_id: str, body: MessageIn, request: Request) -> dict[str, Any]:
    """Append a user message, an assistant message, or the result of a client tool call
    (``role: "tool"`` with the ``tool_call_id`` of a call from a ``requires_action`` run)."""
    state: ServerState = request.app.state.shoal
    _check_message_metadata(body, "message")
    history = await state.store.get_messages(thread_id)
    if body.role == "tool":
        message: Message = _tool_result(body, history, "message")
    else:
        message = _text_message(body, "message")
    await state.store.append_messages(thread_id, [message])
    return _message_object(thread_id, len(history), message, now())


@router.get("/v1/threads/{thread_id}/messages")
async def list_messages(
    thread_id: str,
    request: Request,
    limit: int = Query(20, ge=1, le=_MAX_PAGE),
    order: Literal["asc", "desc"] = Query("desc"),
    after: str | None = Query(None),
    before: str | None = Query(None),
) -> dict[str, Any]:
    """A page of a thread's messages: newest first by default (``order=desc``), ``after`` and
    ``before`` take message ids as cursors."""
    state: ServerState = request.app.state.shoal
    thread = await state.store.get_thread(thread_id)
    messages = await state.store.get_messages(thread_id)
    created = int(thread.created_at.timestamp())
    indices = list(range(len(messages)))
    if after is not None:
        cut = _position(thread_id, after, "after")
        indices = [i for i in indices if (i > cut if order == "asc" else i < cut)]
    if before is not None:
        cut = _position(thread_id, before, "before")
        indices = [i for i in indices if (i < cut if order == "asc" else i > cut)]
    if order == "desc":
        indices.reverse()
    page = indices[:limit]
    data = [_message_object(thread_id, i, messages[i], created) for i in page]
    return _listing(data, len(indices) > limit)


def _position(thread_id: str, message_id: str, param: str) -> int:
    prefix = _message_prefix(thread_id)
    tail = message_id.removeprefix(prefix)
    if tail == message_id or not tail.isdigit():
        raise ApiError(
            400, f"{param}: {message_id!r} is not a message id of this thread", param=param
        )
    return int(tail)


# -- runs -------------------------------------------------------------------------------------


def _run_status(result: RunResult[Any] | FlowResult) -> tuple[str, dict[str, str] | None]:
    if result.stop_reason == "approval" or result.pending_calls:
        return "requires_action", None
    if isinstance(result, RunResult) and result.truncated:
        return "incomplete", {"reason": "max_completion_tokens"}
    if result.stop_reason in ("max_steps", "max_handoffs"):
        return "incomplete", {"reason": result.stop_reason}
    return "completed", None


def _required_action(result: RunResult[Any] | FlowResult) -> dict[str, Any] | None:
    if result.stop_reason == "approval":
        return {
            "type": "submit_approval",
            "submit_approval": {
                "tool_calls": [wire_call_json(call) for call in result.pending_approvals]
            },
        }
    if result.pending_calls:
        return {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {
                "tool_calls": [wire_call_json(call) for call in result.pending_calls]
            },
        }
    return None


@router.post("/v1/threads/{thread_id}/runs")
async def create_run(thread_id: str, body: RunCreate, request: Request) -> dict[str, Any]:
    """Answer the thread (which must end with a user message or tool results) and return the
    run once it is over; the new messages are in the thread."""
    state: ServerState = request.app.state.shoal
    started = now()
    if body.stream:
        raise ApiError(
            400,
            "stream: runs are not streamed here; use /v1/responses or /v1/chat/completions "
            "to stream",
            param="stream",
        )
    if body.assistant_id and body.model and body.assistant_id != body.model:
        raise ApiError(400, "give assistant_id or model, not both", param="assistant_id")
    name = body.assistant_id or body.model
    role = caller_role(request)
    history = await state.store.get_messages(thread_id)
    if not history or history[-1].role not in ("user", "tool"):
        raise ApiError(
            400,
            f"thread {thread_id} does not end with a user message or tool results: "
            "add a user message first",
            param="thread_id",
        )
    flow = state.flows.get(name or "")
    if flow is not None:
        refuse_options(
            name or "",
            instructions=body.instructions,
            additional_instructions=body.additional_instructions,
            tools=body.tools,
            tool_choice=body.tool_choice,
            response_format=body.response_format,
        )
        flow_result = await state.run_flow(
            flow, None, thread=thread_id, role=role, disconnected=request.is_disconnected
        )
        return run_object(
            thread_id=thread_id,
            assistant_id=name or "",
            model=name or "",
            result=flow_result,
            started=started,
            body=body,
        )
    tools = tools_of(body.tools)
    hosted = state.agents.get(name or "")
    choice = tool_choice_of(body.tool_choice, tools, list(hosted.agent.tools) if hosted else [])
    settings = settings_of(
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=None,
        seed=None,
        max_tokens_limit=state.settings.max_tokens_limit,
    )
    instructions = "\n\n".join(
        part for part in (body.instructions, body.additional_instructions) if part
    )
    engine, agent = state.make_agent(
        name,
        instructions=instructions,
        tools=tools,
        output_schema=output_schema_of(
            None if body.response_format == "auto" else body.response_format
        ),
        settings=settings,
        tool_choice=choice,
    )
    result = await state.run(
        engine, agent, None, thread=thread_id, role=role, disconnected=request.is_disconnected
    )
    return run_object(
        thread_id=thread_id,
        assistant_id=name or engine.reference,
        model=engine.reference,
        instructions=instructions,
        body=body,
        result=result,
        started=started,
    )


def run_object(
    *,
    thread_id: str,
    assistant_id: str,
    model: str,
    result: RunResult[Any] | FlowResult,
    started: int,
    instructions: str = "",
    body: RunCreate | None = None,
) -> dict[str, Any]:
    """The run object (OpenAI's shape, with a ``shoal`` extension) of an agent's or a flow's
    run on a thread."""
    body = body or RunCreate()
    status, incomplete = _run_status(result)
    usage = result.usage
    finished = now()
    if isinstance(result, FlowResult):
        extension = flow_extension(result)
        extension["output"] = result.output
        extension["tool_calls"] = [
            _record_json(record) for run in result.runs for record in run.tool_calls
        ]
    else:
        extension = {
            "output": result.output,
            "stop_reason": result.stop_reason,
            "agent": result.agent_name,
            "tool_calls": [_record_json(record) for record in result.tool_calls],
            "notes": list(result.notes),
            "pending_approvals": [call_json(call) for call in result.pending_approvals],
        }
    return {
        "id": f"run_{uuid.uuid4().hex[:24]}",
        "object": "thread.run",
        "created_at": started,
        "started_at": started,
        "completed_at": finished if status == "completed" else None,
        "thread_id": thread_id,
        "assistant_id": assistant_id,
        "model": model,
        "status": status,
        "required_action": _required_action(result),
        "last_error": None,
        "incomplete_details": incomplete,
        "instructions": instructions,  # the request's: a hosted agent's own stay private
        "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or []],
        "tool_choice": (
            body.tool_choice.model_dump()
            if isinstance(body.tool_choice, BaseModel)
            else body.tool_choice or "auto"
        ),
        "parallel_tool_calls": False,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_completion_tokens": body.max_completion_tokens or body.max_tokens,
        "metadata": {},
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        "shoal": extension,
    }


def _record_json(record: ToolCallRecord) -> dict[str, Any]:
    return {
        "name": record.call.name,
        "arguments": record.call.arguments,
        "outcome": record.outcome,
        "content": record.content,
    }
