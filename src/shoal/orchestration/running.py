"""Running a flow: its record (:class:`FlowRun`), pauses, and the stateless flows' base.

A :class:`FlowRun` is one run (or resume) of a flow. It keeps a
:class:`~shoal.observability.RunRecorder` named after the flow, whose ``system`` span encloses
everything the flow does (agent runs made inside it nest under it by themselves, through the
recorder's context variable), collects the members' results, and at the end merges its own
events with theirs into the :class:`~shoal.orchestration.FlowResult` and stores them with the
thread: the flow's events, and the traces of member runs that were not on that thread (those
on it were stored by their agents).

Pauses. When a member stops for approval (``stop_reason == "approval"``), the flow stops too,
with ``pending_approvals`` and a ``thread_id`` whose metadata key :data:`FLOW_KEY`
(``"shoal.flow"``) holds, per flow name, where the flow was (:func:`read_state`,
:func:`write_state`); ``resume`` continues from there. :class:`StatelessFlow` does this for the
flows whose members each run in a fresh conversation (pipeline, fan-out, critic loop, chain):
a flow's body returns :meth:`Outcome.paused` (its position, plus the paused member's thread
under ``"thread"``), and on resume gets that position back with a :class:`Resumption` (the
person's decision) whose :meth:`Resumption.of` resumes the member in that thread. Member
results a position must keep (a fan-out's finished branches, a critic loop's last answer) are
stored with :func:`result_to_json` and read back with :func:`result_from_json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_jsonable_python

from shoal.agent import (
    calls_from_json,
    calls_to_json,
    check_decisions,
    pending_approval,
    stored_role,
)
from shoal.exceptions import ApprovalError, UserError
from shoal.messages import AssistantMessage, Message, ToolCall, Usage, UserMessage
from shoal.observability import RunRecorder, TraceEvent
from shoal.orchestration.base import (
    FlowBase,
    FlowResult,
    Resumption,
    RouteChoice,
    approvals_for,
    collector,
    output_text,
    preview,
    store_trace,
)
from shoal.threads import ThreadStore

__all__ = [
    "FLOW_KEY",
    "FlowRun",
    "Outcome",
    "Resumption",
    "StatelessFlow",
    "approvals_for",
    "paused_member",
    "read_state",
    "result_from_json",
    "result_to_json",
    "write_state",
]

#: the thread metadata key under which paused flows keep their position (per flow name)
FLOW_KEY = "shoal.flow"


def result_to_json(result: FlowResult) -> dict[str, Any]:
    """What a paused flow keeps of a member's result: its answer, agent and stop reason."""
    return {
        "output": to_jsonable_python(result.output, fallback=str),
        "text": result.text,
        "agent": result.agent,
        "stop_reason": result.stop_reason,
    }


def result_from_json(data: Mapping[str, Any]) -> FlowResult:
    """A member's result kept by :func:`result_to_json` (no runs, trace or thread)."""
    return FlowResult(
        output=data.get("output"),
        text=str(data.get("text", "")),
        agent=str(data.get("agent", "")),
        stop_reason=str(data.get("stop_reason", "final")),
        thread_id=None,
    )


# -- flow state in thread metadata ------------------------------------------------------------


async def read_state(store: ThreadStore, thread_id: str, flow: str) -> dict[str, Any] | None:
    """Where the flow named ``flow`` paused in ``thread_id`` (None if it did not)."""
    thread = await store.get_thread(thread_id)
    states = thread.metadata.get(FLOW_KEY)
    state = states.get(flow) if isinstance(states, dict) else None
    return dict(state) if isinstance(state, dict) else None


async def write_state(
    store: ThreadStore, thread_id: str, flow: str, state: Mapping[str, Any] | None
) -> None:
    """Record (or, with None, clear) the flow's position in the thread's metadata."""
    thread = await store.get_thread(thread_id)
    metadata = dict(thread.metadata)
    states = dict(metadata.get(FLOW_KEY) or {})
    if state is None:
        if flow not in states:
            return
        states.pop(flow)
    else:
        states[flow] = dict(state)
    if states:
        metadata[FLOW_KEY] = states
    else:
        metadata.pop(FLOW_KEY, None)
    await store.update_thread(thread_id, metadata=metadata)


