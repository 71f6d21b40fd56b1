"""The one seam between the agent loop and every model backend.

A backend implements :class:`Model`: ``request`` (one completion) and ``request_stream``
(the same, as events), both over a list of :mod:`shoal.messages` values and a
:class:`ModelRequestParameters` (tools, tool choice, an optional JSON schema the answer must
satisfy, sampling settings). The backend decides *how* to honour the parameters (a grammar on
the embedded engine, native fields on a server, parsing otherwise) and returns a
:class:`ModelResponse` whose ``tool_calls`` are parsed but not yet validated: validation against
the tools belongs to the loop, which owns the tools. What a backend can do is described by its
:class:`~shoal.models.profiles.ModelProfile`, which the loop asks instead of checking classes.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from shoal.messages import Message, ToolCall, ToolChoice, ToolDefinition, Usage
from shoal.models.profiles import ModelProfile
from shoal.settings import ModelSettings

__all__ = [
    "FinishReason",
    "Model",
    "ModelRequestParameters",
    "ModelResponse",
    "ModelStreamEvent",
    "ResponseDone",
    "RouteDecision",
    "TextDelta",
]

FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class ModelRequestParameters:
    """What one request asks of the model besides the messages."""

    #: the tools declared to the model (described in the prompt)
    tools: tuple[ToolDefinition, ...] = ()
    #: ``auto`` (text or a call), ``none``, ``required`` (some call), or a tool name
    tool_choice: ToolChoice = "auto"
    #: names of the declared tools that may be called in this request (None: all of them)
    allowed_tools: tuple[str, ...] | None = None
    #: texts that free-form string and number arguments must be copied from (for tiny models;
    #: backends that cannot constrain decoding ignore it)
    copy_sources: tuple[str, ...] = ()
    #: JSON schema a text answer must satisfy (structured output); None for free text
    output_schema: dict[str, Any] | None = None
    settings: ModelSettings = field(default_factory=ModelSettings)
    #: per tool name, a narrower parameter schema to constrain that tool's call with (for tiny
    #: models: the optional parameters the request mentions become required, the others go)
    call_schemas: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    #: constrain decoding with a grammar where the backend can; False reads calls back by
    #: parsing free text, as on a backend that cannot constrain (for measuring strategies)
    constrained: bool = True

    def offered_tools(self) -> tuple[ToolDefinition, ...]:
        """The tools the model may call under ``tool_choice``."""
        if self.tool_choice == "none":
            return ()
        pool = tuple(
            t for t in self.tools if self.allowed_tools is None or t.name in self.allowed_tools
        )
        if self.tool_choice in ("auto", "required"):
            return pool
        return tuple(t for t in pool if t.name == self.tool_choice)

    def described_tools(self) -> tuple[ToolDefinition, ...]:
        """The tools a prompt that lists only callable tools describes: the offered ones, but
        every allowed tool when ``tool_choice`` names one (the grammar forces the named one),
        so that an agent's prompt prefix stays the same whichever tool a request names."""
        if self.tool_choice in ("auto", "required", "none"):
            return self.offered_tools()
        return tuple(
            t for t in self.tools if self.allowed_tools is None or t.name in self.allowed_tools
        )

    def narrowed(self, tools: Sequence[ToolDefinition]) -> tuple[ToolDefinition, ...]:
        """``tools``, each with its narrowed call schema (:attr:`call_schemas`) if it has one."""
        return tuple(
            t.model_copy(update={"parameters": self.call_schemas[t.name]})
            if t.name in self.call_schemas
            else t
            for t in tools
        )

    def call_tools(self) -> tuple[ToolDefinition, ...]:
        """The tools the request may call, as a call to each must look (narrowed)."""
        return self.narrowed(self.offered_tools())

    @property
    def call_required(self) -> bool:
        return self.tool_choice not in ("auto", "none") and bool(self.offered_tools())


class RouteDecision(BaseModel):
    """One choice a wrapper model made about which model answers (for results and metrics)."""

    model_config = ConfigDict(frozen=True)

    #: the name of the wrapper that decided (a :class:`RouterModel`, a :class:`FallbackModel`...)
    router: str
    #: ``rule`` / ``classifier`` / ``default`` (a router's route), ``fallback`` (the previous
    #: model failed), ``escalation`` (the previous tier's answer was rejected), ``balance``
    #: (an endpoint among several serving the same model)
    kind: Literal["rule", "classifier", "default", "fallback", "escalation", "balance"]
    #: the name of the model chosen (or moved to)
    model: str
    #: why, in a few words (the rule, the label, the error, the rejected output)
    reason: str = ""
    #: what deciding cost (a classifier's request) when :meth:`Model.route` made the decision;
    #: None in a response's decisions, whose cost is already in the response's usage
    usage: Usage | None = None


class ModelResponse(BaseModel):
    """One completion. ``tool_calls`` are parsed, not validated; ``raw`` is the model's text."""

    model_config = ConfigDict(frozen=True)

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    raw: str = ""
    finish_reason: FinishReason = "stop"
    usage: Usage = Usage()
    #: set when the output looked like a tool call but could not be parsed
    parse_error: str | None = None
    model_name: str = ""
    #: the choices wrapper models made to produce this response, outermost first
    decisions: tuple[RouteDecision, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    """A piece of answer text, streamed as soon as it is known not to be a tool call."""

    text: str


@dataclass(frozen=True)
class ResponseDone:
    """The last event of a stream: the whole response."""

    response: ModelResponse


ModelStreamEvent = TextDelta | ResponseDone


class Model(abc.ABC):
    """A backend. Subclasses implement :meth:`request_stream`; :meth:`request` drains it."""

    #: the name results and metrics report (an alias such as ``smollm2-135m``)
    name: str
    profile: ModelProfile

    @abc.abstractmethod
    def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        """Stream one completion: any number of :class:`TextDelta`, then a :class:`ResponseDone`."""

    async def request(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> ModelResponse:
        """One completion."""
        final: ModelResponse | None = None
        async for event in self.request_stream(messages, params):
            if isinstance(event, ResponseDone):
                final = event.response
        if final is None:  # pragma: no cover - a backend bug, not a user error
            raise RuntimeError(f"{type(self).__name__} ended its stream without a response")
        return final

    def count_tokens(self, messages: Sequence[Message], params: ModelRequestParameters) -> int:
        """Tokens the prompt for this request takes. Default: a character estimate."""
        chars = sum(len(_message_text(m)) + 8 for m in messages)
        chars += sum(len(t.model_dump_json()) for t in params.tools)
        return chars // 3 + 1

    @property
    def context_length(self) -> int:
        return self.profile.context_length

    async def route(self, messages: Sequence[Message]) -> tuple[Model, tuple[RouteDecision, ...]]:
        """The model that will answer this conversation, and the decisions that picked it.

        The agent asks once per run, before its first request, and then talks to (and reads the
        profile of) the model returned. A plain backend returns itself; a router returns the
        model its rules or classifier choose (itself routed in turn).
        """
        return self, ()

    async def prepare(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Load what the first request would otherwise load (weights), ahead of time."""

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release what the backend holds (weights, connections)."""


def _message_text(message: Message) -> str:
    if message.role == "assistant":
        calls = "".join(c.model_dump_json() for c in message.tool_calls)
        return (message.content or "") + calls
    return message.content
