"""Wrapper models that choose which model answers: routing, fallback and escalation.

Each wrapper is itself a :class:`~shoal.models.base.Model`, built from model references
(``str`` or ``Model``) that are resolved with :func:`~shoal.models.registry.resolve_model` on
first use. Every choice a wrapper makes is a :class:`~shoal.models.base.RouteDecision`, put in
front of the answering model's own decisions in ``ModelResponse.decisions`` (outermost first)
and counted by :func:`shoal.observability.record_decision`.

- :class:`RouterModel` picks one route per conversation from its last user message: the first
  :class:`RouteRule` that matches (a regex or a predicate), else a *classifier* model asked
  for one label (an enum-constrained answer at temperature 0), else ``default``. An invalid
  label or a failing classifier routes to ``default`` with the reason. Classifications are
  kept in a small LRU keyed by the message text, so the steps of one run classify once.
  :meth:`RouterModel.route` returns the chosen model (routed in turn, for nested routers);
  requests sent to the router itself are routed and streamed from the chosen model, with the
  classifier's usage added to the response's.
- :class:`FallbackModel` asks its models in order and moves to the next one when a model
  raises one of the ``on`` exceptions or runs past ``timeout`` (seconds for one model's whole
  answer; only the waits for the model are interrupted, never the caller's code between
  streamed pieces). A caller's mistake
  (:class:`~shoal.exceptions.UserError`) propagates at once; so does any error after the
  first piece of text was streamed. When every model fails, the last error is raised with
  every model's error in its message.
- :class:`EscalatingModel` asks cheap tiers first and moves up when their answer is unusable:
  :func:`check_response` (the checks the agent loop applies: parse errors, unknown tools,
  arguments that do not validate after repair, a missing required call, a text answer that
  does not match the output schema) or the optional ``validator`` gives a reason. A rejected
  try is retried on the same tier with the output and an ``Error: ... Answer again.`` turn
  appended, ``attempts`` times; then the next tier gets the original messages. Tiers below
  the last are buffered and released only once accepted; the last tier is asked once,
  streamed, and its answer returned whatever it is (the agent loop validates it and retries
  with its own budget). The usage of every try, rejected ones included, is in the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
from collections import OrderedDict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Literal

from shoal.exceptions import ModelError, ModelTimeoutError, UserError
from shoal.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    Usage,
    UserMessage,
    last_user_text,
)
from shoal.models.base import (
    Model,
    ModelRequestParameters,
    ModelResponse,
    ModelStreamEvent,
    ResponseDone,
    RouteDecision,
    TextDelta,
)
from shoal.models.profiles import ModelProfile
from shoal.settings import ModelSettings
from shoal.toolcalls import coerce_arguments
from shoal.tools import decode_answer, schema_problem

__all__ = [
    "EscalatingModel",
    "FallbackModel",
    "RouteRule",
    "RouterModel",
    "Validator",
    "check_response",
    "check_rules",
    "classify",
    "read_label",
]

#: a reason to reject a response (``None``: accept), given the response and the messages of
#: the request (as the caller sent them, without the retry turns of earlier tries)
Validator = Callable[[ModelResponse, Sequence[Message]], str | Awaitable[str | None] | None]

DecisionKind = Literal["rule", "classifier", "default", "fallback", "escalation", "balance"]
_Choice = tuple[str, DecisionKind, str]  # label, kind, reason

#: classifications remembered per router (keyed by the last user message's text)
CLASSIFICATION_CACHE_SIZE = 256
_CLASSIFIER_SETTINGS = ModelSettings(temperature=0.0, max_tokens=16)
_CLASSIFIER_PROMPT = "Classify the user's message. Answer with one label only."


# -- shared by the wrappers here and in balanced.py -------------------------------------------


class LazyModel:
    """A model reference resolved on first use."""

    def __init__(self, reference: str | Model) -> None:
        self.reference = reference
        self.resolved: Model | None = reference if isinstance(reference, Model) else None

    def get(self) -> Model:
        if self.resolved is None:
            from shoal.models.registry import resolve_model

            self.resolved = resolve_model(self.reference)
        return self.resolved


def decide(router: str, kind: DecisionKind, model: str, reason: str) -> RouteDecision:
    """A decision, counted in the library metrics as it is made."""
    # imported here: prometheus_client is not needed until a wrapper decides something
    from shoal.observability import record_decision

    decision = RouteDecision(router=router, kind=kind, model=model, reason=reason)
    record_decision(router=router, kind=kind, model=model)
    return decision


def with_decisions(
    response: ModelResponse, decisions: Sequence[RouteDecision], usage: Usage | None = None
) -> ModelResponse:
    """``response`` with ``decisions`` before its own (and ``usage`` added to its own)."""
    update: dict[str, Any] = {"decisions": (*decisions, *response.decisions)}
    if usage is not None:
        update["usage"] = usage + response.usage
    return response.model_copy(update=update)


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def all_failed(errors: Sequence[tuple[str, BaseException]], what: str) -> BaseException:
    """The last error, its message listing every model's error."""
    last = errors[-1][1]
    listing = "; ".join(f"{name}: {describe_error(exc)}" for name, exc in errors)
    last.args = (f"every {what} failed ({listing})", *last.args[1:])
    return last