@dataclass
class Outcome:
    """How one run of a flow ended, before it becomes a :class:`FlowResult`."""

    output: Any
    agent: str
    stop_reason: str = "final"
    text: str | None = None
    pending_approvals: list[ToolCall] = field(default_factory=list)
    pending_calls: list[ToolCall] = field(default_factory=list)
    route: RouteChoice | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: where a paused flow is (stored in the thread's metadata under the flow's name)
    state: dict[str, Any] | None = None

    @classmethod
    def of(cls, result: FlowResult, **changes: Any) -> Outcome:
        """The outcome that passes a member's result on."""
        values: dict[str, Any] = {
            "output": result.output,
            "agent": result.agent,
            "stop_reason": result.stop_reason,
            "text": result.text,
            "pending_approvals": list(result.pending_approvals),
            "pending_calls": list(result.pending_calls),
            "route": result.route,
        }
        notes = [*result.notes, *changes.pop("notes", [])]
        values.update(changes, notes=notes)
        return cls(**values)

    @classmethod
    def paused(cls, result: FlowResult, state: Mapping[str, Any], **changes: Any) -> Outcome:
        """The outcome that passes on a member's stop, with where the flow is: ``state`` and
        the member's thread as ``"thread"`` (kept only for a pause for approval; resumed
        through :meth:`Resumption.of`)."""
        return cls.of(result, state={**state, "thread": result.thread_id}, **changes)


class FlowRun:
    """One run (or resume) of a flow: its recorder, its members' results and its thread."""

    def __init__(self, flow: FlowBase, thread_id: str | None) -> None:
        self.flow = flow
        self.thread_id = thread_id
        self.recorder = RunRecorder(flow.name, thread_id=thread_id)
        self.members: list[FlowResult] = []
        #: usage of requests the flow made itself (a router's classifier)
        self.usage = Usage()
        #: how the body ended (set by :meth:`execute`)
        self.outcome: Outcome | None = None
        #: events of runs inside members that no member result holds (see :func:`collect`)
        self.collected: list[TraceEvent] = []

    def add(self, result: FlowResult) -> FlowResult:
        self.members.append(result)
        return result

    def use_thread(self, thread_id: str) -> None:
        self.thread_id = thread_id
        self.recorder.thread_id = thread_id

    async def execute(
        self, body: Callable[[], Awaitable[Outcome]], *, entry: str | None, message: str | None
    ) -> FlowResult:
        """Run ``body`` inside the flow's ``system`` span (``entry``: the first member; the
        input ``message``, cut short); store the trace with the thread."""
        token = collector.set(self.collected)
        span = {"system": self.flow.name, "entry": entry, "message": preview(message)}
        try:
            with self.recorder.span("system", **span) as current:
                outcome = self.outcome = await body()
                current.update(stop_reason=outcome.stop_reason, agent=outcome.agent)
        except Exception:
            with contextlib.suppress(Exception):  # the run's own error matters more
                await self.store_trace()
            raise
        finally:
            collector.reset(token)
        await self.store_trace()
        return self.result(outcome)

    def result(self, outcome: Outcome) -> FlowResult:
        members = self.members
        trace = [
            *self.recorder.events,
            *self.collected,
            *(e for m in members for e in m.trace),
        ]
        usage = self.usage
        for member in members:
            usage = usage + member.usage
        return FlowResult(
            output=outcome.output,
            text=outcome.text if outcome.text is not None else output_text(outcome.output),
            agent=outcome.agent,
            stop_reason=outcome.stop_reason,
            thread_id=self.thread_id,
            path=[name for m in members for name in m.path],
            runs=[run for m in members for run in m.runs],
            trace=sorted(trace, key=lambda e: e.at),
            pending_approvals=outcome.pending_approvals,
            pending_calls=outcome.pending_calls,
            usage=usage,
            route=outcome.route,
            outputs=outcome.outputs,
            notes=outcome.notes,
        )

    async def store_trace(self) -> None:
        """Append the flow's events, and the traces of members that ran elsewhere, to the
        flow's thread (members on the same thread stored their own)."""
        if self.thread_id is None:
            return
        events = [*self.recorder.events, *self.collected]
        for member in self.members:
            if member.thread_id != self.thread_id:
                events.extend(member.trace)
        if not events:
            return
        events.sort(key=lambda e: e.at)
        await store_trace(self.flow.store, self.thread_id, events)


