"""The validated form of an agent spec: :class:`AgentSpec`, its :class:`ToolSpec` and
:class:`RouteSpec` entries.

The YAML format is described in :mod:`shoal.spec.loader` (and ``docs/agent-spec.md``); this
module holds what a file turns into once it has been checked, and turns that into a running
:class:`~shoal.agent.Agent` with :meth:`AgentSpec.build_agent`. Tools are only named here
(``module:function``); they are imported when an agent is built, not when a spec is loaded, so
``shoal`` can check a spec without running any of the user's code. A ``models:`` section (named
models, routers and the like: :mod:`shoal.spec.models`) lets ``model:`` name one of its entries.
``routes:`` become :class:`~shoal.agent.Route` rules (:func:`build_routes`).

Seams the other spec modules use (system files define agents with the same pieces):
:data:`TOOL_REF` (the shape of a ``module:attribute`` reference), :func:`import_attribute` and
:func:`on_sys_path` (importing one from the spec's directory), :data:`BUILTIN_CHOICES` and
:func:`unknown_choice_message` (checking ``tool_choice``), :func:`route_tool_problem` and
:func:`build_routes`.
"""

from __future__ import annotations

import difflib
import importlib
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shoal.agent import Agent, Route
from shoal.exceptions import SpecError, ToolDefinitionError, UserError
from shoal.models import DEFAULT_MODEL, Model
from shoal.models.registry import resolve_model
from shoal.settings import ModelSettings
from shoal.spec.models import (
    ModelTable,
    Resolve,
    build_model,
    build_models,
    check_pattern,
    model_name_problem,
    spec_error,
)
from shoal.threads import ThreadStore
from shoal.tools import Tool, as_tool, tool

__all__ = [
    "AT_KEY",
    "BUILTIN_CHOICES",
    "TOOL_REF",
    "AgentSpec",
    "Loc",
    "RouteSpec",
    "ToolSpec",
    "build_routes",
    "import_attribute",
    "on_sys_path",
    "route_tool_problem",
    "unknown_choice_message",
]

#: A path into the spec's data, as pydantic reports it: ``("tools", 1, "timeout")``.
Loc = tuple[str | int, ...]

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
#: a ``module:attribute`` reference (the module may be dotted)
TOOL_REF = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}")
_AGENT_NAME = re.compile(r"[A-Za-z0-9_-]+")
#: the rule shoal.tools applies, checked here too so that the error has a line number
_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
#: the ``tool_choice`` values that are not a tool's name
BUILTIN_CHOICES = ("auto", "none", "required")
#: when a route is tried: before the model is asked, or after it exhausted its retries
_ROUTE_WHEN = ("first", "fallback")

#: A cross-field check can only fail as a whole model (loc ``()``); it puts the place it means
#: under this ``ctx`` key so the loader can point at the right line.
AT_KEY = "at"


def _spec_error(kind: str, message: str, at: Loc) -> PydanticCustomError:
    # ``message`` is used as a template: it must not quote user text that may contain braces
    return PydanticCustomError(kind, message, {AT_KEY: at})


class ToolSpec(BaseModel):
    """One entry of ``tools:``. A bare ``"module:function"`` string becomes ``{"ref": ...}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: str
    #: the name the model sees; default: the function's name
    name: str | None = None
    #: replaces the description taken from the docstring
    description: str | None = None
    #: seconds the function may run before the call fails
    timeout: float | None = Field(default=None, gt=0, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"ref": data}
        if not isinstance(data, dict | ToolSpec):
            raise PydanticCustomError(
                "tool_entry",
                "a tool entry must be a 'module:function' string or a mapping with a 'ref' key",
            )
        return data

    @field_validator("ref")
    @classmethod
    def _check_ref(cls, value: str) -> str:
        if not TOOL_REF.fullmatch(value):
            raise PydanticCustomError(
                "tool_ref",
                "tool reference '{ref}' must look like 'module:function' "
                "(for example 'support_tools:lookup_order')",
                {"ref": value},
            )
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not _TOOL_NAME.fullmatch(value):
            raise PydanticCustomError(
                "tool_name",
                "tool name '{name}' is not valid: use 1-64 letters, digits, '_', '.' or '-', "
                "not starting with a digit",
                {"name": value},
            )
        return value

    @property
    def module(self) -> str:
        """The dotted module path before the colon."""
        return self.ref.partition(":")[0]

    @property
    def attribute(self) -> str:
        """The function name after the colon."""
        return self.ref.partition(":")[2]

    @property
    def tool_name(self) -> str:
        """The name this entry declares: ``name`` if given, else the function's name."""
        return self.name or self.attribute

    @property
    def has_options(self) -> bool:
        return self.name is not None or self.description is not None or self.timeout is not None


