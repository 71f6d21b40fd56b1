"""The agent: a model, instructions and tools, and the entry points that run them.

:class:`Agent` checks its configuration once, when it is built. Each run (:meth:`Agent.run`,
:meth:`~Agent.run_stream`, :meth:`~Agent.resume` and their variants) reads the conversation
from a thread or the caller's history, hands it to the loop in :mod:`shoal.agent.loop` (where
the steps of a run are described) and stores what the run added, with its trace and any calls
waiting for approval, in the thread.

The whole loop is one async generator (:meth:`Agent.run_stream`); :meth:`Agent.run` drains it
and :meth:`Agent.run_sync` runs that on a fresh event loop, so there is one implementation.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar, overload

from pydantic import TypeAdapter

from shoal.agent.approval import (
    clear_pending,
    decide,
    pending_approval,
    pending_calls,
    save_pending,
    stored_role,
)
from shoal.agent.loop import TOOL_STRATEGIES, Run
from shoal.agent.result import FinalEvent, RunEvent, RunResult
from shoal.agent.routes import Route
from shoal.exceptions import ApprovalError, UserError
from shoal.guards import Guard
from shoal.messages import Message, ToolCall, UserMessage
from shoal.models import DEFAULT_MODEL, Model, resolve_model
from shoal.settings import ModelSettings
from shoal.threads import InMemoryThreadStore, Thread, ThreadStore
from shoal.tools import Tool, as_tool, check_output_schema

__all__ = ["TOOL_STRATEGIES", "Agent"]

OutputT = TypeVar("OutputT")

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class Agent(Generic[OutputT]):
    """A model with instructions and tools. :mod:`shoal.agent.loop` describes how a run goes."""

    @overload
    def __init__(
        self: Agent[str],
        name: str,
        model: str | Model = ...,
        *,
        instructions: str = ...,
        tools: Sequence[Tool | Callable[..., Any]] = ...,
        output_type: None = None,
        output_schema: Mapping[str, Any] | None = ...,
        settings: ModelSettings | None = ...,
        tool_choice: str = ...,
        tool_strategy: str | None = ...,
        routes: Sequence[Route] = ...,
        max_steps: int = ...,
        retries: int = ...,
        store: ThreadStore | None = ...,
        guards: Sequence[Guard] = ...,
        role: str | None = ...,
    ) -> None: ...

    @overload
    def __init__(
        self: Agent[OutputT],
        name: str,
        model: str | Model = ...,
        *,
        instructions: str = ...,
        tools: Sequence[Tool | Callable[..., Any]] = ...,
        output_type: type[OutputT],
        output_schema: None = None,
        settings: ModelSettings | None = ...,
        tool_choice: str = ...,
        tool_strategy: str | None = ...,
        routes: Sequence[Route] = ...,
        max_steps: int = ...,
        retries: int = ...,
        store: ThreadStore | None = ...,
        guards: Sequence[Guard] = ...,
        role: str | None = ...,
    ) -> None: ...

    def __init__(
        self,
        name: str,
        model: str | Model = DEFAULT_MODEL,
        *,
        instructions: str = "",
        tools: Sequence[Tool | Callable[..., Any]] = (),
        output_type: type[Any] | None = None,
        output_schema: Mapping[str, Any] | None = None,
        settings: ModelSettings | None = None,
        tool_choice: str = "auto",
        tool_strategy: str | None = None,
        routes: Sequence[Route] = (),
        max_steps: int = 8,
        retries: int = 2,
        store: ThreadStore | None = None,
        guards: Sequence[Guard] = (),
        role: str | None = None,
    ) -> None:
        if not name or not set(name) <= _NAME_CHARS:
            raise UserError(f"agent name {name!r}: use letters, digits, '_' and '-'")
        if max_steps < 1:
            raise UserError(f"agent {name!r}: max_steps must be at least 1")
        if retries < 0:
            raise UserError(f"agent {name!r}: retries cannot be negative")
        self.name = name
        self.instructions = instructions
        self.tools: dict[str, Tool] = {}
        for item in tools:
            converted = as_tool(item)
            if converted.name in self.tools:
                raise UserError(f"agent {name!r}: two tools are named {converted.name!r}")
            self.tools[converted.name] = converted
        self._check_tool_choice(tool_choice)
        self.tool_choice = tool_choice
        if tool_strategy is not None and tool_strategy not in TOOL_STRATEGIES:
            raise UserError(
                f"agent {name!r}: tool_strategy {tool_strategy!r} is not one of "
                f"{', '.join(TOOL_STRATEGIES)}"
            )
        #: how ``auto`` tool choice is decided (None: what the model's profile recommends)
        self.tool_strategy = tool_strategy
        for route in routes:
            if route.tool not in self.tools:
                raise UserError(
                    f"agent {name!r}: a route calls {route.tool!r}, which is not a declared tool"
                )
        #: deterministic rules tried before the model, or after it failed (:class:`Route`)
        self.routes = tuple(routes)
        self.output_type = output_type
        self._output_adapter: TypeAdapter[Any] | None = (
            TypeAdapter(output_type) if output_type not in (None, str) else None
        )
        if output_schema is not None and self._output_adapter is not None:
            raise UserError(f"agent {name!r}: give output_type or output_schema, not both")
        #: a JSON schema the answer must satisfy (the output is then the decoded JSON value)
        self._raw_output_schema = dict(output_schema) if output_schema is not None else None
        if self._raw_output_schema is not None:
            check_output_schema(self._raw_output_schema, f"agent {name!r}")
        self.settings = settings or ModelSettings()
        self.max_steps = max_steps
        self.retries = retries
        self.store: ThreadStore = store if store is not None else InMemoryThreadStore()
        #: checks on the input, each tool call and result, and the answer (see shoal.guards)
        self.guards: tuple[Guard, ...] = tuple(guards)
        #: the role runs have unless the caller gives one (guards decide by it)
        self.role = role
        self._model_ref = model
        self._model: Model | None = model if isinstance(model, Model) else None

    def _check_tool_choice(self, choice: str) -> None:
        if choice not in ("auto", "none", "required") and choice not in self.tools:
            raise UserError(
                f"agent {self.name!r}: tool_choice {choice!r} is not auto, none, required "
                f"or a declared tool ({', '.join(self.tools) or 'no tools declared'})"
            )

    @property
    def model(self) -> Model:
        """The model, resolved from its reference on first use."""
        if self._model is None:
            self._model = resolve_model(self._model_ref)
        return self._model

    @property
    def output_schema(self) -> dict[str, Any] | None:
        if self._raw_output_schema is not None:
            return self._raw_output_schema
        return self._output_adapter.json_schema() if self._output_adapter else None

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, model={self._model_ref!r}, tools={list(self.tools)})"

    # -- public entry points --------------------------------------------------------------

    async def run(
        self,
        message: str | None,
        *,
        thread: Thread | str | None = None,
        history: Sequence[Message] = (),
        settings: ModelSettings | None = None,
        tool_choice: str | None = None,
        role: str | None = None,
    ) -> RunResult[OutputT]:
        """Run the agent on ``message`` (continuing ``thread`` if given) to its final answer."""
        return await _drain(
            self.run_stream(
                message,
                thread=thread,
                history=history,
                settings=settings,
                tool_choice=tool_choice,
                role=role,
            )
        )

    def run_sync(
        self,
        message: str,
        *,
        thread: Thread | str | None = None,
        settings: ModelSettings | None = None,
        tool_choice: str | None = None,
        role: str | None = None,
    ) -> RunResult[OutputT]:
        """:meth:`run` for synchronous code (not from inside a running event loop)."""
        _check_no_loop("run_sync", "run")
        return asyncio.run(
            self.run(message, thread=thread, settings=settings, tool_choice=tool_choice, role=role)
        )

    async def run_stream(
        self,
        message: str | None,
        *,
        thread: Thread | str | None = None,
        history: Sequence[Message] = (),
        settings: ModelSettings | None = None,
        tool_choice: str | None = None,
        role: str | None = None,
    ) -> AsyncIterator[RunEvent]:
        """Run the agent, yielding text pieces, tool calls, tool results and the final result.

        The conversation so far comes from ``thread`` (its stored messages) or ``history``
        (messages given by the caller, as an OpenAI-style client sends them), not both.
        ``message=None`` continues that conversation without a new user message: it must then
        end with a user message or with the results of the calls the caller ran.
        """
        choice = tool_choice or self.tool_choice
        self._check_tool_choice(choice)
        thread_id = thread.id if isinstance(thread, Thread) else thread
        if thread_id is not None and history:
            raise UserError("give a thread or a history to continue, not both")
        past: list[Message] = list(history)
        if thread_id is not None:
            await self.store.get_thread(thread_id)  # ThreadNotFoundError before any work
            if await pending_approval(self.store, thread_id) is not None:
                raise ApprovalError(
                    f"thread {thread_id} has a run waiting for approval: approve or reject "
                    "its calls first (Agent.resume, 'shoal approve')"
                )
            past = await self.store.get_messages(thread_id)
        if message is None and (not past or past[-1].role not in ("user", "tool")):
            raise UserError(
                "nothing to answer: the conversation must end with a user message or tool results"
            )
        user = UserMessage(content=message) if message is not None else None
        run = Run(self, past, user, settings, choice, role=role, thread_id=thread_id)
        async for event in self._finish(run, past, thread_id, keep_history=not thread_id):
            yield event

    async def pending_approvals(self, thread: Thread | str) -> list[ToolCall]:
        """The calls of this agent's run that wait for approval in ``thread`` (empty if none)."""
        thread_id = thread.id if isinstance(thread, Thread) else thread
        record = await pending_approval(self.store, thread_id)
        if record is None or record.get("agent") != self.name:
            return []
        return pending_calls(record)

    async def resume(
        self,
        thread: Thread | str,
        *,
        approve: bool | Mapping[str, bool] = True,
        reason: str = "",
        settings: ModelSettings | None = None,
        role: str | None = None,
    ) -> RunResult[OutputT]:
        """Go on with a run that paused for approval (``stop_reason == "approval"``).

        ``approve``: True or False for every waiting call, or ``{call_id: bool}`` naming each
        one. Approved calls run (an approved external tool becomes a pending call for the
        caller); rejected ones answer the model ``Error: the call was rejected by a person``
        with ``reason``. Then the run goes on, with a fresh step budget, in the role the run
        started with (kept in the thread), or in ``role`` when given.
        """
        return await _drain(
            self.resume_stream(thread, approve=approve, reason=reason, settings=settings, role=role)
        )

    def resume_sync(
        self,
        thread: Thread | str,
        *,
        approve: bool | Mapping[str, bool] = True,
        reason: str = "",
        role: str | None = None,
    ) -> RunResult[OutputT]:
        """:meth:`resume` for synchronous code."""
        _check_no_loop("resume_sync", "resume")
        return asyncio.run(self.resume(thread, approve=approve, reason=reason, role=role))

    async def resume_stream(
        self,
        thread: Thread | str,
        *,
        approve: bool | Mapping[str, bool] = True,
        reason: str = "",
        settings: ModelSettings | None = None,
        role: str | None = None,
    ) -> AsyncIterator[RunEvent]:
        """:meth:`resume`, yielding events as :meth:`run_stream` does."""
        thread_id = thread.id if isinstance(thread, Thread) else thread
        record = await pending_approval(self.store, thread_id)
        if record is None:
            raise ApprovalError(f"thread {thread_id} has no call waiting for approval")
        if record.get("agent") != self.name:
            raise ApprovalError(
                f"the run waiting in thread {thread_id} is agent {record.get('agent')!r}'s, "
                f"not {self.name!r}'s"
            )
        calls = pending_calls(record)
        decisions = decide(calls, approve)
        if role is None:
            role = stored_role(record)  # the run goes on in the role it started with
        await clear_pending(self.store, thread_id)
        past = await self.store.get_messages(thread_id)
        run = Run(self, past, None, settings, self.tool_choice, role=role, thread_id=thread_id)
        run.decided = [(call, ok, reason) for call, ok in zip(calls, decisions, strict=True)]
        async for event in self._finish(run, past, thread_id, keep_history=False):
            yield event

    async def _finish(
        self, run: Run, past: list[Message], thread_id: str | None, *, keep_history: bool
    ) -> AsyncIterator[RunEvent]:
        """Run the loop; store what it added (and its trace) in the thread. A run that pauses
        for approval without a thread gets one, holding ``past`` too."""
        async for event in run.steps():
            if isinstance(event, FinalEvent):
                result = event.result
                if result.stop_reason == "approval" and thread_id is None:
                    created = await self.store.create_thread()
                    thread_id = created.id
                    if keep_history and past:
                        await self.store.append_messages(thread_id, past)
                if thread_id is not None:
                    result = await self._store_run(result, thread_id, run.guard_context.role)
                event = FinalEvent(result)
            yield event

    async def _store_run(
        self, result: RunResult[Any], thread_id: str, role: str | None
    ) -> RunResult[Any]:
        await self.store.append_messages(thread_id, result.new_messages)
        trace = [dataclasses.replace(e, thread_id=thread_id) for e in result.trace]
        await self.store.append_trace(thread_id, [e.to_json() for e in trace])
        if result.stop_reason == "approval":
            await save_pending(
                self.store,
                thread_id,
                agent=self.name,
                run_id=result.run_id,
                role=role,
                calls=result.pending_approvals,
            )
        return dataclasses.replace(result, thread_id=thread_id, trace=trace)


async def _drain(events: AsyncIterator[RunEvent]) -> RunResult[Any]:
    result: RunResult[Any] | None = None
    async for event in events:
        if isinstance(event, FinalEvent):
            result = event.result
    assert result is not None
    return result


def _check_no_loop(name: str, coroutine: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise UserError(f"{name}() was called inside an event loop: use 'await agent.{coroutine}()'")
