"""``shoal approve SPEC_OR_SYSTEM THREAD_ID``: continue a run that paused for approval.

A run pauses when a call needs a person (a tool listed in an agent's ``approval:``, a tool made
with ``requires_approval=True``, a guard's "approve" verdict, a handoff into an agent a team
guards). The paused state is in the thread (``shoal run`` printed its id and this command), so
the same agent spec or system file, opened again on the same thread store, goes on: approved
calls run, rejected ones are answered ``the call was rejected by a person: REASON``, and the
run continues to its answer (or to the next pause: exit code 20 again).

``--call ID`` (repeatable) gives the decision to the named calls only; every other waiting call
gets the opposite one, so nothing runs that a person did not approve by name. The run goes on in
the role it started with (kept with the paused run); ``--role`` replaces it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from shoal.agent import RunResult
from shoal.cli.run import (
    Target,
    _db_option,
    _model_option,
    _role_option,
    _trace_option,
    check_role,
    open_target,
    report,
    show_events,
)
from shoal.exceptions import UserError
from shoal.messages import ToolCall
from shoal.orchestration import FlowResult
from shoal.spec.system_build import approval_decisions

__all__ = ["approve"]


async def _waiting(target: Target, thread_id: str) -> list[ToolCall]:
    if target.system is not None:
        return await target.system.pending(thread_id)
    assert target.agent is not None
    return await target.agent.pending_approvals(thread_id)


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.argument("thread_id")
@click.option("--reject", is_flag=True, help="Reject the waiting calls instead of approving.")
@click.option("--reason", default="", help="Why (the model reads it when a call is rejected).")
@click.option(
    "--call",
    "calls",
    multiple=True,
    metavar="CALL_ID",
    help="Decide only this call (repeat); the other waiting calls get the opposite decision.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
@click.option("--agent", "member", default=None, help="System files: resume this agent or flow.")
@_role_option
@_trace_option
@_model_option
@_db_option
def approve(
    spec: str,
    thread_id: str,
    reject: bool,
    reason: str,
    calls: tuple[str, ...],
    as_json: bool,
    member: str | None,
    role: str | None,
    show_trace: bool,
    model: str | None,
    db: Path | None,
) -> None:
    """Approve (or --reject) the calls a paused run in THREAD_ID waits for, and continue it
    with the agent or system in SPEC."""
    check_role(role)

    async def go() -> None:
        target = await open_target(spec, db, model)
        result: FlowResult | RunResult[Any]
        try:
            await target.store.get_thread(thread_id)  # ThreadNotFoundError: exit 10
            waiting = await _waiting(target, thread_id)
            decided = approval_decisions(waiting, approve=not reject, calls=calls)
            if not as_json:
                _show_decisions(waiting, decided)
            if target.system is not None:
                result = await target.system.resume(
                    thread_id, approve=decided, reason=reason, agent=member, role=role
                )
            else:
                assert target.agent is not None
                if member is not None:
                    raise UserError(f"--agent is for system files; {spec} is an agent spec")
                events = target.agent.resume_stream(
                    thread_id, approve=decided, reason=reason, role=role
                )
                result = await show_events(events, as_json, click.echo)
        finally:
            await target.store.close()
        report(target, result, thread_id, as_json=as_json, show_trace=show_trace, db=db)

    asyncio.run(go())


def _show_decisions(waiting: Sequence[ToolCall], decided: bool | Mapping[str, bool]) -> None:
    for call in waiting:
        ok = decided if isinstance(decided, bool) else decided[call.id]
        click.echo(f"{'✓ approved' if ok else '✗ rejected'} {call.name}  [{call.id}]", err=True)
