"""``/v1/responses``: the subset of OpenAI's Responses API that agent clients use.

Data model
----------
A request's ``input`` (a string, or items: messages with text content, ``function_call`` and
``function_call_output``) becomes Shoal messages, after the conversation of the stored response
named by ``previous_response_id`` when there is one. Leading ``system``/``developer`` messages of
that conversation join the request's ``instructions`` (which come first and, as in OpenAI, are
not carried over to the next response); the conversation must then end with a user message (a
new question) or a ``function_call_output`` (results of calls the client ran).

The answer comes from a one-off agent over the named model, whose tools are the request's
function tools (run by the client: the model's calls come back as ``function_call`` output
items), or from a hosted agent (``model`` = its name) that runs its own tools server-side: only
its final message and any client calls appear in ``output``; or from a system's entry or flow
(``model`` = the system's or the flow's name, ``shoal serve --system``): its answer is one
message item, with ``shoal`` fields (agent, path, route, stop reason, trace) beside it.

With ``store`` (the default) the response object and the whole conversation it ends are kept in
the :class:`~shoal.server.response_store.ResponseStore` (``GET``/``DELETE /v1/responses/{id}``,
and ``previous_response_id``). Responses that fail are not stored.

Streaming sends OpenAI's typed server-sent events (``event: <type>`` + ``data: <json>``, each
with a ``sequence_number``): ``response.created``, ``response.in_progress``, for the message
``output_item.added``, ``content_part.added``, ``output_text.delta``..., ``output_text.done``,
``content_part.done``, ``output_item.done``; for each client call ``output_item.added``,
``function_call_arguments.delta`` (the whole validated arguments), ``.done`` and
``output_item.done``; finally ``response.completed`` (or ``response.incomplete``) with the whole
response. A failure after the stream started is an ``error`` event then ``response.failed``; a
full queue is refused with 429 before the stream starts.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from shoal.agent import Agent, FinalEvent, RunResult, TextEvent, ToolCallEvent
from shoal.exceptions import OverloadedError, ShoalError
from shoal.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from shoal.orchestration import FlowResult
from shoal.server.auth import caller_role
from shoal.server.convert import (
    answer_text,
    arguments_of,
    event_stream,
    now,
    settings_of,
    text_of,
    tool_choice_of,
    tools_of,
)
from shoal.server.engines import Engine
from shoal.server.errors import ApiError
from shoal.server.schemas import ContentPart, FunctionDefinition, NamedToolChoice, ToolIn
from shoal.server.state import HostedFlow, ServerState
from shoal.server.systems import answer_once, flow_extension, refuse_options

__all__ = ["router"]

log = logging.getLogger("shoal.server")
router = APIRouter(tags=["responses"])


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InputItem(_Lenient):
    """One input item: a message (``type`` "message" or absent), a ``function_call`` the model
    made earlier, or a ``function_call_output`` the client computed."""

    type: str | None = None
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[ContentPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ContentPart] | None = None


class FunctionTool(_Lenient):
    """A tool in the Responses API's flat shape (``name`` beside ``type``)."""

    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionChoice(_Lenient):
    type: str
    name: str | None = None


class TextFormat(_Lenient):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    description: str | None = None
    #: the schema (named ``schema`` on the wire)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(_Lenient):
    format: TextFormat | None = None


class ResponseCreate(_Lenient):
    """``POST /v1/responses``. ``model`` may name a hosted agent (see ``/v1/models``)."""

    model: str | None = None
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | FunctionChoice | None = None
    previous_response_id: str | None = None
    stream: bool = False
    store: bool = True
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_output_tokens: int | None = Field(default=None, ge=1)
    text: TextConfig | None = None
    metadata: dict[str, Any] | None = None


