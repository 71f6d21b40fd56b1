"""The :class:`Team`: agents that hand a conversation over to one another.

Each agent that may hand off gets one more tool, an *external* tool (the team runs it, not the
agent): ``transfer_to(agent, reason)``, where ``agent`` is a JSON-schema enum of the names it
may transfer to. The enum is what keeps a small model's choice valid: the embedded engine
decodes the call under the schema's grammar, and any backend's call is validated against it.

A run of the team is a loop in code:

1. the *current* agent runs on the team's thread (the entry agent, or whoever had the
   conversation last: the thread's metadata key ``"shoal.team"`` holds
   ``{"team": name, "current": agent}``, so the next user message goes to the same agent);
2. if it stopped with a call to its transfer tool, the team answers the call in the thread
   (``Transferred to billing.``), records a ``handoff`` event (``source``, ``target``,
   ``reason``) and runs the target with ``message=None`` on the same thread: the target reads
   the whole conversation so far;
3. otherwise its answer is the team's.

At most ``max_handoffs`` handoffs happen in one run; the next one is refused in the thread
(the model reads why) and the current agent answers in text (``tool_choice="none"``), with
``stop_reason == "max_handoffs"``. An agent cannot transfer to itself (the enum leaves it out).

Approval. Targets listed in ``approval`` are reached through a second tool,
``transfer_with_approval`` (``requires_approval=True``; it is the only transfer tool of an
agent whose targets all need approval, under the name ``transfer_to``). Such a call pauses the
agent's run (``stop_reason == "approval"``, recorded by the agent in the thread); the team
returns the pause, and :meth:`Team.resume` resumes that agent: an approved transfer then goes
ahead, a rejected one is read by the agent as an error and it goes on by itself.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from shoal.agent import Agent, RunResult, calls_from_json, pending_approval
from shoal.exceptions import ApprovalError, UserError
from shoal.messages import Message, ToolCall, ToolMessage
from shoal.orchestration.base import (
    FlowBase,
    FlowResult,
    Resumption,
    check_name,
    clone_agent,
    from_run,
    member_descriptions,
)
from shoal.orchestration.running import FlowRun, Outcome, paused_member
from shoal.threads import ThreadStore
from shoal.tools import Tool

__all__ = ["APPROVAL_TRANSFER_TOOL", "TEAM_KEY", "TRANSFER_TOOL", "Team", "transfer_tool"]

#: the thread metadata key naming the team and the agent that has the conversation
TEAM_KEY = "shoal.team"
#: the handoff tool every agent with targets gets
TRANSFER_TOOL = "transfer_to"
#: the handoff tool for targets that need a person's approval (when there are others)
APPROVAL_TRANSFER_TOOL = "transfer_with_approval"


def transfer_tool(
    name: str, targets: Mapping[str, str], *, requires_approval: bool = False
) -> Tool:
    """An external tool whose ``agent`` argument is an enum of ``targets`` (name -> what the
    target does, shown in the description)."""
    listing = "; ".join(f"{target}: {about}" for target, about in targets.items())
    asked = " A person must approve the transfer first." if requires_approval else ""
    return Tool.external(
        name,
        description=(
            "Hand the conversation over to the agent who should answer it." + asked + " Agents: "
            f"{listing}"
        ),
        parameters={
            "type": "object",
            "properties": {
                "agent": {
                    "type": "string",
                    "enum": list(targets),
                    "description": "The agent who takes over.",
                },
                "reason": {"type": "string", "description": "Why, in a few words."},
            },
            "required": ["agent"],
        },
        requires_approval=requires_approval,
    )


class Team(FlowBase):
    """Agents that transfer the conversation (thread carried over); see the module docstring."""

    def __init__(
        self,
        name: str,
        agents: Sequence[Agent[Any]],
        *,
        entry: str,
        handoffs: Mapping[str, Sequence[str]] | None = None,
        approval: Sequence[str] = (),
        max_handoffs: int = 3,
        store: ThreadStore | None = None,
        descriptions: Mapping[str, str] | None = None,
        description: str = "",
    ) -> None:
        check_name(name, "team")
        if not agents:
            raise UserError(f"team {name!r}: give at least one agent")
        by_name: dict[str, Agent[Any]] = {}
        for agent in agents:
            if not isinstance(agent, Agent):
                raise UserError(f"team {name!r}: {agent!r} is not an Agent")
            if agent.name in by_name:
                raise UserError(f"team {name!r}: two agents are named {agent.name!r}")
            by_name[agent.name] = agent
        if entry not in by_name:
            raise UserError(f"team {name!r}: entry {entry!r} is not one of its agents")
        if isinstance(max_handoffs, bool) or not isinstance(max_handoffs, int) or max_handoffs < 0:
            raise UserError(f"team {name!r}: max_handoffs must be a non-negative integer")
        self.handoffs = _check_handoffs(name, by_name, handoffs)
        targets = {t for ts in self.handoffs.values() for t in ts}
        for target in approval:
            if target not in targets:
                raise UserError(
                    f"team {name!r}: approval names {target!r}, which no agent hands off to"
                )
        about = member_descriptions(f"team {name!r}", "agents", by_name, descriptions)
        self.name = name
        self.description = description
        self.entry = entry
        self.approval = frozenset(approval)
        self.max_handoffs = max_handoffs
        self.store = store if store is not None else by_name[entry].store
        self.descriptions = about
        #: agent name -> {transfer tool name: its targets}
        self.transfer_tools: dict[str, dict[str, tuple[str, ...]]] = {}
        #: the team's copies of its agents: on the team's store, with their transfer tools
        self.agents: dict[str, Agent[Any]] = {}
        for agent_name, agent in by_name.items():
            tools = self._tools_of(agent_name)
            self.transfer_tools[agent_name] = {
                t.name: tuple(t.definition.parameters["properties"]["agent"]["enum"]) for t in tools
            }
            self.agents[agent_name] = clone_agent(agent, store=self.store, extra_tools=tools)

    def _tools_of(self, source: str) -> list[Tool]:
        targets = self.handoffs.get(source, ())
        free = {t: self.descriptions[t] for t in targets if t not in self.approval}
        gated = {t: self.descriptions[t] for t in targets if t in self.approval}
        tools: list[Tool] = []
        if free:
            tools.append(transfer_tool(TRANSFER_TOOL, free))
        if gated:
            tool_name = APPROVAL_TRANSFER_TOOL if free else TRANSFER_TOOL
            tools.append(transfer_tool(tool_name, gated, requires_approval=True))
        return tools

    def rebind_members(self, store: ThreadStore) -> None:
        self.agents = {n: clone_agent(a, store=store) for n, a in self.agents.items()}

    # -- the conversation's current agent ----------------------------------------------------

    async def current_agent(self, thread: str) -> str:
        """The agent that has the conversation in ``thread`` (the entry agent at first)."""
        record = (await self.store.get_thread(thread)).metadata.get(TEAM_KEY)
        if isinstance(record, dict) and record.get("team") == self.name:
            current = record.get("current")
            if isinstance(current, str) and current in self.agents:
                return current
        return self.entry

    async def pending_approvals(self, thread: str) -> list[ToolCall]:
        """The calls of the team's agent that wait for approval in ``thread``."""
        record = await pending_approval(self.store, thread)
        if record is None or record.get("agent") not in self.agents:
            return []
        return calls_from_json(record.get("calls"))

    async def _set_current(self, thread: str, agent: str) -> None:
        metadata = dict((await self.store.get_thread(thread)).metadata)
        record = {"team": self.name, "current": agent}
        if metadata.get(TEAM_KEY) != record:
            metadata[TEAM_KEY] = record
            await self.store.update_thread(thread, metadata=metadata)

    # -- running ------------------------------------------------------------------------------

    async def run(
        self, message: str | None, *, thread: str | None = None, role: str | None = None
    ) -> FlowResult:
        """Run the conversation's current agent on ``message`` (a thread is made if none is
        given), following handoffs."""
        if thread is None:
            thread = (await self.store.create_thread()).id
        current = await self.current_agent(thread)
        run = FlowRun(self, thread)
        first = functools.partial(self.agents[current].run, message, thread=thread, role=role)
        return await run.execute(
            lambda: self._drive(run, thread, current, first, role), entry=current, message=message
        )

    async def _resume(self, thread: str, decision: Resumption) -> FlowResult:
        """Resume the agent whose run waits for approval in ``thread``, then go on (an
        approved handoff reaches its target)."""
        current = await paused_member(self.store, thread)
        if current is None or current not in self.agents:
            raise ApprovalError(f"team {self.name!r}: nothing waits for approval in {thread}")
        run = FlowRun(self, thread)
        first = functools.partial(
            self.agents[current].resume,
            thread,
            approve=decision.approve,
            reason=decision.reason,
            role=decision.role,
        )
        return await run.execute(
            lambda: self._drive(run, thread, current, first, decision.role),
            entry=current,
            message=None,
        )

    async def _drive(
        self,
        run: FlowRun,
        thread: str,
        current: str,
        first: Callable[[], Awaitable[RunResult[Any]]],
        role: str | None,
    ) -> Outcome:
        handoffs = 0
        notes: list[str] = []
        step = first
        while True:
            result = run.add(from_run(await step()))
            await self._set_current(thread, current)
            call = self._transfer_call(current, result)
            if result.stop_reason == "approval" or call is None:
                return Outcome.of(result, notes=notes)
            target = str(call.arguments.get("agent", ""))
            why = str(call.arguments.get("reason") or "")
            others = [c for c in result.pending_calls if c.id != call.id]
            if handoffs >= self.max_handoffs:
                note = (
                    f"handoff {current} -> {target} refused: the limit of {self.max_handoffs} "
                    "handoffs was reached"
                )
                notes.append(note)
                run.recorder.event("note", text=note)
                refusal = f"Error: not transferred: the limit of {self.max_handoffs} handoffs "
                refusal += "was reached. Answer the user yourself."
                await self._answer(thread, call, refusal, others)
                agent = self.agents[current]
                final = await agent.run(None, thread=thread, role=role, tool_choice="none")
                last = run.add(from_run(final))
                return Outcome.of(last, stop_reason="max_handoffs", notes=notes)
            await self._answer(thread, call, f"Transferred to {target}.", others)
            run.recorder.event("handoff", source=current, target=target, reason=why)
            handoffs += 1
            current = target
            step = functools.partial(self.agents[target].run, None, thread=thread, role=role)

    def _transfer_call(self, agent: str, result: FlowResult) -> ToolCall | None:
        tools = self.transfer_tools.get(agent, {})
        for call in result.pending_calls:
            if call.name in tools and call.arguments.get("agent") in tools[call.name]:
                return call
        return None

    async def _answer(
        self, thread: str, call: ToolCall, content: str, others: Sequence[ToolCall]
    ) -> None:
        """Answer the transfer call (and any other call of that turn, which is not run)."""
        messages: list[Message] = [
            ToolMessage(
                tool_call_id=call.id,
                name=call.name,
                content=content,
                is_error=content.startswith("Error:"),
            )
        ]
        for other in others:
            messages.append(
                ToolMessage(
                    tool_call_id=other.id,
                    name=other.name,
                    content="Error: not run: the conversation was handed over.",
                    is_error=True,
                )
            )
        await self.store.append_messages(thread, messages)


def _check_handoffs(
    team: str, agents: Mapping[str, Agent[Any]], handoffs: Mapping[str, Sequence[str]] | None
) -> dict[str, tuple[str, ...]]:
    """Source -> targets; by default every agent may transfer to every other one."""
    if handoffs is None:
        return {a: tuple(b for b in agents if b != a) for a in agents} if len(agents) > 1 else {}
    checked: dict[str, tuple[str, ...]] = {}
    for source, targets in handoffs.items():
        if source not in agents:
            raise UserError(f"team {team!r}: handoffs from unknown agent {source!r}")
        if isinstance(targets, str):
            raise UserError(f"team {team!r}: handoffs of {source!r} must be a list of names")
        kept: list[str] = []
        for target in targets:
            if target not in agents:
                raise UserError(f"team {team!r}: {source!r} hands off to unknown agent {target!r}")
            if target == source:
                raise UserError(f"team {team!r}: {source!r} cannot hand off to itself")
            if target not in kept:
                kept.append(target)
        if kept:
            checked[source] = tuple(kept)
    return checked
