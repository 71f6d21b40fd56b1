"""The guard interface and the three combinators the agent loop calls.

A :class:`Guard` looks at a run at four points (*stages*) and answers each with a
:class:`Verdict`, or ``None`` for "allow":

- ``input``: the caller's message, before the model sees it (:meth:`Guard.check_input`);
- ``tool_call``: each validated call the model asked for, before it runs
  (:meth:`Guard.check_tool_call`); :meth:`Guard.allowed_tools` also trims the tools offered;
- ``tool_result``: what a tool returned, before the model sees it (:meth:`Guard.check_tool_result`);
- ``output``: the final answer, before the caller sees it (:meth:`Guard.check_output`).

A verdict's ``action`` is one of ``allow``, ``block`` (stop the action; ``reason`` says why),
``redact`` (go on with ``text`` in place of the original: text stages only) and ``approve``
(pause the run until a person decides: tool calls only). Every hook receives a
:class:`GuardContext` naming the agent, the caller's role, the thread and the run.

The loop never calls hooks directly. It calls :func:`screen_text`, :func:`screen_call` and
:func:`permitted_tools`, which run a sequence of guards in order and **fail closed**:

- a hook that raises (any ``Exception``) becomes a block verdict with the reason
  ``"guard <name> failed: <ExcType>: <message>"``; the exception is logged, never propagated;
- a hook that returns something that is not a :class:`Verdict`, an unknown action, a ``redact``
  without ``text``, ``approve`` at a text stage or ``redact`` for a tool call becomes a block;
- an ``allowed_tools`` that raises or returns a non-sequence leaves no tool offered.

Verdicts that leave ``guard`` empty are stamped with the guard's :attr:`Guard.name`, so the
audit trail always says which guard decided.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from shoal.exceptions import UserError
from shoal.messages import ToolCall

__all__ = [
    "Action",
    "Guard",
    "GuardContext",
    "Screened",
    "Stage",
    "TextStage",
    "Verdict",
    "permitted_tools",
    "screen_call",
    "screen_text",
]

logger = logging.getLogger("shoal.guards")

Action = Literal["allow", "block", "redact", "approve"]
Stage = Literal["input", "tool_call", "tool_result", "output"]
TextStage = Literal["input", "tool_result", "output"]

_ACTIONS: frozenset[str] = frozenset(get_args(Action))
TEXT_STAGES: tuple[TextStage, ...] = get_args(TextStage)


@dataclass(frozen=True)
class GuardContext:
    """Who is acting: the agent, the caller's role (``None``: unknown), the thread, the run."""

    agent: str
    role: str | None = None
    thread_id: str | None = None
    run_id: str = ""


@dataclass(frozen=True)
class Verdict:
    """A guard's answer. ``text`` is the replacement for ``redact``; ``retry_after`` (seconds)
    is set by rate limits so the caller can say when to try again (HTTP ``Retry-After``)."""

    action: Action
    reason: str = ""
    guard: str = ""
    text: str | None = None
    retry_after: float | None = None


