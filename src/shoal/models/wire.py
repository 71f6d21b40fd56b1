"""Shoal's messages and tools to the OpenAI chat-completions JSON, and replies back: pure functions.

The HTTP backend (:mod:`shoal.models.openai_compat`) decides *what* to send; this module only
spells it, so every shape can be tested without a server.

Requests:

- :func:`messages_json` lowers messages for a server that takes tools natively: an assistant
  turn's calls become ``tool_calls`` entries whose ``arguments`` is a JSON *string* (as the
  OpenAI API defines it), a tool result becomes a ``tool`` message linked by ``tool_call_id``.
  (When tools are described in the prompt instead, :func:`shoal.models.prompt.to_chat_turns`
  lowers the conversation to plain turns.)
- :func:`tools_json` and :func:`tool_choice_json` spell the ``tools`` and ``tool_choice`` fields.
- :func:`call_object_schema`: a JSON schema whose instances are exactly the valid calls
  (``{"name": <one tool>, "arguments": <its schema>}``, ``anyOf`` over the tools), for servers
  that honour a JSON schema but not ``tool_choice``.
- :func:`schema_fields`: the body fields that carry a JSON schema the way a server takes one
  (``response_format``, vLLM's ``guided_json``, llama-server's ``json_schema``).

Replies, read leniently because servers differ (each quirk has a recorded reply in
``tests/unit/recorded/``):

- :func:`read_tool_calls` accepts ``arguments`` as a JSON string or as an object (Ollama's native
  shape), a missing or empty ``id`` (a fresh one is made), a missing ``type``; arguments that are
  not valid JSON go through the same repair rules as calls written in text
  (:func:`shoal.toolcalls.parse_model_output`), and are an error when they cannot be read.
- :class:`StreamAccumulator` merges streamed ``delta`` chunks: content pieces, ``tool_calls``
  fragments by ``index`` (the id and name arrive once, the arguments in pieces), the finish
  reason and a final ``usage`` chunk. :class:`SSEDecoder` splits the ``text/event-stream`` lines.
- :func:`read_usage` and :func:`error_detail` read the usage object and the message of an error
  body (``{"error": {"message"}}``, vLLM's ``{"message"}``, FastAPI's ``{"detail"}``).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.messages import Message, SystemMessage, ToolCall, ToolDefinition, new_call_id
from shoal.settings import ModelSettings
from shoal.toolcalls import TOOL_CALL_OPEN, parse_model_output, render_call

__all__ = [
    "ANSWER_KEY",
    "DONE",
    "Reply",
    "SSEDecoder",
    "StreamAccumulator",
    "WireUsage",
    "call_instruction",
    "call_json",
    "call_object_schema",
    "content_text",
    "error_detail",
    "json_instruction",
    "json_or_text",
    "messages_json",
    "raw_text",
    "read_reply",
    "read_tool_calls",
    "read_usage",
    "retry_after_seconds",
    "sampling_json",
    "schema_fields",
    "status_hint",
    "tool_choice_json",
    "tools_json",
    "unwrap_answer",
    "with_system_lines",
]

#: the key a non-object schema is wrapped under for ``response_format`` (see :func:`schema_fields`)
ANSWER_KEY = "answer"

#: what :meth:`SSEDecoder.feed` returns for the ``data: [DONE]`` line that ends a stream
DONE = "[DONE]"

# -- requests ------------------------------------------------------------------------------------


def tool_json(tool: ToolDefinition) -> dict[str, Any]:
    """One entry of the ``tools`` field."""
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def tools_json(tools: Iterable[ToolDefinition]) -> list[dict[str, Any]]:
    return [tool_json(t) for t in tools]


def tool_choice_json(choice: str) -> str | dict[str, Any]:
    """The ``tool_choice`` field: ``auto``/``none``/``required`` or a named function."""
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def call_json(call: ToolCall) -> dict[str, Any]:
    """One entry of an assistant message's ``tool_calls`` (arguments as a JSON string)."""
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def messages_json(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages in the native OpenAI shape (calls in ``tool_calls``, results as ``tool`` turns)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": message.content}
            if message.tool_calls:
                entry["tool_calls"] = [call_json(c) for c in message.tool_calls]
            elif message.content is None:
                entry["content"] = ""
            out.append(entry)
        elif message.role == "tool":
            out.append(
                {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
            )
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def call_object_schema(tools: Sequence[ToolDefinition]) -> dict[str, Any]:
    """A schema satisfied exactly by a valid call to one of ``tools``."""
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [t.name]},
                "arguments": t.parameters,
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def with_system_lines(messages: Sequence[Message], lines: Sequence[str]) -> list[Message]:
    """``messages`` with ``lines`` added to the system prompt (one is made if there is none)."""
    if not lines:
        return list(messages)
    text = "\n\n".join(lines)
    if messages and messages[0].role == "system":
        return [SystemMessage(content=f"{messages[0].content}\n\n{text}"), *messages[1:]]
    return [SystemMessage(content=text), *messages]


def call_instruction(tools: Sequence[ToolDefinition]) -> str:
    """The system line asking for a call when nothing can force one."""
    if len(tools) == 1:
        return f"Answer with a call to the function {tools[0].name}, not with text."
    return "Answer with a call to one of the functions, not with text."


def json_instruction(schema: dict[str, Any]) -> str:
    """The system line asking for a JSON answer when nothing can constrain it."""
    return "Answer with only a JSON value (no other text) that matches this JSON schema: " + (
        json.dumps(schema, ensure_ascii=False)
    )


def _is_object_schema(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "object" and not any(
        key in schema for key in ("anyOf", "oneOf", "allOf", "$ref")
    )


#: schema keywords whose values are JSON values, not schemas
_VALUE_KEYS = frozenset({"enum", "const", "default", "examples"})


def _strict_ok(schema: Any) -> bool:
    """Whether ``schema`` is in the subset OpenAI's ``strict`` mode accepts: every object lists
    all its properties as required and forbids others (else the API answers 400)."""
    if isinstance(schema, list):
        return all(_strict_ok(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required", [])) != set(properties):
            return False
    return all(_strict_ok(value) for key, value in schema.items() if key not in _VALUE_KEYS)


def schema_fields(schema: dict[str, Any], mode: str) -> tuple[dict[str, Any], bool]:
    """The body fields that constrain the answer to ``schema``, and whether the answer comes
    back wrapped as ``{"answer": <value>}`` (:func:`unwrap_answer`).

    ``response_format`` (OpenAI, Azure, Ollama, LM Studio, llama-server, shoal): OpenAI takes an
    object at the root, so any other schema is wrapped in a one-key object; ``strict`` is set
    only when the schema is in the subset strict mode accepts. ``guided_json`` (vLLM before
    0.12) and ``json_schema`` (llama-server) take the schema as it is. Any other ``mode`` is
    taken as ``response_format``.
    """
    if mode == "guided_json":
        return {"guided_json": schema}, False
    if mode == "json_schema":
        return {"json_schema": schema}, False
    wrapped = not _is_object_schema(schema)
    if wrapped:
        schema = {
            "type": "object",
            "properties": {ANSWER_KEY: schema},
            "required": [ANSWER_KEY],
            "additionalProperties": False,
        }
    spec = {"name": "answer", "schema": schema, "strict": _strict_ok(schema)}
    return {"response_format": {"type": "json_schema", "json_schema": spec}}, wrapped


def unwrap_answer(text: str) -> str:
    """The answer inside ``{"answer": <value>}`` as JSON text (the text itself if not wrapped)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, dict) and set(value) == {ANSWER_KEY}:
        return json.dumps(value[ANSWER_KEY], ensure_ascii=False)
    return text


#: sampling fields beyond the OpenAI API, by server, with the name each server gives them
_EXTRA_SAMPLING: dict[str, dict[str, str]] = {
    "llama-server": {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repeat_penalty"},
    "llama-cpp-python": {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repeat_penalty"},
    "shoal": {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repeat_penalty"},
    "ollama": {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repeat_penalty"},
    "vllm": {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repetition_penalty"},
}


def sampling_json(settings: ModelSettings, server: str) -> dict[str, Any]:
    """Sampling fields for ``server``: the OpenAI ones always, ``top_k``/``min_p``/repeat penalty
    only to servers known to take them (never to OpenAI or Azure, which reject unknown fields)."""
    out: dict[str, Any] = {}
    for key in ("temperature", "top_p", "max_tokens", "seed"):
        value = getattr(settings, key)
        if value is not None:
            out[key] = value
    if settings.stop:
        out["stop"] = list(settings.stop)
    for key, wire_key in _EXTRA_SAMPLING.get(server, {}).items():
        value = getattr(settings, key)
        if value is not None:
            out[wire_key] = value
    return out


# -- replies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WireUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0


def read_usage(usage: Any) -> WireUsage | None:
    """The ``usage`` object (``prompt_tokens_details.cached_tokens`` as cached tokens)."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return WireUsage(
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        cached_prompt_tokens=_int(cached),
    )


@dataclass(frozen=True)
class Reply:
    """What one completion said, streamed or not."""

    content: str = ""
    calls: tuple[ToolCall, ...] = ()
    #: why a native call could not be read
    call_error: str | None = None
    finish_reason: str | None = None
    usage: WireUsage | None = None


def content_text(content: Any) -> str:
    """A message's content: a string, null, or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def read_reply(data: Mapping[str, Any]) -> Reply:
    """A non-streamed ``chat.completion``; ValueError when it has no choice."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("the reply has no choices")
    choice = choices[0]
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    calls, error = read_tool_calls(message.get("tool_calls"))
    finish = choice.get("finish_reason")
    return Reply(
        content=content_text(message.get("content")),
        calls=calls,
        call_error=error,
        finish_reason=finish if isinstance(finish, str) else None,
        usage=read_usage(data.get("usage")),
    )


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _decode_arguments(name: str, raw: Any) -> dict[str, Any]:
    """A call's arguments from a JSON string or an object; ValueError when unreadable."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        raise ValueError(f"the arguments of {name} are not a JSON object")
    try:
        value = json.loads(raw)
    except ValueError:
        # the repair rules of calls written as text: fixable slips yes, cut-off values no
        block = f'{TOOL_CALL_OPEN}\n{{"name": {json.dumps(name)}, "arguments": {raw}}}\n'
        parsed = parse_model_output(block)
        if len(parsed.calls) == 1 and parsed.calls[0].name == name:
            return parsed.calls[0].arguments
        raise ValueError(f"the arguments of {name} are not valid JSON: {raw[:200]}") from None
    if isinstance(value, str):  # double-encoded
        return _decode_arguments(name, value)
    if not isinstance(value, dict):
        raise ValueError(f"the arguments of {name} are not a JSON object")
    return value


def read_tool_calls(entries: Any) -> tuple[tuple[ToolCall, ...], str | None]:
    """Calls from a message's ``tool_calls`` list, and an error when one cannot be read."""
    if not isinstance(entries, list):
        return (), None
    calls: list[ToolCall] = []
    for entry in entries:
        function = entry.get("function") if isinstance(entry, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name.strip():
            return tuple(calls), "a native tool call has no function name"
        assert isinstance(function, dict)
        try:
            arguments = _decode_arguments(name, function.get("arguments"))
        except ValueError as exc:
            return tuple(calls), str(exc)
        call_id = entry.get("id")
        calls.append(
            ToolCall(
                id=call_id if isinstance(call_id, str) and call_id else new_call_id(),
                name=name.strip(),
                arguments=arguments,
            )
        )
    return tuple(calls), None


def raw_text(content: str | None, calls: Sequence[ToolCall]) -> str:
    """What a reply said, as text: its content, then native calls written as Hermes blocks."""
    parts = [content] if content else []
    parts.extend(render_call(c) for c in calls)
    return "\n".join(parts)


def json_or_text(text: str) -> Any:
    """``text`` decoded as JSON, or as it is when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def status_hint(
    status: int,
    *,
    model: str,
    base_url: str,
    key_sent: bool,
    key_env: str | None,
    attempts: int,
) -> str:
    """What to check after an error status (the key and its variable for 401/403, the model id
    and URL for 404, ...): the end of the error message a user reads."""
    if status in (401, 403):
        if key_sent:
            where = f" in ${key_env}" if key_env else ""
            return f"check the API key{where} and that it may use {model!r}"
        return "no API key was sent: " + (f"set ${key_env}" if key_env else "pass api_key=")
    if status == 404:
        return f"check the model id {model!r} (is it pulled/served there?) and the URL {base_url}"
    if status == 429:
        return f"rate limited; gave up after {attempts} attempts"
    if status >= 500:
        return f"the server failed; gave up after {attempts} attempts"
    return "the server rejected the request"


def error_detail(body: str) -> str:
    """The message of an error body, or the body itself (first 500 characters)."""
    try:
        value = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(value, dict):
        error = value.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:500]
        for key in ("message", "detail", "error"):
            if isinstance(value.get(key), str):
                return str(value[key])[:500]
    return body.strip()[:500]


class SSEDecoder:
    """Server-sent events, line by line: :meth:`feed` returns an event's ``data`` (or
    :data:`DONE`) when a line completes one, else None. Comments and other fields are ignored."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name != "data":
            return None
        value = value[1:] if value.startswith(" ") else value
        if value.strip() == DONE:
            self._data.clear()
            return DONE
        self._data.append(value)
        # servers write one JSON object per data line: hand it over at once when it parses
        joined = "\n".join(self._data)
        try:
            json.loads(joined)
        except ValueError:
            return None
        self._data.clear()
        return joined

    def flush(self) -> str | None:
        if not self._data:
            return None
        joined = "\n".join(self._data)
        self._data.clear()
        return joined


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""
    arguments_object: dict[str, Any] | None = None


@dataclass
class StreamAccumulator:
    """The pieces of a streamed reply, merged chunk by chunk."""

    content: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: WireUsage | None = None
    #: chunks that carried content or call fragments (llama.cpp servers send one token each)
    pieces: int = 0
    _calls: dict[int, _PartialCall] = field(default_factory=dict)

    def feed(self, chunk: Any) -> str:
        """Take one chunk; return the content text it adds."""
        if not isinstance(chunk, dict):
            return ""
        usage = read_usage(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return ""
        calls = delta.get("tool_calls") or ()
        for position, entry in enumerate(calls):
            if isinstance(entry, dict):
                self._merge_call(position, entry)
        text = delta.get("content")
        if calls or (isinstance(text, str) and text):
            self.pieces += 1
        if isinstance(text, str) and text:
            self.content.append(text)
            return text
        return ""

    def _merge_call(self, position: int, entry: dict[str, Any]) -> None:
        index = entry.get("index")
        key = index if isinstance(index, int) else position
        partial = self._calls.setdefault(key, _PartialCall())
        if isinstance(entry.get("id"), str) and entry["id"]:
            partial.id = entry["id"]
        function = entry.get("function")
        if not isinstance(function, dict):
            return
        name = function.get("name")
        if isinstance(name, str) and name and name != partial.name:
            # sent once by most servers; a few repeat the full name in every chunk
            partial.name = name if name.startswith(partial.name) else partial.name + name
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            partial.arguments_object = arguments
        elif isinstance(arguments, str):
            partial.arguments += arguments

    @property
    def text(self) -> str:
        return "".join(self.content)

    def reply(self) -> Reply:
        """Everything merged so far. A stream without a usage chunk (llama-cpp-python's server
        sends none) counts its chunks as completion tokens: an estimate, one token a chunk."""
        calls, error = self.tool_calls()
        usage = self.usage
        if usage is None and self.pieces:
            usage = WireUsage(completion_tokens=self.pieces)
        return Reply(self.text, calls, error, self.finish_reason, usage)

    def tool_calls(self) -> tuple[tuple[ToolCall, ...], str | None]:
        """The merged calls, in index order, and an error when one cannot be read."""
        entries = [
            {
                "id": p.id,
                "function": {
                    "name": p.name,
                    "arguments": p.arguments_object
                    if p.arguments_object is not None
                    else p.arguments,
                },
            }
            for _, p in sorted(self._calls.items())
        ]
        return read_tool_calls(entries)
