"""Building a checked :class:`~shoal.spec.system.SystemSpec` into a running :class:`System`.

Order: models are built on first use and shared by name (one :class:`~shoal.models.Model` per
``models:`` entry and per reference); agents are built so that an agent's ``delegates`` exist
before it (the spec refuses cycles); flows are built members first. Tools, guards, function
references and routes' ``arguments:`` functions are imported with the system file's directory
first on ``sys.path``; a failure is a :class:`~shoal.exceptions.SpecError` at the line of the
entry.

A :class:`System` runs its entry, or any agent or flow by name, on one thread store. The name
of the agent or flow that ran on a thread is kept in the thread's metadata under
:data:`SYSTEM_KEY` (``{"system": ..., "flow": ...}``) so that :meth:`System.resume` (and
``shoal approve``, and the server) continue the one that paused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from shoal.agent import APPROVAL_KEY, Agent
from shoal.exceptions import ApprovalError, SpecError, UserError
from shoal.guards import Guard
from shoal.messages import ToolCall
from shoal.models import Model
from shoal.models.routing import RouteRule
from shoal.orchestration import (
    FLOW_KEY,
    Chain,
    CriticLoop,
    CriticVerdict,
    FanOut,
    Flow,
    FlowResult,
    Pipeline,
    Router,
    Step,
    Team,
    agent_tool,
    as_flow,
)
from shoal.orchestration.base import run_sync
from shoal.orchestration.critic import CRITIC_INSTRUCTIONS
from shoal.spec.flow_defs import is_function_ref
from shoal.spec.models import ModelBuilder, Resolve
from shoal.spec.schema import AgentSpec, Loc, build_routes, import_attribute, on_sys_path
from shoal.spec.system import (
    AgentDef,
    ChainFlow,
    CriticFlow,
    FanoutFlow,
    FlowDef,
    GuardSpec,
    PipelineFlow,
    RouterFlow,
    SystemSpec,
    TeamFlow,
)
from shoal.threads import InMemoryThreadStore, ThreadStore
from shoal.tools import Tool

__all__ = ["SYSTEM_KEY", "System", "approval_decisions", "build_system", "pending_calls"]

#: thread metadata key: which system and which of its agents or flows ran on the thread
SYSTEM_KEY = "shoal.system"

Member = Agent[Any] | Flow
_M = TypeVar("_M")


class System:
    """Agents and flows built from one system file, sharing one thread store.

    ``agents`` and ``flows`` are by name; :meth:`get` gives either as a
    :class:`~shoal.orchestration.Flow` (agents adapted with
    :func:`~shoal.orchestration.as_flow`); ``entry`` is the one a run without a name uses.
    """

    def __init__(
        self,
        name: str,
        *,
        agents: Mapping[str, Agent[Any]],
        flows: Mapping[str, Flow],
        entry: str,
        store: ThreadStore,
        description: str = "",
        descriptions: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.agents: dict[str, Agent[Any]] = dict(agents)
        self.flows: dict[str, Flow] = dict(flows)
        self.entry_name = entry
        self.store = store
        #: one line per agent and flow (what its definition's ``description:`` says)
        self.descriptions: dict[str, str] = dict(descriptions or {})
        self._adapted: dict[str, Flow] = {}
        if entry not in self.agents and entry not in self.flows:
            raise UserError(f"system {name!r}: the entry {entry!r} is not an agent or flow")

    def __repr__(self) -> str:
        return f"System({self.name!r}, agents={list(self.agents)}, flows={list(self.flows)})"

    @property
    def entry(self) -> Flow:
        return self.get(self.entry_name)

    def names(self) -> list[str]:
        """Agents, then flows."""
        return [*self.agents, *self.flows]

    def get(self, name: str) -> Flow:
        """The agent (as a flow) or flow called ``name``."""
        if name in self.flows:
            return self.flows[name]
        if name in self.agents:
            if name not in self._adapted:
                self._adapted[name] = as_flow(self.agents[name])
            return self._adapted[name]
        raise UserError(
            f"system {self.name!r} has no agent or flow named {name!r}; "
            f"known: {', '.join(self.names())}"
        )

    # -- running --------------------------------------------------------------------------

    async def run(
        self,
        message: str | None,
        *,
        thread: str | None = None,
        agent: str | None = None,
        role: str | None = None,
    ) -> FlowResult:
        """Run the entry (or the agent or flow ``agent`` names) on ``message``."""
        name = agent or self.entry_name
        result = await self.get(name).run(message, thread=thread, role=role)
        if result.thread_id is not None:
            await self._remember(result.thread_id, name)
        return result

    async def resume(
        self,
        thread: str,
        *,
        approve: bool | Mapping[str, bool] = True,
        reason: str = "",
        agent: str | None = None,
        role: str | None = None,
    ) -> FlowResult:
        """Continue the run paused for approval in ``thread``: the agent or flow that ran
        there (or ``agent``) goes on, with the calls approved or rejected."""
        name = agent or await self.paused_in(thread)
        result = await self.get(name).resume(thread, approve=approve, reason=reason, role=role)
        if result.thread_id is not None:
            await self._remember(result.thread_id, name)
        return result

    def run_sync(
        self,
        message: str | None,
        *,
        thread: str | None = None,
        agent: str | None = None,
        role: str | None = None,
    ) -> FlowResult:
        """:meth:`run` for synchronous code."""
        return run_sync(self.run(message, thread=thread, agent=agent, role=role), "run")

    def resume_sync(
        self,
        thread: str,
        *,
        approve: bool | Mapping[str, bool] = True,
        reason: str = "",
        agent: str | None = None,
        role: str | None = None,
    ) -> FlowResult:
        """:meth:`resume` for synchronous code."""
        coroutine = self.resume(thread, approve=approve, reason=reason, agent=agent, role=role)
        return run_sync(coroutine, "resume")

    # -- paused runs ----------------------------------------------------------------------

    async def paused_in(self, thread: str) -> str:
        """The agent or flow of this system that ran on ``thread`` last (the entry if none
        is recorded and no agent of the system is waiting there)."""
        metadata = (await self.store.get_thread(thread)).metadata
        record = metadata.get(SYSTEM_KEY)
        if isinstance(record, dict) and record.get("system") == self.name:
            name = record.get("flow")
            if isinstance(name, str) and name in self.names():
                return name
        approval = metadata.get(APPROVAL_KEY)
        paused = approval.get("agent") if isinstance(approval, dict) else None
        if not self.flows and isinstance(paused, str) and paused in self.agents:
            return paused  # only agents: the one that paused
        return self.entry_name

    async def pending(self, thread: str) -> list[ToolCall]:
        """The calls waiting for a person's approval in ``thread`` (empty: none)."""
        metadata = (await self.store.get_thread(thread)).metadata
        return pending_calls(metadata, await self.paused_in(thread))

    async def _remember(self, thread: str, name: str) -> None:
        current = await self.store.get_thread(thread)
        record = {"system": self.name, "flow": name}
        if current.metadata.get(SYSTEM_KEY) != record:
            metadata = {**current.metadata, SYSTEM_KEY: record}
            await self.store.update_thread(thread, metadata=metadata)


