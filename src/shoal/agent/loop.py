"""The run loop: one run of an agent, from the user's message to the final answer.

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

:class:`Run` holds the state of one run and :meth:`Run.steps` is the loop, one async generator
of events. This module decides what each step asks: which model answers (a router model picks
once per run), which tools are offered and how the tool is chosen (:data:`TOOL_STRATEGIES`),
routes, and what happens to unusable output. Executing the calls is
:mod:`shoal.agent.calls`; :class:`~shoal.agent.agent.Agent` builds a run and stores its result.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shoal.agent.calls import ToolCallsMixin, preview
from shoal.agent.context import fit_to_context
from shoal.agent.result import (
    FinalEvent,
    RunEvent,
    RunResult,
    StopReason,
    TextEvent,
    ToolCallRecord,
)
from shoal.agent.routes import match_route
from shoal.exceptions import GuardBlockedError, ModelBehaviorError, RateLimitedError
from shoal.guards import GuardContext, TextStage, Verdict, permitted_tools, screen_text
from shoal.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    Usage,
    UserMessage,
    last_user_text,
)
from shoal.models import (
    Model,
    ModelRequestParameters,
    ModelResponse,
    ResponseDone,
    RouteDecision,
    TextDelta,
)
from shoal.observability import RunRecorder
from shoal.settings import ModelSettings, merge_settings
from shoal.tools import decode_answer, narrow_to_mentioned, relevant_tools

if TYPE_CHECKING:
    from shoal.agent.agent import Agent

__all__ = ["NO_TOOL", "TOOL_STRATEGIES", "Run"]

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

#: the router's answer for "no tool fits"
NO_TOOL = "none"


class Run(ToolCallsMixin):
    """The state of one run; :meth:`steps` is the loop (see the module docstring)."""

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
            message=preview(first.content if isinstance(first, UserMessage) else ""),
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
                output=preview(str(output)),
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


def _short_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "answer"
    return f"the answer does not match the required format ({where}: {first['msg']})"


def _response_data(response: ModelResponse) -> dict[str, Any]:
    """What a model request's span records of its response."""
    return {
        "prompt_tokens": response.usage.prompt_tokens,
        "completion_tokens": response.usage.completion_tokens,
        "finish_reason": response.finish_reason,
        "text": preview(response.text or ""),
        "calls": [c.name for c in response.tool_calls],
        "parse_error": response.parse_error,
    }
