"""An agent used as a tool of another agent (:func:`agent_tool`).

The tool takes one argument, ``task``, and runs the agent on it in a fresh conversation: the
sub-agent sees the task, not the caller's conversation, which keeps a small model's context
small and its job clear. The tool returns the sub-agent's answer as text (JSON for a typed
output). The sub-run's trace nests under the caller's ``tool.call`` span by itself (the span
being recorded is a context variable), so trace sinks (audit log, OpenTelemetry) show both
agents as one tree; when the calling agent runs as part of a flow (or through
:func:`~shoal.orchestration.as_flow`), the sub-run's events are also in the flow's
:class:`~shoal.orchestration.FlowResult` trace and stored with its thread.

The sub-agent runs in the caller's role (:func:`~shoal.agent.current_role`; with none, its own
``role``), so its guards allow it no tool the caller's role could not use.

A sub-agent cannot pause for approval or hand external calls back: nobody could answer them
from inside a tool call. Such a run is an error the calling model reads (and the caller's
own tools can require approval instead).
"""

from __future__ import annotations

from typing import Any

from shoal.agent import Agent, current_role
from shoal.orchestration.base import collect, describe, output_text
from shoal.tools import Tool

__all__ = ["agent_tool"]


def agent_tool(
    agent: Agent[Any],
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> Tool:
    """A tool ``name(task: str) -> str`` that asks ``agent`` and returns its answer.

    ``name`` defaults to the agent's name, ``description`` to the first sentence of its
    instructions; ``timeout`` (seconds, None: no limit) bounds the whole sub-run.
    """

    async def ask(task: str) -> str:
        """Ask another agent.

        Args:
            task: What to ask, complete in itself: the other agent does not see this
                conversation.
        """
        result = await agent.run(task, role=current_role())  # the caller's role, not more
        collect(result.trace)
        if result.stop_reason == "approval":
            waiting = ", ".join(c.name for c in result.pending_approvals)
            raise RuntimeError(
                f"agent {agent.name} needs a person's approval for {waiting}, which it cannot "
                "get when used as a tool"
            )
        if result.stop_reason == "tool_calls":
            waiting = ", ".join(c.name for c in result.pending_calls)
            raise RuntimeError(f"agent {agent.name} called external tools ({waiting})")
        return output_text(result.output) or f"({agent.name} gave no answer)"

    return Tool(
        ask,
        name=name or agent.name,
        description=description or describe(agent),
        timeout=timeout,
    )
