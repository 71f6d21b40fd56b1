"""``/v1/threads/{id}/approval`` and ``/v1/threads/{id}/trace``: paused runs and what happened.

A run pauses for a person (an agent's tool that requires approval, a guard's "approve", a
team's guarded handoff): the run object says ``status: "requires_action"`` with
``required_action.type == "submit_approval"``, and the paused state is in the thread's
metadata, so any later request (after a restart too) can continue it:

- ``GET /v1/threads/{id}/approval``: what waits: ``tool_calls`` (OpenAI's call shape), the
  ``agent`` that paused and, for a system, the ``system`` and the ``flow`` that will go on.
  404 (``no_pending_approval``) when nothing waits.
- ``POST /v1/threads/{id}/approval`` ``{"approve": true, "reason": "", "call_ids": [...]}``:
  the decision for every waiting call, or with ``call_ids`` for those calls (the others get
  the opposite one); then the run goes on and the run object comes back as from
  ``POST /v1/threads/{id}/runs`` (``requires_action`` again if it pauses again).

Which run continues: the system recorded in the thread (``shoal.system`` metadata, written by
:class:`~shoal.spec.System`) resumes its flow; otherwise the hosted agent named by the paused
run's record (``shoal.approval``) resumes. An agent that is not hosted here is a 409. The run
goes on in the role it started with (kept with the paused run), whatever the approver's key.

``GET /v1/threads/{id}/trace`` returns the thread's stored trace events, in order.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from shoal.agent import APPROVAL_KEY
from shoal.messages import ToolCall
from shoal.models.wire import call_json
from shoal.server.convert import now
from shoal.server.errors import ApiError
from shoal.server.state import HostedSystem, ServerState
from shoal.server.threads import run_object
from shoal.spec.system_build import SYSTEM_KEY, approval_decisions, pending_calls

__all__ = ["router"]

router = APIRouter(tags=["threads"])


class ApprovalIn(BaseModel):
    """A person's decision on the calls a paused run waits for."""

    model_config = ConfigDict(extra="forbid")

    approve: bool = True
    reason: str = ""
    #: decide only these calls; the other waiting calls get the opposite decision
    call_ids: list[str] | None = None


class _Paused:
    """What waits in a thread, and who goes on with it."""

    def __init__(
        self,
        calls: list[ToolCall],
        *,
        agent: str | None,
        hosted: HostedSystem | None = None,
        flow: str | None = None,
    ) -> None:
        self.calls = calls
        self.agent = agent
        self.hosted = hosted
        self.flow = flow


async def _paused(state: ServerState, thread_id: str) -> _Paused:
    thread = await state.store.get_thread(thread_id)  # 404 for an unknown thread
    record = thread.metadata.get(SYSTEM_KEY)
    approval = thread.metadata.get(APPROVAL_KEY)
    agent = approval.get("agent") if isinstance(approval, dict) else None
    agent = agent if isinstance(agent, str) else None
    if isinstance(record, dict) and record.get("system") in state.systems:
        hosted = state.systems[str(record["system"])]
        flow = await hosted.system.paused_in(thread_id)
        calls = pending_calls(thread.metadata, flow)
        if calls:
            return _Paused(calls, agent=agent, hosted=hosted, flow=flow)
    calls = pending_calls(thread.metadata)
    if not calls:
        raise ApiError(
            404,
            f"thread {thread_id} has no run waiting for approval",
            param="thread_id",
            code="no_pending_approval",
        )
    return _Paused(calls, agent=agent)


@router.get("/v1/threads/{thread_id}/approval")
async def get_approval(thread_id: str, request: Request) -> dict[str, Any]:
    """The calls a paused run in this thread waits for (404 when nothing waits)."""
    state: ServerState = request.app.state.shoal
    paused = await _paused(state, thread_id)
    return {
        "object": "thread.approval",
        "thread_id": thread_id,
        "agent": paused.agent,
        "system": paused.hosted.system.name if paused.hosted is not None else None,
        "flow": paused.flow,
        "tool_calls": [call_json(call) for call in paused.calls],
    }


@router.post("/v1/threads/{thread_id}/approval")
async def post_approval(thread_id: str, body: ApprovalIn, request: Request) -> dict[str, Any]:
    """Approve or reject the waiting calls and continue the run; returns the run object."""
    state: ServerState = request.app.state.shoal
    started = now()
    paused = await _paused(state, thread_id)
    decided = approval_decisions(paused.calls, approve=body.approve, calls=body.call_ids or ())
    if paused.hosted is not None:
        result = await state.resume_flow(
            paused.hosted,
            thread_id,
            approve=decided,
            reason=body.reason,
            member=paused.flow,
            disconnected=request.is_disconnected,
        )
        name = paused.flow or paused.hosted.system.name
        return run_object(
            thread_id=thread_id, assistant_id=name, model=name, result=result, started=started
        )
    hosted_agent = state.agents.get(paused.agent or "")
    if hosted_agent is None:
        raise ApiError(
            409,
            f"the run waiting in thread {thread_id} is agent {paused.agent!r}'s, which this "
            f"server does not host (agents: {', '.join(state.agents) or 'none'})",
            param="thread_id",
            code="approval_error",
        )
    engine = state.engine_for(hosted_agent.agent.name)
    agent_result = await state.resume(
        engine,
        hosted_agent.agent,
        thread_id,
        approve=decided,
        reason=body.reason,
        disconnected=request.is_disconnected,
    )
    return run_object(
        thread_id=thread_id,
        assistant_id=hosted_agent.agent.name,
        model=engine.reference,
        result=agent_result,
        started=started,
    )


@router.get("/v1/threads/{thread_id}/trace")
async def get_trace(thread_id: str, request: Request) -> dict[str, Any]:
    """The thread's stored trace: every run's events (spans and points), in order."""
    state: ServerState = request.app.state.shoal
    await state.store.get_thread(thread_id)
    events = await state.store.get_trace(thread_id)
    return {"object": "list", "thread_id": thread_id, "data": events}