class WrapperModel(Model):
    """A model over member models: the profile and token counts are the *primary* member's,
    the context the smallest of those that may answer; prepare/close reach every member."""

    def __init__(self, name: str, members: Sequence[LazyModel], answering: int) -> None:
        self.name = name
        #: every member; the first ``answering`` may answer, the first of them is the primary
        self._members = list(members)
        self._answering = answering

    @property
    def profile(self) -> ModelProfile:  # type: ignore[override]
        return self._members[0].get().profile

    @property
    def context_length(self) -> int:
        return min(slot.get().context_length for slot in self._members[: self._answering])

    def count_tokens(self, messages: Sequence[Message], params: ModelRequestParameters) -> int:
        return self._members[0].get().count_tokens(messages, params)

    async def prepare(self) -> None:
        for slot in self._members:
            await slot.get().prepare()

    async def close(self) -> None:
        """Close each resolved member once; the first error is raised after all were tried."""
        first: BaseException | None = None
        resolved = [s.resolved for s in self._members if s.resolved is not None]
        for model in {id(m): m for m in resolved}.values():
            try:
                await model.close()
            except Exception as exc:  # close the others first
                first = first or exc
        if first is not None:
            raise first


async def aclose(iterator: AsyncIterator[ModelStreamEvent]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


# -- checking a response ---------------------------------------------------------------------


def check_response(response: ModelResponse, params: ModelRequestParameters) -> str | None:
    """Why ``response`` cannot be used for a request with ``params`` (None: it can).

    The agent loop's checks, at the model level: the output could not be parsed; a call names
    a tool not offered; a call's arguments, repaired by
    :func:`~shoal.toolcalls.coerce_arguments`, fail the tool's (narrowed) schema; no call
    when one is required; a text answer that does not satisfy ``output_schema``.
    """
    if response.parse_error is not None:
        return response.parse_error
    offered = {t.name: t for t in params.offered_tools()}
    for call in response.tool_calls:
        tool = offered.get(call.name)
        if tool is None:
            names = ", ".join(offered) or "none may be called here"
            return f"unknown tool {call.name!r}; available tools: {names}"
        schema = params.call_schemas.get(call.name) or tool.parameters
        coerced, _ = coerce_arguments(call.arguments, schema)
        problem = schema_problem(coerced, schema)
        if problem is not None:
            return f"{call.name}: invalid arguments ({problem})"
    if response.tool_calls:
        return None
    if params.call_required:
        return f"a tool call is required (one of: {', '.join(offered)})"
    if params.output_schema is not None:
        try:
            decode_answer(response.text or "", params.output_schema)
        except ValueError as exc:
            return str(exc)
    return None


# -- RouterModel -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteRule:
    """Send conversations whose last user message matches to ``route``.

    ``pattern`` is searched case-insensitively; ``when`` is a predicate on the text. With
    both, both must hold.
    """

    route: str
    pattern: str | None = None
    when: Callable[[str], bool] | None = None
    reason: str = ""

    def matches(self, text: str) -> bool:
        if self.pattern is not None and not re.search(self.pattern, text, re.IGNORECASE):
            return False
        return self.when is None or bool(self.when(text))

    def describe(self) -> str:
        if self.reason:
            return self.reason
        return f"pattern {self.pattern!r}" if self.pattern is not None else "predicate"


class RouterModel(WrapperModel):
    """Routes each conversation to one of ``routes`` (see the module docstring)."""

    def __init__(
        self,
        routes: Mapping[str, str | Model],
        *,
        rules: Sequence[RouteRule] = (),
        classifier: str | Model | None = None,
        labels: Mapping[str, str] | None = None,
        default: str,
        name: str = "router",
        instructions: str | None = None,
    ) -> None:
        if not routes:
            raise UserError(f"router {name!r}: give at least one route")
        if default not in routes:
            raise UserError(f"router {name!r}: default {default!r} is not one of its routes")
        check_rules(name, rules, routes)
        labels = dict(labels) if labels is not None else {label: label for label in routes}
        unknown = [label for label in labels if label not in routes]
        if unknown:
            raise UserError(f"router {name!r}: labels {unknown} are not routes")
        self.routes = {label: LazyModel(ref) for label, ref in routes.items()}
        self.rules = tuple(rules)
        self.classifier = LazyModel(classifier) if classifier is not None else None
        slots = [self.routes[default], *(s for k, s in self.routes.items() if k != default)]
        super().__init__(
            name, [*slots, *([self.classifier] if self.classifier else [])], len(routes)
        )
        #: label -> the description the classifier is shown
        self.labels = labels
        self.default = default
        self.instructions = instructions
        self._cache: OrderedDict[str, _Choice] = OrderedDict()

    async def route(self, messages: Sequence[Message]) -> tuple[Model, tuple[RouteDecision, ...]]:
        model, decision, usage = await self._choose(messages)
        if usage.requests:
            decision = decision.model_copy(update={"usage": usage})
        inner, decisions = await model.route(messages)
        return inner, (decision, *decisions)

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        model, decision, usage = await self._choose(messages)
        async for event in model.request_stream(messages, params):
            if isinstance(event, ResponseDone):
                yield ResponseDone(with_decisions(event.response, [decision], usage))
            else:
                yield event

    async def _choose(self, messages: Sequence[Message]) -> tuple[Model, RouteDecision, Usage]:
        """The route's model, the decision, and the usage of classifying (if it was asked)."""
        text = last_user_text(messages)
        usage = Usage()
        choice: _Choice = (self.default, "default", "no rule matched")
        rule = next((r for r in self.rules if r.matches(text)), None)
        if rule is not None:
            choice = (rule.route, "rule", rule.describe())
        elif not text.strip():
            choice = (self.default, "default", "no user message to route by")
        elif self.classifier is not None:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                choice = cached
            else:
                choice, usage, keep = await self._classify(text)
                if keep:
                    self._cache[text] = choice
                    while len(self._cache) > CLASSIFICATION_CACHE_SIZE:
                        self._cache.popitem(last=False)
        label, kind, reason = choice
        model = self.routes[label].get()
        return model, decide(self.name, kind, model.name, reason), usage

    async def _classify(self, text: str) -> tuple[_Choice, Usage, bool]:
        """(label, kind, reason), the classifier's usage, and whether to cache the outcome."""
        assert self.classifier is not None
        classifier = self.classifier.get()
        lines = "\n".join(f"{label}: {about}" for label, about in self.labels.items())
        prompt = f"{self.instructions or _CLASSIFIER_PROMPT}\nLabels:\n{lines}"
        try:
            label, answer, response = await classify(classifier, prompt, text, list(self.labels))
        except UserError:
            raise
        except Exception as exc:  # a classifier that fails routes to the default
            why = f"classifier {classifier.name} failed: {describe_error(exc)}"
            return (self.default, "default", why), Usage(), False
        if label is None:
            why = f"classifier answered {answer.strip()[:80]!r}, not a label"
            return (self.default, "default", why), response.usage, True
        return (label, "classifier", f"classified as {label}"), response.usage, True


def check_rules(router: str, rules: Sequence[RouteRule], routes: Collection[str]) -> None:
    """A :class:`~shoal.exceptions.UserError` unless every rule of the router named
    ``router`` goes to one of ``routes`` and has a pattern (a valid regex) or a predicate."""
    for rule in rules:
        if rule.route not in routes:
            raise UserError(f"router {router!r}: a rule routes to unknown route {rule.route!r}")
        if rule.pattern is None and rule.when is None:
            raise UserError(f"router {router!r}: a rule needs a pattern or a predicate")
        if rule.pattern is not None:
            try:
                re.compile(rule.pattern)
            except re.error as exc:
                raise UserError(f"router {router!r}: bad pattern {rule.pattern!r}: {exc}") from None


async def classify(
    model: Model, prompt: str, text: str, labels: Sequence[str]
) -> tuple[str | None, str, ModelResponse]:
    """Ask ``model`` which of ``labels`` fits ``text`` (system message ``prompt``), as an
    enum-constrained answer at temperature 0: (the label it named, or None; its answer; the
    response). The model's errors propagate."""
    params = ModelRequestParameters(
        output_schema={"enum": list(labels)}, settings=_CLASSIFIER_SETTINGS
    )
    response = await model.request(
        [SystemMessage(content=prompt), UserMessage(content=text)], params
    )
    answer = response.text if response.text is not None else response.raw
    return read_label(answer, labels), answer, response


def read_label(answer: str, labels: Iterable[str]) -> str | None:
    """The label an answer names: a JSON string or a bare word, case-insensitive."""
    value: Any = answer.strip()
    with contextlib.suppress(ValueError):
        value = json.loads(value)
    if not isinstance(value, str):
        return None
    by_folded = {label.casefold(): label for label in labels}
    return by_folded.get(value.strip().rstrip(".").strip().casefold())


# -- FallbackModel ---------------------------------------------------------------------------


class FallbackModel(WrapperModel):
    """Asks ``models`` in order until one answers (see the module docstring)."""

    def __init__(
        self,
        models: Sequence[str | Model],
        *,
        timeout: float | None = None,
        on: tuple[type[BaseException], ...] = (ModelError, TimeoutError),
        name: str = "fallback",
    ) -> None:
        if not models:
            raise UserError(f"fallback {name!r}: give at least one model")
        if timeout is not None and timeout <= 0:
            raise UserError(f"fallback {name!r}: timeout must be positive")
        self.models = [LazyModel(ref) for ref in models]
        super().__init__(name, self.models, len(self.models))
        self.timeout = timeout
        self.on = on

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        decisions: list[RouteDecision] = []
        errors: list[tuple[str, BaseException]] = []
        for index, slot in enumerate(self.models):
            model = slot.get()
            deadline = None if self.timeout is None else _now() + self.timeout
            started = False
            final: ModelResponse | None = None
            events = aiter(model.request_stream(messages, params))
            try:
                while True:
                    try:
                        event = await self._next(events, deadline, model.name)
                    except StopAsyncIteration:
                        break
                    if isinstance(event, TextDelta):
                        started = True
                        yield event
                    else:
                        final = event.response
            except Exception as exc:
                if started or isinstance(exc, UserError) or not self._falls_back(exc):
                    raise
                errors.append((model.name, exc))
                if index + 1 < len(self.models):
                    following = self.models[index + 1].get()
                    why = f"{model.name} failed: {describe_error(exc)}"
                    decisions.append(decide(self.name, "fallback", following.name, why))
                continue
            finally:
                await aclose(events)
            if final is None:  # pragma: no cover - a backend bug
                raise RuntimeError(f"{model.name} ended its stream without a response")
            yield ResponseDone(with_decisions(final, decisions))
            return
        raise all_failed(errors, "model")

    def _falls_back(self, exc: Exception) -> bool:
        return isinstance(exc, (_FallbackTimeout, *self.on))

    async def _next(
        self, events: AsyncIterator[ModelStreamEvent], deadline: float | None, name: str
    ) -> ModelStreamEvent:
        """The next event, within the model's deadline (the wait only, not the caller's)."""
        if deadline is None:
            return await anext(events)
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                return await anext(events)
        except TimeoutError:
            if scope.expired():
                raise _FallbackTimeout(f"{name} did not answer within {self.timeout:g} s") from None
            raise


class _FallbackTimeout(ModelTimeoutError):
    """A fallback model's own timeout (always falls back, whatever ``on`` says)."""


def _now() -> float:
    return asyncio.get_running_loop().time()


# -- EscalatingModel -------------------------------------------------------------------------


class EscalatingModel(WrapperModel):
    """Cheap tiers first, the next tier when an answer is unusable (see the module docstring)."""

    def __init__(
        self,
        tiers: Sequence[str | Model],
        *,
        validator: Validator | None = None,
        attempts: int = 2,
        name: str = "escalation",
    ) -> None:
        if not tiers:
            raise UserError(f"escalation {name!r}: give at least one tier")
        if attempts < 1:
            raise UserError(f"escalation {name!r}: attempts must be at least 1")
        self.tiers = [LazyModel(ref) for ref in tiers]
        super().__init__(name, self.tiers, len(self.tiers))
        self.validator = validator
        self.attempts = attempts

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        decisions: list[RouteDecision] = []
        usage = Usage()
        for index, slot in enumerate(self.tiers[:-1]):
            model = slot.get()
            conversation = list(messages)
            reason = ""
            for _ in range(self.attempts):
                deltas, response = await _buffer(model, conversation, params)
                found = check_response(response, params) or await self._validate(response, messages)
                if found is None:
                    for delta in deltas:
                        yield delta
                    yield ResponseDone(with_decisions(response, decisions, usage))
                    return
                usage = usage + response.usage
                reason = found
                conversation += [
                    AssistantMessage(content=_failed_output(response)),
                    UserMessage(content=f"Error: {reason}. Answer again."),
                ]
            following = self.tiers[index + 1].get()
            why = f"{model.name}: {reason}"
            decisions.append(decide(self.name, "escalation", following.name, why))
        last = self.tiers[-1].get()
        async for event in last.request_stream(messages, params):
            if isinstance(event, ResponseDone):
                yield ResponseDone(with_decisions(event.response, decisions, usage))
            else:
                yield event

    async def _validate(self, response: ModelResponse, messages: Sequence[Message]) -> str | None:
        if self.validator is None:
            return None
        verdict = self.validator(response, messages)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return verdict


async def _buffer(
    model: Model, messages: Sequence[Message], params: ModelRequestParameters
) -> tuple[list[TextDelta], ModelResponse]:
    """A whole streamed response, its text pieces held back."""
    deltas: list[TextDelta] = []
    final: ModelResponse | None = None
    async for event in model.request_stream(messages, params):
        if isinstance(event, TextDelta):
            deltas.append(event)
        else:
            final = event.response
    if final is None:  # pragma: no cover - a backend bug
        raise RuntimeError(f"{model.name} ended its stream without a response")
    return deltas, final


def _failed_output(response: ModelResponse) -> str:
    """What the model said, as text (calls as Hermes blocks when it gave no raw text)."""
    if response.raw:
        return response.raw
    blocks = [
        "<tool_call>\n"
        + json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False)
        + "\n</tool_call>"
        for c in response.tool_calls
    ]
    return "\n".join([*([response.text] if response.text else []), *blocks])
