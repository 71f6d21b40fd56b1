"""System files: the models of one device, its agents and the flows that connect them, in YAML.

The format is described in ``docs/systems.md``. A file turns into a :class:`SystemSpec` (checked,
nothing imported or built) with :func:`load_system`; :meth:`SystemSpec.build` turns that into a
:class:`~shoal.spec.system_build.System` (agents, flows and the entry, ready to run). The
definitions of ``flows:`` live in :mod:`shoal.spec.flow_defs`.

Data model::

    SystemSpec
    ├── name, description, model (the agents' default), entry (an agent or flow name)
    ├── models:  {name: ModelEntry}            the models: section of agent specs
    ├── guards:  (GuardSpec, ...)              applied to every agent
    ├── agents:  {name: AgentDef}              AgentSpec's fields (tools, routes, ...) + approval,
    │                                          delegates, guards
    └── flows:   {name: FlowDef}               one subclass per ``type:``
                 RouterFlow | TeamFlow | PipelineFlow | FanoutFlow | CriticFlow | ChainFlow

Agents and flows share one namespace. A flow names *members* (agents or flows) and places that
must be agents; :meth:`FlowDef.members` and :meth:`FlowDef.agent_refs` list them with their
places, so the cross-reference checks (names, handoffs, approval lists, cycles among flows and
among delegating agents) are written once, in :meth:`SystemSpec._check_references`.

``agents:`` may be a mapping (name -> definition) or a list of definitions with ``name:``; the
loader turns a list into a mapping and remembers each name's index, so that errors (which are
reported with mapping paths such as ``agents.billing.tools[1]``) still point at the right line.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shoal.agent import TOOL_STRATEGIES
from shoal.exceptions import SpecError
from shoal.models import DEFAULT_MODEL
from shoal.models.registry import resolve_model
from shoal.settings import ModelSettings
from shoal.spec import loader
from shoal.spec.flow_defs import (
    FLOW_KINDS,
    NAME,
    ChainFlow,
    ChainStepDef,
    CriticFlow,
    FanoutFlow,
    FlowDef,
    FlowRule,
    PipelineFlow,
    RouterFlow,
    StrictModel,
    TeamFlow,
    hint,
    schema_problem,
    valid_name,
    valid_ref,
)
from shoal.spec.models import ModelTable, Resolve, build_models, model_name_problem, spec_error
from shoal.spec.schema import (
    AT_KEY,
    BUILTIN_CHOICES,
    Loc,
    RouteSpec,
    ToolSpec,
    route_tool_problem,
    unknown_choice_message,
)

if TYPE_CHECKING:
    from shoal.models import Model
    from shoal.spec.system_build import System
    from shoal.threads import ThreadStore

__all__ = [
    "AgentDef",
    "ChainFlow",
    "ChainStepDef",
    "CriticFlow",
    "FanoutFlow",
    "FlowDef",
    "FlowRule",
    "GuardSpec",
    "PipelineFlow",
    "RouterFlow",
    "SystemSpec",
    "TeamFlow",
    "is_system_file",
    "load_system",
]


def _at(kind: str, message: str, at: Loc) -> PydanticCustomError:
    """An error at an absolute place in the file (raised by :class:`SystemSpec`)."""
    return PydanticCustomError(kind, "{message}", {"message": message, AT_KEY: at})


# -- agents ---------------------------------------------------------------------------------


class GuardSpec(StrictModel):
    """One entry of ``guards:``: ``module:attribute`` (a guard, or a class or function called
    with ``options`` as keyword arguments that returns one)."""

    ref: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"ref": data} if isinstance(data, str) else data

    @field_validator("ref")
    @classmethod
    def _check_ref(cls, value: str) -> str:
        return valid_ref(value)


class AgentDef(StrictModel):
    """One agent of ``agents:`` (its name is its key)."""

    description: str = ""
    #: an entry of the system's ``models:`` or a model reference (None: the system's ``model``)
    model: str | None = Field(default=None, min_length=1)
    instructions: str = ""
    tools: tuple[ToolSpec, ...] = ()
    settings: ModelSettings = Field(default_factory=ModelSettings)
    tool_choice: str = Field(default="auto", min_length=1)
    tool_strategy: str | None = None
    #: rules that call a tool without the model (a delegate's ``ask_<name>`` tool too)
    routes: tuple[RouteSpec, ...] = ()
    max_steps: int = Field(default=8, ge=1, le=50, strict=True)
    retries: int = Field(default=2, ge=0, le=10, strict=True)
    output_schema: dict[str, Any] | None = None
    #: tool names whose calls wait for a person's approval
    approval: tuple[str, ...] = ()
    #: agents this one may ask (each becomes a tool)
    delegates: tuple[str, ...] = ()
    guards: tuple[GuardSpec, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _drop_empty(cls, data: Any) -> Any:
        if isinstance(data, dict):
            optional = (
                "instructions",
                "tools",
                "routes",
                "settings",
                "approval",
                "delegates",
                "guards",
            )
            return {k: v for k, v in data.items() if not (k in optional and v is None)}
        return data

    @field_validator("tool_strategy")
    @classmethod
    def _check_strategy(cls, value: str | None) -> str | None:
        if value is not None and value not in TOOL_STRATEGIES:
            raise spec_error(
                "tool_strategy",
                f"{value!r} is not a tool strategy{hint(value, list(TOOL_STRATEGIES), 'use')}",
            )
        return value

    @field_validator("output_schema")
    @classmethod
    def _check_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = schema_problem(value) if value is not None else None
        if problem is not None:
            raise spec_error("output_schema", problem)
        return value

    @model_validator(mode="after")
    def _check_tools(self) -> Self:
        names: dict[str, int] = {}
        for index, entry in enumerate(self.tools):
            first = names.setdefault(entry.tool_name, index)
            if first != index:
                raise spec_error(
                    "duplicate_tool",
                    f"tool name {entry.tool_name!r} is already used by tools[{first}]; "
                    "give one of them another 'name:'",
                    ("tools", index),
                )
        declared = list(names)
        if self.tool_choice not in BUILTIN_CHOICES and self.tool_choice not in names:
            raise spec_error(
                "tool_choice",
                unknown_choice_message(self.tool_choice, declared),
                ("tool_choice",),
            )
        for index, name in enumerate(self.approval):
            if name not in names:
                raise spec_error(
                    "approval",
                    f"approval names {name!r}, which is not one of its tools"
                    + hint(name, declared, "its tools"),
                    ("approval", index),
                )
        return self

    @model_validator(mode="after")
    def _check_routes(self) -> Self:
        callable_tools = [*self.tool_names, *(f"ask_{other}" for other in self.delegates)]
        for index, route in enumerate(self.routes):
            problem = route_tool_problem(route.tool, callable_tools)
            if problem is not None:
                raise spec_error("route_tool", problem, ("routes", index, "tool"))
        return self

    @property
    def tool_names(self) -> list[str]:
        return [entry.tool_name for entry in self.tools]


# -- the system -----------------------------------------------------------------------------


class SystemSpec(StrictModel):
    """A system file, checked. Load one with :func:`load_system`."""

    name: str
    description: str = ""
    models: ModelTable = Field(default_factory=dict)
    #: the model of agents that name none (None: the first models: entry, else the default)
    model: str | None = Field(default=None, min_length=1)
    agents: dict[str, AgentDef] = Field(min_length=1)
    flows: dict[str, FlowDef] = Field(default_factory=dict)
    guards: tuple[GuardSpec, ...] = ()
    entry: str | None = None
    #: the file; tool, guard and function modules are imported from its directory
    source: Path

    _display: str | None = PrivateAttr(default=None)
    _root: yaml.Node | None = PrivateAttr(default=None)
    #: agent name -> index, when ``agents:`` was written as a list
    _agent_index: dict[str, int] = PrivateAttr(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return valid_name(value, "system name")

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        agents, flows = list(self.agents), list(self.flows)
        for name in agents:
            if not NAME.fullmatch(name):
                raise _at(
                    "name",
                    f"{name!r} is not a valid agent name: use letters, digits, '_' and '-' only",
                    ("agents", name),
                )
        for name in flows:
            if not NAME.fullmatch(name):
                raise _at(
                    "name",
                    f"{name!r} is not a valid flow name: use letters, digits, '_' and '-' only",
                    ("flows", name),
                )
            if name in self.agents:
                raise _at(
                    "name", f"{name!r} is both an agent and a flow; rename one", ("flows", name)
                )
        for section, names in (("agents", agents), ("flows", flows)):
            if self.name in names:
                raise _at(
                    "name",
                    f"{self.name!r} is the system's name; an agent or flow needs another",
                    (section, self.name),
                )
        self._check_models()
        self._check_agents()
        self._check_flows()
        members = [*agents, *flows]
        if self.entry is not None and self.entry not in members:
            raise _at(
                "entry",
                f"entry: {self.entry!r} is not an agent or flow" + hint(self.entry, members),
                ("entry",),
            )
        if self.entry is None and len(self.flows) > 1:
            raise _at(
                "entry",
                "the system has several flows: say which one runs with "
                f"'entry:' ({', '.join(flows)})",
                (),
            )
        return self

    def _check_models(self) -> None:
        def check(name: str, loc: Loc) -> None:
            problem = model_name_problem(name, self.models)
            if problem is not None:
                raise _at("model_name", f"{loader.format_loc(loc)}: {problem}", loc)

        if self.model is not None:
            check(self.model, ("model",))
        for agent, definition in self.agents.items():
            if definition.model is not None:
                check(definition.model, ("agents", agent, "model"))
        for flow, flow_def in self.flows.items():
            if isinstance(flow_def, RouterFlow) and flow_def.classifier is not None:
                check(flow_def.classifier, ("flows", flow, "classifier"))

    def _check_agents(self) -> None:
        agents = list(self.agents)
        for name, definition in self.agents.items():
            for index, other in enumerate(definition.delegates):
                loc = ("agents", name, "delegates", index)
                if other not in self.agents:
                    raise _at(
                        "delegates",
                        f"agent {name!r} delegates to {other!r}, which is "
                        "not an agent" + hint(other, agents),
                        loc,
                    )
                if other == name:
                    raise _at("delegates", f"agent {name!r} cannot delegate to itself", loc)
                tool = f"ask_{other}"
                if tool in definition.tool_names:
                    raise _at("delegates", f"agent {name!r} already has a tool named {tool!r}", loc)
        edges: dict[str, list[tuple[Loc, str]]] = {
            name: [(("delegates", i), d) for i, d in enumerate(definition.delegates)]
            for name, definition in self.agents.items()
        }
        _refuse_cycles(edges, "agents", "agents delegate in a cycle")

    def _check_flows(self) -> None:
        agents, flows = list(self.agents), list(self.flows)
        members = [*agents, *flows]
        edges: dict[str, list[tuple[Loc, str]]] = {}
        for name, definition in self.flows.items():
            edges[name] = []
            what = f"flow {name!r}"
            for place, member in definition.members():
                if member not in members:
                    verb = "routes to" if isinstance(definition, RouterFlow) else "runs"
                    raise _at(
                        "member",
                        f"{what} {verb} {member!r}, which is not an agent or "
                        f"flow{hint(member, members)}",
                        ("flows", name, *place),
                    )
                if member in self.flows:
                    edges[name].append((place, member))
            for place, member in definition.agent_refs():
                if member not in self.agents:
                    kind = "a flow" if member in self.flows else "not an agent"
                    raise _at(
                        "member",
                        f"{what} needs an agent at {loader.format_loc(place)}"
                        f", and {member!r} is {kind}{hint(member, agents, 'agents')}",
                        ("flows", name, *place),
                    )
            if isinstance(definition, CriticFlow):
                critic = self.agents[definition.critic]
                if critic.output_schema is not None:
                    raise _at(
                        "critic",
                        f"{what}: the critic {definition.critic!r} has an output_schema; a "
                        "critic's answer is a verdict (accept or revise, with feedback)",
                        ("flows", name, "critic"),
                    )
        _refuse_cycles(edges, "flows", "flows make a cycle")

    # -- what the builder needs -----------------------------------------------------------

    @property
    def entry_name(self) -> str:
        """What runs without ``--agent``: ``entry``, else the only flow, else the first agent."""
        if self.entry is not None:
            return self.entry
        return next(iter(self.flows), None) or next(iter(self.agents))

    @property
    def default_model(self) -> str:
        """The model of agents that name none."""
        return self.model or next(iter(self.models), None) or DEFAULT_MODEL

    def agent_model(self, name: str) -> str:
        """The model (entry name or reference) the agent ``name`` runs on."""
        return self.agents[name].model or self.default_model

    def model_names(self) -> list[str]:
        """Every model (an entry of ``models:`` or a reference) an agent or a router's
        classifier uses, once each, in order of first use."""
        used = [self.agent_model(name) for name in self.agents]
        for definition in self.flows.values():
            if isinstance(definition, RouterFlow) and definition.classifier is not None:
                used.append(definition.classifier)
        return list(dict.fromkeys(used))

    def names(self) -> list[str]:
        """Agents, then flows."""
        return [*self.agents, *self.flows]

    # -- locations ------------------------------------------------------------------------

    @property
    def display(self) -> str:
        """The file as the caller named it."""
        return self._display if self._display is not None else str(self.source)

    def location(self, loc: Loc = ()) -> str:
        """``"file:line"`` for a place in the file (mapping paths, as errors give them)."""
        where = self.display
        if self._root is None:
            return where
        node = loader.node_at(self._root, self._file_loc(loc))
        return f"{where}:{loader.node_line(node)}"

    def _file_loc(self, loc: Loc) -> Loc:
        """``("agents", name, ...)`` as the file has it (an index for the list form)."""
        if len(loc) >= 2 and loc[0] == "agents" and loc[1] in self._agent_index:
            return ("agents", self._agent_index[str(loc[1])], *loc[2:])
        return loc

    def _set_source(self, display: str, root: yaml.Node, agent_index: dict[str, int]) -> None:
        self._display = display
        self._root = root
        self._agent_index = dict(agent_index)

    # -- building -------------------------------------------------------------------------

    def build_models(self, resolve: Resolve = resolve_model) -> dict[str, Model]:
        """Every entry of ``models:`` as a model (see :func:`shoal.spec.models.build_models`;
        errors point at the entry's line)."""
        return build_models(self.models, resolve=resolve, location=self.location)

    def build(
        self,
        *,
        store: ThreadStore | None = None,
        resolve: Resolve = resolve_model,
        models: Mapping[str, Model] | None = None,
    ) -> System:
        """The :class:`~shoal.spec.system_build.System` this file describes: every tool,
        guard and function imported, every agent and flow built; no request is sent.

        Models are shared by name: each entry of ``models:`` and each reference is built once
        (``resolve`` turns references into models). ``models`` gives ready models for some of
        the names of :meth:`model_names` (a server passes its engines' models); ``store`` is
        the thread store every agent shares (default: one in memory).
        """
        from shoal.spec.system_build import build_system

        return build_system(self, store=store, resolve=resolve, models=models)


def _refuse_cycles(edges: dict[str, list[tuple[Loc, str]]], section: str, what: str) -> None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for place, target in edges[name]:
            if target in path:
                cycle = " -> ".join([*path[path.index(target) :], target])
                raise _at("cycle", f"{what}: {cycle}", (section, name, *place))
            if target not in done:
                visit(target, [*path, target])
        done.add(name)

    for name in edges:
        if name not in done:
            visit(name, [name])


# -- loading --------------------------------------------------------------------------------


def load_system(path: str | Path) -> SystemSpec:
    """Read and check the system file at ``path`` (``docs/systems.md``).

    Raises :class:`~shoal.exceptions.SpecError` at ``file:line`` when the file is missing,
    not YAML, or wrong in any way that can be seen without importing or building anything.
    """
    display = str(path)
    source = Path(path).absolute()
    root, data = loader.read_document(source, display, SystemSpec, "'name:' and 'agents:' keys")
    data = {k: v for k, v in data.items() if not (k in _EMPTY_OK and v is None)}
    agent_index: dict[str, int] = {}
    if isinstance(data.get("agents"), list):
        data["agents"], agent_index = _agents_from_list(data["agents"], root, display)
    elif isinstance(data.get("agents"), dict):
        data["agents"] = {k: _without_name(k, v, root, display) for k, v in data["agents"].items()}
    try:
        spec = SystemSpec.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise _system_error(exc, root, display, agent_index) from None
    spec._set_source(display, root, agent_index)
    return spec


_EMPTY_OK = ("description", "models", "flows", "guards")


def _agents_from_list(
    items: list[Any], root: yaml.Node, display: str
) -> tuple[dict[str, Any], dict[str, int]]:
    agents: dict[str, Any] = {}
    index: dict[str, int] = {}
    for position, item in enumerate(items):
        where = f"{display}:{loader.node_line(loader.node_at(root, ('agents', position)))}"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise SpecError(
                "each agent of an agents: list needs a 'name:' (or write agents: as a mapping "
                "name -> agent)",
                location=where,
            )
        name = item["name"]
        if name in agents:
            raise SpecError(f"two agents are named {name!r}", location=where)
        agents[name] = {k: v for k, v in item.items() if k != "name"}
        index[name] = position
    return agents, index


def _without_name(key: str, value: Any, root: yaml.Node, display: str) -> Any:
    """An agent of the mapping form may repeat its key as ``name:``, nothing else."""
    if isinstance(value, dict) and "name" in value:
        if value["name"] != key:
            line = loader.node_line(loader.node_at(root, ("agents", key, "name")))
            raise SpecError(
                f"agent {key!r} has name: {value['name']!r}; the key is the agent's name "
                "(remove 'name:')",
                location=f"{display}:{line}",
            )
        return {k: v for k, v in value.items() if k != "name"}
    return {} if value is None else value


def _system_error(
    exc: ValidationError, root: yaml.Node, display: str, agent_index: dict[str, int]
) -> SpecError:
    """One SpecError for all of pydantic's errors (the first by line, the others listed)."""
    found: list[tuple[int, str]] = []
    for error in exc.errors(include_url=False):
        loc = loader.error_loc(error)
        file_loc = loc
        if len(loc) >= 2 and loc[0] == "agents" and loc[1] in agent_index:
            file_loc = ("agents", agent_index[str(loc[1])], *loc[2:])
        line = loader.node_line(loader.node_at(root, file_loc))
        if error["type"] == "extra_forbidden":
            message = _unknown_key(str(loc[-1]), loc[:-1], root, file_loc[:-1])
        elif AT_KEY in (error.get("ctx") or {}):  # a cross-reference: the message says where
            message = error["msg"]
        else:
            message = loader.error_message(error, loc, SystemSpec, root)
        found.append((line, message))
    found.sort(key=lambda item: item[0])
    (line, message), rest = found[0], found[1:]
    if rest:
        message += "".join(f"\n  also line {n}: {m}" for n, m in rest)
    return SpecError(message, location=f"{display}:{line}")


def _unknown_key(key: str, parent: Loc, root: yaml.Node, file_parent: Loc) -> str:
    known = _known_keys(parent, root, file_parent)
    where = f" in {loader.format_loc(parent)}" if parent else ""
    message = f"unknown key {key!r}{where}"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    return f"{message}; expected one of: {', '.join(known)}" if known else message


def _known_keys(parent: Loc, root: yaml.Node, file_parent: Loc) -> list[str]:
    if len(parent) >= 2 and parent[0] == "flows":
        keys = loader.keys_at(root, file_parent[:2])
        kind = FLOW_KINDS.get(_type_at(root, file_parent[:2]) or "")
        if kind is None:
            return ["type"] if "type" not in keys else []
        return loader.known_keys(parent[2:], kind, None)
    if len(parent) >= 2 and parent[0] == "agents":
        return [k for k in loader.known_keys(parent[2:], AgentDef, None) if k != "source"]
    return [k for k in loader.known_keys(parent, SystemSpec, root) if k != "source"]


def _type_at(root: yaml.Node, loc: Loc) -> str | None:
    """The ``type:`` value of the flow mapping at ``loc`` (None if there is none)."""
    node: yaml.Node | None = root
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if getattr(key, "value", None) == "type" and isinstance(value, yaml.ScalarNode):
            return str(value.value)
    return None


def is_system_file(path: str | Path) -> bool:
    """Whether the YAML file at ``path`` is a system file rather than an agent spec: its top
    level has ``agents:``, ``flows:`` or ``entry:``. A file that cannot be read or parsed is
    not one (loading it as an agent spec reports the problem)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and any(key in data for key in ("agents", "flows", "entry"))