# -- request -> agent -------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _input_messages(items: str | list[InputItem], before: Sequence[Message]) -> list[Message]:
    """The input as Shoal messages; ``before`` (the earlier conversation) names the calls
    that ``function_call_output`` items answer."""
    if isinstance(items, str):
        return [UserMessage(content=items)]
    names = {
        call.id: call.name
        for message in before
        if isinstance(message, AssistantMessage)
        for call in message.tool_calls
    }
    out: list[Message] = []
    for index, item in enumerate(items):
        where = f"input[{index}]"
        kind = item.type or ("message" if item.role else None)
        if kind == "message":
            if item.role is None:
                raise ApiError(400, f"{where}: a message needs a role", param=where)
            text = text_of(item.content, where)
            if item.role in ("system", "developer"):
                out.append(SystemMessage(content=text))
            elif item.role == "user":
                out.append(UserMessage(content=text))
            else:
                out.append(AssistantMessage(content=text))
        elif kind == "function_call":
            if not item.call_id or not item.name:
                raise ApiError(400, f"{where}: a function_call needs call_id and name", param=where)
            call = ToolCall(
                id=item.call_id, name=item.name, arguments=arguments_of(item.arguments, where)
            )
            names[call.id] = call.name
            last = out[-1] if out else None
            if isinstance(last, AssistantMessage):  # the same turn: text and/or earlier calls
                out[-1] = last.model_copy(update={"tool_calls": (*last.tool_calls, call)})
            else:
                out.append(AssistantMessage(tool_calls=(call,)))
        elif kind == "function_call_output":
            if not item.call_id:
                raise ApiError(400, f"{where}: a function_call_output needs call_id", param=where)
            if item.call_id not in names:
                raise ApiError(
                    400,
                    f"{where}: no function_call with call_id {item.call_id!r} comes before it",
                    param=where,
                )
            content = text_of(item.output, f"{where}.output")
            out.append(
                ToolMessage(tool_call_id=item.call_id, name=names[item.call_id], content=content)
            )
        else:
            raise ApiError(
                400,
                f"{where}: input items of type {kind!r} are not supported (messages, "
                "function_call and function_call_output are)",
                param=where,
            )
    return out


class _Turn:
    """What the agent is given: instructions, the history, and the new user message (None
    when the conversation ends with tool results); ``head`` is the leading system messages."""

    def __init__(self, conversation: list[Message], instructions: str | None) -> None:
        start = 0
        while start < len(conversation) and isinstance(conversation[start], SystemMessage):
            start += 1
        self.head = conversation[:start]
        parts = [instructions or "", *(m.content for m in self.head if m.content)]
        self.instructions = "\n\n".join(p for p in parts if p.strip())
        rest = conversation[start:]
        if not rest:
            raise ApiError(400, "input: there is no user message to answer", param="input")
        last = rest[-1]
        self.message: str | None = None
        if isinstance(last, UserMessage):
            self.history, self.message = rest[:-1], last.content
        elif isinstance(last, ToolMessage):
            self.history = rest
        else:
            raise ApiError(
                400,
                "input: the conversation must end with a user message or a "
                f"function_call_output; it ends with a message from the {last.role}",
                param="input",
            )

    def conversation(self, result: RunResult[Any]) -> list[Message]:
        return [*self.head, *self.history, *result.new_messages]


def _tools(body: ResponseCreate) -> list[ToolIn]:
    tools: list[ToolIn] = []
    for index, item in enumerate(body.tools or []):
        where = f"tools[{index}]"
        if item.type != "function":
            raise ApiError(
                400, f"{where}: only function tools are supported, not {item.type!r}", param=where
            )
        if not item.name:
            raise ApiError(400, f"{where}: a function tool needs a name", param=where)
        definition = FunctionDefinition(
            name=item.name,
            description=item.description or "",
            parameters=item.parameters,
            strict=item.strict,
        )
        tools.append(ToolIn(function=definition))
    return tools


def _tool_choice(body: ResponseCreate) -> str | NamedToolChoice | None:
    choice = body.tool_choice
    if choice is None or isinstance(choice, str):
        return choice
    if choice.type != "function" or not choice.name:
        raise ApiError(
            400,
            "tool_choice: only auto, none, required or {type: function, name} are supported",
            param="tool_choice",
        )
    return NamedToolChoice.model_validate({"function": {"name": choice.name}})


def _output_schema(body: ResponseCreate) -> dict[str, Any] | None:
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if not fmt.schema_:
        raise ApiError(400, "text.format: json_schema needs a schema", param="text.format")
    return fmt.schema_


# -- result -> response -----------------------------------------------------------------------


