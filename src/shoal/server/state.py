"""What every route shares: settings, engines, the thread store, hosted agents and systems,
metrics.

Also the two things every model-running route does the same way: build the agent for a request
(a hosted agent, or a bare model wrapped in a one-off agent whose tools are the client's), and
run it under the server's rules: a queue slot on the model, the request deadline, cancellation
when the client goes away, and metrics of what it cost.

A system's flows (:class:`HostedFlow`, served under the system's name and each flow's name) run
several agents on several models: their agents' models take a queue slot per model request
(:class:`~shoal.server.systems.AdmittedModel`) rather than one for the whole run. A slot is
held per task: code that already holds an engine's slot (an agent run, whose tool asks another
agent on the same model) does not queue for it again (:meth:`ServerState.admit`).

Every run takes the caller's ``role`` (:func:`~shoal.server.auth.caller_role`: the
role of the request's API key, ``None`` for none); the agent's guards decide by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from shoal.agent import Agent, FinalEvent, RunEvent, RunResult
from shoal.exceptions import DeadlineExceededError, UserError
from shoal.messages import Message
from shoal.orchestration import FlowResult
from shoal.server.engines import Engine, EnginePool
from shoal.server.metrics import ServerMetrics
from shoal.server.response_store import ResponseStore
from shoal.server.settings import ServerSettings
from shoal.settings import ModelSettings, merge_settings
from shoal.spec import System
from shoal.threads import ThreadStore
from shoal.tools import Tool

__all__ = ["HostedAgent", "HostedFlow", "HostedSystem", "ServerState", "admitted"]

T = TypeVar("T")

#: the engines whose queue slot this task (and the tasks it starts) holds
_HELD: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "shoal_server_held_engines", default=frozenset()
)


@contextlib.asynccontextmanager
async def admitted(engine: Engine) -> AsyncIterator[None]:
    """A queue slot on ``engine`` for the body, unless this task holds one already."""
    held = _HELD.get()
    if engine.reference in held:
        yield
        return
    async with engine.admit():
        token = _HELD.set(held | {engine.reference})
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):  # reset from another context
                _HELD.reset(token)


#: a bare model's one-off agent: the first call stops the run (client tools), so a few steps
#: cover a call, two corrections and a forced answer
_BARE_MAX_STEPS = 4
_BARE_RETRIES = 2


@dataclass(frozen=True)
class HostedAgent:
    """An agent from a spec file, served under its name, and the model reference it runs on."""

    agent: Agent[Any]
    model: str
    description: str = ""


@dataclass(frozen=True)
class HostedSystem:
    """A system file's system, built on the server's engines and thread store."""

    system: System
    #: agent name -> the engine of its model
    engines: Mapping[str, Engine]
    #: the engines of its routers' classifiers, by flow name
    classifiers: Mapping[str, Engine] = field(default_factory=dict)

    def engine_of(self, agent: str) -> Engine:
        """The engine of ``agent`` (another one when the name is not a system agent's, so a
        deadline is still counted somewhere)."""
        return self.engines.get(agent) or next(iter(self.engines.values()))


@dataclass(frozen=True)
class HostedFlow:
    """What a ``model`` name runs when it names a system (its entry) or one of its flows."""

    hosted: HostedSystem
    #: the agent or flow of the system that runs
    member: str
    kind: Literal["system", "flow"]
    description: str = ""

    @property
    def system(self) -> System:
        return self.hosted.system


@dataclass
class ServerState:
    settings: ServerSettings
    pool: EnginePool
    store: ThreadStore
    metrics: ServerMetrics
    agents: dict[str, HostedAgent] = field(default_factory=dict)
    #: systems by name, and what each served flow name runs (the system's name: its entry)
    systems: dict[str, HostedSystem] = field(default_factory=dict)
    flows: dict[str, HostedFlow] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    #: stored responses of ``/v1/responses`` (in memory unless ``create_app`` passes a file)
    responses: ResponseStore = field(default_factory=ResponseStore)

    # -- building -------------------------------------------------------------------------

    def engine_for(self, model: str | None) -> Engine:
        hosted = self.agents.get(model or "")
        return self.pool.get(hosted.model if hosted else model)

    def make_agent(
        self,
        model: str | None,
        *,
        instructions: str = "",
        tools: Sequence[Tool] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
        tool_choice: str | None = None,
    ) -> tuple[Engine, Agent[Any]]:
        """The engine and agent that answer a request naming ``model`` (an agent or a model)."""
        engine = self.engine_for(model)
        hosted = self.agents.get(model or "")
        if hosted is None:
            agent: Agent[Any] = Agent(
                "chat",
                engine.model,
                instructions=instructions,
                tools=tools,
                output_schema=output_schema,
                settings=settings,
                tool_choice=tool_choice or "auto",
                max_steps=_BARE_MAX_STEPS,
                retries=_BARE_RETRIES,
                store=self.store,
            )
            return engine, agent
        base = hosted.agent
        clash = sorted(set(base.tools) & {t.name for t in tools})
        if clash:
            raise UserError(
                f"agent {base.name!r} already has tools named {', '.join(clash)}; "
                "rename the request's tools"
            )
        joined = "\n\n".join(part for part in (base.instructions, instructions) if part.strip())
        agent = Agent(
            base.name,
            engine.model,
            instructions=joined,
            tools=[*base.tools.values(), *tools],
            output_schema=output_schema,
            settings=merge_settings(base.settings, settings),
            tool_choice=tool_choice or base.tool_choice,
            tool_strategy=base.tool_strategy,
            routes=base.routes,
            max_steps=base.max_steps,
            retries=base.retries,
            store=self.store,
            guards=base.guards,
            role=base.role,
        )
        return engine, agent

    # -- running --------------------------------------------------------------------------

    async def run(
        self,
        engine: Engine,
        agent: Agent[Any],
        message: str | None,
        *,
        history: Sequence[Message] = (),
        thread: str | None = None,
        role: str | None = None,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> RunResult[Any]:
        """Run to the end under a queue slot and the deadline; cancelled if the client leaves."""

        async def work() -> RunResult[Any]:
            async with admitted(engine):
                result = await agent.run(message, history=history, thread=thread, role=role)
            self.record(engine, result)
            return result

        return await self.guarded(work(), engine, disconnected)

    async def guarded(
        self,
        work: Awaitable[T],
        engine: Engine,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> T:
        task = asyncio.ensure_future(work)
        deadline = time.monotonic() + self.settings.request_timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    task.cancel()
                    self.metrics.rejected.labels(engine.reference, "deadline").inc()
                    raise DeadlineExceededError(
                        f"the request took longer than {self.settings.request_timeout:g} s; "
                        "its generation was stopped"
                    )
                done, _ = await asyncio.wait({task}, timeout=min(0.5, left))
                if done:
                    return task.result()
                if disconnected is not None and await disconnected():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    raise asyncio.CancelledError("the client disconnected")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def stream(
        self,
        engine: Engine,
        agent: Agent[Any],
        message: str | None,
        *,
        history: Sequence[Message] = (),
        thread: str | None = None,
        role: str | None = None,
    ) -> AsyncIterator[RunEvent]:
        """:meth:`run` as events; the caller's cancellation (a disconnect) stops generation."""
        deadline = self.settings.request_timeout
        events = agent.run_stream(message, history=history, thread=thread, role=role)
        try:
            async with asyncio.timeout(deadline), admitted(engine):
                async for event in events:
                    if isinstance(event, FinalEvent):
                        self.record(engine, event.result)
                    yield event
        except TimeoutError:
            self.metrics.rejected.labels(engine.reference, "deadline").inc()
            raise DeadlineExceededError(
                f"the request took longer than {deadline:g} s; its generation was stopped"
            ) from None

    async def resume(
        self,
        engine: Engine,
        agent: Agent[Any],
        thread: str,
        *,
        approve: bool | Mapping[str, bool],
        reason: str,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> RunResult[Any]:
        """An agent's paused run, continued under a queue slot and the deadline, in the role it
        started with (kept with the paused run, not the approver's)."""

        async def work() -> RunResult[Any]:
            async with admitted(engine):
                result = await agent.resume(thread, approve=approve, reason=reason)
            self.record(engine, result)
            return result

        return await self.guarded(work(), engine, disconnected)

    async def run_flow(
        self,
        hosted: HostedFlow,
        message: str | None,
        *,
        thread: str | None = None,
        role: str | None = None,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> FlowResult:
        """Run a system's flow (or entry) under the deadline; each model request of its
        agents takes a queue slot on that model."""
        run = hosted.system.run(message, thread=thread, agent=hosted.member, role=role)
        return await self._flow(hosted.hosted, run, disconnected)

    async def resume_flow(
        self,
        hosted: HostedSystem,
        thread: str,
        *,
        approve: bool | Mapping[str, bool],
        reason: str,
        member: str | None = None,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> FlowResult:
        """Continue a system's run paused for approval in ``thread``, in the role it started
        with."""
        run = hosted.system.resume(thread, approve=approve, reason=reason, agent=member)
        return await self._flow(hosted, run, disconnected)

    async def _flow(
        self,
        hosted: HostedSystem,
        work: Awaitable[FlowResult],
        disconnected: Callable[[], Awaitable[bool]] | None,
    ) -> FlowResult:
        first = next(iter(hosted.system.agents))
        result = await self.guarded(work, hosted.engine_of(first), disconnected)
        for run in result.runs:
            self.record(hosted.engine_of(run.agent_name), run)
        return result

    def record(self, engine: Engine, result: RunResult[Any]) -> None:
        """Count what a run cost and what its tool calls came to."""
        m = self.metrics
        usage = result.usage
        m.tokens.labels(engine.reference, "in").inc(usage.prompt_tokens)
        m.tokens.labels(engine.reference, "out").inc(usage.completion_tokens)
        m.cached_tokens.labels(engine.reference).inc(usage.cached_prompt_tokens)
        if usage.model_seconds > 0 and usage.completion_tokens > 0:
            m.tokens_per_second.labels(engine.reference).observe(
                usage.completion_tokens / usage.model_seconds
            )
        for record in result.tool_calls:
            m.tool_calls.labels(record.outcome).inc()
        for _ in result.pending_calls:
            m.tool_calls.labels("pending").inc()
