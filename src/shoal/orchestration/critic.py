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

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel

from shoal.agent import Agent
from shoal.exceptions import ApprovalError, UserError
from shoal.models import Model
from shoal.orchestration.base import Flow, FlowResult, Resumption, as_flow, check_name, first_store
from shoal.orchestration.running import (
    FlowRun,
    Outcome,
    StatelessFlow,
    result_from_json,
    result_to_json,
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

    async def carry_on(self, run: FlowRun, state: dict[str, Any], decision: Resumption) -> Outcome:
        phase = state.get("phase")
        member = self.worker if phase == "worker" else self.critic
        if phase not in ("worker", "critic"):
            raise ApprovalError(f"critic loop {self.name!r}: unknown paused phase {phase!r}")
        answer = state.get("answer")
        return await self._rounds(
            run,
            str(state.get("input", "")),
            int(state["round"]),
            decision.role,
            previous=result_from_json(answer) if isinstance(answer, dict) else None,
            feedback=str(state.get("feedback", "")),
            resumed=(str(phase), decision.of(member, state["thread"])),
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
            saved = result_to_json(answer) if answer is not None else None
            state = {"round": round_, "answer": saved, "feedback": feedback}
            if again is None or again[0] == "worker":
                if again is not None:
                    result = await again[1]()
                else:
                    message = task if answer is None else _revise(task, answer.text, feedback)
                    result = await self.worker.run(message, role=role)
                run.add(result)
                if result.stop_reason == "approval":
                    return Outcome.paused(result, {**state, "phase": "worker"})
                if result.stop_reason != "final":
                    return Outcome.of(result)
                answer = result
                state["answer"] = result_to_json(answer)
            if answer is None:
                raise ApprovalError(f"critic loop {self.name!r}: the paused round lost its answer")
            if again is not None and again[0] == "critic":
                judged = await again[1]()
            else:
                judged = await self.critic.run(_review(task, answer.text), role=role)
            run.add(judged)
            if judged.stop_reason == "approval":
                return Outcome.paused(judged, {**state, "phase": "critic"})
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