def _status(result: RunResult[Any]) -> tuple[str, dict[str, str] | None]:
    if result.truncated:
        return "incomplete", {"reason": "max_output_tokens"}
    if result.stop_reason == "max_steps":
        return "incomplete", {"reason": "max_steps"}
    return "completed", None


def _usage(result: RunResult[Any] | FlowResult) -> dict[str, Any]:
    usage = result.usage
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_prompt_tokens,
            "cache_write_tokens": 0,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


class _Writer:
    """A response's output items, in order, and the stream events that announce them. A
    streamed response feeds it the run's events as they come; a non-streamed one only calls
    :meth:`finish`, builds the same items and drops the events."""

    def __init__(self) -> None:
        self.sequence = 0
        self.items: list[dict[str, Any]] = []
        self.message: dict[str, Any] | None = None
        #: the message item is done (no more text goes into it)
        self.closed = False
        self.streamed: list[str] = []
        self.calls: set[str] = set()

    def event(self, kind: str, **fields: Any) -> bytes:
        """One server-sent event, numbered."""
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

    def _where(self, item: dict[str, Any]) -> dict[str, Any]:
        index = next(i for i, x in enumerate(self.items) if x is item)
        where: dict[str, Any] = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            where["content_index"] = 0
        return where

    def text(self, delta: str) -> list[bytes]:
        """A piece of the answer (opening the message item first)."""
        if self.closed or not delta:
            return []
        chunks: list[bytes] = []
        if self.message is None:
            self.message = {"type": "message", "id": _new_id("msg"), "status": "in_progress"}
            self.message.update(role="assistant", content=[])
            self.items.append(self.message)
            where = self._where(self.message)
            index = where["output_index"]
            chunks += [
                self.event("response.output_item.added", output_index=index, item=self.message),
                self.event("response.content_part.added", **where, part=_text_part("")),
            ]
        self.streamed.append(delta)
        where = self._where(self.message)
        chunks.append(self.event("response.output_text.delta", **where, delta=delta, logprobs=[]))
        return chunks

    def close_message(self, text: str, status: str = "completed") -> list[bytes]:
        if self.message is None or self.closed:
            return []
        self.closed = True
        self.message["content"] = [_text_part(text)]
        self.message["status"] = status
        where = self._where(self.message)
        return [
            self.event("response.output_text.done", **where, text=text, logprobs=[]),
            self.event("response.content_part.done", **where, part=_text_part(text)),
            self.event(
                "response.output_item.done", output_index=where["output_index"], item=self.message
            ),
        ]

    def call(self, call: ToolCall) -> list[bytes]:
        """A client tool call (closing the message item first)."""
        chunks = self.close_message("".join(self.streamed))
        item = {
            "type": "function_call",
            "id": _new_id("fc"),
            "call_id": call.id,
            "name": call.name,
            "arguments": json.dumps(call.arguments, ensure_ascii=False),
            "status": "completed",
        }
        self.calls.add(call.id)
        self.items.append(item)
        where = self._where(item)
        index = where["output_index"]
        added = {**item, "arguments": "", "status": "in_progress"}
        return [
            *chunks,
            self.event("response.output_item.added", output_index=index, item=added),
            self.event("response.function_call_arguments.delta", **where, delta=item["arguments"]),
            self.event(
                "response.function_call_arguments.done",
                **where,
                name=call.name,
                arguments=item["arguments"],
            ),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    def finish(self, result: RunResult[Any]) -> list[bytes]:
        """Complete the items from the run's result: the final text, then any calls not yet
        announced."""
        text = answer_text(result) or ""
        chunks = self.text(text) if self.message is None else []
        chunks += self.close_message(text, "incomplete" if result.truncated else "completed")
        for call in result.pending_calls:
            if call.id not in self.calls:
                chunks += self.call(call)
        return chunks


class _Draft:
    """The fields of a response that do not depend on the run."""

    def __init__(self, body: ResponseCreate, model: str) -> None:
        self.id = _new_id("resp")
        self.created_at = now()
        self.body = body
        self.model = model

    def response(
        self,
        *,
        status: str,
        output: list[dict[str, Any]] | None = None,
        result: RunResult[Any] | None = None,
        incomplete: dict[str, str] | None = None,
        error: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        body = self.body
        choice = body.tool_choice
        text = body.text.model_dump(by_alias=True, exclude_none=True) if body.text else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": now() if status == "completed" else None,
            "status": status,
            "model": self.model,
            "output": output or [],
            "instructions": body.instructions,
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "tool_choice": choice.model_dump(exclude_none=True)
            if isinstance(choice, BaseModel)
            else choice or "auto",
            "parallel_tool_calls": False,
            "previous_response_id": body.previous_response_id,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "max_output_tokens": body.max_output_tokens,
            "text": text or {"format": {"type": "text"}},
            "metadata": body.metadata or {},
            "usage": _usage(result) if result is not None else None,
            "error": error,
            "incomplete_details": incomplete,
        }

    def finished(self, output: list[dict[str, Any]], result: RunResult[Any]) -> dict[str, Any]:
        status, incomplete = _status(result)
        return self.response(status=status, output=output, result=result, incomplete=incomplete)


# -- routes -----------------------------------------------------------------------------------


@router.post("/v1/responses")
async def create_response(body: ResponseCreate, request: Request) -> Any:
    """Answer ``input`` (after the conversation of ``previous_response_id``)."""
    state: ServerState = request.app.state.shoal
    before: list[Message] = []
    if body.previous_response_id:
        previous = await state.responses.get(body.previous_response_id)
        if previous is None:
            raise ApiError(
                404,
                f"no stored response with id {body.previous_response_id!r}",
                param="previous_response_id",
            )
        before = previous.conversation
    if not isinstance(body.input, str) and len(body.input) > state.settings.max_messages:
        raise ApiError(
            400,
            f"too many input items: {len(body.input)} (this server takes at most "
            f"{state.settings.max_messages})",
            param="input",
        )
    turn = _Turn([*before, *_input_messages(body.input, before)], body.instructions)
    flow = state.flows.get(body.model or "")
    if flow is not None:
        return await _flow_response(state, flow, body, turn, request)
    tools = tools_of(_tools(body))
    hosted = state.agents.get(body.model or "")
    choice = tool_choice_of(_tool_choice(body), tools, list(hosted.agent.tools) if hosted else [])
    limit = state.settings.max_tokens_limit
    if body.max_output_tokens is not None and body.max_output_tokens > limit:
        raise ApiError(
            400,
            f"max_output_tokens {body.max_output_tokens} is above this server's limit of {limit}",
            param="max_output_tokens",
        )
    settings = settings_of(
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_output_tokens,
        stop=None,
        seed=None,
        max_tokens_limit=limit,
    )
    engine, agent = state.make_agent(
        body.model,
        instructions=turn.instructions,
        tools=tools,
        output_schema=_output_schema(body),
        settings=settings,
        tool_choice=choice,
    )
    draft = _Draft(body, body.model or engine.reference)
    role = caller_role(request)
    if body.stream:
        engine.check_capacity()
        return event_stream(_stream(state, engine, agent, turn, draft, role=role))
    result = await state.run(
        engine,
        agent,
        turn.message,
        history=turn.history,
        role=role,
        disconnected=request.is_disconnected,
    )
    writer = _Writer()
    writer.finish(result)
    response = draft.finished(writer.items, result)
    if body.store:
        await _keep(state, draft, response, turn.conversation(result))
    return JSONResponse(response)


async def _flow_response(
    state: ServerState, flow: HostedFlow, body: ResponseCreate, turn: _Turn, request: Request
) -> Any:
    """A system's entry or flow answering the input: one message item, and ``shoal`` fields as
    chat completions have them. A run that waits for approval is ``incomplete`` (reason
    ``approval``) with no message; ``shoal.thread_id`` is the thread to approve it in. A
    streamed answer comes in one text delta once the flow is done."""
    name = body.model or ""
    fmt = body.text.format if body.text else None
    refuse_options(
        name,
        tools=body.tools,
        tool_choice=body.tool_choice,
        **{"text.format": None if fmt is None or fmt.type == "text" else fmt.type},
    )
    result = await answer_once(
        state,
        flow,
        turn.message,
        turn.history,
        role=caller_role(request),
        disconnected=request.is_disconnected,
    )
    draft = _Draft(body, name)
    writer = _Writer()
    opened = draft.response(status="in_progress")
    chunks = [
        writer.event("response.created", response=opened),
        writer.event("response.in_progress", response=opened),
    ]
    text = "" if result.stop_reason == "approval" else result.text
    chunks += writer.text(text)
    chunks += writer.close_message(text)
    incomplete = (
        {"reason": result.stop_reason}
        if result.stop_reason in ("max_steps", "approval", "max_handoffs")
        else None
    )
    response = draft.response(
        status="incomplete" if incomplete else "completed",
        output=writer.items,
        incomplete=incomplete,
    )
    response["usage"] = _usage(result)
    response["shoal"] = flow_extension(result)
    if body.store and result.stop_reason != "approval":
        assert turn.message is not None  # answer_once refused a conversation without one
        conversation = [
            *turn.head,
            *turn.history,
            UserMessage(content=turn.message),
            AssistantMessage(content=text),
        ]
        await _keep(state, draft, response, conversation)
    if not body.stream:
        return JSONResponse(response)
    done = "incomplete" if incomplete else "completed"
    chunks.append(writer.event(f"response.{done}", response=response))

    async def replay() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return event_stream(replay())


async def _keep(
    state: ServerState, draft: _Draft, response: dict[str, Any], conversation: list[Message]
) -> None:
    await state.responses.put(
        response_id=draft.id,
        created_at=draft.created_at,
        response=response,
        conversation=conversation,
    )


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request) -> dict[str, Any]:
    """A stored response, as it was returned."""
    state: ServerState = request.app.state.shoal
    stored = await state.responses.get(response_id)
    if stored is None:
        raise ApiError(404, f"no stored response with id {response_id!r}", param="response_id")
    return stored.response


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
    """Forget a stored response (responses that continued it keep their conversation)."""
    state: ServerState = request.app.state.shoal
    if not await state.responses.delete(response_id):
        raise ApiError(404, f"no stored response with id {response_id!r}", param="response_id")
    return {"id": response_id, "object": "response.deleted", "deleted": True}


