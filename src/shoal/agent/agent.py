"""The agent: a model, instructions and tools, and the loop that runs them.

One run is a bounded loop of steps; each step is one model request:

    request -> parse -> validate -> execute -> append -> stop?

- The model answers with text or a tool call (constrained by a grammar on the embedded engine,
  parsed otherwise). Text ends the run (validated first when ``output_type`` is set).
- A call is validated against the declared tool before anything runs. An unknown tool, invalid
  arguments, output that cannot be parsed, or a tool that raises or times out goes back to the
  model as a short error message; each costs one unit of the ``retries`` budget, and a model
  that exhausts it gets :class:`~shoal.exceptions.ModelBehaviorError`.
- A call to an external tool (:meth:`Tool.external`) is validated but not run: the run stops
  with it in ``RunResult.pending_calls`` for the caller to run (``stop_reason="tool_calls"``).
- Control stays in code: a call identical to one already made in the run is not executed again
  (its earlier result is reused) and the next step must answer in text; the last step allowed
  by ``max_steps`` must answer in text too, so a run always ends.

The whole loop is one async generator (:meth:`Agent.run_stream`); :meth:`Agent.run` drains it
and :meth:`Agent.run_sync` runs that on a fresh event loop, so there is one implementation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar, overload

from pydantic import TypeAdapter, ValidationError

from shoal.agent.approval import (
    clear_pending,
    decide,
    pending_approval,
    pending_calls,
    save_pending,
)
from shoal.agent.context import fit_to_context
from shoal.agent.result import (
    ApprovalEvent,
    FinalEvent,
    RunEvent,
    RunResult,
    StopReason,
    TextEvent,
    ToolCallEvent,
    ToolCallRecord,
    ToolResultEvent,
)
from shoal.agent.routes import Route, match_route
from shoal.exceptions import (
    ApprovalError,
    GuardBlockedError,
    ModelBehaviorError,
    RateLimitedError,
    ToolArgumentsError,
    ToolError,
    ToolExecutionError,
    ToolTimeoutError,
    UnknownToolError,
    UserError,
)
from shoal.guards import (
    Guard,
    GuardContext,
    TextStage,
    Verdict,
    permitted_tools,
    screen_call,
    screen_text,
)
from shoal.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    Usage,
    UserMessage,
    last_user_text,
)
from shoal.models import (
    DEFAULT_MODEL,
    Model,
    ModelRequestParameters,
    ModelResponse,
    ResponseDone,
    RouteDecision,
    TextDelta,
    resolve_model,
)
from shoal.observability import RunRecorder
from shoal.settings import ModelSettings, merge_settings
from shoal.threads import InMemoryThreadStore, Thread, ThreadStore
from shoal.toolcalls import coerce_arguments
from shoal.tools import (
    Tool,
    as_tool,
    check_output_schema,
    decode_answer,
    format_tool_result,
    narrow_to_mentioned,
    relevant_tools,
)

__all__ = ["TOOL_STRATEGIES", "Agent"]

OutputT = TypeVar("OutputT")

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_OUTCOMES: dict[type[ToolError], str] = {
    UnknownToolError: "invalid",
    ToolArgumentsError: "invalid",
    ToolExecutionError: "failed",
    ToolTimeoutError: "timeout",
}
#: longest tool result shown to the model, in characters; the rest is cut with a marker
MAX_TOOL_RESULT_CHARS = 4000

#: ``tool_strategy`` values: (who selects the tool, constrained decoding)
#:
#: - ``grammar``: the model chooses text or a call under a text-or-call grammar;
#: - ``relevance``: code picks the tools relevant to the request (or none), the model fills in;
#: - ``gated``: code offers only the relevant tools (or none), the model decides whether to call;
#: - ``two-phase``: the model names one tool or ``none`` (enum-constrained), then fills in;
#: - ``parse``: no grammar; calls are parsed, repaired and validated from free text.
TOOL_STRATEGIES: dict[str, tuple[str, bool]] = {
    "grammar": ("model", True),
    "relevance": ("relevance", True),
    "gated": ("gated", True),
    "two-phase": ("router", True),
    "parse": ("model", False),
}


class Agent(Generic[OutputT]):
    """A model with instructions and tools. See the module docstring for how a run goes."""

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
        run = _Run(self, past, user, settings, choice, role=role, thread_id=thread_id)
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
        with ``reason``. Then the run goes on, with a fresh step budget.
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
        await clear_pending(self.store, thread_id)
        past = await self.store.get_messages(thread_id)
        run = _Run(self, past, None, settings, self.tool_choice, role=role, thread_id=thread_id)
        run.decided = [(call, ok, reason) for call, ok in zip(calls, decisions, strict=True)]
        async for event in self._finish(run, past, thread_id, keep_history=False):
            yield event

    async def _finish(
        self, run: _Run, past: list[Message], thread_id: str | None, *, keep_history: bool
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
                    result = await self._store_run(result, thread_id)
                event = FinalEvent(result)
            yield event

    async def _store_run(self, result: RunResult[Any], thread_id: str) -> RunResult[Any]:
        await self.store.append_messages(thread_id, result.new_messages)
        trace = [dataclasses.replace(e, thread_id=thread_id) for e in result.trace]
        await self.store.append_trace(thread_id, [e.to_json() for e in trace])
        if result.stop_reason == "approval":
            await save_pending(
                self.store,
                thread_id,
                agent=self.name,
                run_id=result.run_id,
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


class _Run:
    """The state of one run; :meth:`steps` is the loop."""

    def __init__(
        self,
        agent: Agent[Any],
        history: list[Message],
        user: UserMessage | None,
        settings: ModelSettings | None,
        tool_choice: str,
        *,
        role: str | None = None,
        thread_id: str | None = None,
    ) -> None:
        self.agent = agent
        self.model = agent.model
        self.recorder = RunRecorder(agent.name, thread_id=thread_id)
        self.guard_context = GuardContext(
            agent=agent.name,
            role=role if role is not None else agent.role,
            thread_id=thread_id,
            run_id=self.recorder.run_id,
        )
        #: the declared tools the guards let this run offer and call
        self.permitted = frozenset(
            permitted_tools(agent.guards, list(agent.tools), self.guard_context)
            if agent.guards
            else agent.tools
        )
        self.new: list[Message] = [user] if user is not None else []
        #: the current turn when continuing: from the last user message on (never trimmed)
        self.tail: list[Message] = []
        if user is None:
            start = max((i for i, m in enumerate(history) if isinstance(m, UserMessage)), default=0)
            history, self.tail = history[:start], history[start:]
        self.history = history
        #: the run continues a conversation (after the caller's tool results, say) rather than
        #: answering a new message: the first step is not a first look at a request
        self.continuing = user is None
        self.truncated = False
        self.settings = merge_settings(agent.settings, settings)
        self.first_choice = tool_choice
        self.usage = Usage()
        self.records: list[ToolCallRecord] = []
        self.retries_left = agent.retries
        self.retries_used = 0
        self.trimmed = 0
        self.notes: list[str] = []
        self.force_text = False
        self.done_calls: dict[str, ToolCallRecord] = {}
        self.pending: list[ToolCall] = []
        self.query = user.content if user is not None else last_user_text(history)
        self.selected: tuple[str, ...] = ()
        #: the previous step's output was unusable or its call invalid (so it is retried)
        self.last_step_failed = False
        #: choices wrapper models made (the route at the start, fallbacks and escalations)
        self.decisions: list[RouteDecision] = []
        self._use_model(self.model)
        #: the tool the router chose on step 1 ("" for none); None before routing
        self.routed: str | None = None
        #: a tool the model's text answer named instead of calling it (the next step calls it)
        self.call_named: str | None = None
        #: a call decided by a route, made at the next step instead of asking the model
        self.routed_call: ToolCall | None = None
        self.fell_back = False
        #: calls waiting for a person's approval (the run pauses after this step)
        self.awaiting: list[ToolCall] = []
        #: a resumed run: the calls a person decided on (call, approved, reason)
        self.decided: list[tuple[ToolCall, bool, str]] = []
        first = (
            match_route(agent.routes, user.content, "first")
            if tool_choice == "auto" and user is not None
            else None
        )
        if first is not None:
            self.routed_call = first[1]
            self._note(f"route {first[0].pattern!r} -> {first[1].name}")

    def _note(self, text: str) -> None:
        self.notes.append(text)
        self.recorder.event("note", text=text)

    def _guard_events(self, stage: str, verdicts: Sequence[Verdict], tool: str | None) -> None:
        for verdict in verdicts:
            self.recorder.event(
                "guard",
                guard=verdict.guard,
                stage=stage,
                action=verdict.action,
                reason=verdict.reason,
                tool=tool,
            )

    def _screen(self, stage: TextStage, text: str, call: ToolCall | None = None) -> str:
        """``text`` after the guards' redactions; a block raises GuardBlockedError (input,
        output) or, for a tool result, becomes a notice the model reads instead."""
        screened = screen_text(self.agent.guards, stage, text, self.guard_context, call)
        self._guard_events(stage, screened.verdicts, call.name if call else None)
        blocked = screened.blocked
        if blocked is None:
            return screened.text
        if stage == "tool_result":
            return f"[tool result withheld by guard {blocked.guard}: {blocked.reason}]"
        if blocked.retry_after is not None:
            raise RateLimitedError(
                blocked.reason, guard=blocked.guard, stage=stage, retry_after=blocked.retry_after
            )
        raise GuardBlockedError(blocked.reason, guard=blocked.guard, stage=stage)

    def _use_model(self, model: Model) -> None:
        """Talk to ``model`` from now on, with the tool strategy its profile recommends."""
        self.model = model
        profile = model.profile
        if self.agent.tool_strategy is None:
            self.selection: str = profile.tool_selection
            self.constrained = profile.supports_grammar
        else:
            self.selection, self.constrained = TOOL_STRATEGIES[self.agent.tool_strategy]

    async def _choose_model(self) -> None:
        """Ask the agent's model which model answers this conversation (a router decides
        here, once per run); record the decisions."""
        chosen, decisions = await self.model.route([*self.history, *self.tail, *self.new])
        if chosen is not self.model:
            self._use_model(chosen)
        for decision in decisions:
            if decision.usage is not None:
                self.usage = self.usage + decision.usage
        self._decided(decisions)

    def _decided(self, decisions: Sequence[RouteDecision]) -> None:
        for decision in decisions:
            self.decisions.append(decision)
            self.recorder.event(
                "route",
                router=decision.router,
                kind=decision.kind,
                model=decision.model,
                reason=decision.reason,
            )
            reason = f" ({decision.reason})" if decision.reason else ""
            self._note(f"{decision.router}: {decision.kind} -> {decision.model}{reason}")

    def _params(self, step: int) -> ModelRequestParameters:
        agent = self.agent
        declared = tuple(t.definition for t in agent.tools.values() if t.name in self.permitted)
        choice = self.first_choice if step == 1 else "auto"
        allowed: tuple[str, ...] | None = None
        if choice == "auto" and self.selection in ("relevance", "gated"):
            choice, allowed = self._select_in_code(step, declared)
        elif choice == "auto" and self.routed is not None:
            choice = self._after_routing()
        if self.call_named is not None:
            choice, allowed, self.call_named = self.call_named, None, None
        if self.force_text or step == agent.max_steps or not declared:
            choice = "none"
        elif choice not in ("auto", "none", "required") and choice not in self.permitted:
            choice = "auto"
        profile = self.model.profile
        copy = profile.copy_arguments
        narrowed: dict[str, dict[str, Any]] = {}
        if profile.argument_selection == "mentioned" and choice != "none":
            narrowed = {t.name: narrow_to_mentioned(self.query, t) for t in declared}
        return ModelRequestParameters(
            tools=declared,
            tool_choice=choice,
            allowed_tools=allowed,
            copy_sources=(self.query,) if copy else (),
            output_schema=agent.output_schema,
            settings=self.settings,
            constrained=self.constrained,
            call_schemas=narrowed,
        )

    def _names_a_tool_instead_of_calling(
        self, step: int, params: ModelRequestParameters, text: str
    ) -> str | None:
        """The offered tool a first-step text answer names (``use the `lookup_order`
        function``), when relevance had found tools for the request: the model meant to call
        it and described the call instead. Such an answer is not a decision not to call."""
        if (
            step != 1
            or self.continuing
            or self.selection != "gated"
            or params.tool_choice != "auto"
        ):
            return None
        for tool in params.offered_tools():
            if re.search(rf"(?<![\w.]){re.escape(tool.name)}(?![\w])", text):
                return tool.name
        return None

    def _after_routing(self) -> str:
        """Tool choice once the router has spoken: its tool, retried while the call fails."""
        if not self.routed:
            return "none"
        if not self.records and not self.pending:
            return self.routed
        return self.routed if self.last_step_failed and self.retries_left > 0 else "auto"

    def _routes(self) -> bool:
        return (
            self.selection == "router"
            and self.first_choice == "auto"
            and bool(self.agent.tools)
            and not self.continuing
        )

    async def _route(self) -> None:
        """Phase one of ``two-phase``: the model names the tool to call, or ``none``."""
        tools = [t for t in self.agent.tools.values() if t.name in self.permitted]
        names = [t.name for t in tools]
        listing = "\n".join(f"- {t.name}: {_first_sentence(t.description)}" for t in tools)
        system = SystemMessage(
            content=(
                "Choose the function that does what the user asks, or none if no function "
                "can do it.\nFunctions:\n" + listing
            )
        )
        params = ModelRequestParameters(
            output_schema={"enum": [*names, NO_TOOL]},
            settings=self.settings,
            constrained=self.constrained,
        )
        with self.recorder.span(
            "model.request", model=self.model.name, step=1, tool_choice="router", tools=names
        ) as span:
            response = await self.model.request(
                [system, *self.history, *self.tail, *self.new], params
            )
            span.update(**_response_data(response))
        self.usage = self.usage + response.usage
        self._decided(response.decisions)
        choice = _enum_choice(response.text or "", names)
        self.routed = choice or ""
        self._note(f"router: {choice or 'no tool'}")

    def _select_in_code(
        self, step: int, declared: tuple[ToolDefinition, ...]
    ) -> tuple[str, tuple[str, ...] | None]:
        """Tool choice decided (``relevance``) or narrowed (``gated``) by relevance in code.

        On the first step only the tools relevant to the request are offered, and none when
        none is (the model answers directly). ``relevance`` then requires a call (a model too
        small to decide whether to call); ``gated`` leaves the model free to answer in text.
        A later step retries a call that failed; otherwise ``relevance`` answers from the
        results and ``gated`` offers every tool again.
        """
        if step == 1 and not self.continuing:
            chosen = relevant_tools(self.query, declared)
            self.selected = tuple(t.name for t in chosen)
            if not chosen:
                self._note("step 1: no tool matches the request; answering directly")
                return "none", None
            self._note(f"step 1: tools matching the request: {', '.join(self.selected)}")
            return ("required" if self.selection == "relevance" else "auto"), self.selected
        if self.selected and self.last_step_failed and self.retries_left > 0:
            return "required", self.selected
        return ("none" if self.selection == "relevance" else "auto"), None

    def _system(self) -> list[Message]:
        text = self.agent.instructions.strip()
        return [SystemMessage(content=text)] if text else []

    async def steps(self) -> AsyncIterator[RunEvent]:
        agent = self.agent
        first = self.new[0] if self.new else None
        with self.recorder.span(
            "run",
            model=self.model.name,
            role=self.guard_context.role,
            message=_preview(first.content if isinstance(first, UserMessage) else ""),
        ) as span:
            if isinstance(first, UserMessage) and agent.guards:
                self.query = self._screen("input", first.content)
                self.new[0] = UserMessage(content=self.query)
            await self._choose_model()
            stop: StopReason = "max_steps"
            output: Any = ""
            async for event in self._resumed_calls():
                yield event
            if self.pending:
                stop = "tool_calls"
            steps = 0 if self.pending else agent.max_steps
            for step in range(1, steps + 1):
                if self.routed_call is not None:
                    call, self.routed_call = self.routed_call, None
                    async for tool_event in self._make_calls(None, (call,), step):
                        yield tool_event
                    if self.pending or self.awaiting:
                        stop = "tool_calls" if self.pending else "approval"
                        break
                    continue
                if step == 1 and self._routes():
                    await self._route()
                params = self._params(step)
                reserve = merge_settings(self.model.profile.default_settings, params.settings)
                messages, self.trimmed = fit_to_context(
                    self.model,
                    self._system(),
                    self.history,
                    [*self.tail, *self.new],
                    params,
                    reserve=reserve.max_tokens or 512,
                )
                response: ModelResponse | None = None
                buffered = bool(agent.guards)  # the answer is shown once the guards passed it
                with self.recorder.span(
                    "model.request",
                    model=self.model.name,
                    step=step,
                    tool_choice=params.tool_choice,
                    tools=[t.name for t in params.offered_tools()],
                ) as request:
                    async for delta in self.model.request_stream(messages, params):
                        if isinstance(delta, TextDelta) and not buffered:
                            yield TextEvent(delta.text, step)
                        elif isinstance(delta, ResponseDone):
                            response = delta.response
                    assert response is not None
                    request.update(**_response_data(response))
                self.usage = self.usage + response.usage + Usage(steps=1)
                self._decided(response.decisions)
                self.force_text = False
                self.last_step_failed = False
                if response.tool_calls:
                    async for tool_event in self._make_calls(
                        response.text, response.tool_calls, step
                    ):
                        yield tool_event
                    if self.pending or self.awaiting:
                        stop = "tool_calls" if self.pending else "approval"
                        break
                    continue
                if response.parse_error is not None:
                    self._reject(response.raw, response.parse_error)
                    continue
                text = response.text or ""
                named = self._names_a_tool_instead_of_calling(step, params, text)
                if named is not None:
                    self._note(
                        f"step {step}: the answer names the tool {named} instead of calling it; "
                        "asked for the call"
                    )
                    self.call_named = named
                    continue
                if agent.guards:
                    text = self._screen("output", text)
                try:
                    output = self._final_output(text)
                except ValueError as exc:
                    self._reject(text, str(exc))
                    continue
                if buffered and text:
                    yield TextEvent(text, step)
                self.new.append(AssistantMessage(content=text))
                self.truncated = response.finish_reason == "length"
                stop = "final"
                break
            span.update(
                stop_reason=stop,
                steps=self.usage.steps,
                prompt_tokens=self.usage.prompt_tokens,
                completion_tokens=self.usage.completion_tokens,
                output=_preview(str(output)),
                tool_calls=len(self.records),
                retries=self.retries_used,
            )
        result: RunResult[Any] = RunResult(
            output=output,
            tool_calls=self.records,
            usage=self.usage,
            stop_reason=stop,
            new_messages=self.new,
            trimmed_messages=self.trimmed,
            retries=self.retries_used,
            model_name=self.model.name,
            notes=self.notes,
            pending_calls=self.pending,
            truncated=self.truncated,
            decisions=self.decisions,
            run_id=self.recorder.run_id,
            agent_name=agent.name,
            pending_approvals=self.awaiting,
            trace=self.recorder.events,
        )
        yield FinalEvent(result)

    async def _resumed_calls(self) -> AsyncIterator[RunEvent]:
        """A resumed run: run the approved calls, answer the rejected ones."""
        for call, approved, reason in self.decided:
            self.recorder.event(
                "approval.decided",
                tool=call.name,
                call_id=call.id,
                approved=approved,
                reason=reason,
            )
            if approved:
                self._note(f"call {call.name} ({call.id}) approved")
                async for event in self._execute(call, 0, approved=True):
                    yield event
                continue
            self._note(f"call {call.name} ({call.id}) rejected")
            why = "the call was rejected by a person" + (f": {reason}" if reason else "")
            record = ToolCallRecord(
                call=call, content=f"Error: {why}", error=why, outcome="rejected"
            )
            self._record(record, call)
            yield ToolResultEvent(record, 0)

    def _final_output(self, text: str) -> Any:
        """The answer as the run's output; raises ValueError (with a short reason) if the
        answer does not satisfy the agent's output type or schema."""
        adapter = self.agent._output_adapter
        if adapter is not None:
            try:
                return adapter.validate_json(text)
            except ValidationError as exc:
                raise ValueError(_short_validation_error(exc)) from exc
        schema = self.agent._raw_output_schema
        if schema is None:
            return text
        return decode_answer(text, schema)

    def _spend_retry(self, why: str) -> None:
        self.retries_used += 1
        self.recorder.event("retry", why=why)
        if self.retries_left <= 0:
            fallback = match_route(self.agent.routes, self.query, "fallback")
            if fallback is not None and not self.fell_back:
                self.fell_back = True
                self.routed_call = fallback[1]
                self._note(f"fallback route {fallback[0].pattern!r} -> {fallback[1].name}")
                return
            raise ModelBehaviorError(
                f"{self.model.name} kept producing unusable output "
                f"({self.retries_used} attempts); last problem: {why}"
            )
        self.retries_left -= 1

    def _reject(self, raw: str, why: str) -> None:
        """Send unusable output back to the model with a short reason."""
        self._spend_retry(why)
        self.last_step_failed = True
        self.new.append(AssistantMessage(content=raw))
        self.new.append(UserMessage(content=f"Error: {why}. Answer again."))

    async def _make_calls(
        self, text: str | None, calls: tuple[ToolCall, ...], step: int
    ) -> AsyncIterator[RunEvent]:
        """Record the assistant's turn with ``calls`` and execute them in order."""
        self.new.append(AssistantMessage(content=text, tool_calls=calls))
        for call in calls:
            async for tool_event in self._execute(call, step):
                yield tool_event

    async def _execute(
        self, call: ToolCall, step: int, *, approved: bool = False
    ) -> AsyncIterator[RunEvent]:
        """Validate, screen and run one call (``approved``: a person already said yes)."""
        key = call.name + json.dumps(call.arguments, sort_keys=True, default=str)
        earlier = self.done_calls.get(key)
        if earlier is not None:
            # the model repeats itself: reuse the result and make it answer next
            self.force_text = True
            self._note(f"step {step}: repeated call {call.name}; earlier result reused")
            repeated = ToolCallRecord(
                call=call, result=earlier.result, content=earlier.content, outcome="repeated"
            )
            self._record(repeated, call)
            yield ToolResultEvent(repeated, step)
            return
        with self.recorder.span(
            "tool.call", tool=call.name, call_id=call.id, arguments=call.arguments
        ) as span:
            record: ToolCallRecord | None = None
            async for event in self._attempt(call, step, key, approved=approved):
                if isinstance(event, ToolResultEvent):
                    record = event.record
                yield event
            if record is not None:
                span.update(
                    arguments=record.call.arguments,
                    outcome=record.outcome,
                    result=_preview(record.content),
                    error=record.error,
                )
            else:
                span.update(outcome="approval" if self.awaiting else "pending")

    async def _attempt(
        self, call: ToolCall, step: int, key: str, *, approved: bool
    ) -> AsyncIterator[RunEvent]:
        agent = self.agent
        tool = agent.tools.get(call.name)
        started = time.perf_counter()
        try:
            if tool is None:
                offered = ", ".join(n for n in agent.tools if n in self.permitted) or "none"
                raise UnknownToolError(
                    f"unknown tool {call.name!r}; available tools: {offered}", tool_name=call.name
                )
            coerced, changes = coerce_arguments(call.arguments, tool.definition.parameters)
            if changes:
                self._note(f"step {step}: {call.name} arguments repaired: {'; '.join(changes)}")
            arguments = tool.validate(coerced)
            checked = call.model_copy(update={"arguments": arguments})
            if not approved:
                blocked, ask = self._screen_call(checked, tool)
                if blocked is not None:
                    # not run, no retry spent: the model reads why and answers in text next
                    self.force_text = True
                    record = ToolCallRecord(
                        call=checked,
                        content=f"Error: blocked by guard {blocked.guard}: {blocked.reason}",
                        error=blocked.reason,
                        outcome="blocked",
                    )
                    self._withhold_arguments(call)
                    self._record(record, call)
                    yield ToolResultEvent(record, step)
                    return
                if ask is not None:
                    self.awaiting.append(checked)
                    self.recorder.event(
                        "approval.requested",
                        tool=call.name,
                        call_id=call.id,
                        arguments=arguments,
                        reason=ask,
                    )
                    self._note(f"step {step}: {call.name} waits for approval ({ask})")
                    yield ApprovalEvent(checked, step, ask)
                    return
            if tool.external_only:
                self.pending.append(checked)
                yield ToolCallEvent(checked, step)
                return
            yield ToolCallEvent(call, step)
            value = await tool.call(arguments)
        except ToolError as exc:
            if isinstance(exc, UnknownToolError | ToolArgumentsError):
                self._withhold_arguments(call)
            self._spend_retry(str(exc))
            self.last_step_failed = not isinstance(exc, ToolExecutionError | ToolTimeoutError)
            outcome = _OUTCOMES.get(type(exc), "failed")
            record = ToolCallRecord(
                call=call,
                content=f"Error: {exc}",
                error=str(exc),
                outcome=outcome,
                seconds=time.perf_counter() - started,
            )
        else:
            content = _clip(format_tool_result(value))
            if agent.guards:
                content = self._screen("tool_result", content, call)
            record = ToolCallRecord(
                call=call,
                result=value,
                content=content,
                seconds=time.perf_counter() - started,
            )
            self.done_calls[key] = record
        self._record(record, call)
        yield ToolResultEvent(record, step)

    def _screen_call(self, call: ToolCall, tool: Tool) -> tuple[Verdict | None, str | None]:
        """(the guard verdict that blocks ``call``, or None; why it needs approval, or None)."""
        verdicts = (
            screen_call(self.agent.guards, call, self.guard_context, dangerous=tool.dangerous)
            if self.agent.guards
            else []
        )
        if call.name not in self.permitted and not any(v.action == "block" for v in verdicts):
            # a tool no guard offered: refused even if no guard checks calls
            verdicts = [
                *verdicts,
                Verdict(
                    action="block",
                    reason=f"the tool {call.name} was not offered in this run",
                    guard="permissions",
                ),
            ]
        self._guard_events("tool_call", verdicts, call.name)
        blocked = next((v for v in verdicts if v.action == "block"), None)
        if blocked is not None:
            return blocked, None
        asked = next((v for v in verdicts if v.action == "approve"), None)
        if asked is not None:
            return None, asked.reason or f"guard {asked.guard} asks for approval"
        if tool.requires_approval:
            return None, f"{call.name} requires approval"
        return None, None

    def _withhold_arguments(self, call: ToolCall) -> None:
        """Keep a refused call's oversized arguments out of the conversation (a hostile model
        must not fill the context with them): the assistant turn shows a marker instead."""
        size = len(json.dumps(call.arguments, default=str))
        if size <= MAX_TOOL_RESULT_CHARS:
            return
        for index in range(len(self.new) - 1, -1, -1):
            message = self.new[index]
            if isinstance(message, AssistantMessage) and any(
                c.id == call.id for c in message.tool_calls
            ):
                marker = {"withheld": f"{size} characters of arguments, refused"}
                calls = tuple(
                    c.model_copy(update={"arguments": marker}) if c.id == call.id else c
                    for c in message.tool_calls
                )
                self.new[index] = message.model_copy(update={"tool_calls": calls})
                return

    def _record(self, record: ToolCallRecord, call: ToolCall) -> None:
        self.records.append(record)
        self.new.append(
            ToolMessage(
                tool_call_id=call.id,
                name=call.name,
                content=record.content,
                is_error=record.error is not None,
            )
        )


