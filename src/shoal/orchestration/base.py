"""What every flow shares: its result, the :class:`Flow` protocol, and adapting members.

A *flow* composes agents in code: a router, a team with handoffs, a pipeline, a fan-out, a
critic loop, a mini-chain. Every flow has the same entry points as an agent,
``run(message, thread=, role=)`` and ``resume(thread, approve=, reason=)`` (after a pause for
approval), and returns a :class:`FlowResult`: the answer, which agents ran (``path``, ``runs``),
the route taken, and the *trace*: the flow's own events (spans ``system``, ``pipeline.step``,
``fanout``, ``chain.step``; points ``handoff``, ``agent.route``, ``critic.round``) merged with
the trace of every agent run, ordered by time. An agent is adapted to a flow by :func:`as_flow`.

Threads. Flows whose members share the conversation (a :class:`~shoal.orchestration.Router`, a
:class:`~shoal.orchestration.Team`) run them *on* the caller's thread, so the members must use
the flow's store: agents are copied onto it (:func:`bind_member`; ``Agent`` objects passed in
are never modified). The other flows run each member in a fresh conversation (a step has one
small task); on a thread they append the user's message and the final answer. How a run is
recorded and paused is in :mod:`shoal.orchestration.running`.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Self, TypeVar, runtime_checkable

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from shoal.agent import Agent, RunResult
from shoal.exceptions import UserError
from shoal.messages import ToolCall, Usage
from shoal.observability import TraceEvent
from shoal.threads import InMemoryThreadStore, ThreadStore

__all__ = [
    "AgentFlow",
    "Flow",
    "FlowBase",
    "FlowResult",
    "Resumption",
    "RouteChoice",
    "approvals_for",
    "as_flow",
    "bind_member",
    "clone_agent",
    "collect",
    "describe",
    "member_descriptions",
    "output_text",
    "store_trace",
]

T = TypeVar("T")

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True)
class RouteChoice:
    """Where a :class:`~shoal.orchestration.Router` sends a message, decided how, and why."""

    target: str
    by: Literal["rule", "classifier", "default"]
    reason: str


@dataclass(frozen=True)
class FlowResult:
    """The outcome of a flow's (or an agent's, through :func:`as_flow`) run or resume."""

    #: the final answer: text, or the validated object of an agent with an output type
    output: Any
    #: the answer as text (JSON for objects)
    text: str
    #: the member that produced ``output`` (an agent's name, or the flow's when code did)
    agent: str
    #: ``final``, ``approval``, ``max_steps``, ``tool_calls`` or ``max_handoffs``
    stop_reason: str
    thread_id: str | None
    #: the agents that ran, in order (names; an agent that ran twice appears twice)
    path: list[str] = field(default_factory=list)
    #: every agent run, in order
    runs: list[RunResult[Any]] = field(default_factory=list)
    #: the flow's own events and every run's trace, ordered by time
    trace: list[TraceEvent] = field(default_factory=list)
    #: calls waiting for a person (``stop_reason == "approval"``): go on with ``resume``
    pending_approvals: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    #: the route a router took
    route: RouteChoice | None = None
    #: calls to external tools for the caller to run (``stop_reason == "tool_calls"``)
    pending_calls: list[ToolCall] = field(default_factory=list)
    #: each member's or step's output by name (pipeline steps, fan-out branches, chain steps)
    outputs: dict[str, Any] = field(default_factory=dict)
    #: decisions the flow made in code (the critic never accepted, the handoff limit...)
    notes: list[str] = field(default_factory=list)


@runtime_checkable
class Flow(Protocol):
    """What composes: every flow here, and any agent adapted with :func:`as_flow`."""

    name: str

    async def run(
        self, message: str | None, *, thread: str | None = None, role: str | None = None
    ) -> FlowResult: ...

    async def resume(
        self,
        thread: str,
        *,
        approve: bool | Mapping[str, bool] = True,
        reason: str = "",
        role: str | None = None,
    ) -> FlowResult: ...

    async def pending_approvals(self, thread: str) -> list[ToolCall]:
        """The calls of this flow that wait for approval in ``thread`` (empty if none)."""
        ...

    def run_sync(
        self, message: str | None, *, thread: str | None = None, role: str | None = None
    ) -> FlowResult: ...

    def resume_sync(
        self,
        thread: str,
        *,
        approve: bool | Mapping[str, bool] = True,
        reason: str = "",
        role: str | None = None,
    ) -> FlowResult: ...


def approvals_for(
    approve: bool | Mapping[str, bool], calls: Sequence[str]
) -> bool | dict[str, bool]:
    """The part of ``approve`` about ``calls`` (a member resumes only its own calls)."""
    if isinstance(approve, bool):
        return approve
    return {key: bool(value) for key, value in approve.items() if key in calls}


@dataclass(frozen=True)
class Resumption:
    """A person's decision on a paused flow's calls, for the member that waits."""

    approve: bool | Mapping[str, bool]
    reason: str
    role: str | None

    def of(
        self, member: Flow, thread: Any, calls: Sequence[str] | None = None
    ) -> Callable[[], Awaitable[FlowResult]]:
        """A call that resumes ``member`` in ``thread`` with this decision (only its part
        about ``calls`` when given: a member resumes only its own calls)."""
        approve = self.approve if calls is None else approvals_for(self.approve, calls)
        return functools.partial(
            member.resume, str(thread), approve=approve, reason=self.reason, role=self.role
        )


# -- small helpers ----------------------------------------------------------------------------

#: trace events of runs nobody else keeps (an agent used as a tool), collected for the flow
#: being run in this context (each flow run sets its own list; see :func:`collect`)
collector: contextvars.ContextVar[list[TraceEvent] | None] = contextvars.ContextVar(
    "shoal_flowcollector", default=None
)


def collect(events: Sequence[TraceEvent]) -> None:
    """Hand ``events`` to the flow being run in this context (if any) for its trace."""
    collected = collector.get()
    if collected is not None:
        collected.extend(events)


def check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS:
        raise UserError(f"{what} name {name!r}: use letters, digits, '_' and '-'")


def output_text(value: Any) -> str:
    """An output as text: strings as they are, objects as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(to_jsonable_python(value, fallback=str), ensure_ascii=False)


