"""The Hermes tool-call format, as Qwen2.5 and SmolLM2 were trained on it.

Tools are listed as JSON inside ``<tools></tools>`` in the system prompt; a call is one JSON
object ``{"name": ..., "arguments": {...}}`` inside ``<tool_call></tool_call>``; a result goes
back inside ``<tool_response></tool_response>`` in a user turn. The wording of the tools section
follows the chat template Qwen2.5 ships, so a model trained on it sees what it expects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from shoal.messages import ToolCall, ToolDefinition

__all__ = [
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "call_json",
    "render_call",
    "render_tool_result",
    "render_tools_section",
]

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


def _tool_json(tool: ToolDefinition) -> str:
    function = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
    return json.dumps({"type": "function", "function": function}, ensure_ascii=False)


def render_tools_section(tools: Sequence[ToolDefinition]) -> str:
    """The part of the system prompt that declares ``tools`` and how to call them."""
    listing = "\n".join(_tool_json(t) for t in tools)
    return (
        "# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{listing}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n"
        f'{TOOL_CALL_OPEN}\n{{"name": <function-name>, "arguments": <args-json-object>}}\n'
        f"{TOOL_CALL_CLOSE}"
    )


def call_json(name: str, arguments: object) -> str:
    """The JSON object of one call, with keys in the order the grammar emits them."""
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def render_call(call: ToolCall) -> str:
    """A call as the model would have written it (for earlier turns in the prompt)."""
    return f"{TOOL_CALL_OPEN}\n{call_json(call.name, call.arguments)}\n{TOOL_CALL_CLOSE}"


def render_tool_result(content: str) -> str:
    """A tool result as the model expects to read it."""
    return f"<tool_response>\n{content}\n</tool_response>"