#: the router's answer for "no tool fits"
NO_TOOL = "none"


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text[: end + 1] if 0 <= end < 200 else text[:200]


def _enum_choice(text: str, names: Sequence[str]) -> str | None:
    """The tool named by a router answer (JSON string or bare), or None for none/unknown."""
    value = text.strip()
    try:
        decoded = json.loads(value)
    except ValueError:
        decoded = value
    if isinstance(decoded, str):
        value = decoded.strip()
    return value if value in names else None


def _clip(text: str) -> str:
    if len(text) <= MAX_TOOL_RESULT_CHARS:
        return text
    cut = len(text) - MAX_TOOL_RESULT_CHARS
    return text[:MAX_TOOL_RESULT_CHARS] + f"... [{cut} more characters cut]"


def _short_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "answer"
    return f"the answer does not match the required format ({where}: {first['msg']})"


def _preview(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _response_data(response: ModelResponse) -> dict[str, Any]:
    """What a model request's span records of its response."""
    return {
        "prompt_tokens": response.usage.prompt_tokens,
        "completion_tokens": response.usage.completion_tokens,
        "finish_reason": response.finish_reason,
        "text": _preview(response.text or ""),
        "calls": [c.name for c in response.tool_calls],
        "parse_error": response.parse_error,
    }
