"""Executing the calls of a run: validate, screen, run (or hold back), record.

Every call a run makes, whether the model asked for it or a route decided it, goes through
:meth:`ToolCallsMixin._execute`:

- A call identical to one already made in the run is not run again: its earlier result is
  reused and the next step must answer in text.
- The arguments are repaired where that is safe and validated against the tool's parameters.
  An unknown tool or invalid arguments go back to the model as an error and cost one retry;
  refused arguments too large for the conversation are replaced by a marker.
- The guards screen the call. A blocked call is answered with the reason (no retry spent, the
  model answers in text next); a call that needs approval is held in ``awaiting`` and the run
  pauses after this step.
- A call to an external tool is held in ``pending`` for the caller. Any other call runs; a tool
  that raises or times out costs one retry, and a result is clipped to
  :data:`MAX_TOOL_RESULT_CHARS` and screened before the model reads it.

A resumed run starts here as well: :meth:`ToolCallsMixin._resumed_calls` runs the calls a
person approved and answers the rejected ones.

Why a mixin and not a collaborator object: executing a call reads and writes the run's state in
both directions. It appends to the conversation, sets the flags that steer the next step
(``force_text``, ``last_step_failed``), spends the run's retry budget (which may switch the run
to a fallback route) and fills ``pending`` and ``awaiting``, which end the loop. A separate
object would have to hold the run and reach into it for all of that, or copy the state back
after every call. As the one base class of :class:`~shoal.agent.loop.Run` it shares the run's
state, and the attributes and four methods it needs from the run are declared below, so the seam
is written down and type-checked. There is no stack of mixins: the run implements the four
declared methods and overrides nothing else.
"""

from __future__ import annotations

import contextvars
import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from shoal.agent.result import (
    ApprovalEvent,
    RunEvent,
    ToolCallEvent,
    ToolCallRecord,
    ToolResultEvent,
)
from shoal.exceptions import (
    ToolArgumentsError,
    ToolError,
    ToolExecutionError,
    ToolTimeoutError,
    UnknownToolError,
)
from shoal.guards import GuardContext, TextStage, Verdict, screen_call
from shoal.messages import AssistantMessage, Message, ToolCall, ToolMessage
from shoal.observability import RunRecorder
from shoal.toolcalls import coerce_arguments
from shoal.tools import Tool, format_tool_result

if TYPE_CHECKING:
    from shoal.agent.agent import Agent

__all__ = ["MAX_TOOL_RESULT_CHARS", "ToolCallsMixin", "current_role", "preview"]

#: the role of the run whose tool is executing in this context (see :func:`current_role`)
_CALLER_ROLE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "shoal_caller_role", default=None
)


def current_role() -> str | None:
    """The role of the run whose tool is executing now (None outside a tool call, or for a run
    without a role). A tool that runs another agent passes it on (:func:`~shoal.orchestration.
    agent_tool` does), so a delegate never gets more tools than its caller's role allows."""
    return _CALLER_ROLE.get()


_OUTCOMES: dict[type[ToolError], str] = {
    UnknownToolError: "invalid",
    ToolArgumentsError: "invalid",
    ToolExecutionError: "failed",
    ToolTimeoutError: "timeout",
}
#: longest tool result shown to the model, in characters; the rest is cut with a marker
MAX_TOOL_RESULT_CHARS = 4000


