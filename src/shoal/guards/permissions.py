"""Who may use which tool, and which calls wait for a person.

:class:`ToolPermissionGuard` maps a key (the caller's role, or the agent's name) to the tool
names it may use, as exact names or :mod:`fnmatch` patterns (``"file_*"``, ``"*"``; matching is
case-sensitive, like tool names). It fails closed: a key the mapping does not name gets the
``default`` patterns, and with no ``default`` it gets no tools at all. The model is offered only
the allowed tools, and a call to any other tool (a hostile or confused model naming a tool it
was not offered) is blocked with a reason naming the role and the tool.

With ``by="role"`` the key is ``ctx.role`` only. A run without a role is *not* matched by its
agent's name (roles and agent names are different namespaces: a caller must not gain a role's
tools because an agent happens to share its name); it gets ``default``. Use ``by="agent"`` to
grant tools per agent.

:class:`ApprovalGuard` answers ``approve`` for calls that need a person's decision: tools on its
list (names or patterns) and, unless ``dangerous=False``, every tool marked dangerous.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Literal

from shoal.exceptions import UserError
from shoal.guards._checks import choice, names, set_name
from shoal.guards.base import Guard, GuardContext, Verdict
from shoal.messages import ToolCall

__all__ = ["ApprovalGuard", "ToolPermissionGuard"]


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns)


class ToolPermissionGuard(Guard):
    """Tools allowed per role (or per agent with ``by="agent"``); see the module docstring.

    ``roles`` maps each role to its tool names or patterns, e.g.
    ``{"guest": ["search"], "staff": ["search", "file_*"], "admin": ["*"]}``. An empty list
    grants nothing. ``default`` is what every other key (and a run without a role) gets;
    ``None``, the default, means no tools.
    """

    def __init__(
        self,
        roles: Mapping[str, Iterable[str]],
        *,
        default: Iterable[str] | None = None,
        by: Literal["role", "agent"] = "role",
        name: str | None = None,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(roles, Mapping):
            raise UserError(
                f"{owner}: roles must map each role to its tool names, got {type(roles).__name__}"
            )
        self.roles: dict[str, tuple[str, ...]] = {}
        for role, tools in roles.items():
            if not isinstance(role, str) or not role:
                raise UserError(f"{owner}: role names must be non-empty strings, got {role!r}")
            self.roles[role] = names(owner, f"the tools of {role!r}", tools)
        self.default: tuple[str, ...] = () if default is None else names(owner, "default", default)
        self.by = choice(owner, "by", by, ("role", "agent"))
        set_name(self, name)

    def patterns_for(self, ctx: GuardContext) -> tuple[str, ...]:
        """The tool names and patterns ``ctx`` is allowed."""
        key = ctx.agent if self.by == "agent" else ctx.role
        if key is None or key not in self.roles:
            return self.default
        return self.roles[key]

    def allowed_tools(self, names: Sequence[str], ctx: GuardContext) -> Sequence[str]:
        patterns = self.patterns_for(ctx)
        return [name for name in names if _matches(name, patterns)]

    def check_tool_call(
        self, call: ToolCall, ctx: GuardContext, *, dangerous: bool = False
    ) -> Verdict | None:
        if _matches(call.name, self.patterns_for(ctx)):
            return None
        return Verdict("block", f"{self._who(ctx)} may not use the tool {call.name!r}", self.name)

    def _who(self, ctx: GuardContext) -> str:
        if self.by == "agent":
            return f"the agent {ctx.agent!r}"
        if ctx.role is None:
            return "a caller without a role"
        return f"the role {ctx.role!r}"


class ApprovalGuard(Guard):
    """Calls that wait for a person: tools in ``tools`` (names or :mod:`fnmatch` patterns) and,
    with ``dangerous=True`` (the default), every call the loop marks dangerous (the tool was
    defined with ``dangerous=True``). The verdict is ``approve``; the run pauses until
    ``agent.resume`` is called with the decision."""

    def __init__(
        self,
        tools: Iterable[str] = (),
        *,
        dangerous: bool = True,
        name: str | None = None,
    ) -> None:
        owner = type(self).__name__
        self.tools = names(owner, "tools", tools)
        if not isinstance(dangerous, bool):
            raise UserError(f"{owner}: dangerous must be True or False, got {dangerous!r}")
        if not self.tools and not dangerous:
            raise UserError(
                f"{owner}: no tools listed and dangerous=False; it would never ask for approval"
            )
        self.dangerous = dangerous
        set_name(self, name)

    def check_tool_call(
        self, call: ToolCall, ctx: GuardContext, *, dangerous: bool = False
    ) -> Verdict | None:
        if _matches(call.name, self.tools):
            why = f"{call.name} is on the approval list"
        elif dangerous and self.dangerous:
            why = f"{call.name} is marked dangerous"
        else:
            return None
        return Verdict("approve", f"needs a person's approval: {why}", guard=self.name)
