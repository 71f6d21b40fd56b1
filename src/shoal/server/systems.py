"""Systems on the server (``shoal serve --system SYSTEM.yaml``): models, agents and flows.

Data model
----------
For each system file (:mod:`shoal.spec.system`), at start-up:

- every entry of its ``models:`` is built with the pool's ``make_model`` (embedded models in
  worker processes, remote ones as clients) and served as ``SYSTEM.ENTRY``; a model an agent
  names by reference is the pool's engine for that reference. So each model has one
  :class:`~shoal.server.engines.Engine` (queue, residency, health, metrics), shared by every
  agent that uses it.
- the system is built on those models, each wrapped in an :class:`AdmittedModel` (a queue slot
  per model request, since a flow moves between models), and on the server's thread store.
- every agent is hosted under its name like an ``--agent`` spec (:class:`HostedAgent`: client
  tools, ``response_format``, streaming all work); the system's name (its entry) and each flow's
  name are :class:`HostedFlow` entries of ``state.flows``.

A flow's answer carries ``shoal`` fields (:func:`flow_extension`): the agent that answered, the
path, the route and its reason, the stop reason, the waiting calls, the trace.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from shoal.exceptions import UserError
from shoal.messages import Message, ToolCall
from shoal.models import Model, ModelRequestParameters, RouteDecision
from shoal.models.base import ModelStreamEvent
from shoal.models.profiles import ModelProfile
from shoal.orchestration import FlowResult
from shoal.server.engines import Engine
from shoal.server.errors import ApiError
from shoal.server.state import HostedAgent, HostedFlow, HostedSystem, ServerState, admitted
from shoal.spec import SystemSpec, load_system

__all__ = [
    "AdmittedModel",
    "answer_once",
    "call_json",
    "flow_extension",
    "host_systems",
    "refuse_options",
    "trace_json",
]


class AdmittedModel(Model):
    """``engine``'s model (or a model it routed to), each request under a slot of ``engine``."""

    def __init__(self, model: Model, engine: Engine) -> None:
        self.inner = model
        self.engine = engine
        self.name = model.name

    @property
    def profile(self) -> ModelProfile:  # type: ignore[override]
        return self.inner.profile

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    def count_tokens(self, messages: Sequence[Message], params: ModelRequestParameters) -> int:
        return self.inner.count_tokens(messages, params)

    async def route(self, messages: Sequence[Message]) -> tuple[Model, tuple[RouteDecision, ...]]:
        async with admitted(self.engine):
            chosen, decisions = await self.inner.route(messages)
        return (self if chosen is self.inner else AdmittedModel(chosen, self.engine)), decisions

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        async with admitted(self.engine):
            stream = self.inner.request_stream(messages, params)
            try:
                async for event in stream:
                    yield event
            finally:
                close = getattr(stream, "aclose", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        await close()

    async def prepare(self) -> None:
        await self.engine.prepare()

    async def close(self) -> None:
        """Nothing: the pool closes its engines' models."""


def host_systems(state: ServerState) -> None:
    """Build every system file of the settings into ``state`` (see the module docstring)."""
    for path in state.settings.systems:
        spec = load_system(path)
        taken = _taken_names(state)
        for name in [spec.name, *spec.names()]:
            if name in taken:
                raise UserError(f"{path}: the name {name!r} is already {taken[name]}; rename it")
        hosted = _build(state, spec)
        state.systems[spec.name] = hosted
        system = hosted.system
        for name, agent in system.agents.items():
            engine = hosted.engines[name]
            description = system.descriptions.get(name) or _first_line(agent.instructions)
            state.agents[name] = HostedAgent(agent, engine.reference, description)
        state.flows[spec.name] = HostedFlow(
            hosted, system.entry_name, "system", spec.description or f"the {spec.name} system"
        )
        for name in system.flows:
            description = system.descriptions.get(name) or f"{_flow_type(spec, name)} flow"
            state.flows[name] = HostedFlow(hosted, name, "flow", description)


def _build(state: ServerState, spec: SystemSpec) -> HostedSystem:
    pool = state.pool
    built = spec.build_models(resolve=pool.make_model) if spec.models else {}
    for name, model in built.items():
        pool.add_named(f"{spec.name}.{name}", model)
    engines: dict[str, Engine] = {}  # by model name (an entry or a reference)
    for name in spec.model_names():
        engines[name] = pool.get(f"{spec.name}.{name}" if name in spec.models else name)
    models = {name: AdmittedModel(engine.model, engine) for name, engine in engines.items()}
    system = spec.build(store=state.store, models=models)
    return HostedSystem(
        system,
        {agent: engines[spec.agent_model(agent)] for agent in spec.agents},
    )


def _taken_names(state: ServerState) -> dict[str, str]:
    taken = dict.fromkeys(state.pool.servable(), "a model")
    taken.update(dict.fromkeys(state.agents, "a hosted agent"))
    taken.update(dict.fromkeys(state.flows, "a system or flow"))
    return taken


def _flow_type(spec: SystemSpec, name: str) -> str:
    return spec.flows[name].type


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:200]


