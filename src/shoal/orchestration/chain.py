"""Mini-chains: a task cut into tiny typed steps that code runs in order.

A small model cannot hold a long chain of reasoning, but it can do one small thing well when
the output is constrained: "which city is this about?" as ``{"city": str}``. A :class:`Chain`
is a list of such :class:`Step` values. Each step is

- an agent (or a model reference, from which the step makes an agent) asked with ``prompt``:
  a ``str.format`` template over ``{input}`` (the chain's message) and the outputs of earlier
  steps by name, reaching into them with attributes (``{extract.city}``, for a model's field
  or a JSON object's key) or items (``{extract[city]}``). Its output is validated by the
  agent itself (``output_type``/``output_schema``: an invalid answer goes back to the model
  with the reason, within the agent's retry budget, and on the embedded engine the schema's
  grammar makes most invalid answers impossible);
- or a function of the outputs so far (``{"input": ..., "extract": ...}``), sync or async,
  for what code does better (a lookup, arithmetic, a format). Its return value is validated
  with a pydantic ``TypeAdapter`` (``output_type``) or the JSON schema (``output_schema``).

A step that fails (the model never produced a valid answer, the agent ran out of steps, the
function's value does not validate) is tried again, ``retries`` times; then the chain raises
an error naming the chain and the step: :class:`~shoal.exceptions.ModelBehaviorError` for an
agent step, :class:`~shoal.exceptions.UserError` for a function's invalid value (an exception a
function raises is re-raised with a note naming the step). Each step is a ``chain.step`` span
(``chain``, ``step``). The chain's output is the last step's; ``outputs`` has every step's.
"""

from __future__ import annotations

import inspect
import re
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from shoal.agent import Agent
from shoal.exceptions import ApprovalError, ModelBehaviorError, UserError
from shoal.models import Model
from shoal.orchestration.base import (
    AgentFlow,
    FlowResult,
    Resumption,
    check_name,
    first_store,
    output_text,
)
from shoal.orchestration.running import FlowRun, Outcome, StatelessFlow
from shoal.threads import ThreadStore
from shoal.tools import check_output_schema, schema_problem

__all__ = ["Chain", "Step"]

StepFunction = Callable[[dict[str, Any]], Any]


class Step:
    """One tiny step of a :class:`Chain` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        agent: Agent[Any] | str | Model | StepFunction,
        *,
        prompt: str = "{input}",
        output_type: type[Any] | None = None,
        output_schema: Mapping[str, Any] | None = None,
        retries: int = 1,
        instructions: str = "",
    ) -> None:
        check_name(name, "step")
        if name == "input":
            raise UserError("a step cannot be named 'input' (the chain's message is {input})")
        if output_type is not None and output_schema is not None:
            raise UserError(f"step {name!r}: give output_type or output_schema, not both")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise UserError(f"step {name!r}: retries must be a non-negative integer")
        if output_schema is not None:
            check_output_schema(output_schema, f"step {name!r}")
        self.name = name
        self.prompt = prompt
        self.retries = retries
        self.fields = _template_fields(name, prompt)
        self.flow: AgentFlow | None = None
        self.function: StepFunction | None = None
        self.output_type = output_type
        self.output_schema = dict(output_schema) if output_schema is not None else None
        self._adapter: TypeAdapter[Any] | None = None
        if isinstance(agent, Agent):
            _check_agent_output(name, agent, output_type, self.output_schema)
            self.flow = AgentFlow(agent)
            self.output_type = output_type or agent.output_type
        elif isinstance(agent, str | Model):
            made: Agent[Any]
            if output_type is not None:
                made = Agent(name, agent, instructions=instructions, output_type=output_type)
            else:
                made = Agent(name, agent, instructions=instructions, output_schema=output_schema)
            self.flow = AgentFlow(made)
        elif callable(agent):
            self.function = agent
        else:
            raise UserError(f"step {name!r}: give an agent, a model reference or a function")
        if self.output_type not in (None, str):
            self._adapter = TypeAdapter(self.output_type)

    @property
    def agent_name(self) -> str | None:
        return self.flow.agent.name if self.flow is not None else None

    def render(self, context: Mapping[str, Any]) -> str:
        """The step's message: its prompt formatted with the chain's values."""
        try:
            return self.prompt.format_map({k: _Field(v) for k, v in context.items()})
        except (KeyError, AttributeError, IndexError, TypeError, ValueError) as exc:
            raise UserError(f"step {self.name!r}: cannot fill in its prompt: {exc!r}") from None

    def check(self, value: Any) -> Any:
        """A function step's value, validated; raises ValueError with a short reason."""
        if self._adapter is not None:
            try:
                return self._adapter.validate_python(value)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "value"
                raise ValueError(f"{where}: {first['msg']}") from exc
        if self.output_schema is not None:
            problem = schema_problem(to_jsonable_python(value, fallback=str), self.output_schema)
            if problem is not None:
                raise ValueError(problem)
        return value

    def restore(self, value: Any) -> Any:
        """A stored (JSON) output as the step's type again."""
        return self._adapter.validate_python(value) if self._adapter is not None else value

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


