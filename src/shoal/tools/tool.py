"""The :class:`Tool`: a Python function a model may call, with its schema and limits.

A :class:`Tool` wraps one callable (sync or async) and is built once, up front: the name is
checked, the signature and docstring become a :class:`~shoal.messages.ToolDefinition` (see
:mod:`shoal.tools.schema`), and any problem is a :class:`~shoal.exceptions.ToolDefinitionError`
at definition time rather than in the middle of a run. Its attributes are read-only; to change
one, build a new ``Tool(t.function, ...)``.

At run time the agent loop calls :meth:`Tool.call` with the JSON object the model produced:

- arguments are validated and coerced (pydantic lax mode); a failure is a
  :class:`~shoal.exceptions.ToolArgumentsError` whose message is short enough to feed back;
- async functions are awaited, sync ones run in a worker thread (``asyncio.to_thread``), both
  under ``asyncio.wait_for(timeout)``; expiry is a :class:`~shoal.exceptions.ToolTimeoutError`.
  A timed-out *sync* function cannot be killed: its thread runs on, its result is dropped;
- anything the function raises becomes a :class:`~shoal.exceptions.ToolExecutionError`
  (``"name: ExcType: message"``) raised ``from`` the original.

Calling the tool object itself (``lookup_order(42)``) calls the plain function, so a decorated
function still works in ordinary code and tests. :func:`format_tool_result` turns a return
value into the text the model reads.

:meth:`Tool.external` declares a tool by its JSON schema alone, for a caller that runs it
itself (an API client that sent its own tools, an evaluator): the model may call it, and a run
that reaches such a call stops and hands the validated call back instead of running anything.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, overload

import jsonschema
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from shoal.exceptions import (
    ToolArgumentsError,
    ToolDefinitionError,
    ToolExecutionError,
    ToolTimeoutError,
    UserError,
)
from shoal.messages import ToolDefinition
from shoal.tools.schema import FunctionSchema, function_schema

__all__ = ["DEFAULT_TIMEOUT", "Tool", "as_tool", "format_tool_result", "tool"]

#: Seconds a tool may run unless told otherwise.
DEFAULT_TIMEOUT = 30.0

TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")

#: What the model reads when a tool returns ``None``.
NONE_RESULT = "done"


class Tool:
    """A callable the model may use: name, description, argument schema and timeout."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        dangerous: bool = False,
        requires_approval: bool = False,
    ) -> None:
        if isinstance(function, Tool):
            dangerous = dangerous or function.dangerous
            requires_approval = requires_approval or function.requires_approval
            function = function.function
        if not callable(function):
            raise ToolDefinitionError(f"cannot make a tool of {function!r}: it is not callable")
        if inspect.isclass(function):
            raise ToolDefinitionError(
                f"cannot make a tool of the class {function.__qualname__}: "
                "pass a function or an instance with __call__"
            )
        tool_name = _default_name(function) if name is None else name
        _check_name(tool_name, f" for {function!r}")
        if timeout is not None and not timeout > 0:
            raise ToolDefinitionError(
                f"tool {tool_name!r}: timeout must be a positive number of seconds or None"
            )
        self._function: Callable[..., Any] | None = function
        self._name = tool_name
        self._dangerous = dangerous
        self._requires_approval = requires_approval
        self._timeout = None if timeout is None else float(timeout)
        self._schema: FunctionSchema | None = function_schema(function, tool_name=tool_name)
        self._description = self._schema.description if description is None else description
        self._is_async = _is_async_callable(function)
        self._definition = ToolDefinition(
            name=tool_name, description=self._description, parameters=self._schema.parameters
        )

    @classmethod
    def external(
        cls,
        name: str,
        *,
        description: str = "",
        parameters: Mapping[str, Any] | None = None,
        requires_approval: bool = False,
    ) -> Tool:
        """A tool known by its JSON schema only, that the caller runs.

        The model may call it; the agent validates the call against ``parameters`` and ends the
        run with the call in :attr:`~shoal.agent.RunResult.pending_calls`.
        """
        _check_name(name, "")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ToolDefinitionError(
                f"tool {name!r}: parameters must be a JSON schema object, "
                f"not {type(parameters).__name__}"
            )
        schema: dict[str, Any] = dict(parameters) if parameters is not None else {}
        if schema.get("type", "object") != "object":
            raise ToolDefinitionError(f"tool {name!r}: parameters must be an object schema")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ToolDefinitionError(
                f"tool {name!r}: invalid parameters schema: {exc.message}"
            ) from None
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        self = cls.__new__(cls)
        self._function = None
        self._name = name
        self._dangerous = False
        self._requires_approval = requires_approval
        self._timeout = None
        self._schema = None
        self._description = description
        self._is_async = False
        self._definition = ToolDefinition(name=name, description=description, parameters=schema)
        return self

    # -- read-only attributes ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def external_only(self) -> bool:
        """Whether the caller runs this tool (see :meth:`external`)."""
        return self._function is None

    @property
    def description(self) -> str:
        return self._description

    @property
    def dangerous(self) -> bool:
        """Marked as acting on the world (deleting, paying, sending): guards such as
        :class:`~shoal.guards.ApprovalGuard` may ask a person before it runs."""
        return self._dangerous

    @property
    def requires_approval(self) -> bool:
        """Every call waits for a person's approval: the run pauses (``stop_reason ==
        "approval"``) and goes on with :meth:`Agent.resume <shoal.agent.Agent.resume>`."""
        return self._requires_approval

    @property
    def function(self) -> Callable[..., Any]:
        if self._function is None:
            raise ToolDefinitionError(f"tool {self._name!r} is external: it has no function")
        return self._function

    @property
    def timeout(self) -> float | None:
        """Seconds :meth:`call` waits for the function; ``None`` means no limit."""
        return self._timeout

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function (else it runs in a thread)."""
        return self._is_async

    @property
    def arguments_model(self) -> type[BaseModel]:
        """The pydantic model behind both the schema and :meth:`validate`.

        Its fields are aliased by parameter name (``a0`` → ``order_id``); use
        :meth:`validate` rather than this model to get keyword arguments.
        """
        if self._schema is None:
            raise ToolDefinitionError(f"tool {self._name!r} is external: it has no function")
        return self._schema.arguments_model

    @property
    def definition(self) -> ToolDefinition:
        """Name, description and JSON schema of the arguments, as a model is told."""
        return self._definition

    # -- using the tool ----------------------------------------------------------------------

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and coerce ``arguments``; return the keyword arguments for the function.

        Every parameter is present in the result (defaults filled in); nested pydantic models,
        dataclasses and enums are constructed. Raises
        :class:`~shoal.exceptions.ToolArgumentsError` with a short message for the model.
        An external tool's arguments are checked against its JSON schema and returned as given.
        """
        if self._schema is None:
            return _validate_against_schema(self._name, arguments, self._definition.parameters)
        return self._schema.validate(arguments, tool_name=self._name)

    async def call(self, arguments: Mapping[str, Any]) -> Any:
        """Validate ``arguments`` and run the function under the timeout; return its result."""
        if self._function is None:
            raise ToolDefinitionError(f"tool {self._name!r} is external: the caller runs it")
        kwargs = self.validate(arguments)
        try:
            return await asyncio.wait_for(self._run(kwargs), self._timeout)
        except TimeoutError:
            # only wait_for raises this here: the function's own errors are wrapped in _run
            raise ToolTimeoutError(
                f"{self._name}: timed out after {self._timeout:g} s", tool_name=self._name
            ) from None

    async def _run(self, kwargs: dict[str, Any]) -> Any:
        assert self._function is not None
        try:
            if self._is_async:
                result = await self._function(**kwargs)
            else:
                result = await asyncio.to_thread(self._function, **kwargs)
                if inspect.isawaitable(result):  # a sync wrapper around a coroutine
                    result = await result
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise ToolExecutionError(f"{self._name}: {detail}", tool_name=self._name) from exc
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly: no validation, no timeout, no wrapping."""
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self._name!r}, timeout={self._timeout!r})"


@overload
def tool(
    func: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    dangerous: bool = False,
    requires_approval: bool = False,
) -> Tool: ...


@overload
def tool(
    func: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    dangerous: bool = False,
    requires_approval: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    dangerous: bool = False,
    requires_approval: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` of a function: ``@tool``, ``@tool()`` or ``@tool(name=..., ...)``."""

    def decorate(function: Callable[..., Any]) -> Tool:
        return Tool(
            function,
            name=name,
            description=description,
            timeout=timeout,
            dangerous=dangerous,
            requires_approval=requires_approval,
        )

    if func is None:
        return decorate
    return decorate(func)