# -- wire shapes ------------------------------------------------------------------------------


def call_json(call: ToolCall) -> dict[str, Any]:
    """A waiting call as the approval endpoints show it."""
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def trace_json(events: Sequence[Any]) -> list[dict[str, Any]]:
    return [event.to_json() if hasattr(event, "to_json") else dict(event) for event in events]


def flow_extension(result: FlowResult, *, trace: bool = True) -> dict[str, Any]:
    """The ``shoal`` fields of a flow's answer."""
    route = result.route
    body: dict[str, Any] = {
        "agent": result.agent,
        "path": list(result.path),
        "route": (
            {"target": route.target, "by": route.by, "reason": route.reason}
            if route is not None
            else None
        ),
        "stop_reason": result.stop_reason,
        "thread_id": result.thread_id,
        "pending_approvals": [call_json(c) for c in result.pending_approvals],
        "notes": list(result.notes),
    }
    if trace:
        body["trace"] = trace_json(result.trace)
    return body


# -- running a flow for a stateless request ---------------------------------------------------


async def answer_once(
    state: ServerState,
    flow: HostedFlow,
    message: str | None,
    history: Sequence[Message],
    *,
    role: str | None = None,
    disconnected: Callable[[], Awaitable[bool]] | None = None,
) -> FlowResult:
    """Run ``flow`` on a conversation the client sent (chat completions, responses).

    ``role`` is the caller's (:func:`~shoal.server.auth.caller_role`). Flows continue threads,
    so the conversation goes into a thread of the server's store for the run; the thread is
    deleted afterwards, unless the run paused for approval: then it stays (its id is in the
    answer's ``shoal.thread_id``) for ``/v1/threads/{id}/approval``.
    """
    if message is None:
        raise ApiError(
            400,
            f"{flow.system.name if flow.kind == 'system' else flow.member!r}: a flow answers "
            "a user message; the conversation must end with one",
            param="messages",
        )
    thread = await state.store.create_thread(metadata={"shoal.request": "stateless"})
    keep = False
    try:
        if history:
            await state.store.append_messages(thread.id, list(history))
        result = await state.run_flow(
            flow, message, thread=thread.id, role=role, disconnected=disconnected
        )
        keep = result.stop_reason == "approval"
        return result if keep else dataclasses.replace(result, thread_id=None)
    finally:
        if not keep:
            with contextlib.suppress(Exception):
                await state.store.delete_thread(thread.id)


def refuse_options(name: str, **given: Any) -> None:
    """400 for request fields a flow cannot honour (its agents bring their own)."""
    for key, value in given.items():
        if value not in (None, [], {}, "", "auto"):
            raise ApiError(
                400,
                f"{key}: {name!r} is a flow; its agents have their own tools, instructions and "
                "output formats (address an agent by its name to pass them)",
                param=key,
            )