async def paused_member(store: ThreadStore, thread_id: str) -> str | None:
    """The agent whose run waits for approval in ``thread_id`` (None if none does)."""
    record = await pending_approval(store, thread_id)
    return str(record.get("agent")) if record else None


class StatelessFlow(FlowBase):
    """A flow whose members each run in a fresh conversation (pipeline, fan-out, critic loop,
    chain). On a thread, the user's message and the final answer are appended to it; a pause
    stores the flow's position (:meth:`Outcome.state`) in the thread, made if there was none.

    Subclasses implement :meth:`begin` (from the input text) and :meth:`carry_on` (from a
    stored position: resume the member that paused, with :meth:`Resumption.of`, and go on).
    """

    def entry(self) -> str:
        return ""

    async def pending_approvals(self, thread: str) -> list[ToolCall]:
        """The calls of this flow that wait for approval in ``thread`` (empty if none)."""
        state = await read_state(self.store, thread, self.name)
        return calls_from_json(state.get("waiting")) if state else []

    async def begin(self, run: FlowRun, text: str, role: str | None) -> Outcome:
        raise NotImplementedError

    async def carry_on(self, run: FlowRun, state: dict[str, Any], decision: Resumption) -> Outcome:
        raise NotImplementedError

    async def run(
        self, message: str | None, *, thread: str | None = None, role: str | None = None
    ) -> FlowResult:
        history: list[Message] = []
        if thread is not None:
            await self.store.get_thread(thread)  # ThreadNotFoundError before any work
            if await read_state(self.store, thread, self.name) is not None:
                raise ApprovalError(
                    f"thread {thread} has a run of {self.name!r} waiting for approval: "
                    "resume it first"
                )
            history = await self.store.get_messages(thread)
        if message is None:
            last = history[-1] if history else None
            if not isinstance(last, UserMessage):
                raise UserError(
                    f"{self.name}: nothing to answer: give a message, or a thread that ends "
                    "with a user message"
                )
            text, new_message = last.content, False
        else:
            text, new_message = message, True
        run = FlowRun(self, thread)
        result = await run.execute(
            lambda: self.begin(run, text, role), entry=self.entry(), message=text
        )
        return await self._settle(run, result, text, new_message, role)

    async def _resume(self, thread: str, decision: Resumption) -> FlowResult:
        state = await read_state(self.store, thread, self.name)
        if state is None:
            raise ApprovalError(f"{self.name}: nothing is waiting for approval in {thread}")
        check_decisions(decision.approve, calls_from_json(state.get("waiting")))
        if decision.role is None:
            # the flow goes on in the role it started with, not the approver's
            decision = dataclasses.replace(decision, role=stored_role(state))
        await write_state(self.store, thread, self.name, None)
        run = FlowRun(self, thread)
        result = await run.execute(
            lambda: self.carry_on(run, state, decision), entry=self.entry(), message=None
        )
        return await self._settle(
            run,
            result,
            str(state.get("input", "")),
            bool(state.get("new_message")),
            decision.role,
        )

    async def _settle(
        self, run: FlowRun, result: FlowResult, text: str, new_message: bool, role: str | None
    ) -> FlowResult:
        """Store a pause's position, or append the exchange to the thread when it is done."""
        thread_id = run.thread_id
        if result.stop_reason == "approval":
            state = dict(run.outcome.state or {}) if run.outcome else {}
            state.update(
                input=text,
                new_message=new_message,
                role=role,
                waiting=calls_to_json(result.pending_approvals),
            )
            if thread_id is None:
                thread_id = (await self.store.create_thread()).id
                run.use_thread(thread_id)
                await run.store_trace()
            await write_state(self.store, thread_id, self.name, state)
            return dataclasses.replace(result, thread_id=thread_id)
        if thread_id is not None and result.stop_reason == "final":
            messages: list[Message] = [UserMessage(content=text)] if new_message else []
            messages.append(AssistantMessage(content=result.text))
            await self.store.append_messages(thread_id, messages)
        return result
