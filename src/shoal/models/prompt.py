"""Turning Shoal messages into the prompt text a local model was trained on.

Two steps, kept apart so each is easy to test:

1. :func:`to_chat_turns` lowers messages to plain ``{"role", "content"}`` turns: the tools
   section joins the system prompt, earlier calls are written back in the Hermes format, tool
   results become ``<tool_response>`` blocks in a user turn, and consecutive turns of one role
   are merged (strict templates such as Gemma's reject two in a row).
2. :class:`ChatTemplate` renders those turns with the Jinja chat template stored in the GGUF
   file itself (``tokenizer.chat_template``), sandboxed, falling back to ChatML when a file has
   none. Using the model's own template is what keeps family quirks out of Shoal's code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import jinja2
import jinja2.sandbox

from shoal.messages import Message, ToolDefinition
from shoal.models.base import ModelRequestParameters
from shoal.toolcalls import render_call, render_tool_result, render_tools_section

__all__ = [
    "CHATML_TEMPLATE",
    "ChatTemplate",
    "flatten_result",
    "request_turns",
    "to_chat_turns",
]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def to_chat_turns(
    messages: Sequence[Message],
    tools: Sequence[ToolDefinition],
    *,
    result_style: Literal["hermes", "context"] = "hermes",
) -> list[dict[str, str]]:
    """Plain chat turns for ``messages``, with ``tools`` declared in the system turn.

    ``result_style="context"`` is for models too small to read a ``<tool_response>`` turn (they
    echo it): calls are left out and their results are folded into the user's turn as plain
    ``key: value`` information, followed by the question.
    """
    turns: list[dict[str, str]] = []

    def add(role: str, content: str) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n" + content
        else:
            turns.append({"role": role, "content": content})

    system_parts = [m.content for m in messages if m.role == "system" and m.content]
    if tools:
        system_parts.append(render_tools_section(tools))
    if system_parts:
        turns.append({"role": "system", "content": "\n\n".join(system_parts)})
    if result_style == "context":
        for role, content in _context_turns(messages):
            add(role, content)
        return turns
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "user":
            add("user", message.content)
        elif message.role == "assistant":
            parts = [message.content] if message.content else []
            parts.extend(render_call(call) for call in message.tool_calls)
            add("assistant", "\n".join(parts))
        else:
            add("user", render_tool_result(message.content))
    return turns


def request_turns(
    messages: Sequence[Message],
    params: ModelRequestParameters,
    result_style: Literal["hermes", "context"],
) -> list[dict[str, str]]:
    """The turns of one request as a model of ``result_style`` reads them: with the
    ``context`` style the tools are described only while they may be called and results become
    information (:func:`to_chat_turns`); with ``hermes`` every declared tool is described."""
    if result_style == "context":
        return to_chat_turns(messages, params.described_tools(), result_style="context")
    return to_chat_turns(messages, params.tools)


def _context_turns(messages: Sequence[Message]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    question: str | None = None
    facts: list[str] = []

    def close_turn() -> None:
        if question is None:
            return
        if facts:
            info = "\n\n".join(facts)
            out.append(
                ("user", f"{info}\n\nAnswer in one sentence using the information: {question}")
            )
        else:
            out.append(("user", question))

    for message in messages:
        if message.role == "user":
            close_turn()
            question, facts = message.content, []
        elif message.role == "tool":
            facts.append(f"Information from {message.name}:\n{flatten_result(message.content)}")
        elif message.role == "assistant" and not message.tool_calls and message.content:
            close_turn()
            question, facts = None, []
            out.append(("assistant", message.content))
    close_turn()
    return out


def flatten_result(content: str) -> str:
    """A tool result as ``key: value`` lines when it is a JSON object or list, else as is."""
    try:
        value = json.loads(content)
    except ValueError:
        return content
    lines: list[str] = []

    def walk(item: Any, prefix: str) -> None:
        if isinstance(item, dict):
            for key, inner in item.items():
                walk(inner, f"{prefix}{key} " if isinstance(inner, dict) else f"{prefix}{key}")
        elif isinstance(item, list) and all(not isinstance(v, dict | list) for v in item):
            lines.append(f"{prefix.strip()}: {', '.join(str(v) for v in item)}")
        elif isinstance(item, list):
            for index, inner in enumerate(item, 1):
                walk(inner, f"{prefix}{index} ")
        else:
            lines.append(f"{prefix.strip()}: {item}" if prefix.strip() else str(item))

    walk(value, "")
    return "\n".join(lines)


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


class ChatTemplate:
    """A model's own chat template, rendered in a Jinja sandbox."""

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source or CHATML_TEMPLATE
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader()
        )
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(self.source)
        self._extra: dict[str, Any] = {"bos_token": bos_token, "eos_token": eos_token}

    def render(self, turns: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        return self._template.render(
            messages=list(turns), add_generation_prompt=add_generation_prompt, **self._extra
        )
