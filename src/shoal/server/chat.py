"""``POST /v1/chat/completions``: OpenAI's chat API over Shoal's agent loop.

A request naming a model runs a one-off agent whose tools are the request's tools, declared as
external tools: the model's call is constrained by the tool's schema where the engine can,
parsed, repaired and validated otherwise, and returned in ``tool_calls`` for the client to run;
its arguments always validate against the declared schema. A request naming a hosted agent runs
that agent, its own tools included, to its final answer (client tools may be added). A request
naming a system or one of its flows (``shoal serve --system``) runs the flow on the messages
(:func:`~shoal.server.systems.answer_once`); the answer adds ``shoal: {agent, path, route,
stop_reason, thread_id, pending_approvals, trace}``. Flows do not stream token by token: a
streamed flow answer is its whole text in one chunk, once the flow is done.

Streaming sends OpenAI's ``chat.completion.chunk`` events: text deltas as they are produced,
each tool call as one delta with its complete arguments (once validated), the finish reason,
then a usage chunk when ``stream_options.include_usage`` is set, then ``[DONE]``. An error after
the stream started is sent as a last ``{"error": ...}`` event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shoal.agent import FinalEvent, RunResult, TextEvent, ToolCallEvent
from shoal.exceptions import ShoalError, http_status_for
from shoal.models.wire import call_json
from shoal.orchestration import FlowResult
from shoal.server.auth import caller_role
from shoal.server.convert import (
    answer_text,
    completion_id,
    event_stream,
    now,
    openai_usage,
    output_schema_of,
    settings_of,
    to_conversation,
    tool_choice_of,
    tools_of,
)
from shoal.server.errors import ApiError, error_body, error_code
from shoal.server.schemas import ChatCompletionRequest
from shoal.server.state import HostedFlow, ServerState
from shoal.server.systems import answer_once, flow_extension, refuse_options
from shoal.server.systems import call_json as call_dict

__all__ = ["router", "sse"]

log = logging.getLogger("shoal.server")
router = APIRouter()


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def finish_reason(result: RunResult[Any]) -> str:
    if result.pending_calls:
        return "tool_calls"
    return "length" if result.truncated else "stop"


@router.post("/v1/chat/completions", tags=["chat"])
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    state: ServerState = request.app.state.shoal
    if body.n != 1:
        raise ApiError(400, "n: only n=1 is supported", param="n")
    conversation = to_conversation(body.messages, max_messages=state.settings.max_messages)
    flow = state.flows.get(body.model or "")
    if flow is not None:
        return await _flow_completion(state, flow, body, conversation, request)
    tools = tools_of(body.tools)
    hosted = state.agents.get(body.model or "")
    hosted_tools = list(hosted.agent.tools) if hosted else []
    choice = tool_choice_of(body.tool_choice, tools, hosted_tools)
    settings = settings_of(
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=body.stop,
        seed=body.seed,
        max_tokens_limit=state.settings.max_tokens_limit,
    )
    engine, agent = state.make_agent(
        body.model,
        instructions=conversation.instructions,
        tools=tools,
        output_schema=output_schema_of(body.response_format),
        settings=settings,
        tool_choice=choice,
    )
    name = body.model or engine.reference
    role = caller_role(request)
    if body.stream:
        engine.check_capacity()
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return event_stream(
            _stream(state, engine, agent, conversation, name, include_usage, role=role)
        )
    result = await state.run(
        engine,
        agent,
        conversation.message,
        history=conversation.history,
        role=role,
        disconnected=request.is_disconnected,
    )
    message: dict[str, Any] = {"role": "assistant", "content": answer_text(result)}
    if result.pending_calls:
        message["tool_calls"] = [call_json(c) for c in result.pending_calls]
    extra: dict[str, Any] = {}
    if result.stop_reason == "approval":  # a hosted agent's call waits for a person
        extra["shoal"] = {
            "agent": result.agent_name,
            "stop_reason": result.stop_reason,
            "thread_id": result.thread_id,
            "pending_approvals": [call_dict(c) for c in result.pending_approvals],
        }
    elif result.decisions:
        # a routed model (deployment file): which model answered and why, beside the OpenAI
        # fields (clients ignore keys they do not know)
        extra["shoal"] = {
            "answered_by": result.model_name,
            "decisions": [d.model_dump(exclude={"usage"}) for d in result.decisions],
        }
    return JSONResponse(
        {
            **extra,
            "id": completion_id(),
            "object": "chat.completion",
            "created": now(),
            "model": name,
            "system_fingerprint": f"shoal-{engine.reference}",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish_reason(result),
                    "logprobs": None,
                }
            ],
            "usage": openai_usage(result.usage),
        }
    )


async def _flow_completion(
    state: ServerState,
    flow: HostedFlow,
    body: ChatCompletionRequest,
    conversation: Any,
    request: Request,
) -> Any:
    """A system's entry or flow answering the messages (see the module docstring)."""
    name = body.model or ""
    refuse_options(
        name,
        tools=body.tools,
        tool_choice=body.tool_choice,
        response_format=body.response_format,
    )
    result = await answer_once(
        state,
        flow,
        conversation.message,
        conversation.history,
        role=caller_role(request),
        disconnected=request.is_disconnected,
    )
    reason = "length" if result.stop_reason == "max_steps" else "stop"
    ident, created = completion_id(), now()
    text = "" if result.stop_reason == "approval" else result.text
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return event_stream(_flow_chunks(ident, created, name, text, reason, result, include_usage))
    return JSONResponse(
        {
            "shoal": flow_extension(result),
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": name,
            "system_fingerprint": f"shoal-{flow.system.name}",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": reason,
                    "logprobs": None,
                }
            ],
            "usage": openai_usage(result.usage),
        }
    )


async def _flow_chunks(
    ident: str,
    created: int,
    name: str,
    text: str,
    reason: str,
    result: FlowResult,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return sse(
            {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
                **extra,
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    if text:
        yield chunk({"content": text})
    yield chunk({}, reason, shoal=flow_extension(result, trace=False))
    if include_usage:
        yield sse(
            {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "choices": [],
                "usage": openai_usage(result.usage),
            }
        )
    yield sse("[DONE]")


async def _stream(
    state: ServerState,
    engine: Any,
    agent: Any,
    conversation: Any,
    name: str,
    include_usage: bool,
    *,
    role: str | None,
) -> AsyncIterator[bytes]:
    ident, created = completion_id(), now()

    def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
        return sse(
            {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "system_fingerprint": f"shoal-{engine.reference}",
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
                ],
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    index = 0
    try:
        async for event in state.stream(
            engine, agent, conversation.message, history=conversation.history, role=role
        ):
            if isinstance(event, TextEvent):
                yield chunk({"content": event.text})
            elif isinstance(event, ToolCallEvent) and agent.tools[event.call.name].external_only:
                call = call_json(event.call)
                yield chunk({"tool_calls": [{"index": index, **call}]})
                index += 1
            elif isinstance(event, FinalEvent):
                result = event.result
                yield chunk({}, finish_reason(result))
                if include_usage:
                    yield sse(
                        {
                            "id": ident,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": name,
                            "choices": [],
                            "usage": openai_usage(result.usage),
                        }
                    )
    except ShoalError as exc:
        status = http_status_for(exc)
        yield sse(error_body(status, str(exc), code=error_code(exc)))
    except Exception as exc:  # the stream has started: report it in-band, log the rest
        log.exception("stream failed")
        yield sse(
            error_body(
                500,
                f"internal error ({type(exc).__name__}); see the server log",
                code="internal_error",
            )
        )
    yield sse("[DONE]")