class ToolCallsMixin(ABC):
    """Executing calls, for :class:`~shoal.agent.loop.Run` (see the module docstring)."""

    # the run's state that executing calls reads and writes (set by Run.__init__)
    agent: Agent[Any]
    recorder: RunRecorder
    guard_context: GuardContext
    permitted: frozenset[str]
    new: list[Message]
    records: list[ToolCallRecord]
    done_calls: dict[str, ToolCallRecord]
    pending: list[ToolCall]
    awaiting: list[ToolCall]
    decided: list[tuple[ToolCall, bool, str]]
    force_text: bool
    last_step_failed: bool

    # what executing calls needs the run to do

    @abstractmethod
    def _note(self, text: str) -> None:
        """Add ``text`` to the run's notes (and its trace)."""

    @abstractmethod
    def _spend_retry(self, why: str) -> None:
        """Spend one unit of the retry budget because of ``why``."""

    @abstractmethod
    def _screen(self, stage: TextStage, text: str, call: ToolCall | None = None) -> str:
        """``text`` as the guards let it through at ``stage``."""

    @abstractmethod
    def _guard_events(self, stage: str, verdicts: Sequence[Verdict], tool: str | None) -> None:
        """Record the guards' ``verdicts`` in the trace."""

    async def _resumed_calls(self) -> AsyncIterator[RunEvent]:
        """A resumed run: run the approved calls, answer the rejected ones."""
        for call, approved, reason in self.decided:
            self.recorder.event(
                "approval.decided",
                tool=call.name,
                call_id=call.id,
                approved=approved,
                reason=reason,
            )
            if approved:
                self._note(f"call {call.name} ({call.id}) approved")
                async for event in self._execute(call, 0, approved=True):
                    yield event
                continue
            self._note(f"call {call.name} ({call.id}) rejected")
            why = "the call was rejected by a person" + (f": {reason}" if reason else "")
            record = ToolCallRecord(
                call=call, content=f"Error: {why}", error=why, outcome="rejected"
            )
            self._record(record, call)
            yield ToolResultEvent(record, 0)

    async def _make_calls(
        self, text: str | None, calls: tuple[ToolCall, ...], step: int
    ) -> AsyncIterator[RunEvent]:
        """Record the assistant's turn with ``calls`` and execute them in order."""
        self.new.append(AssistantMessage(content=text, tool_calls=calls))
        for call in calls:
            async for tool_event in self._execute(call, step):
                yield tool_event

    async def _execute(
        self, call: ToolCall, step: int, *, approved: bool = False
    ) -> AsyncIterator[RunEvent]:
        """Validate, screen and run one call (``approved``: a person already said yes)."""
        key = call.name + json.dumps(call.arguments, sort_keys=True, default=str)
        earlier = self.done_calls.get(key)
        if earlier is not None:
            # the model repeats itself: reuse the result and make it answer next
            self.force_text = True
            self._note(f"step {step}: repeated call {call.name}; earlier result reused")
            repeated = ToolCallRecord(
                call=call, result=earlier.result, content=earlier.content, outcome="repeated"
            )
            self._record(repeated, call)
            yield ToolResultEvent(repeated, step)
            return
        with self.recorder.span(
            "tool.call", tool=call.name, call_id=call.id, arguments=call.arguments
        ) as span:
            record: ToolCallRecord | None = None
            async for event in self._attempt(call, step, key, approved=approved):
                if isinstance(event, ToolResultEvent):
                    record = event.record
                yield event
            if record is not None:
                span.update(
                    arguments=record.call.arguments,
                    outcome=record.outcome,
                    result=preview(record.content),
                    error=record.error,
                )
            else:
                span.update(outcome="approval" if self.awaiting else "pending")

    async def _attempt(
        self, call: ToolCall, step: int, key: str, *, approved: bool
    ) -> AsyncIterator[RunEvent]:
        agent = self.agent
        tool = agent.tools.get(call.name)
        started = time.perf_counter()
        try:
            if tool is None:
                offered = ", ".join(n for n in agent.tools if n in self.permitted) or "none"
                raise UnknownToolError(
                    f"unknown tool {call.name!r}; available tools: {offered}", tool_name=call.name
                )
            coerced, changes = coerce_arguments(call.arguments, tool.definition.parameters)
            if changes:
                self._note(f"step {step}: {call.name} arguments repaired: {'; '.join(changes)}")
            arguments = tool.validate(coerced)
            checked = call.model_copy(update={"arguments": arguments})
            if not approved:
                blocked, ask = self._screen_call(checked, tool)
                if blocked is not None:
                    # not run, no retry spent: the model reads why and answers in text next
                    self.force_text = True
                    record = ToolCallRecord(
                        call=checked,
                        content=f"Error: blocked by guard {blocked.guard}: {blocked.reason}",
                        error=blocked.reason,
                        outcome="blocked",
                    )
                    self._withhold_arguments(call)
                    self._record(record, call)
                    yield ToolResultEvent(record, step)
                    return
                if ask is not None:
                    self.awaiting.append(checked)
                    self.recorder.event(
                        "approval.requested",
                        tool=call.name,
                        call_id=call.id,
                        arguments=arguments,
                        reason=ask,
                    )
                    self._note(f"step {step}: {call.name} waits for approval ({ask})")
                    yield ApprovalEvent(checked, step, ask)
                    return
            if tool.external_only:
                self.pending.append(checked)
                yield ToolCallEvent(checked, step)
                return
            yield ToolCallEvent(call, step)
            token = _CALLER_ROLE.set(self.guard_context.role)
            try:
                value = await tool.call(arguments)
            finally:
                _CALLER_ROLE.reset(token)
        except ToolError as exc:
            if isinstance(exc, UnknownToolError | ToolArgumentsError):
                self._withhold_arguments(call)
            self._spend_retry(str(exc))
            self.last_step_failed = not isinstance(exc, ToolExecutionError | ToolTimeoutError)
            outcome = _OUTCOMES.get(type(exc), "failed")
            record = ToolCallRecord(
                call=call,
                content=f"Error: {exc}",
                error=str(exc),
                outcome=outcome,
                seconds=time.perf_counter() - started,
            )
        else:
            content = _clip(format_tool_result(value))
            if agent.guards:
                content = self._screen("tool_result", content, call)
            record = ToolCallRecord(
                call=call,
                result=value,
                content=content,
                seconds=time.perf_counter() - started,
            )
            self.done_calls[key] = record
        self._record(record, call)
        yield ToolResultEvent(record, step)

    def _screen_call(self, call: ToolCall, tool: Tool) -> tuple[Verdict | None, str | None]:
        """(the guard verdict that blocks ``call``, or None; why it needs approval, or None)."""
        verdicts = (
            screen_call(self.agent.guards, call, self.guard_context, dangerous=tool.dangerous)
            if self.agent.guards
            else []
        )
        if call.name not in self.permitted and not any(v.action == "block" for v in verdicts):
            # a tool no guard offered: refused even if no guard checks calls
            verdicts = [
                *verdicts,
                Verdict(
                    action="block",
                    reason=f"the tool {call.name} was not offered in this run",
                    guard="permissions",
                ),
            ]
        self._guard_events("tool_call", verdicts, call.name)
        blocked = next((v for v in verdicts if v.action == "block"), None)
        if blocked is not None:
            return blocked, None
        asked = next((v for v in verdicts if v.action == "approve"), None)
        if asked is not None:
            return None, asked.reason or f"guard {asked.guard} asks for approval"
        if tool.requires_approval:
            return None, f"{call.name} requires approval"
        return None, None

    def _withhold_arguments(self, call: ToolCall) -> None:
        """Keep a refused call's oversized arguments out of the conversation (a hostile model
        must not fill the context with them): the assistant turn shows a marker instead."""
        size = len(json.dumps(call.arguments, default=str))
        if size <= MAX_TOOL_RESULT_CHARS:
            return
        for index in range(len(self.new) - 1, -1, -1):
            message = self.new[index]
            if isinstance(message, AssistantMessage) and any(
                c.id == call.id for c in message.tool_calls
            ):
                marker = {"withheld": f"{size} characters of arguments, refused"}
                calls = tuple(
                    c.model_copy(update={"arguments": marker}) if c.id == call.id else c
                    for c in message.tool_calls
                )
                self.new[index] = message.model_copy(update={"tool_calls": calls})
                return

    def _record(self, record: ToolCallRecord, call: ToolCall) -> None:
        self.records.append(record)
        self.new.append(
            ToolMessage(
                tool_call_id=call.id,
                name=call.name,
                content=record.content,
                is_error=record.error is not None,
            )
        )


def _clip(text: str) -> str:
    if len(text) <= MAX_TOOL_RESULT_CHARS:
        return text
    cut = len(text) - MAX_TOOL_RESULT_CHARS
    return text[:MAX_TOOL_RESULT_CHARS] + f"... [{cut} more characters cut]"


def preview(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters (for traces)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