class Guard:
    """Base class: every hook allows. Subclasses override the hooks they care about.

    ``name`` appears in verdicts and audit records; it defaults to the class name and can be
    set per instance (the built-ins take ``name=...``).
    """

    name: str = "Guard"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def check_input(self, text: str, ctx: GuardContext) -> Verdict | None:
        """The caller's message. ``redact`` replaces it; ``block`` refuses the run."""
        return None

    def allowed_tools(self, names: Sequence[str], ctx: GuardContext) -> Sequence[str]:
        """The subset of ``names`` this guard lets the model see (and call)."""
        return names

    def check_tool_call(
        self, call: ToolCall, ctx: GuardContext, *, dangerous: bool = False
    ) -> Verdict | None:
        """A validated call; ``dangerous`` is the tool's flag. ``block`` or ``approve``."""
        return None

    def check_tool_result(self, call: ToolCall, content: str, ctx: GuardContext) -> Verdict | None:
        """What ``call`` returned. ``redact`` replaces it; ``block`` withholds it."""
        return None

    def check_output(self, text: str, ctx: GuardContext) -> Verdict | None:
        """The final answer. ``redact`` replaces it; ``block`` refuses it."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


@dataclass(frozen=True)
class Screened:
    """The result of :func:`screen_text`: the text after the redactions (up to the block, if
    any), every non-allow verdict in order (for the audit trail), and the first block
    (screening stopped there)."""

    text: str
    verdicts: list[Verdict] = field(default_factory=list)
    blocked: Verdict | None = None


def screen_text(
    guards: Sequence[Guard],
    stage: TextStage,
    text: str,
    ctx: GuardContext,
    call: ToolCall | None = None,
) -> Screened:
    """Run ``guards`` in order over a text stage; each sees the previous guard's redaction.

    ``call`` is required for ``tool_result`` (the call whose result ``text`` is). Stops at the
    first block. Fails closed (see the module docstring).
    """
    if stage not in TEXT_STAGES:
        raise UserError(f"unknown text stage {stage!r}; expected one of {', '.join(TEXT_STAGES)}")
    if stage == "tool_result" and call is None:
        raise UserError("screen_text(stage='tool_result') needs the call the result belongs to")
    verdicts: list[Verdict] = []
    for guard in guards:
        try:
            if stage == "input":
                raw: object = guard.check_input(text, ctx)
            elif stage == "output":
                raw = guard.check_output(text, ctx)
            else:
                assert call is not None
                raw = guard.check_tool_result(call, text, ctx)
        except Exception as exc:
            raw = _failure(guard, stage, exc)
        verdict = _normalise(guard, stage, raw)
        if verdict is None:
            continue
        verdicts.append(verdict)
        if verdict.action == "block":
            return Screened(text=text, verdicts=verdicts, blocked=verdict)
        if verdict.action == "redact":
            assert verdict.text is not None
            text = verdict.text
    return Screened(text=text, verdicts=verdicts, blocked=None)


def screen_call(
    guards: Sequence[Guard], call: ToolCall, ctx: GuardContext, *, dangerous: bool
) -> list[Verdict]:
    """Every non-allow verdict on ``call``, in guard order; stops after the first block.

    The loop blocks the call when the last verdict is a block, else pauses for approval when any
    verdict is ``approve``. A call to a tool that a guard's :meth:`Guard.allowed_tools` would
    not offer is blocked here too, so a guard that only filters the offered tools also stops a
    model that calls an unlisted tool anyway.
    """
    verdicts: list[Verdict] = []
    for guard in guards:
        try:
            raw: object = guard.check_tool_call(call, ctx, dangerous=dangerous)
        except Exception as exc:
            raw = _failure(guard, "tool_call", exc)
        verdict = _normalise(guard, "tool_call", raw)
        if verdict is None or verdict.action != "block":
            try:
                allowed = _allowed(guard, [call.name], ctx)
            except Exception as exc:
                verdict = _failure(guard, "tool_call", exc)
            else:
                if call.name not in allowed:
                    verdict = Verdict(
                        "block",
                        f"the tool {call.name!r} is not among the tools {_name_of(guard)} allows",
                        guard=_name_of(guard),
                    )
        if verdict is None:
            continue
        verdicts.append(verdict)
        if verdict.action == "block":
            break
    return verdicts


def permitted_tools(guards: Sequence[Guard], names: Sequence[str], ctx: GuardContext) -> list[str]:
    """The tools every guard allows, in the order of ``names``. A guard whose
    :meth:`Guard.allowed_tools` fails leaves no tool offered (fail closed)."""
    kept = list(names)
    for guard in guards:
        if not kept:
            break
        try:
            allowed = _allowed(guard, kept, ctx)
        except Exception:
            logger.warning(
                "guard %s failed in allowed_tools; no tool is offered",
                _name_of(guard),
                exc_info=True,
            )
            return []
        kept = [name for name in kept if name in allowed]
    return kept


# -- helpers --------------------------------------------------------------------------------


def _name_of(guard: object) -> str:
    try:
        name = getattr(guard, "name", None)
    except Exception:  # a hostile or broken ``name`` property
        name = None
    return name if isinstance(name, str) and name else type(guard).__name__


def _allowed(guard: Guard, names: list[str], ctx: GuardContext) -> set[str]:
    result: object = guard.allowed_tools(list(names), ctx)
    if isinstance(result, str) or not isinstance(result, Sequence | set | frozenset):
        raise TypeError(f"allowed_tools returned {type(result).__name__}, not a sequence of names")
    return {name for name in result if isinstance(name, str)}


def _failure(guard: object, stage: str, exc: Exception) -> Verdict:
    name = _name_of(guard)
    logger.warning("guard %s failed at the %s stage; blocking", name, stage, exc_info=exc)
    return Verdict("block", f"guard {name} failed: {type(exc).__name__}: {exc}", guard=name)


def _normalise(guard: object, stage: Stage, raw: object) -> Verdict | None:
    """``None`` for allow; otherwise a well-formed verdict stamped with the guard's name."""
    name = _name_of(guard)
    if raw is None:
        return None
    if not isinstance(raw, Verdict):
        return _invalid(name, f"returned {type(raw).__name__}, not a Verdict")
    if raw.action not in _ACTIONS:
        return _invalid(name, f"returned the unknown action {raw.action!r}")
    if raw.action == "allow":
        return None
    if raw.action == "redact":
        if stage == "tool_call":
            return _invalid(name, "asked to redact a tool call, which cannot be redacted")
        if not isinstance(raw.text, str):
            return _invalid(name, "returned a redact verdict without text")
    if raw.action == "approve" and stage != "tool_call":
        return _invalid(name, f"asked for approval at the {stage} stage; only tool calls can wait")
    return raw if raw.guard else replace(raw, guard=name)


def _invalid(name: str, problem: str) -> Verdict:
    logger.warning("guard %s %s; blocking", name, problem)
    return Verdict("block", f"guard {name} failed: {problem}", guard=name)
