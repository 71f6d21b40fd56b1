"""The ``flows:`` section of a system file: one checked definition per flow (layer L4).

Each entry is one :class:`FlowDef` subclass, chosen by its ``type:`` (``router``, ``team``,
``pipeline``, ``fanout``, ``critic``, ``chain``; see ``docs/systems.md``). A definition checks
what it can on its own (route labels of rules, a team's handoffs, a chain's prompt
placeholders); what needs the whole file (are the names agents or flows? cycles?) is checked
by :class:`~shoal.spec.system.SystemSpec`, which reads every place naming a member through
:meth:`FlowDef.members` and :meth:`FlowDef.agent_refs`.

The helpers the system file's own checks share with these definitions (names, ``hint`` for
"did you mean", references, output schemas) are public for :mod:`shoal.spec.system`.

Errors are pydantic errors whose place, relative to the model that raises them, is in the
context under :data:`~shoal.spec.models.BELOW_KEY` (the loader turns them into ``file:line``).
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Iterator
from typing import Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    field_validator,
    model_validator,
)

from shoal.exceptions import UserError
from shoal.spec.models import check_pattern, spec_error
from shoal.spec.schema import TOOL_REF, Loc
from shoal.tools.tool import check_output_schema

__all__ = [
    "FLOW_KINDS",
    "NAME",
    "ChainFlow",
    "ChainStepDef",
    "CriticFlow",
    "FanoutFlow",
    "FlowDef",
    "FlowRule",
    "PipelineFlow",
    "RouterFlow",
    "StrictModel",
    "TeamFlow",
    "hint",
    "is_function_ref",
    "schema_problem",
    "valid_name",
    "valid_ref",
]

#: agent, flow and route-label names
NAME = re.compile(r"[A-Za-z0-9_-]+")
_STEP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def hint(word: str, options: list[str], what: str = "known") -> str:
    """``"; did you mean 'x'?"`` for a close option, else ``"; {what}: a, b"`` (or nothing)."""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; {what}: {', '.join(options)}" if options else ""


def valid_name(value: str, what: str = "name") -> str:
    """``value`` if it is a valid :data:`NAME`, else a spec error."""
    if not NAME.fullmatch(value):
        raise spec_error(
            "name", f"{value!r} is not a valid {what}: use letters, digits, '_' and '-' only"
        )
    return value


def valid_ref(value: str) -> str:
    """``value`` if it looks like ``module:attribute``, else a spec error."""
    if not TOOL_REF.fullmatch(value):
        raise spec_error(
            "ref", f"{value!r} must look like 'module:attribute' (for example 'my_guards:strict')"
        )
    return value


def is_function_ref(value: str) -> bool:
    """Whether a place that takes a member or a function holds a ``module:function``."""
    return ":" in value


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` cannot be an ``output_schema`` (None: it can)."""
    try:
        check_output_schema(schema, "output_schema")
    except UserError as exc:
        return str(exc)
    return None