def pending_calls(metadata: Mapping[str, Any], flow: str | None = None) -> list[ToolCall]:
    """The calls waiting in a thread (given its metadata): those of the paused flow ``flow``
    (its stored position), else those of the agent that paused there."""
    states = metadata.get(FLOW_KEY)
    if isinstance(states, dict) and flow is not None:
        state = states.get(flow)
        if isinstance(state, dict) and state.get("waiting"):
            return _calls(state["waiting"])
    record = metadata.get(APPROVAL_KEY)
    if isinstance(record, dict):
        return _calls(record.get("calls"))
    return []


def approval_decisions(
    waiting: Sequence[ToolCall], *, approve: bool, calls: Sequence[str] = ()
) -> bool | dict[str, bool]:
    """What to tell ``resume``: ``approve`` for every waiting call, or with ``calls``, that
    decision for them and the opposite one for the others (nothing runs that a person did not
    approve by name). :class:`ApprovalError` when nothing waits or a call is not waiting."""
    if not waiting:
        raise ApprovalError("nothing is waiting for approval in this thread")
    if not calls:
        return approve
    ids = [call.id for call in waiting]
    unknown = [call for call in calls if call not in ids]
    if unknown:
        raise ApprovalError(
            f"no call {', '.join(map(repr, unknown))} is waiting for approval; "
            f"waiting: {', '.join(ids)}"
        )
    return {call: (approve if call in calls else not approve) for call in ids}


