"""Size and rate limits.

:class:`SizeLimitGuard` counts characters (``len`` of the Python string). Inputs and tool-call
arguments over their limit are blocked: they come from outside or from the model and a
truncated request would be a different request. Tool results and outputs over their limit are
cut, keeping the first characters, and a marker line says how much was cut.

:class:`RateLimitGuard` keeps, per key (the caller's role, the agent or the thread), the times
of recent accepted requests in a sliding window of ``per_seconds``. A request is refused when
the window already holds ``max_requests``; refused requests are not counted. The block verdict
carries ``retry_after``: the seconds until the oldest request leaves the window.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from shoal.exceptions import UserError
from shoal.guards._checks import (
    choice,
    optional_positive_int,
    plural,
    positive_int,
    positive_seconds,
    set_name,
)
from shoal.guards.base import Guard, GuardContext, Verdict
from shoal.messages import ToolCall

__all__ = ["RateLimitGuard", "SizeLimitGuard", "truncate"]


def truncate(text: str, limit: int) -> str:
    """The first ``limit`` characters of ``text`` and a marker line saying how much was cut
    (``text`` itself when it fits)."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"{text[:limit]}\n[... truncated: {plural(cut, 'character')} of {len(text):,} cut]"


class SizeLimitGuard(Guard):
    """Limits in characters; ``None`` turns a limit off.

    - ``max_input_chars``: a longer input is blocked;
    - ``max_argument_chars``: a call whose arguments, as compact JSON, are longer is blocked
      (so are arguments too deeply nested to serialise);
    - ``max_tool_result_chars``: a longer tool result is cut (redacted) with a marker;
    - ``max_output_chars``: a longer final answer is cut (redacted) with a marker.

    Put it first in the guard list: the guards after it then never scan an oversized text.
    """

    def __init__(
        self,
        max_input_chars: int | None = 8000,
        max_argument_chars: int | None = 4000,
        max_tool_result_chars: int | None = None,
        max_output_chars: int | None = None,
        *,
        name: str | None = None,
    ) -> None:
        owner = type(self).__name__
        self.max_input_chars = optional_positive_int(owner, "max_input_chars", max_input_chars)
        self.max_argument_chars = optional_positive_int(
            owner, "max_argument_chars", max_argument_chars
        )
        self.max_tool_result_chars = optional_positive_int(
            owner, "max_tool_result_chars", max_tool_result_chars
        )
        self.max_output_chars = optional_positive_int(owner, "max_output_chars", max_output_chars)
        set_name(self, name)

    def check_input(self, text: str, ctx: GuardContext) -> Verdict | None:
        limit = self.max_input_chars
        if limit is None or len(text) <= limit:
            return None
        reason = f"the input is {plural(len(text), 'character')}; the limit is {limit:,}"
        return Verdict("block", reason, guard=self.name)

    def check_tool_call(
        self, call: ToolCall, ctx: GuardContext, *, dangerous: bool = False
    ) -> Verdict | None:
        limit = self.max_argument_chars
        if limit is None:
            return None
        try:
            size = len(
                json.dumps(call.arguments, ensure_ascii=False, separators=(",", ":"), default=str)
            )
        except (RecursionError, ValueError):
            reason = f"the arguments of {call.name!r} are too deeply nested to check"
            return Verdict("block", reason, guard=self.name)
        if size <= limit:
            return None
        reason = (
            f"the arguments of {call.name!r} are {plural(size, 'character')} as JSON; "
            f"the limit is {limit:,}"
        )
        return Verdict("block", reason, guard=self.name)

    def check_tool_result(self, call: ToolCall, content: str, ctx: GuardContext) -> Verdict | None:
        limit = self.max_tool_result_chars
        if limit is None or len(content) <= limit:
            return None
        reason = (
            f"the result of {call.name!r} was {plural(len(content), 'character')}; "
            f"kept the first {limit:,}"
        )
        return Verdict("redact", reason, guard=self.name, text=truncate(content, limit))

    def check_output(self, text: str, ctx: GuardContext) -> Verdict | None:
        limit = self.max_output_chars
        if limit is None or len(text) <= limit:
            return None
        reason = f"the output was {plural(len(text), 'character')}; kept the first {limit:,}"
        return Verdict("redact", reason, guard=self.name, text=truncate(text, limit))


_SWEEP_AT = 1024  # sweep empty windows when this many keys are held


class RateLimitGuard(Guard):
    """At most ``max_requests`` runs per ``per_seconds`` for each key, and, when
    ``max_tool_calls`` is set, at most that many tool calls per ``per_seconds`` for each key.

    ``by`` picks the key: ``"role"`` (``ctx.role``), ``"agent"`` (``ctx.agent``) or
    ``"thread"`` (``ctx.thread_id``); a missing role or thread counts as ``"anonymous"``, so
    every caller without one shares a single window. Requests are counted by
    :meth:`check_input` when they are accepted, tool calls by :meth:`check_tool_call` (a call
    a later guard blocks has still used its place). Safe to share between threads.
    """

    def __init__(
        self,
        max_requests: int,
        per_seconds: float = 60,
        *,
        by: Literal["role", "agent", "thread"] = "role",
        max_tool_calls: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        owner = type(self).__name__
        self.max_requests = positive_int(owner, "max_requests", max_requests)
        self.per_seconds = positive_seconds(owner, "per_seconds", per_seconds)
        self.by = choice(owner, "by", by, ("role", "agent", "thread"))
        self.max_tool_calls = optional_positive_int(owner, "max_tool_calls", max_tool_calls)
        if not callable(clock):
            raise UserError(f"{owner}: clock must be a function returning seconds, got {clock!r}")
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], deque[float]] = {}
        set_name(self, name)

    def key(self, ctx: GuardContext) -> str:
        """The key ``ctx`` is counted under."""
        if self.by == "agent":
            value: str | None = ctx.agent
        elif self.by == "thread":
            value = ctx.thread_id
        else:
            value = ctx.role
        return value or "anonymous"

    def check_input(self, text: str, ctx: GuardContext) -> Verdict | None:
        return self._take("requests", self.max_requests, ctx)

    def check_tool_call(
        self, call: ToolCall, ctx: GuardContext, *, dangerous: bool = False
    ) -> Verdict | None:
        if self.max_tool_calls is None:
            return None
        return self._take("tool calls", self.max_tool_calls, ctx)

    def _take(self, what: str, limit: int, ctx: GuardContext) -> Verdict | None:
        key = self.key(ctx)
        with self._lock:
            now = self._clock()
            if len(self._windows) >= _SWEEP_AT:
                self._sweep(now)
            window = self._windows.setdefault((what, key), deque())
            horizon = now - self.per_seconds
            while window and window[0] <= horizon:
                window.popleft()
            if len(window) < limit:
                window.append(now)
                return None
            retry_after = max(window[0] + self.per_seconds - now, 0.0)
        reason = (
            f"rate limit: at most {plural(limit, what[:-1], what)} per {self.per_seconds:g} s "
            f"for {self.by} {key!r}; retry in {retry_after:.1f} s"
        )
        return Verdict("block", reason, guard=self.name, retry_after=retry_after)

    def _sweep(self, now: float) -> None:
        horizon = now - self.per_seconds
        for key in [k for k, w in self._windows.items() if not w or w[-1] <= horizon]:
            del self._windows[key]
