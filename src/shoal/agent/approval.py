"""Runs that wait for a person: the record a paused run leaves in its thread.

A tool marked ``requires_approval`` (or a call a guard sends for approval, such as
:class:`~shoal.guards.ApprovalGuard` for tools marked ``dangerous``) is not run: the run stops
with ``stop_reason == "approval"``. Its messages are in the thread (the assistant's turn with the
calls, and the results of any calls of that turn that did run), and the thread's metadata holds,
under :data:`APPROVAL_KEY`::

    {"agent": "support", "run_id": "run_...", "role": "clerk" | None,
     "calls": [{"id", "name", "arguments"}, ...]}

so that any process with the thread store (Python, ``shoal approve``, the HTTP server) can find
which agent to resume and what is waiting. :meth:`Agent.resume <shoal.agent.Agent.resume>`
runs the approved calls, answers the rejected ones with an error the model reads, clears the
record and goes on with the run, in the role it started with (the approver approves the waiting
calls, not a change of role) unless ``resume`` is given a role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shoal.exceptions import ApprovalError
from shoal.messages import ToolCall
from shoal.threads import ThreadStore

__all__ = [
    "APPROVAL_KEY",
    "calls_from_json",
    "calls_to_json",
    "check_decisions",
    "pending_approval",
    "stored_role",
]

#: the thread metadata key of a paused run's record
APPROVAL_KEY = "shoal.approval"


async def pending_approval(store: ThreadStore, thread_id: str) -> dict[str, Any] | None:
    """The record of the run waiting for approval in ``thread_id``, or None."""
    thread = await store.get_thread(thread_id)
    record = thread.metadata.get(APPROVAL_KEY)
    return dict(record) if isinstance(record, dict) else None


async def save_pending(
    store: ThreadStore,
    thread_id: str,
    *,
    agent: str,
    run_id: str,
    role: str | None,
    calls: Sequence[ToolCall],
) -> None:
    thread = await store.get_thread(thread_id)
    record = {
        "agent": agent,
        "run_id": run_id,
        "role": role,
        "calls": calls_to_json(calls),
    }
    await store.update_thread(thread_id, metadata={**thread.metadata, APPROVAL_KEY: record})


async def clear_pending(store: ThreadStore, thread_id: str) -> None:
    thread = await store.get_thread(thread_id)
    metadata = {k: v for k, v in thread.metadata.items() if k != APPROVAL_KEY}
    await store.update_thread(thread_id, metadata=metadata)


def calls_to_json(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """Waiting calls as stored in thread metadata."""
    return [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls]


def calls_from_json(data: Any) -> list[ToolCall]:
    """The calls :func:`calls_to_json` stored (``None`` or nothing: none)."""
    return [
        ToolCall(id=str(c["id"]), name=str(c["name"]), arguments=dict(c.get("arguments") or {}))
        for c in data or []
    ]


def pending_calls(record: Mapping[str, Any]) -> list[ToolCall]:
    return calls_from_json(record.get("calls"))


def stored_role(record: Mapping[str, Any]) -> str | None:
    """The role a paused run had, from its stored record (an agent's approval record or a
    flow's position): None for none, or a record from before roles were kept."""
    role = record.get("role")
    return role if isinstance(role, str) else None


def check_decisions(approve: bool | Mapping[str, bool], calls: Sequence[ToolCall]) -> None:
    """An :class:`ApprovalError` unless ``approve`` is a bool or names exactly the waiting
    ``calls`` (checked before anything resumes, so a mistake changes nothing)."""
    if isinstance(approve, bool):
        return
    ids = [c.id for c in calls]
    unknown = [key for key in approve if key not in ids]
    if unknown:
        raise ApprovalError(
            f"no call {', '.join(map(repr, unknown))} is waiting for approval; "
            f"waiting: {', '.join(ids) or 'none'}"
        )
    missing = [i for i in ids if i not in approve]
    if missing:
        raise ApprovalError(
            f"say whether to approve every waiting call; not decided: {', '.join(missing)}"
        )


def decide(calls: Sequence[ToolCall], approve: bool | Mapping[str, bool]) -> list[bool]:
    """Whether each pending call is approved; a mapping must name every pending call."""
    check_decisions(approve, calls)
    if isinstance(approve, bool):
        return [approve] * len(calls)
    return [bool(approve[c.id]) for c in calls]