def preview(text: str | None, limit: int = 200) -> str | None:
    """``text`` cut to ``limit`` characters (as trace events carry texts)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def first_sentence(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    text = text[: end + 1] if end >= 0 else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(member: Agent[Any] | Flow) -> str:
    """One line about a member: a flow's ``description``, else an agent's instructions'
    first sentence, else its name."""
    about = getattr(member, "description", None)
    if isinstance(about, str) and about.strip():
        return first_sentence(about)
    if isinstance(member, Agent) and member.instructions.strip():
        return first_sentence(member.instructions)
    if isinstance(member, AgentFlow) and member.agent.instructions.strip():
        return first_sentence(member.agent.instructions)
    return member.name


def member_descriptions(
    where: str,
    what: str,
    members: Mapping[str, Agent[Any] | Flow],
    given: Mapping[str, str] | None,
) -> dict[str, str]:
    """Each member's one line (for a classifier, a transfer tool): the ``given`` one, else
    :func:`describe`'s. A description of no member is a UserError (``where``: the flow, as
    ``router 'desk'``; ``what``: its members, as ``routes``)."""
    given = dict(given or {})
    unknown = [label for label in given if label not in members]
    if unknown:
        raise UserError(f"{where}: descriptions of unknown {what} {unknown}")
    return {label: given.get(label) or describe(member) for label, member in members.items()}


def clone_agent(
    agent: Agent[Any], *, store: ThreadStore | None = None, extra_tools: Sequence[Any] = ()
) -> Agent[Any]:
    """A shallow copy of ``agent`` on ``store`` with ``extra_tools`` added (the original is
    left as it is; model, guards and settings are shared)."""
    clone = copy.copy(agent)
    if store is not None:
        clone.store = store
    if extra_tools:
        tools = dict(agent.tools)
        for tool in extra_tools:
            if tool.name in tools:
                raise UserError(
                    f"agent {agent.name!r} already has a tool named {tool.name!r}, which the "
                    "orchestration needs: rename it"
                )
            tools[tool.name] = tool
        clone.tools = tools
    return clone


def store_of(member: Agent[Any] | Flow) -> ThreadStore | None:
    if isinstance(member, Agent):
        return member.store
    store = getattr(member, "store", None)
    return store if isinstance(store, ThreadStore) else None


def first_store(members: Sequence[Agent[Any] | Flow | object]) -> ThreadStore:
    for member in members:
        if isinstance(member, Agent | Flow):
            store = store_of(member)
            if store is not None:
                return store
    return InMemoryThreadStore()


def as_flow(member: Agent[Any] | Flow) -> Flow:
    """``member`` as a flow: an agent is wrapped in an :class:`AgentFlow`."""
    if isinstance(member, Agent):
        return AgentFlow(member)
    if isinstance(member, Flow):
        return member
    raise UserError(f"{member!r} is neither an Agent nor a flow")


def bind_member(member: Agent[Any] | Flow, store: ThreadStore) -> Flow:
    """``member`` as a flow that keeps its threads in ``store`` (a copy if it used another).

    A flow from elsewhere (not built on :class:`FlowBase`) is taken as it is: it must use
    ``store`` itself.
    """
    if isinstance(member, Agent):
        return AgentFlow(member if member.store is store else clone_agent(member, store=store))
    if isinstance(member, FlowBase):
        return member if member.store is store else member.rebound(store)
    return as_flow(member)


async def store_trace(store: ThreadStore, thread_id: str, events: Sequence[TraceEvent]) -> None:
    """Append ``events`` to the trace kept with ``thread_id`` (each marked with that thread)."""
    await store.append_trace(
        thread_id, [dataclasses.replace(e, thread_id=thread_id).to_json() for e in events]
    )


def run_sync(coroutine: Coroutine[Any, Any, T], name: str) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    coroutine.close()
    raise UserError(f"{name}_sync() was called inside an event loop: use 'await flow.{name}()'")


# -- the base of every flow -------------------------------------------------------------------


class FlowBase:
    """The base of the flows in this package: ``run_sync``/``resume_sync``, the store, and
    re-binding to another store (see :func:`bind_member`)."""

    name: str
    store: ThreadStore
    #: one line about the flow (a router shows it to its classifier)
    description: str = ""

    async def run(
        self, message: str | None, *, thread: str | None = None, role: str | None = None
    ) -> FlowResult:
        raise NotImplementedError

    async def resume(
        self,
        thread: str,
        *,
        approve: bool | Mapping[str, bool] = True,
        reason: str = "",
        role: str | None = None,
    ) -> FlowResult:
        """Go on with the run that paused for approval in ``thread``: ``approve`` decides
        every waiting call (a bool) or each by call id; ``reason`` goes with a rejection (the
        model reads it). Flows implement :meth:`_resume`."""
        return await self._resume(thread, Resumption(approve, reason, role))

    async def _resume(self, thread: str, decision: Resumption) -> FlowResult:
        """:meth:`resume` with its arguments as one :class:`Resumption`."""
        raise NotImplementedError

    async def pending_approvals(self, thread: str) -> list[ToolCall]:
        """The calls of this flow that wait for approval in ``thread`` (empty if none)."""
        raise NotImplementedError

    def run_sync(
        self, message: str | None, *, thread: str | None = None, role: str | None = None
    ) -> FlowResult:
        """:meth:`run` for synchronous code (not from inside a running event loop)."""
        return run_sync(self.run(message, thread=thread, role=role), "run")

    def resume_sync(
        self,
        thread: str,
        *,
        approve: bool | Mapping[str, bool] = True,
        reason: str = "",
        role: str | None = None,
    ) -> FlowResult:
        """:meth:`resume` for synchronous code."""
        return run_sync(self.resume(thread, approve=approve, reason=reason, role=role), "resume")

    def rebound(self, store: ThreadStore) -> Self:
        """A copy of this flow keeping its threads in ``store``."""
        clone = copy.copy(self)
        clone.store = store
        clone.rebind_members(store)
        return clone

    def rebind_members(self, store: ThreadStore) -> None:
        """Move the members that share the flow's threads to ``store`` (in a copy)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class AgentFlow(FlowBase):
    """An agent as a flow: ``run`` is the agent's run, ``resume`` its resume."""

    def __init__(self, agent: Agent[Any]) -> None:
        self.agent = agent
        self.name = agent.name
        self.store = agent.store

    @property
    def description(self) -> str:  # type: ignore[override]
        return describe(self.agent)

    def rebind_members(self, store: ThreadStore) -> None:
        self.agent = clone_agent(self.agent, store=store)

    async def run(
        self, message: str | None, *, thread: str | None = None, role: str | None = None
    ) -> FlowResult:
        return await self._collecting(self.agent.run(message, thread=thread, role=role))

    async def _resume(self, thread: str, decision: Resumption) -> FlowResult:
        return await self._collecting(
            self.agent.resume(
                thread, approve=decision.approve, reason=decision.reason, role=decision.role
            )
        )

    async def pending_approvals(self, thread: str) -> list[ToolCall]:
        return await self.agent.pending_approvals(thread)

    async def _collecting(self, running: Awaitable[RunResult[Any]]) -> FlowResult:
        """The run's result, with the traces of runs inside it (agents used as tools) added
        to its trace and stored with its thread."""
        collected: list[TraceEvent] = []
        token = collector.set(collected)
        try:
            result = await running
        finally:
            collector.reset(token)
        flow_result = from_run(result)
        if not collected:
            return flow_result
        if result.thread_id is not None:
            await store_trace(self.store, result.thread_id, collected)
        trace = sorted([*flow_result.trace, *collected], key=lambda e: e.at)
        return dataclasses.replace(flow_result, trace=trace)


def from_run(result: RunResult[Any]) -> FlowResult:
    """An agent run as a flow result."""
    name = result.agent_name
    return FlowResult(
        output=result.output,
        text=output_text(result.output),
        agent=name,
        stop_reason=result.stop_reason,
        thread_id=result.thread_id,
        path=[name],
        runs=[result],
        trace=list(result.trace),
        pending_approvals=list(result.pending_approvals),
        pending_calls=list(result.pending_calls),
        usage=result.usage,
    )