# -- streaming --------------------------------------------------------------------------------


async def _stream(
    state: ServerState,
    engine: Engine,
    agent: Agent[Any],
    turn: _Turn,
    draft: _Draft,
    *,
    role: str | None,
) -> AsyncIterator[bytes]:
    writer = _Writer()
    opened = draft.response(status="in_progress")
    yield writer.event("response.created", response=opened)
    yield writer.event("response.in_progress", response=opened)
    try:
        events = state.stream(engine, agent, turn.message, history=turn.history, role=role)
        async for run_event in events:
            chunks: list[bytes] = []
            if isinstance(run_event, TextEvent):
                chunks = writer.text(run_event.text)
            elif isinstance(run_event, ToolCallEvent):
                # a hosted agent's own tools run server-side and are not shown
                if agent.tools[run_event.call.name].external_only:
                    chunks = writer.call(run_event.call)
            elif isinstance(run_event, FinalEvent):
                result = run_event.result
                chunks = writer.finish(result)
                response = draft.finished(writer.items, result)
                if draft.body.store:
                    await _keep(state, draft, response, turn.conversation(result))
                done = "incomplete" if response["status"] == "incomplete" else "completed"
                chunks.append(writer.event(f"response.{done}", response=response))
            for chunk in chunks:
                yield chunk
    except ShoalError as exc:
        # the Responses API's error codes are an enumeration: keep to its values
        code = "rate_limit_exceeded" if isinstance(exc, OverloadedError) else "server_error"
        for chunk in _failure(writer, draft, code, str(exc)):
            yield chunk
    except Exception as exc:  # the stream has started: report it in-band, log the rest
        log.exception("responses stream failed")
        message = f"internal error ({type(exc).__name__}); see the server log"
        for chunk in _failure(writer, draft, "server_error", message):
            yield chunk


def _failure(writer: _Writer, draft: _Draft, code: str, message: str) -> list[bytes]:
    error = {"code": code, "message": message}
    failed = draft.response(status="failed", output=writer.items, error=error)
    return [
        writer.event("error", code=code, message=message, param=None),
        writer.event("response.failed", response=failed),
    ]