class StrictModel(BaseModel):
    """A frozen part of a system file that refuses unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class FlowDef(StrictModel):
    """One entry of ``flows:``. Validating a mapping as ``FlowDef`` gives the subclass its
    ``type:`` names."""

    #: the ``type:`` value of this kind
    kind: ClassVar[str] = ""

    type: str
    description: str = ""

    @model_validator(mode="wrap")
    @classmethod
    def _dispatch(cls, data: Any, handler: ModelWrapValidatorHandler[FlowDef]) -> FlowDef:
        if cls is not FlowDef:
            return handler(data)
        if isinstance(data, FlowDef):
            return data
        kinds = ", ".join(FLOW_KINDS)
        if not isinstance(data, dict):
            raise spec_error("flow", f"a flow must be a mapping with 'type:' ({kinds})")
        if "type" not in data:
            raise spec_error("flow", f"missing required key 'type' ({kinds})")
        kind = data["type"]
        if not isinstance(kind, str) or kind not in FLOW_KINDS:
            raise spec_error(
                "flow_type",
                f"{kind!r} is not a flow type{hint(str(kind), list(FLOW_KINDS), 'use')}",
                ("type",),
            )
        return FLOW_KINDS[kind].model_validate(data)

    def members(self) -> Iterator[tuple[Loc, str]]:
        """The agents or flows this flow runs, each with its place (relative to the flow)."""
        return iter(())

    def agent_refs(self) -> Iterator[tuple[Loc, str]]:
        """The places that must name an agent (not a flow)."""
        return iter(())


class FlowRule(StrictModel):
    """A router rule: a regex searched case-insensitively in the message, the route label."""

    pattern: str = Field(min_length=1)
    to: str
    reason: str = ""

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        return check_pattern(value)


class RouterFlow(FlowDef):
    """Rules first, then a classifier model, else ``default``; runs the chosen route."""

    kind: ClassVar[str] = "router"

    #: members (labels are their names), or label -> member
    routes: tuple[str, ...] | dict[str, str] = Field(min_length=1)
    rules: tuple[FlowRule, ...] = ()
    #: a models: entry or a model reference
    classifier: str | None = Field(default=None, min_length=1)
    descriptions: dict[str, str] = Field(default_factory=dict)
    default: str | None = None
    instructions: str | None = None

    def labels(self) -> dict[str, str]:
        """Route label -> member name."""
        if isinstance(self.routes, dict):
            return dict(self.routes)
        return {name: name for name in self.routes}

    def _route_loc(self, label: str) -> Loc:
        if isinstance(self.routes, dict):
            return ("routes", label)
        return ("routes", self.routes.index(label))

    @model_validator(mode="after")
    def _check_labels(self) -> Self:
        labels = list(self.labels())
        for label in labels:
            if not NAME.fullmatch(label):
                raise spec_error(
                    "route_label",
                    f"{label!r} is not a valid route label: use letters, digits, '_' and '-'",
                    ("routes", label),
                )
        if not isinstance(self.routes, dict) and len(set(self.routes)) != len(self.routes):
            twice = next(n for n in self.routes if self.routes.count(n) > 1)
            raise spec_error("routes", f"{twice!r} is listed twice", ("routes",))
        for index, rule in enumerate(self.rules):
            if rule.to not in labels:
                raise spec_error(
                    "route_label",
                    f"rule sends to {rule.to!r}, which is not a route{hint(rule.to, labels)}",
                    ("rules", index, "to"),
                )
        if self.default is not None and self.default not in labels:
            raise spec_error(
                "route_label",
                f"default {self.default!r} is not a route{hint(self.default, labels)}",
                ("default",),
            )
        for label in self.descriptions:
            if label not in labels:
                raise spec_error(
                    "route_label",
                    f"descriptions names {label!r}, which is not a route{hint(label, labels)}",
                    ("descriptions", label),
                )
        return self

    def members(self) -> Iterator[tuple[Loc, str]]:
        for label, member in self.labels().items():
            yield self._route_loc(label), member


class TeamFlow(FlowDef):
    """Agents that hand the conversation to each other."""

    kind: ClassVar[str] = "team"

    agents: tuple[str, ...] = Field(min_length=1)
    entry: str | None = None
    handoffs: dict[str, tuple[str, ...]] | None = None
    approval: tuple[str, ...] = ()
    max_handoffs: int = Field(default=3, ge=0, le=20, strict=True)

    @model_validator(mode="after")
    def _check_team(self) -> Self:
        agents = list(self.agents)
        if len(set(agents)) != len(agents):
            twice = next(n for n in agents if agents.count(n) > 1)
            raise spec_error("team", f"{twice!r} is listed twice", ("agents",))

        def outside(name: str, loc: Loc, what: str) -> None:
            if name not in agents:
                raise spec_error(
                    "team",
                    f"{what} names {name!r}, which is not an agent of the team"
                    + hint(name, agents, "its agents"),
                    loc,
                )

        if self.entry is not None:
            outside(self.entry, ("entry",), "entry")
        for source, targets in (self.handoffs or {}).items():
            outside(source, ("handoffs", source), "handoffs")
            for index, target in enumerate(targets):
                outside(target, ("handoffs", source, index), f"handoffs.{source}")
                if target == source:
                    raise spec_error(
                        "team",
                        f"{source!r} cannot hand off to itself",
                        ("handoffs", source, index),
                    )
        for index, name in enumerate(self.approval):
            outside(name, ("approval", index), "approval")
        return self

    @property
    def entry_name(self) -> str:
        return self.entry or self.agents[0]

    def agent_refs(self) -> Iterator[tuple[Loc, str]]:
        for index, name in enumerate(self.agents):
            yield ("agents", index), name


class PipelineFlow(FlowDef):
    """Steps in order, each step's answer the next one's message."""

    kind: ClassVar[str] = "pipeline"

    #: members, or ``module:function`` references (str -> str)
    steps: tuple[str, ...] = Field(min_length=1)

    def members(self) -> Iterator[tuple[Loc, str]]:
        for index, step in enumerate(self.steps):
            if not is_function_ref(step):
                yield ("steps", index), step

    @field_validator("steps")
    @classmethod
    def _check_refs(cls, steps: tuple[str, ...]) -> tuple[str, ...]:
        for index, step in enumerate(steps):
            if is_function_ref(step) and not TOOL_REF.fullmatch(step):
                raise spec_error("ref", f"{step!r} must look like 'module:function'", (index,))
        return steps


class FanoutFlow(FlowDef):
    """The same message to every branch at once (at most ``limit``), then ``combine``."""

    kind: ClassVar[str] = "fanout"

    branches: tuple[str, ...] = Field(min_length=1)
    limit: int = Field(default=2, ge=1, le=16, strict=True)
    #: an agent, or a ``module:function`` (list of results -> text); None: answers joined
    combine: str | None = None

    @field_validator("combine")
    @classmethod
    def _check_combine(cls, value: str | None) -> str | None:
        if value is not None and is_function_ref(value):
            valid_ref(value)
        return value

    def members(self) -> Iterator[tuple[Loc, str]]:
        for index, branch in enumerate(self.branches):
            yield ("branches", index), branch

    def agent_refs(self) -> Iterator[tuple[Loc, str]]:
        if self.combine is not None and not is_function_ref(self.combine):
            yield ("combine",), self.combine


class CriticFlow(FlowDef):
    """The worker answers, the critic accepts or asks for a revision."""

    kind: ClassVar[str] = "critic"

    worker: str
    critic: str
    max_rounds: int = Field(default=2, ge=1, le=3, strict=True)

    def members(self) -> Iterator[tuple[Loc, str]]:
        yield ("worker",), self.worker

    def agent_refs(self) -> Iterator[tuple[Loc, str]]:
        yield ("critic",), self.critic


class ChainStepDef(StrictModel):
    """One typed step of a chain."""

    name: str
    #: an agent, or a ``module:function`` taking the dict of earlier outputs
    agent: str
    prompt: str = "{input}"
    output_schema: dict[str, Any] | None = None
    retries: int = Field(default=1, ge=0, le=5, strict=True)

    @field_validator("name")
    @classmethod
    def _check_step_name(cls, value: str) -> str:
        if not _STEP_NAME.fullmatch(value) or value == "input":
            raise spec_error(
                "name",
                f"{value!r} is not a valid step name: letters, digits and '_', not starting "
                "with a digit, and not 'input' (prompts use the names as {placeholders})",
            )
        return value

    @field_validator("agent")
    @classmethod
    def _check_agent(cls, value: str) -> str:
        return valid_ref(value) if is_function_ref(value) else value

    @field_validator("output_schema")
    @classmethod
    def _check_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = schema_problem(value) if value is not None else None
        if problem is not None:
            raise spec_error("output_schema", problem)
        return value


class ChainFlow(FlowDef):
    """Typed steps run in order by code; each prompt sees the earlier outputs."""

    kind: ClassVar[str] = "chain"

    steps: tuple[ChainStepDef, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_steps(self) -> Self:
        known = ["input"]
        for index, step in enumerate(self.steps):
            if step.name in known:
                raise spec_error(
                    "chain", f"step name {step.name!r} is used twice", ("steps", index, "name")
                )
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(step.prompt) if f]
            except ValueError as exc:
                raise spec_error(
                    "prompt", f"the prompt is not a valid template: {exc}", ("steps", index)
                ) from None
            for field in fields:
                root = re.split(r"[.\[]", field, maxsplit=1)[0]
                if root not in known:
                    raise spec_error(
                        "prompt",
                        f"the prompt uses {{{field}}}, but only {{input}} and earlier steps "
                        f"exist here{hint(root, known, 'use')}",
                        ("steps", index, "prompt"),
                    )
            known.append(step.name)
        return self

    def agent_refs(self) -> Iterator[tuple[Loc, str]]:
        for index, step in enumerate(self.steps):
            if not is_function_ref(step.agent):
                yield ("steps", index, "agent"), step.agent


#: ``type:`` -> flow class
FLOW_KINDS: dict[str, type[FlowDef]] = {
    kind.kind: kind
    for kind in (RouterFlow, TeamFlow, PipelineFlow, FanoutFlow, CriticFlow, ChainFlow)
}
