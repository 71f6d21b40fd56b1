"""Between the OpenAI wire format and Shoal's messages, tools and results.

Conversation rules (chat completions): leading ``system``/``developer`` messages become the
agent's instructions; the rest is the history. The last message must be from the user (a new
question) or a tool (results of calls the client ran), never from the assistant. A tool message
gets its tool's name from the assistant call it answers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi.responses import StreamingResponse

from shoal.agent import RunResult
from shoal.exceptions import ToolDefinitionError
from shoal.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    Usage,
    UserMessage,
)
from shoal.server.errors import ApiError
from shoal.server.schemas import (
    ChatMessageIn,
    ContentPart,
    NamedToolChoice,
    ResponseFormat,
    ToolIn,
)
from shoal.settings import ModelSettings
from shoal.tools import Tool

__all__ = [
    "Conversation",
    "answer_text",
    "arguments_of",
    "completion_id",
    "event_stream",
    "openai_usage",
    "output_schema_of",
    "settings_of",
    "to_conversation",
    "tool_choice_of",
    "tools_of",
]


def completion_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def text_of(content: str | list[ContentPart] | None, where: str) -> str:
    """The text of a message's content; only text parts are accepted."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for index, part in enumerate(content):
        if part.type not in ("text", "input_text", "output_text") or part.text is None:
            raise ApiError(
                400,
                f"{where}.content[{index}]: only text content is supported, not {part.type!r}",
                param=f"{where}.content",
            )
        pieces.append(part.text)
    return "".join(pieces)


class Conversation:
    """A request's messages, split the way the agent takes them."""

    def __init__(self, instructions: str, history: list[Message], message: str | None) -> None:
        self.instructions = instructions
        self.history = history
        #: the new user message; None when the conversation ends with tool results
        self.message = message


def to_conversation(messages: Sequence[ChatMessageIn], *, max_messages: int) -> Conversation:
    if len(messages) > max_messages:
        raise ApiError(
            400,
            f"too many messages: {len(messages)} (this server takes at most {max_messages})",
            param="messages",
        )
    instructions: list[str] = []
    history: list[Message] = []
    names: dict[str, str] = {}
    leading = True
    for index, item in enumerate(messages):
        where = f"messages[{index}]"
        text = text_of(item.content, where)
        if item.role in ("system", "developer"):
            if leading:
                instructions.append(text)
            else:
                history.append(SystemMessage(content=text))
            continue
        leading = False
        if item.role == "user":
            history.append(UserMessage(content=text))
        elif item.role == "assistant":
            calls = []
            for call in item.tool_calls or []:
                calls.append(
                    ToolCall(
                        id=call.id,
                        name=call.function.name,
                        arguments=arguments_of(call.function.arguments, f"{where}.tool_calls"),
                    )
                )
                names[call.id] = call.function.name
            history.append(AssistantMessage(content=text or None, tool_calls=tuple(calls)))
        else:  # tool
            if not item.tool_call_id:
                raise ApiError(400, f"{where}: a tool message needs tool_call_id", param=where)
            name = names.get(item.tool_call_id) or item.name or "tool"
            history.append(ToolMessage(tool_call_id=item.tool_call_id, name=name, content=text))
    if not history:
        raise ApiError(400, "messages: there is no user message to answer", param="messages")
    last = history[-1]
    if isinstance(last, UserMessage):
        return Conversation("\n\n".join(instructions), history[:-1], last.content)
    if isinstance(last, ToolMessage):
        return Conversation("\n\n".join(instructions), history, None)
    raise ApiError(
        400,
        f"messages: the last message must be from the user or a tool, not the {last.role}",
        param="messages",
    )


def arguments_of(text: str | None, where: str) -> dict[str, Any]:
    """A call's arguments sent as a JSON string, decoded; 400 unless they are a JSON object."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        raise ApiError(400, f"{where}: arguments are not JSON", param=where) from None
    if not isinstance(value, dict):
        raise ApiError(400, f"{where}: arguments must be a JSON object", param=where)
    return value


def tools_of(tools: Sequence[ToolIn] | None) -> list[Tool]:
    """The client's tools, as external tools: the model may call them, the client runs them."""
    result: list[Tool] = []
    seen: set[str] = set()
    for index, item in enumerate(tools or []):
        fn = item.function
        if fn.name in seen:
            raise ApiError(400, f"tools[{index}]: a second tool named {fn.name!r}", param="tools")
        seen.add(fn.name)
        try:
            result.append(
                Tool.external(fn.name, description=fn.description, parameters=fn.parameters)
            )
        except ToolDefinitionError as exc:
            raise ApiError(400, f"tools[{index}]: {exc}", param=f"tools[{index}]") from None
    return result


def tool_choice_of(
    choice: str | NamedToolChoice | None, tools: Sequence[Tool], extra: Sequence[str] = ()
) -> str | None:
    if choice is None:
        return None
    name = choice if isinstance(choice, str) else choice.function.name
    if isinstance(choice, NamedToolChoice) and name not in {
        *(t.name for t in tools),
        *extra,
    }:
        raise ApiError(
            400, f"tool_choice names {name!r}, which is not in tools", param="tool_choice"
        )
    if name in ("required",) and not tools and not extra:
        raise ApiError(
            400, "tool_choice is 'required' but no tools were given", param="tool_choice"
        )
    return name


def output_schema_of(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    """The JSON schema a chat-style ``response_format`` asks the answer to satisfy."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.json_schema is None or not fmt.json_schema.schema_:
        raise ApiError(
            400, "response_format: json_schema needs json_schema.schema", param="response_format"
        )
    return fmt.json_schema.schema_


def settings_of(
    *,
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    stop: str | list[str] | None,
    seed: int | None,
    max_tokens_limit: int,
) -> ModelSettings:
    if max_tokens is not None and max_tokens > max_tokens_limit:
        raise ApiError(
            400,
            f"max_tokens {max_tokens} is above this server's limit of {max_tokens_limit}",
            param="max_tokens",
        )
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise ApiError(400, "stop: at most 4 non-empty strings", param="stop")
    return ModelSettings(
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=tuple(stops),
        seed=seed,
    )


def answer_text(result: RunResult[Any]) -> str | None:
    """The text a run answered with; with pending calls, the text of the turn that made them."""
    if result.pending_calls:
        said = [m for m in result.new_messages if isinstance(m, AssistantMessage)]
        return said[-1].content or None if said else None
    output = result.output
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)


def event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    """Server-sent events, unbuffered by proxies."""
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
    }