class RouteSpec(BaseModel):
    """One entry of ``routes:``: a regex searched (case-insensitively) in the user's message
    and the tool it calls, ``first`` (before the model) or as a ``fallback`` (after the model
    exhausted its retries); see :class:`~shoal.agent.Route`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str = Field(min_length=1)
    #: the name of one of the agent's tools
    tool: str = Field(min_length=1)
    when: Literal["first", "fallback"] = "first"
    #: ``module:function`` making the call's arguments from the match; default: the named groups
    arguments: str | None = None

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        return check_pattern(value)

    @field_validator("when", mode="before")
    @classmethod
    def _check_when(cls, value: Any) -> Any:
        if value not in _ROUTE_WHEN:
            raise spec_error(
                "route_when",
                f"{value!r} is not when a route is tried: use first (before the model is "
                "asked) or fallback (after it exhausted its retries)",
            )
        return value

    @field_validator("arguments")
    @classmethod
    def _check_arguments(cls, value: str | None) -> str | None:
        if value is not None and not TOOL_REF.fullmatch(value):
            raise spec_error(
                "arguments_ref",
                f"{value!r} must look like 'module:function' (a function of the match that "
                "returns the arguments)",
            )
        return value


class AgentSpec(BaseModel):
    """An agent described by a YAML file. Load one with :func:`shoal.spec.load_agent_spec`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    #: a model reference, or the name of an entry of ``models``
    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    #: named models (:mod:`shoal.spec.models`)
    models: ModelTable = Field(default_factory=dict)
    instructions: str = ""
    tools: tuple[ToolSpec, ...] = ()
    settings: ModelSettings = Field(default_factory=ModelSettings)
    tool_choice: str = Field(default="auto", min_length=1)
    #: rules that call a tool without the model (:class:`RouteSpec`)
    routes: tuple[RouteSpec, ...] = ()
    max_steps: int = Field(default=8, ge=1, le=50, strict=True)
    retries: int = Field(default=2, ge=0, le=10, strict=True)
    #: the file the spec was read from; tool modules are imported from its directory
    source: Path

    #: how the source is shown in error locations (the path as the caller gave it)
    _display: str | None = PrivateAttr(default=None)
    #: line numbers of the places :meth:`build_agent` may have to complain about
    _lines: dict[Loc, int] = PrivateAttr(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _AGENT_NAME.fullmatch(value):
            raise PydanticCustomError(
                "agent_name",
                "'{name}' is not a valid name: use letters, digits, '_' and '-' only",
                {"name": value},
            )
        return value

    @model_validator(mode="after")
    def _check_tool_names(self) -> Self:
        seen: dict[str, int] = {}
        for index, entry in enumerate(self.tools):
            first = seen.setdefault(entry.tool_name, index)
            if first != index:
                raise _spec_error(
                    "duplicate_tool",
                    f"tool name {entry.tool_name!r} is already used by tools[{first}]; "
                    "give one of them another 'name:'",
                    ("tools", index),
                )
        return self

    @model_validator(mode="after")
    def _check_routes(self) -> Self:
        names = [entry.tool_name for entry in self.tools]
        for index, route in enumerate(self.routes):
            problem = route_tool_problem(route.tool, names)
            if problem is not None:
                # user text goes in as a placeholder's value: it may contain braces
                raise PydanticCustomError(
                    "route_tool",
                    "{message}",
                    {"message": problem, AT_KEY: ("routes", index, "tool")},
                )
        return self

    @model_validator(mode="after")
    def _check_model_name(self) -> Self:
        # without a models: section, model: is any reference, resolved when the agent runs
        if self.models and "model" in self.model_fields_set:
            problem = model_name_problem(self.model, self.models)
            if problem is not None:
                raise PydanticCustomError(
                    "model_name", "{message}", {"message": problem, AT_KEY: ("model",)}
                )
        return self

    @field_validator("tool_choice")
    @classmethod
    def _check_tool_choice(cls, value: str, info: ValidationInfo) -> str:
        tools = info.data.get("tools")
        if tools is None:  # the tools failed validation; that error is the one to report
            return value
        names = [entry.tool_name for entry in tools]
        if value not in BUILTIN_CHOICES and value not in names:
            # user text goes in as a placeholder's value: it may contain braces
            raise PydanticCustomError(
                "tool_choice", "{message}", {"message": unknown_choice_message(value, names)}
            )
        return value

    # -- locations ------------------------------------------------------------------------

    def location(self, loc: Loc = ()) -> str:
        """``"file:line"`` for a place in the spec, or just the file when the line is unknown."""
        where = self._display if self._display is not None else str(self.source)
        line = self._lines.get(loc)
        return f"{where}:{line}" if line is not None else where

    def _set_locations(self, display: str, lines: dict[Loc, int]) -> None:
        self._display = display
        self._lines = dict(lines)

    # -- building -------------------------------------------------------------------------

    def build_tools(self) -> list[Tool]:
        """Import every tool the spec names, in order.

        Modules are imported with the spec file's directory first on ``sys.path``. Any failure
        (module or function missing, not callable, a signature that cannot become a tool, an
        exception while importing) raises :class:`SpecError` at the line of that entry.
        """
        tools: list[Tool] = []
        names: dict[str, int] = {}
        with on_sys_path(self.source.parent):
            for index, entry in enumerate(self.tools):
                built = self._build_tool(entry, ("tools", index))
                if built.name in names:
                    raise SpecError(
                        f"{entry.ref} is a tool named {built.name!r}, the same name as "
                        f"tools[{names[built.name]}]; give one of them another 'name:'",
                        location=self.location(("tools", index)),
                    )
                names[built.name] = index
                tools.append(built)
        choice = self.tool_choice
        if choice not in BUILTIN_CHOICES and choice not in names:
            raise SpecError(
                "tool_choice: " + unknown_choice_message(choice, list(names)),
                location=self.location(("tool_choice",)),
            )
        return tools

    def build_routes(self, tools: Sequence[Tool]) -> list[Route]:
        """The spec's ``routes:`` for an agent with ``tools`` (see :func:`build_routes`; an
        ``arguments:`` function is imported from the spec file's directory)."""
        with on_sys_path(self.source.parent):
            return build_routes(self.routes, tools, self.location)

    def build_models(self, resolve: Resolve = resolve_model) -> dict[str, Model]:
        """Every entry of ``models:`` as a :class:`Model`.

        See :func:`shoal.spec.models.build_models`; errors point at the entry's line.
        """
        return build_models(self.models, resolve=resolve, location=self.location)

    def build_agent(
        self,
        *,
        model: str | Model | None = None,
        store: ThreadStore | None = None,
        resolve: Resolve = resolve_model,
    ) -> Agent[str]:
        """The :class:`~shoal.agent.Agent` this spec describes.

        ``model`` replaces the spec's model (a reference string or a :class:`Model` instance);
        a string is resolved by the agent when it first runs, so building loads no weights.
        When the spec's ``model:`` names an entry of ``models:``, that entry and the entries it
        uses are built (no request is sent; see :func:`shoal.spec.models.build_models`).
        ``resolve`` turns references into models: with the default,
        :func:`~shoal.models.registry.resolve_model`, a plain ``model:`` and the references
        written inside wrappers are resolved on first use; any other ``resolve`` is called for
        every reference while building.
        """
        chosen = model if model is not None else self.build_model(resolve)
        tools = self.build_tools()
        return Agent(
            self.name,
            chosen,
            instructions=self.instructions,
            tools=tools,
            settings=self.settings,
            tool_choice=self.tool_choice,
            routes=self.build_routes(tools),
            max_steps=self.max_steps,
            retries=self.retries,
            store=store,
        )

    def build_model(self, resolve: Resolve = resolve_model) -> str | Model:
        """The agent's model: the ``models:`` entry ``model:`` names, built with only the
        entries it uses (always a :class:`Model`); else the reference, resolved by ``resolve``
        (left a string for the agent to resolve on first use with the default)."""
        if self.model in self.models:
            return build_model(self.models, self.model, resolve=resolve, location=self.location)
        if resolve is resolve_model:  # the agent resolves the reference on first use
            return self.model
        try:
            return resolve(self.model)
        except UserError as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"model: {exc}", location=self.location(("model",))) from exc

    def _build_tool(self, entry: ToolSpec, loc: Loc) -> Tool:
        where = self.location(loc)
        target = import_attribute(entry.ref, where)
        try:
            if isinstance(target, Tool):
                if not entry.has_options:
                    return target
                # rebuilt from its function; what the decorator set stays unless overridden
                return tool(
                    target.function,
                    name=entry.name if entry.name is not None else target.name,
                    description=(
                        entry.description if entry.description is not None else target.description
                    ),
                    timeout=entry.timeout if entry.timeout is not None else target.timeout,
                )
            options: dict[str, Any] = {}
            if entry.description is not None:
                options["description"] = entry.description
            if entry.timeout is not None:  # else the tool's default timeout
                options["timeout"] = entry.timeout
            if options or getattr(target, "__name__", None) != entry.tool_name:
                # the model sees the name the spec declares, even for an aliased function
                return tool(target, name=entry.tool_name, **options)
            return as_tool(target)
        except ToolDefinitionError as exc:
            raise SpecError(f"{entry.ref} cannot be a tool: {exc}", location=where) from exc


