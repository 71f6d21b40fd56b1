"""The conversation data model every layer speaks.

A conversation is a list of :data:`Message` values, each tagged by ``role``:

- :class:`SystemMessage`: instructions; never trimmed from a request.
- :class:`UserMessage`: what the person said.
- :class:`AssistantMessage`: what the model answered: text, tool calls, or both.
- :class:`ToolMessage`: the result (or error) of one :class:`ToolCall`, linked by id.

Requests to a model carry :class:`ToolDefinition` values (name, description, JSON schema of the
arguments) and a :data:`ToolChoice`. Every message is a pydantic model, so a thread store can
serialise it with ``model_dump_json`` and read it back with :data:`MESSAGE_ADAPTER`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "MESSAGE_ADAPTER",
    "MESSAGE_LIST_ADAPTER",
    "AssistantMessage",
    "Message",
    "SystemMessage",
    "ToolCall",
    "ToolChoice",
    "ToolDefinition",
    "ToolMessage",
    "Usage",
    "UserMessage",
    "last_user_text",
    "new_call_id",
]


def new_call_id() -> str:
    """A fresh tool-call id in the OpenAI style (``call_`` + 24 hex digits)."""
    return "call_" + uuid.uuid4().hex[:24]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ToolCall(_Frozen):
    """One call the model asked for. ``arguments`` is the decoded JSON object."""

    id: str = Field(default_factory=new_call_id)
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class SystemMessage(_Frozen):
    role: Literal["system"] = "system"
    content: str


class UserMessage(_Frozen):
    role: Literal["user"] = "user"
    content: str


class AssistantMessage(_Frozen):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


class ToolMessage(_Frozen):
    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]

MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)
MESSAGE_LIST_ADAPTER: TypeAdapter[list[Message]] = TypeAdapter(list[Message])


class ToolDefinition(_Frozen):
    """What a model is told about a tool: the OpenAI ``function`` object, in short."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


def last_user_text(messages: Sequence[Message]) -> str:
    """The text of the last user message (``""`` when there is none)."""
    for message in reversed(messages):
        if isinstance(message, UserMessage):
            return message.content
    return ""


#: ``"auto"``: text or a call; ``"none"``: text only; ``"required"``: some call;
#: any other string: a call to the tool of that name.
ToolChoice = str


class Usage(BaseModel):
    """Token and time accounting, added up across the requests of a run."""

    model_config = ConfigDict(extra="forbid")

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: prompt tokens the engine did not have to evaluate again (prefix reuse)
    cached_prompt_tokens: int = 0
    model_seconds: float = 0.0
    steps: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            requests=self.requests + other.requests,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens,
            model_seconds=self.model_seconds + other.model_seconds,
            steps=self.steps + other.steps,
        )