def as_tool(obj: Tool | Callable[..., Any]) -> Tool:
    """``obj`` itself if it is a :class:`Tool`, else a tool of it with the default settings."""
    if isinstance(obj, Tool):
        return obj
    return Tool(obj)


def format_tool_result(value: Any) -> str:
    """The text the model reads for a tool's return value.

    A string is passed as is and ``None`` reads ``"done"``. Everything else (numbers, bools,
    pydantic models, dataclasses, dicts, lists, tuples, sets...) becomes compact JSON with
    non-ASCII text kept; inside it, what JSON cannot represent falls back to ``str()``. A value
    whose JSON form is a single string (a date, a string enum, an unknown object) is given
    without the quotes.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return NONE_RESULT
    try:
        data = to_jsonable_python(value, fallback=str)
        if isinstance(data, str):  # a date, an enum, bytes, an unknown object: no quotes
            return data
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return str(value)


def _check_name(name: object, where: str) -> None:
    if not isinstance(name, str) or not TOOL_NAME_PATTERN.match(name):
        raise ToolDefinitionError(
            f"invalid tool name {name!r}{where}: use 1-64 letters, digits, "
            "'_', '.' or '-', not starting with a digit" + (" (pass name=...)" if where else "")
        )


def check_output_schema(schema: Any, where: str) -> None:
    """Raise :class:`~shoal.exceptions.UserError` unless ``schema`` is a valid JSON schema."""
    if not isinstance(schema, Mapping):
        raise UserError(f"{where}: the output schema must be a JSON object")
    try:
        jsonschema.Draft202012Validator.check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        raise UserError(f"{where}: invalid output schema: {exc.message}") from None


def schema_problem(value: Any, schema: Mapping[str, Any]) -> str | None:
    """``None`` when ``value`` satisfies ``schema``, else one short reason (with its path)."""
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(dict(schema)).iter_errors(value)
    )
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def decode_answer(text: str, schema: Mapping[str, Any]) -> Any:
    """The JSON value of an answer that must satisfy ``schema``; raises ValueError with a
    short reason the model can act on (not JSON, or which part does not match)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError("the answer is not JSON") from exc
    problem = schema_problem(value, schema)
    if problem is not None:
        raise ValueError(f"the answer does not match the required format ({problem})")
    return value


def _validate_against_schema(
    name: str, arguments: Mapping[str, Any], schema: Mapping[str, Any]
) -> dict[str, Any]:
    if not isinstance(arguments, Mapping):
        raise ToolArgumentsError(
            f"{name}: arguments must be a JSON object, not {type(arguments).__name__}",
            tool_name=name,
        )
    value = dict(arguments)
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(value)
    )
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path)
        prefix = f"{name}: {where}: " if where else f"{name}: "
        raise ToolArgumentsError(prefix + error.message, tool_name=name)
    return value


def _default_name(function: Callable[..., Any]) -> str:
    target: Any = function
    while isinstance(target, functools.partial):
        target = target.func
    name = getattr(target, "__name__", None)
    return name if isinstance(name, str) else type(target).__name__


def _is_async_callable(function: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(function):
        return True
    if inspect.isroutine(function) or isinstance(function, functools.partial):
        return False
    return inspect.iscoroutinefunction(type(function).__call__)
