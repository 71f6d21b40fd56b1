"""Models for tests: no weights, no network, fully scripted.

- :class:`FunctionModel` answers with a function of ``(messages, params)``. The function may
  return a raw string, which goes through the same parser as the embedded engine's output,
  so tests can feed malformed or hostile model output to the loop; or a
  :class:`~shoal.models.base.ModelResponse`; or tool calls.
- :class:`TestModel` needs no script: on the first request it calls each offered tool once with
  arguments made up from its schema, then answers with the tool results as JSON (or a value
  matching the output schema).

Both record every request in ``.requests`` so tests can assert what the model was asked.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.messages import Message, ToolCall, ToolMessage, Usage
from shoal.models.base import (
    Model,
    ModelRequestParameters,
    ModelResponse,
    ModelStreamEvent,
    ResponseDone,
    TextDelta,
)
from shoal.models.profiles import ModelProfile
from shoal.toolcalls import parse_model_output

__all__ = ["FunctionModel", "ModelRequest", "TestModel", "sample_from_schema"]

FunctionResult = str | ModelResponse | ToolCall | Sequence[ToolCall]
ModelFunction = Callable[
    [list[Message], ModelRequestParameters], FunctionResult | Awaitable[FunctionResult]
]

_TEST_PROFILE = ModelProfile(family="test", context_length=8192)


@dataclass(frozen=True)
class ModelRequest:
    """One request a test model received."""

    messages: list[Message]
    params: ModelRequestParameters


def _to_response(result: FunctionResult, name: str, messages: Sequence[Message]) -> ModelResponse:
    usage = Usage(requests=1, prompt_tokens=sum(len(str(m)) // 4 for m in messages))
    if isinstance(result, ModelResponse):
        return result if result.usage.requests else result.model_copy(update={"usage": usage})
    if isinstance(result, str):
        parsed = parse_model_output(result)
        return ModelResponse(
            text=parsed.text,
            tool_calls=parsed.calls,
            raw=result,
            finish_reason="tool_calls" if parsed.calls else "stop",
            usage=usage.model_copy(update={"completion_tokens": len(result) // 4 + 1}),
            parse_error=parsed.error,
            model_name=name,
        )
    calls = (result,) if isinstance(result, ToolCall) else tuple(result)
    return ModelResponse(tool_calls=calls, finish_reason="tool_calls", usage=usage, model_name=name)


class FunctionModel(Model):
    """A model whose every answer comes from ``function(messages, params)``."""

    def __init__(
        self,
        function: ModelFunction,
        *,
        name: str = "function",
        profile: ModelProfile = _TEST_PROFILE,
        stream_chunk: int = 4,
    ) -> None:
        self.function = function
        self.name = name
        self.profile = profile
        self.stream_chunk = stream_chunk
        self.requests: list[ModelRequest] = []

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        self.requests.append(ModelRequest(list(messages), params))
        result = self.function(list(messages), params)
        if inspect.isawaitable(result):
            result = await result
        response = _to_response(result, self.name, messages)
        if response.text and not response.tool_calls:
            text = response.text
            for start in range(0, len(text), self.stream_chunk):
                yield TextDelta(text[start : start + self.stream_chunk])
        yield ResponseDone(response)


def sample_from_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A simple value that validates against ``schema`` (required fields only)."""
    defs = {**(defs or {}), **schema.get("$defs", {})}
    if "$ref" in schema:
        return sample_from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return sample_from_schema(options[0], defs)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: sample_from_schema(props[k], defs) for k in schema.get("required", [])}
    if kind == "array":
        return [sample_from_schema(schema["items"], defs)] if schema.get("minItems") else []
    if kind == "string" and schema.get("format") in _FORMAT_SAMPLES:
        return _FORMAT_SAMPLES[schema["format"]]
    return {"string": "a", "integer": 0, "number": 0.0, "boolean": False, "null": None}[kind]


_FORMAT_SAMPLES = {
    "date": "2025-01-01",
    "date-time": "2025-01-01T00:00:00Z",
    "time": "00:00:00",
    "duration": "P1D",
    "email": "someone@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


class TestModel(FunctionModel):
    """Calls every offered tool once, then answers with their results (see module docstring)."""

    __test__ = False  # not a pytest class

    def __init__(self, *, text: str | None = None, name: str = "test") -> None:
        super().__init__(self._answer, name=name)
        self.text = text

    def _answer(self, messages: list[Message], params: ModelRequestParameters) -> FunctionResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        tools = params.offered_tools()
        if tools and not results:
            return [
                ToolCall(name=t.name, arguments=sample_from_schema(t.parameters)) for t in tools
            ]
        if params.output_schema is not None:
            return json.dumps(sample_from_schema(params.output_schema))
        if self.text is not None:
            return self.text
        return json.dumps({m.name: m.content for m in results}) if results else "success"