def _calls(data: Any) -> list[ToolCall]:
    calls = []
    for item in data or []:
        if isinstance(item, dict) and "id" in item and "name" in item:
            arguments = item.get("arguments")
            calls.append(
                ToolCall(
                    id=str(item["id"]),
                    name=str(item["name"]),
                    arguments=dict(arguments) if isinstance(arguments, dict) else {},
                )
            )
    return calls


# -- building -------------------------------------------------------------------------------


def build_system(
    spec: SystemSpec,
    *,
    store: ThreadStore | None = None,
    resolve: Resolve,
    models: Mapping[str, Model] | None = None,
) -> System:
    """See :meth:`SystemSpec.build`."""
    builder = _SystemBuilder(spec, store or InMemoryThreadStore(), resolve, models or {})
    return builder.build()


class _SystemBuilder:
    def __init__(
        self,
        spec: SystemSpec,
        store: ThreadStore,
        resolve: Resolve,
        models: Mapping[str, Model],
    ) -> None:
        self.spec = spec
        self.store = store
        self.resolve = resolve
        self.given = dict(models)
        self.entries = ModelBuilder(spec.models, resolve, spec.location)
        self.references: dict[str, Model] = {}
        self.agents: dict[str, Agent[Any]] = {}
        self.flows: dict[str, Flow] = {}

    def build(self) -> System:
        spec = self.spec
        shared = self._guards(spec.guards, ("guards",))
        for name in _ordered(
            {name: list(d.delegates) for name, d in spec.agents.items()}, spec.agents
        ):
            self.agents[name] = self._agent(name, spec.agents[name], shared)
        members = {
            name: [m for _, m in d.members() if m in spec.flows] for name, d in spec.flows.items()
        }
        for name in _ordered(members, spec.flows):
            self.flows[name] = self._flow(name, spec.flows[name])
        descriptions = {name: d.description for name, d in spec.agents.items() if d.description}
        descriptions.update(
            {name: d.description for name, d in spec.flows.items() if d.description}
        )
        return System(
            spec.name,
            agents=self.agents,
            flows=self.flows,
            entry=spec.entry_name,
            store=self.store,
            description=spec.description,
            descriptions=descriptions,
        )

    # -- models ---------------------------------------------------------------------------

    def model(self, name: str, loc: Loc) -> Model:
        """The model an agent or classifier names: given, a ``models:`` entry, or a
        reference (each built once)."""
        if name in self.given:
            return self.given[name]
        if name in self.spec.models:
            return self.entries.entry(name)
        if name not in self.references:
            try:
                self.references[name] = self.resolve(name)
            except UserError as exc:
                if isinstance(exc, SpecError):
                    raise
                raise SpecError(str(exc), location=self.spec.location(loc)) from exc
        return self.references[name]

    def _model_loc(self, agent: str) -> Loc:
        return ("agents", agent, "model") if self.spec.agents[agent].model else ("model",)

    # -- agents ---------------------------------------------------------------------------

    def _agent(self, name: str, definition: AgentDef, shared: list[Guard]) -> Agent[Any]:
        spec = self.spec
        tools = self._tools(name, definition)
        for other in definition.delegates:
            tools.append(
                agent_tool(
                    self.agents[other],
                    name=f"ask_{other}",
                    description=spec.agents[other].description or None,
                )
            )
        guards = [*shared, *self._guards(definition.guards, ("agents", name, "guards"))]
        with on_sys_path(spec.source.parent):
            routes = build_routes(
                definition.routes, tools, lambda loc: spec.location(("agents", name, *loc))
            )
        try:
            return Agent(
                name,
                self.model(spec.agent_model(name), self._model_loc(name)),
                instructions=definition.instructions,
                tools=tools,
                output_schema=definition.output_schema,
                settings=definition.settings,
                tool_choice=definition.tool_choice,
                tool_strategy=definition.tool_strategy,
                routes=routes,
                max_steps=definition.max_steps,
                retries=definition.retries,
                store=self.store,
                guards=guards,
            )
        except SpecError:
            raise
        except UserError as exc:
            raise SpecError(str(exc), location=spec.location(("agents", name))) from exc

    def _tools(self, name: str, definition: AgentDef) -> list[Tool]:
        """The agent's tools, imported as an agent spec imports them (same messages, the
        system file's lines), those named in ``approval`` made to wait for a person."""
        spec = self.spec
        lines: dict[Loc, int] = {}
        for loc in [("tools", i) for i in range(len(definition.tools))] + [("tool_choice",)]:
            line = _line_of(spec.location(("agents", name, *loc)))
            if line is not None:
                lines[loc] = line
        agent_spec = AgentSpec.model_validate(
            {
                "name": name,
                "tools": definition.tools,
                "tool_choice": definition.tool_choice,
                "source": spec.source,
            }
        )
        agent_spec._set_locations(spec.display, lines)
        tools = agent_spec.build_tools()
        waiting = set(definition.approval)
        return [
            Tool(
                t, name=t.name, description=t.description, timeout=t.timeout, requires_approval=True
            )
            if t.name in waiting
            else t
            for t in tools
        ]

    def _guards(self, entries: Sequence[GuardSpec], loc: Loc) -> list[Guard]:
        guards: list[Guard] = []
        with on_sys_path(self.spec.source.parent):
            for index, entry in enumerate(entries):
                where = self.spec.location((*loc, index))
                target: Any = import_attribute(entry.ref, where)
                if isinstance(target, Guard):
                    if entry.options:
                        raise SpecError(
                            f"{entry.ref} is a guard already; options are for a class or a "
                            "function that makes one",
                            location=where,
                        )
                    guards.append(target)
                    continue
                try:
                    made = target(**entry.options)
                except Exception as exc:
                    raise SpecError(
                        f"{entry.ref}({_kwargs(entry.options)}) failed: "
                        f"{type(exc).__name__}: {exc}",
                        location=where,
                    ) from exc
                if not isinstance(made, Guard):
                    raise SpecError(
                        f"{entry.ref} is not a guard, nor does it make one "
                        f"(it returned {type(made).__name__}); see shoal.guards.Guard",
                        location=where,
                    )
                guards.append(made)
        return guards

    def _function_or(
        self, value: str, loc: Loc, member: Callable[[str], _M]
    ) -> _M | Callable[..., Any]:
        """A place that takes a ``module:function`` or a name: the function, imported (errors
        at ``loc``), or what ``member`` gives for the name."""
        if not is_function_ref(value):
            return member(value)
        with on_sys_path(self.spec.source.parent):
            return import_attribute(value, self.spec.location(loc))

    # -- flows ----------------------------------------------------------------------------

    def _member(self, name: str) -> Member:
        return self.flows[name] if name in self.flows else self.agents[name]

    def _flow(self, name: str, definition: FlowDef) -> Flow:
        try:
            return self._make_flow(name, definition)
        except SpecError:
            raise
        except UserError as exc:
            raise SpecError(str(exc), location=self.spec.location(("flows", name))) from exc

    def _make_flow(self, name: str, definition: FlowDef) -> Flow:
        where: Loc = ("flows", name)
        if isinstance(definition, RouterFlow):
            labels = definition.labels()
            descriptions = {
                label: definition.descriptions.get(label) or self._description(member)
                for label, member in labels.items()
            }
            classifier = (
                self.model(definition.classifier, (*where, "classifier"))
                if definition.classifier is not None
                else None
            )
            return Router(
                name,
                {label: self._member(member) for label, member in labels.items()},
                rules=[
                    RouteRule(rule.to, pattern=rule.pattern, reason=rule.reason)
                    for rule in definition.rules
                ],
                classifier=classifier,
                descriptions={k: v for k, v in descriptions.items() if v},
                default=definition.default or next(iter(labels)),
                instructions=definition.instructions,
                store=self.store,
                description=definition.description,
            )
        if isinstance(definition, TeamFlow):
            handoffs = (
                {k: list(v) for k, v in definition.handoffs.items()}
                if definition.handoffs is not None
                else None
            )
            return Team(
                name,
                [self.agents[a] for a in definition.agents],
                entry=definition.entry_name,
                handoffs=handoffs,
                approval=list(definition.approval),
                max_handoffs=definition.max_handoffs,
                store=self.store,
                descriptions={a: d for a in definition.agents if (d := self._description(a))},
                description=definition.description,
            )
        if isinstance(definition, PipelineFlow):
            steps: list[Member | Callable[[str], Any]] = [
                self._function_or(step, (*where, "steps", i), self._member)
                for i, step in enumerate(definition.steps)
            ]
            return Pipeline(name, steps, store=self.store, description=definition.description)
        if isinstance(definition, FanoutFlow):
            combine: Agent[Any] | Callable[[Sequence[FlowResult]], str] | None = None
            if definition.combine is not None:
                combine = self._function_or(
                    definition.combine, (*where, "combine"), self.agents.__getitem__
                )
            return FanOut(
                name,
                [self._member(b) for b in definition.branches],
                limit=definition.limit,
                combine=combine,
                store=self.store,
                description=definition.description,
            )
        if isinstance(definition, CriticFlow):
            return CriticLoop(
                name,
                self._member(definition.worker),
                _as_critic(self.agents[definition.critic]),
                max_rounds=definition.max_rounds,
                store=self.store,
                description=definition.description,
            )
        if isinstance(definition, ChainFlow):
            chain_steps = []
            for i, step in enumerate(definition.steps):
                runner: Agent[Any] | Callable[[dict[str, Any]], Any] = self._function_or(
                    step.agent, (*where, "steps", i, "agent"), self.agents.__getitem__
                )
                chain_steps.append(
                    Step(
                        step.name,
                        runner,
                        prompt=step.prompt,
                        output_schema=step.output_schema,
                        retries=step.retries,
                    )
                )
            return Chain(name, chain_steps, store=self.store, description=definition.description)
        raise TypeError(f"not a flow definition: {definition!r}")  # pragma: no cover

    def _description(self, member: str) -> str:
        definition = self.spec.agents.get(member) or self.spec.flows.get(member)
        return definition.description if definition is not None else ""


def _as_critic(agent: Agent[Any]) -> Agent[Any]:
    """The agent with its answer forced to a :class:`CriticVerdict`."""
    if agent.output_type is CriticVerdict:
        return agent
    return Agent(
        agent.name,
        agent.model,
        instructions=agent.instructions or CRITIC_INSTRUCTIONS,
        tools=list(agent.tools.values()),
        output_type=CriticVerdict,
        settings=agent.settings,
        tool_choice=agent.tool_choice,
        tool_strategy=agent.tool_strategy,
        routes=agent.routes,
        max_steps=agent.max_steps,
        retries=agent.retries,
        store=agent.store,
        guards=agent.guards,
        role=agent.role,
    )


def _ordered(edges: Mapping[str, Sequence[str]], names: Mapping[str, Any]) -> list[str]:
    """``names`` with every name after the names it depends on (the spec refused cycles)."""
    done: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        for other in edges.get(name, ()):
            if other in names:
                visit(other)
        done.append(name)

    for name in names:
        visit(name)
    return done


def _line_of(location: str) -> int | None:
    tail = location.rpartition(":")[2]
    return int(tail) if tail.isdigit() else None


def _kwargs(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())
