"""The :class:`CriticLoop`: a worker answers, a critic judges, the worker revises, bounded.

Each *round*: the worker answers the task (from the second round on, its message holds the
task, its previous answer and the critic's feedback); then the critic, an agent whose output is
a :class:`CriticVerdict` (``accept`` or ``revise``, with short ``feedback``), judges that
answer. The verdict is typed, so the critic's answer is validated (and, on the embedded engine,
decoded under the verdict's JSON-schema grammar): control flow never depends on parsing prose.
Each verdict is a ``critic.round`` event (``loop``, ``round``, ``verdict``, ``feedback``).

The loop stops at the first ``accept``, or after ``max_rounds`` rounds (at most 3: a small
model's revisions stop improving quickly). Either way the result is the worker's last answer
with ``stop_reason == "final"``; when the critic never accepted, ``notes`` says so. Worker and
critic each run in a fresh conversation.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from shoal.agent import Agent
from shoal.exceptions import ApprovalError, UserError
from shoal.models import Model
from shoal.orchestration.base import (
    Flow,
    FlowResult,
    as_flow,
    check_name,
    first_store,
)
from shoal.orchestration.running import (
    FlowRun,
    Outcome,
    StatelessFlow,
)
from shoal.threads import ThreadStore

__all__ = ["CRITIC_INSTRUCTIONS", "MAX_ROUNDS", "CriticLoop", "CriticVerdict"]

#: the most rounds a loop may have
MAX_ROUNDS = 3

#: the instructions of a critic made from a model reference
CRITIC_INSTRUCTIONS = (
    "You review an answer to a task. If it does the task well, the verdict is accept. "
    "Otherwise the verdict is revise, and feedback says in one or two short sentences "
    "what to fix."
)


class CriticVerdict(BaseModel):
    """A critic's judgement of one answer."""

    verdict: Literal["accept", "revise"]
    feedback: str = ""


class CriticLoop(StatelessFlow):
    """Worker answers, critic judges, at most ``max_rounds`` rounds (module docstring)."""

    def __init__(
        self,
        name: str,
        worker: Agent[Any] | Flow,
        critic: Agent[Any] | str | Model,
        *,
        max_rounds: int = 2,
        store: ThreadStore | None = None,
        description: str = "",
    ) -> None:
        check_name(name, "critic loop")
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int):
            raise UserError(f"critic loop {name!r}: max_rounds must be an integer")
        if not 1 <= max_rounds <= MAX_ROUNDS:
            raise UserError(f"critic loop {name!r}: max_rounds must be 1 to {MAX_ROUNDS}")
        if isinstance(critic, Agent):
            kind = critic.output_type
            if not (isinstance(kind, type) and issubclass(kind, CriticVerdict)):
                raise UserError(
                    f"critic loop {name!r}: the critic agent {critic.name!r} must have "
                    "output_type=CriticVerdict"
                )
            judge: Agent[Any] = critic
        elif isinstance(critic, str | Model):
            judge = Agent(
                f"{name}-critic",
                critic,
                instructions=CRITIC_INSTRUCTIONS,
                output_type=CriticVerdict,
            )
        else:
            raise UserError(f"critic loop {name!r}: the critic must be an Agent or a model")
        self.name = name
        self.description = description
        self.worker = as_flow(worker)
        self.critic = as_flow(judge)
        self.max_rounds = max_rounds
        self.store = store if store is not None else first_store([worker])

    def entry(self) -> str:
        return self.worker.name

    async def begin(self, run: FlowRun, text: str, role: str | None) -> Outcome:
        return await self._rounds(run, text, 1, role, previous=None, feedback="", resumed=None)

    async def carry_on(
        self,
        run: FlowRun,
        state: dict[str, Any],
        approve: bool | Mapping[str, bool],
        reason: str,
        role: str | None,
    ) -> Outcome:
        phase = state.get("phase")
        member = self.worker if phase == "worker" else self.critic
        if phase not in ("worker", "critic"):
            raise ApprovalError(f"critic loop {self.name!r}: unknown paused phase {phase!r}")
        resumed = functools.partial(
            member.resume, str(state["thread"]), approve=approve, reason=reason, role=role
        )
        answer = state.get("answer")
        previous = _restored(answer) if isinstance(answer, dict) else None
        return await self._rounds(
            run,
            str(state.get("input", "")),
            int(state["round"]),
            role,
            previous=previous,
            feedback=str(state.get("feedback", "")),
            resumed=(str(phase), resumed),
        )

    async def _rounds(
        self,
        run: FlowRun,
        task: str,
        start: int,
        role: str | None,
        *,
        previous: FlowResult | None,
        feedback: str,
        resumed: tuple[str, Callable[[], Awaitable[FlowResult]]] | None,
    ) -> Outcome:
        answer = previous
        for round_ in range(start, self.max_rounds + 1):
            again = resumed if round_ == start else None
            state = {"round": round_, "answer": _saved(answer), "feedback": feedback}
            if again is None or again[0] == "worker":
                if again is not None:
                    result = await again[1]()
                else:
                    message = task if answer is None else _revise(task, answer.text, feedback)
                    result = await self.worker.run(message, role=role)
                run.add(result)
                if result.stop_reason == "approval":
                    paused = {**state, "phase": "worker", "thread": result.thread_id}
                    return Outcome.of(result, state=paused)
                if result.stop_reason != "final":
                    return Outcome.of(result)
                answer = result
                state["answer"] = _saved(answer)
            if answer is None:
                raise ApprovalError(f"critic loop {self.name!r}: the paused round lost its answer")
            if again is not None and again[0] == "critic":
                judged = await again[1]()
            else:
                judged = await self.critic.run(_review(task, answer.text), role=role)
            run.add(judged)
            if judged.stop_reason == "approval":
                paused = {**state, "phase": "critic", "thread": judged.thread_id}
                return Outcome.of(judged, state=paused)
            if judged.stop_reason != "final":
                note = f"round {round_}: the critic gave no verdict ({judged.stop_reason})"
                run.recorder.event("note", text=note)
                return Outcome.of(answer, notes=[note])
            verdict = CriticVerdict.model_validate(judged.output)
            run.recorder.event(
                "critic.round",
                loop=self.name,
                round=round_,
                verdict=verdict.verdict,
                feedback=verdict.feedback,
            )
            if verdict.verdict == "accept":
                return Outcome.of(answer, outputs={"rounds": round_})
            feedback = verdict.feedback
        assert answer is not None
        note = (
            f"the critic did not accept the answer in {self.max_rounds} round(s); "
            "the last answer is returned"
        )
        return Outcome.of(answer, notes=[note], outputs={"rounds": self.max_rounds})


def _revise(task: str, answer: str, feedback: str) -> str:
    asked = feedback.strip() or "Improve it."
    return (
        f"{task}\n\nYour previous answer:\n{answer}\n\n"
        f"A reviewer asked for changes: {asked}\nWrite the improved answer."
    )


def _review(task: str, answer: str) -> str:
    return (
        f"Task:\n{task}\n\nAnswer:\n{answer}\n\n"
        "Does the answer do the task well? Give the verdict accept, or revise with feedback."
    )


def _saved(result: FlowResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "output": to_jsonable_python(result.output, fallback=str),
        "text": result.text,
        "agent": result.agent,
    }


def _restored(data: Mapping[str, Any]) -> FlowResult:
    return FlowResult(
        output=data.get("output"),
        text=str(data.get("text", "")),
        agent=str(data.get("agent", "")),
        stop_reason="final",
        thread_id=None,
    )
