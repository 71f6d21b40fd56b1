"""Sequential and concurrent composition: :class:`Pipeline` and :class:`FanOut`.

A :class:`Pipeline` runs its steps in order, each in a fresh conversation: the user's message
goes to the first step, and each step's answer text is the next step's message. A step is an
agent, a flow, or a plain function of the text (sync or async) for work code does better.
Each step is a ``pipeline.step`` span (``pipeline``, ``index``, ``agent``). A step that ends
without an answer (``max_steps``, external ``tool_calls``, a pause for approval) ends the
pipeline there, with that step's stop reason; after an approval, :meth:`Pipeline.resume`
resumes the step and goes on with the next ones.

A :class:`FanOut` gives the same message to every branch at once, at most ``limit`` running
at a time (a semaphore: two branches on a two-core machine rather than every branch fighting
for the cores), inside one ``fanout`` span. The answers come back in branch order and are
combined (*fan-in*) by ``combine``: a function of the branch results, an agent that receives
the task and the answers labelled by branch name as its message, or by default the blocks
``name: answer``. A branch that raises does not sink the others: its answer reads
``[branch NAME failed: ERROR]`` (and its result has ``stop_reason == "failed"``); only when
every branch fails is the first error raised. Branches that pause for approval pause the
fan-out once all branches are done; :meth:`FanOut.resume` resumes them together.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pydantic_core import to_jsonable_python

from shoal.agent import Agent
from shoal.exceptions import ApprovalError, UserError
from shoal.orchestration.base import (
    Flow,
    FlowResult,
    Resumption,
    as_flow,
    check_name,
    first_store,
    output_text,
)
from shoal.orchestration.running import (
    FlowRun,
    Outcome,
    StatelessFlow,
    result_from_json,
    result_to_json,
)
from shoal.threads import ThreadStore

__all__ = ["Combine", "FanOut", "Pipeline", "StepFunction"]

#: a code step of a pipeline: the previous answer's text in, the next message out
StepFunction = Callable[[str], str | Awaitable[str]]
#: a fan-in function: the branch results (in branch order) in, the combined answer out
Combine = Callable[[Sequence[FlowResult]], Any]


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique: list[str] = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


class Pipeline(StatelessFlow):
    """Steps in order; each step's answer is the next step's message (module docstring)."""

    def __init__(
        self,
        name: str,
        steps: Sequence[Agent[Any] | Flow | StepFunction],
        *,
        store: ThreadStore | None = None,
        description: str = "",
    ) -> None:
        check_name(name, "pipeline")
        if not steps:
            raise UserError(f"pipeline {name!r}: give at least one step")
        self.steps: list[Flow | StepFunction] = []
        labels: list[str] = []
        for index, step in enumerate(steps):
            if isinstance(step, Agent | Flow):
                flow = as_flow(step)
                self.steps.append(flow)
                labels.append(flow.name)
            elif callable(step):
                self.steps.append(step)
                labels.append(str(getattr(step, "__name__", f"step{index}")))
            else:
                raise UserError(
                    f"pipeline {name!r}: step {index} is not an agent, a flow or a function"
                )
        #: step names, made unique (``writer#2`` for a second ``writer``)
        self.labels = _unique(labels)
        self.name = name
        self.description = description
        self.store = store if store is not None else first_store(steps)

    def entry(self) -> str:
        return self.labels[0]

    async def begin(self, run: FlowRun, text: str, role: str | None) -> Outcome:
        return await self._from(run, 0, text, role, {}, None)

    async def carry_on(self, run: FlowRun, state: dict[str, Any], decision: Resumption) -> Outcome:
        index = int(state["step"])
        step = self.steps[index]
        if isinstance(step, Flow):
            first = decision.of(step, state["thread"])
            outputs = dict(state.get("outputs") or {})
            return await self._from(run, index, "", decision.role, outputs, first)
        raise ApprovalError(f"pipeline {self.name!r}: step {index} cannot wait for approval")

    async def _from(
        self,
        run: FlowRun,
        start: int,
        text: str,
        role: str | None,
        outputs: dict[str, Any],
        first: Callable[[], Awaitable[FlowResult]] | None,
    ) -> Outcome:
        output: Any = text
        agent = self.name
        for index in range(start, len(self.steps)):
            step, label = self.steps[index], self.labels[index]
            with run.recorder.span(
                "pipeline.step", pipeline=self.name, index=index, agent=label
            ) as span:
                if isinstance(step, Flow):
                    if first is not None and index == start:
                        result = await first()
                    else:
                        result = await step.run(text, role=role)
                    run.add(result)
                    span.update(stop_reason=result.stop_reason)
                    if result.stop_reason != "final":
                        saved = to_jsonable_python(outputs, fallback=str)
                        state = {"step": index, "outputs": saved}
                        return Outcome.paused(result, state, outputs=outputs)
                    output, text, agent = result.output, result.text, result.agent
                else:
                    value = step(text)
                    if inspect.isawaitable(value):
                        value = await value
                    output, text, agent = value, output_text(value), self.name
            outputs[label] = output
        return Outcome(output=output, agent=agent, text=text, outputs=outputs)


class FanOut(StatelessFlow):
    """The same message to every branch, ``limit`` at a time, then fan-in (module docstring)."""

    def __init__(
        self,
        name: str,
        branches: Sequence[Agent[Any] | Flow],
        *,
        limit: int = 2,
        combine: Combine | Agent[Any] | Flow | None = None,
        store: ThreadStore | None = None,
        description: str = "",
    ) -> None:
        check_name(name, "fan-out")
        if not branches:
            raise UserError(f"fan-out {name!r}: give at least one branch")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UserError(f"fan-out {name!r}: limit must be a positive integer")
        self.branches = [as_flow(b) for b in branches]
        names = [b.name for b in self.branches]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserError(f"fan-out {name!r}: two branches are named {twice[0]!r}")
        self.combiner: Flow | None = None
        self.combine_function: Combine | None = None
        if isinstance(combine, Agent | Flow):
            self.combiner = as_flow(combine)
        elif callable(combine):
            self.combine_function = combine
        elif combine is not None:
            raise UserError(f"fan-out {name!r}: combine must be a function, an agent or None")
        self.name = name
        self.description = description
        self.limit = limit
        self.store = store if store is not None else first_store(branches)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.branches]

    def entry(self) -> str:
        return ",".join(self.names)

    async def begin(self, run: FlowRun, text: str, role: str | None) -> Outcome:
        jobs = {
            i: functools.partial(branch.run, text, role=role)
            for i, branch in enumerate(self.branches)
        }
        return await self._branches(run, text, jobs, {}, role)

    async def carry_on(self, run: FlowRun, state: dict[str, Any], decision: Resumption) -> Outcome:
        text = str(state.get("input", ""))
        done = {int(i): result_from_json(r) for i, r in (state.get("done") or {}).items()}
        if state.get("phase") == "combine":
            assert self.combiner is not None
            results = [done[i] for i in sorted(done)]
            resumed = await decision.of(self.combiner, state["thread"])()
            return self._combined(run, text, results, run.add(resumed))
        jobs: dict[int, Callable[[], Awaitable[FlowResult]]] = {}
        for i, paused in (state.get("paused") or {}).items():
            calls = [str(c) for c in paused.get("calls", [])]
            jobs[int(i)] = decision.of(self.branches[int(i)], paused["thread"], calls)
        return await self._branches(run, text, jobs, done, decision.role)

    async def _branches(
        self,
        run: FlowRun,
        text: str,
        jobs: Mapping[int, Callable[[], Awaitable[FlowResult]]],
        done: dict[int, FlowResult],
        role: str | None,
    ) -> Outcome:
        limit = asyncio.Semaphore(self.limit)

        async def one(job: Callable[[], Awaitable[FlowResult]]) -> FlowResult:
            async with limit:
                return await job()

        with run.recorder.span("fanout", name=self.name, branches=self.names, limit=self.limit):
            order = list(jobs)
            answers = await asyncio.gather(*(one(jobs[i]) for i in order), return_exceptions=True)
        failures: list[BaseException] = []
        results = dict(done)
        for i, answer in zip(order, answers, strict=True):
            if isinstance(answer, FlowResult):
                results[i] = run.add(answer)
                continue
            if not isinstance(answer, Exception) or isinstance(answer, UserError):
                raise answer  # a caller's mistake, or an interruption: not a branch failure
            failures.append(answer)
            name = self.branches[i].name
            detail = f"{type(answer).__name__}: {answer}"
            run.recorder.event("note", text=f"branch {name} failed: {detail}")
            results[i] = FlowResult(
                output=None,
                text=f"[branch {name} failed: {detail}]",
                agent=name,
                stop_reason="failed",
                thread_id=None,
            )
        if failures and len(failures) == len(self.branches):
            raise failures[0]
        ordered = [results[i] for i in sorted(results)]
        paused = {i: r for i, r in results.items() if r.stop_reason == "approval"}
        if paused:
            state = {
                "phase": "branches",
                "done": {str(i): result_to_json(r) for i, r in results.items() if i not in paused},
                "paused": {
                    str(i): {"thread": r.thread_id, "calls": [c.id for c in r.pending_approvals]}
                    for i, r in paused.items()
                },
            }
            waiting = [c for r in paused.values() for c in r.pending_approvals]
            first = paused[min(paused)]
            return Outcome.of(
                first, pending_approvals=waiting, outputs=self._outputs(ordered), state=state
            )
        return await self._fan_in(run, text, ordered, role)

    def _outputs(self, results: Sequence[FlowResult]) -> dict[str, Any]:
        return {b.name: r.output for b, r in zip(self.branches, results, strict=True)}

    async def _fan_in(
        self, run: FlowRun, text: str, results: list[FlowResult], role: str | None
    ) -> Outcome:
        outputs = self._outputs(results)
        if self.combine_function is not None:
            value = self.combine_function(results)
            if inspect.isawaitable(value):
                value = await value
            return Outcome(output=value, agent=self.name, outputs=outputs)
        pairs = zip(self.branches, results, strict=True)
        blocks = "\n\n".join(f"{b.name}: {_answer(r)}" for b, r in pairs)
        if self.combiner is None:
            return Outcome(output=blocks, agent=self.name, outputs=outputs)
        message = f"Task:\n{text}\n\nAnswers:\n\n{blocks}"
        combined = run.add(await self.combiner.run(message, role=role))
        return self._combined(run, text, results, combined)

    def _combined(
        self, run: FlowRun, text: str, results: list[FlowResult], combined: FlowResult
    ) -> Outcome:
        outputs = self._outputs(results)
        if combined.stop_reason == "approval":
            done = {str(i): result_to_json(r) for i, r in enumerate(results)}
            return Outcome.paused(combined, {"phase": "combine", "done": done}, outputs=outputs)
        return Outcome.of(combined, outputs=outputs)


def _answer(result: FlowResult) -> str:
    if result.text or result.stop_reason in ("final", "failed"):
        return result.text
    return f"[no answer: {result.stop_reason}]"
