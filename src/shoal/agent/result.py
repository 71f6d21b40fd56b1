"""What a run returns and what a streamed run emits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from shoal.messages import Message, ToolCall, Usage
from shoal.models.base import RouteDecision
from shoal.observability import TraceEvent

__all__ = [
    "ApprovalEvent",
    "FinalEvent",
    "RunEvent",
    "RunResult",
    "StopReason",
    "TextEvent",
    "ToolCallEvent",
    "ToolCallRecord",
    "ToolResultEvent",
]

OutputT = TypeVar("OutputT")

#: ``final``: the model answered; ``max_steps``: the step budget ran out before an answer;
#: ``tool_calls``: the model called external tools, which the caller runs (``pending_calls``);
#: ``approval``: calls wait for a person (``pending_approvals``; go on with ``Agent.resume``)
StopReason = Literal["final", "max_steps", "tool_calls", "approval"]


@dataclass(frozen=True)
class ToolCallRecord:
    """One call the model made in a run, and what came of it."""

    call: ToolCall
    #: the function's return value; None when the call failed
    result: Any = None
    #: what the model was shown (the formatted result, or the error message)
    content: str = ""
    #: why the call failed (unknown tool, invalid arguments, exception, timeout); None if it ran
    error: str | None = None
    #: ``ok``, ``invalid`` (not run: unknown tool or bad arguments), ``failed``, ``timeout``,
    #: ``repeated`` (same call as earlier in the run: not run again, earlier result reused),
    #: ``blocked`` (a guard refused it: not run), ``rejected`` (a person refused it: not run)
    outcome: str = "ok"
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class RunResult(Generic[OutputT]):
    """The outcome of ``Agent.run``."""

    output: OutputT
    tool_calls: list[ToolCallRecord]
    usage: Usage
    stop_reason: StopReason
    #: the messages this run added to the conversation (user, assistant, tool)
    new_messages: list[Message]
    #: earlier messages left out of the last request to fit the context window
    trimmed_messages: int = 0
    thread_id: str | None = None
    #: model outputs that could not be used and were sent back for correction
    retries: int = 0
    model_name: str = ""
    #: decisions the loop made in code (forced answers, repeated calls), for tracing
    notes: list[str] = field(default_factory=list)
    #: validated calls to external tools (``Tool.external``) for the caller to run; the run
    #: stopped at them (``stop_reason == "tool_calls"``)
    pending_calls: list[ToolCall] = field(default_factory=list)
    #: the final answer was cut by the token limit (``max_tokens``), not ended by the model
    truncated: bool = False
    #: choices wrapper models made: the route taken, fallbacks, escalations (in order)
    decisions: list[RouteDecision] = field(default_factory=list)
    #: this run's id (in its trace, the audit log and the thread's approval record)
    run_id: str = ""
    agent_name: str = ""
    #: validated calls waiting for a person (``stop_reason == "approval"``); the run's state
    #: is in ``thread_id``: go on with ``Agent.resume(thread_id, approve=...)``
    pending_approvals: list[ToolCall] = field(default_factory=list)
    #: what happened, in order: the run, its model requests and tool calls (spans), routes,
    #: guard verdicts, approvals, retries and notes (see shoal.observability.TraceEvent)
    trace: list[TraceEvent] = field(default_factory=list)


@dataclass(frozen=True)
class TextEvent:
    """A piece of the model's answer text."""

    text: str
    step: int


@dataclass(frozen=True)
class ToolCallEvent:
    """The model asked for a call and its arguments validated; the tool is about to run."""

    call: ToolCall
    step: int


@dataclass(frozen=True)
class ToolResultEvent:
    """A call finished (or failed, or was rejected)."""

    record: ToolCallRecord
    step: int


@dataclass(frozen=True)
class ApprovalEvent:
    """A validated call waits for a person's approval (the run pauses after this step)."""

    call: ToolCall
    step: int
    reason: str = ""


@dataclass(frozen=True)
class FinalEvent(Generic[OutputT]):
    """The run is over."""

    result: RunResult[OutputT]


RunEvent = TextEvent | ToolCallEvent | ToolResultEvent | ApprovalEvent | FinalEvent[Any]
