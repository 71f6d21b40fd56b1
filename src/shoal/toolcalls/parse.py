"""Reading tool calls back out of a model's text.

On the embedded engine a grammar guarantees the Hermes shape, so parsing is exact; the same
parser also reads unconstrained output (a server that cannot constrain, a model that wraps the
call in prose or a code fence), trying strategies from strictest to loosest:

1. Hermes: ``<tool_call>{...}</tool_call>`` blocks (an unclosed last block is accepted);
2. a JSON object (or list of objects) with ``name`` and ``arguments`` as the whole answer,
   optionally in a fenced code block.

Anything else is text. Output that opens a call but cannot be decoded yields ``error`` so the
loop can ask the model again with a short message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from shoal.messages import ToolCall
from shoal.toolcalls.hermes import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

__all__ = ["ParsedOutput", "TextStreamSplitter", "parse_model_output"]

_HERMES_BLOCK = re.compile(
    re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)",
    re.DOTALL,
)
_FENCE = re.compile(r"^```(?:json|tool_call)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class ParsedOutput:
    """What a model's output says: text before any call, the calls, or why it is unreadable."""

    text: str | None
    calls: tuple[ToolCall, ...] = ()
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _calls_from_json(payload: Any) -> list[ToolCall]:
    items = payload if isinstance(payload, list) else [payload]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError('a call must be an object with a string "name"')
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):  # some models double-encode the arguments
            arguments = json.loads(arguments) if arguments.strip() else {}
        if not isinstance(arguments, dict):
            raise ValueError('"arguments" must be a JSON object')
        calls.append(ToolCall(name=item["name"], arguments=arguments))
    return calls


def _parse_hermes(raw: str) -> ParsedOutput | None:
    start = raw.find(TOOL_CALL_OPEN)
    if start < 0:
        return None
    text = raw[:start].strip() or None
    calls: list[ToolCall] = []
    for match in _HERMES_BLOCK.finditer(raw, start):
        body = match.group(1).strip()
        if not body:
            continue
        try:
            calls.extend(_calls_from_json(json.loads(body)))
        except (ValueError, TypeError) as exc:
            return ParsedOutput(text=text, error=f"the tool call is not valid JSON: {exc}")
    if not calls:
        return ParsedOutput(text=text, error="the tool call is empty")
    return ParsedOutput(text=text, calls=tuple(calls))


def _parse_bare_json(raw: str) -> ParsedOutput | None:
    body = raw.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    if not body.startswith(("{", "[")):
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    items = payload if isinstance(payload, list) else [payload]
    if not items or not all(
        isinstance(i, dict) and "name" in i and ("arguments" in i or "parameters" in i)
        for i in items
    ):
        return None  # a JSON answer, not a call
    try:
        return ParsedOutput(text=None, calls=tuple(_calls_from_json(payload)))
    except (ValueError, TypeError):
        return None


def parse_model_output(raw: str) -> ParsedOutput:
    """Split ``raw`` into text and tool calls (see the module docstring for the strategies)."""
    for strategy in (_parse_hermes, _parse_bare_json):
        parsed = strategy(raw)
        if parsed is not None:
            return parsed
    return ParsedOutput(text=raw.strip())


class TextStreamSplitter:
    """Lets answer text stream out while holding back anything that may open a tool call.

    Feed decoded pieces with :meth:`feed`; it returns the text that is safe to show now. Once
    the output is known to be a call, nothing more is released.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._released = 0
        self.is_call = False

    def feed(self, piece: str) -> str:
        self._buffer += piece
        if self.is_call:
            return ""
        stripped = self._buffer.lstrip()
        if stripped.startswith(TOOL_CALL_OPEN):
            self.is_call = True
            return ""
        if TOOL_CALL_OPEN.startswith(stripped):
            return ""  # may still become a call
        # hold back a tail that could be the start of an embedded call tag
        hold = 0
        for size in range(min(len(TOOL_CALL_OPEN) - 1, len(self._buffer)), 0, -1):
            if TOOL_CALL_OPEN.startswith(self._buffer[-size:]):
                hold = size
                break
        safe_end = len(self._buffer) - hold
        tag = self._buffer.find(TOOL_CALL_OPEN, self._released)
        if tag >= 0:
            safe_end = min(safe_end, tag)
            self.is_call = True
        out = self._buffer[self._released : safe_end]
        self._released = max(self._released, safe_end)
        return out

    def flush(self) -> str:
        """The held-back text once the stream has ended (nothing if it became a call)."""
        if self.is_call:
            return ""
        out = self._buffer[self._released :]
        self._released = len(self._buffer)
        return out