class Chain(StatelessFlow):
    """Tiny typed steps run in order by code (see the module docstring)."""

    def __init__(
        self,
        name: str,
        steps: Sequence[Step],
        *,
        store: ThreadStore | None = None,
        description: str = "",
    ) -> None:
        check_name(name, "chain")
        if not steps:
            raise UserError(f"chain {name!r}: give at least one step")
        known = {"input"}
        for step in steps:
            if not isinstance(step, Step):
                raise UserError(f"chain {name!r}: {step!r} is not a Step")
            if step.name in known:
                raise UserError(f"chain {name!r}: two steps are named {step.name!r}")
            missing = [f for f in step.fields if f not in known]
            if missing:
                raise UserError(
                    f"chain {name!r}: the prompt of step {step.name!r} uses {{{missing[0]}}}, "
                    "which is neither {input} nor an earlier step"
                )
            known.add(step.name)
        self.name = name
        self.description = description
        self.steps = list(steps)
        agents = [s.flow.agent for s in steps if s.flow is not None]
        self.store = store if store is not None else first_store(agents)

    def entry(self) -> str:
        return self.steps[0].name

    async def begin(self, run: FlowRun, text: str, role: str | None) -> Outcome:
        return await self._from(run, 0, {"input": text}, role, None)

    async def carry_on(self, run: FlowRun, state: dict[str, Any], decision: Resumption) -> Outcome:
        index = int(state["step"])
        flow = self.steps[index].flow
        if flow is None:
            raise ApprovalError(f"chain {self.name!r}: step {index} cannot wait for approval")
        stored = dict(state.get("values") or {})
        context: dict[str, Any] = {"input": str(state.get("input", ""))}
        for step in self.steps[:index]:
            context[step.name] = step.restore(stored.get(step.name))
        first = decision.of(flow, state["thread"])
        return await self._from(run, index, context, decision.role, first)

    async def _from(
        self,
        run: FlowRun,
        start: int,
        context: dict[str, Any],
        role: str | None,
        first: Callable[[], Awaitable[FlowResult]] | None,
    ) -> Outcome:
        agent = self.name
        for index in range(start, len(self.steps)):
            step = self.steps[index]
            with run.recorder.span("chain.step", chain=self.name, step=step.name) as span:
                resumed = first if index == start else None
                paused, value = await self._attempts(run, step, context, role, resumed)
                if paused is not None:
                    span.update(stop_reason=paused.stop_reason)
                    values = {k: v for k, v in context.items() if k != "input"}
                    state = {"step": index, "values": to_jsonable_python(values, fallback=str)}
                    return Outcome.paused(paused, state, outputs=values)
                span.update(output=output_text(value)[:200])
            context[step.name] = value
            agent = step.agent_name or self.name
        last = self.steps[-1].name
        outputs = {k: v for k, v in context.items() if k != "input"}
        return Outcome(output=context[last], agent=agent, outputs=outputs)

    async def _attempts(
        self,
        run: FlowRun,
        step: Step,
        context: dict[str, Any],
        role: str | None,
        resumed: Callable[[], Awaitable[FlowResult]] | None,
    ) -> tuple[FlowResult | None, Any]:
        """(the step's result if it paused, else None; its validated value)."""
        tries = step.retries + 1
        problem = ""
        error: BaseException | None = None
        for attempt in range(1, tries + 1):
            if attempt > 1:
                run.recorder.event("retry", why=f"step {step.name}: {problem}")
            if step.flow is not None:
                try:
                    if resumed is not None and attempt == 1:
                        result = await resumed()
                    else:
                        result = await step.flow.run(step.render(context), role=role)
                except ModelBehaviorError as exc:
                    problem, error = str(exc), exc
                    continue
                run.add(result)
                if result.stop_reason == "approval":
                    return result, None
                if result.stop_reason == "final":
                    return None, result.output
                problem, error = f"the agent gave no answer ({result.stop_reason})", None
                continue
            assert step.function is not None
            try:
                value = step.function(dict(context))
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                if attempt < tries:
                    problem = f"{type(exc).__name__}: {exc}"
                    continue
                exc.add_note(f"in step {step.name!r} of chain {self.name!r}")
                raise
            try:
                return None, step.check(value)
            except ValueError as exc:
                problem, error = f"its value does not validate ({exc})", exc
        where = f"chain {self.name!r}: step {step.name!r} failed after {tries} attempt(s)"
        if step.flow is not None:
            raise ModelBehaviorError(f"{where}: {problem}") from error
        raise UserError(f"{where}: {problem}") from error


class _Field:
    """A value in a prompt template: attributes and items reach into it; it formats as text
    (JSON for objects)."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def __getattr__(self, name: str) -> _Field:
        value = self._value
        if isinstance(value, Mapping) and name in value:
            return _Field(value[name])
        if not name.startswith("_") and hasattr(value, name):
            return _Field(getattr(value, name))
        raise AttributeError(f"{type(value).__name__} value has no {name!r}")

    def __getitem__(self, key: Any) -> _Field:
        return _Field(self._value[key])

    def __format__(self, spec: str) -> str:
        value = self._value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return format(value, spec)
        return format(output_text(value), spec)


def _template_fields(step: str, prompt: str) -> list[str]:
    """The names a prompt template uses (the part before any ``.`` or ``[``)."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(prompt))
    except ValueError as exc:
        raise UserError(f"step {step!r}: bad prompt template: {exc}") from None
    for _, field, _, _ in parsed:
        if field is None:
            continue
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if not root or root.isdigit():
            raise UserError(
                f"step {step!r}: the prompt has a positional field {{{field}}}; name it "
                "({input} or an earlier step)"
            )
        names.append(root)
    return names


def _check_agent_output(
    step: str, agent: Agent[Any], output_type: type[Any] | None, schema: dict[str, Any] | None
) -> None:
    """The step's declared output must be the agent's own (the agent validates it)."""
    if output_type is not None and agent.output_type is not output_type:
        raise UserError(
            f"step {step!r}: agent {agent.name!r} does not have output_type={output_type!r}; "
            "give the agent that output type, or give the step a model reference instead of "
            "an agent"
        )
    if schema is not None and agent.output_schema != schema:
        raise UserError(
            f"step {step!r}: agent {agent.name!r} has another output schema; give the agent "
            "output_schema=..., or give the step a model reference instead of an agent"
        )