def unknown_choice_message(choice: str, names: list[str]) -> str:
    """Why ``tool_choice: choice`` is wrong for an agent whose tools are ``names``."""
    options = [*BUILTIN_CHOICES, *names]
    close = difflib.get_close_matches(choice, options, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "use one of: " + ", ".join(options)
    return f"{choice!r} is neither auto, none, required nor a declared tool; {hint}"


def route_tool_problem(tool: str, names: Sequence[str]) -> str | None:
    """Why a route may not call ``tool`` (None: it is one of the agent's tools, ``names``)."""
    if tool in names:
        return None
    close = difflib.get_close_matches(tool, names, n=1)
    if close:
        hint = f"; did you mean {close[0]!r}?"
    else:
        hint = f"; its tools: {', '.join(names)}" if names else " (it declares no tools)"
    return f"a route calls {tool!r}, which is not one of the agent's tools{hint}"


def build_routes(
    entries: Sequence[RouteSpec], tools: Sequence[Tool], location: Callable[[Loc], str]
) -> list[Route]:
    """``routes:`` as :class:`~shoal.agent.Route` rules for an agent with ``tools``.

    ``location`` gives ``file:line`` for a place relative to the agent (``("routes", 0)``).
    A route that takes its arguments from the regex's named groups must name only parameters
    of its tool, and every required parameter; an ``arguments:`` function is imported instead
    (the caller puts the spec's directory on ``sys.path``: :func:`on_sys_path`). Problems are
    :class:`SpecError` at the route's line.
    """
    by_name = {built.name: built for built in tools}
    routes: list[Route] = []
    for index, entry in enumerate(entries):
        loc: Loc = ("routes", index)
        target = by_name.get(entry.tool)
        if target is None:  # refused when the file was checked, unless built by hand
            problem = route_tool_problem(entry.tool, list(by_name))
            raise SpecError(f"routes[{index}].tool: {problem}", location=location((*loc, "tool")))
        arguments = None
        if entry.arguments is not None:
            arguments = import_attribute(entry.arguments, location((*loc, "arguments")))
        else:
            _check_groups(entry, target, f"routes[{index}]", location((*loc, "pattern")))
        routes.append(Route(entry.pattern, entry.tool, arguments=arguments, when=entry.when))
    return routes


def _check_groups(entry: RouteSpec, target: Tool, path: str, where: str) -> None:
    """The named groups of a route's pattern are its call's arguments: each must be a
    parameter of the tool, and each required parameter must have one."""
    schema = target.definition.parameters
    parameters = list(schema.get("properties") or {})
    groups = list(re.compile(entry.pattern).groupindex)
    for group in groups:
        if group not in parameters:
            close = difflib.get_close_matches(group, parameters, n=1)
            if close:
                hint = f"did you mean {close[0]!r}?"
            else:
                hint = f"its parameters: {', '.join(parameters)}" if parameters else "it takes none"
            raise SpecError(
                f"{path}.pattern: the group {group!r} is not a parameter of {entry.tool!r}; {hint}",
                location=where,
            )
    missing = [name for name in schema.get("required") or () if name not in groups]
    if missing:
        raise SpecError(
            f"{path}.pattern: {entry.tool!r} requires {', '.join(map(repr, missing))}, which the "
            "pattern has no named group for: add (?P<name>...) or give 'arguments:'",
            location=where,
        )


def import_attribute(ref: str, where: str) -> Callable[..., Any]:
    """What the ``module:attribute`` reference ``ref`` names, imported; it must be callable.

    The caller puts the spec's directory on ``sys.path`` (:func:`on_sys_path`). Every failure
    (no such module or attribute, an exception while importing, not callable) is a
    :class:`SpecError` at ``where``.
    """
    module_name, _, attribute = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            message = (
                f"cannot import {ref}: no module named {exc.name!r} next to the spec "
                "file or on sys.path"
            )
        else:
            message = f"cannot import {ref}: importing {module_name!r} failed: {exc}"
        raise SpecError(message, location=where) from exc
    except Exception as exc:
        raise SpecError(
            f"cannot import {ref}: importing {module_name!r} raised {type(exc).__name__}: {exc}",
            location=where,
        ) from exc
    try:
        value = getattr(module, attribute)
    except AttributeError as exc:
        public = [n for n in vars(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attribute, public, n=1)
        hint = f"; did you mean {module_name}:{close[0]}?" if close else ""
        raise SpecError(
            f"cannot import {ref}: module {module_name!r} has no {attribute!r}{hint}",
            location=where,
        ) from exc
    if not callable(value):
        raise SpecError(f"{ref} is a {type(value).__name__}, not a function", location=where)
    return value  # type: ignore[no-any-return]


@contextmanager
def on_sys_path(directory: Path) -> Iterator[None]:
    """Put ``directory`` first on ``sys.path`` for the duration, then take it out again."""
    entry = str(directory.absolute())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with suppress(ValueError):  # the imported code may have removed it itself
            sys.path.remove(entry)
