"""The :class:`Router`: sends each message to one member (an agent or a flow) and runs it.

The choice is made in code where it can be: the first :class:`~shoal.models.RouteRule` whose
pattern (or predicate) matches the message decides. Otherwise a *classifier* model is asked
for one member name, as a JSON-schema ``{"enum": [names]}`` answer at temperature 0 (on the
embedded engine the grammar makes any other answer impossible); its system prompt lists each
member with its one-line description. An answer that names no member, or a classifier that
fails, sends the message to ``default``; with no classifier, every message no rule matched
goes to ``default``.

:meth:`Router.choose` only decides (the benchmark uses it). :meth:`Router.run` decides,
records an ``agent.route`` event (``router``, ``target``, ``by``, ``reason``) and runs the
chosen member on the same thread, so a conversation continues where it is. Members that share
the thread are moved to the router's store (copies; see :func:`~shoal.orchestration.as_flow`).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from shoal.agent import Agent
from shoal.exceptions import ApprovalError, ModelBehaviorError, UserError
from shoal.messages import (
    Message,
    SystemMessage,
    ToolCall,
    Usage,
    UserMessage,
    last_user_text,
)
from shoal.models import Model, ModelRequestParameters, RouteRule, resolve_model
from shoal.observability import RunRecorder
from shoal.orchestration.base import (
    Flow,
    FlowBase,
    FlowResult,
    RouteChoice,
    bind_member,
    check_name,
    describe,
    first_store,
    preview,
)
from shoal.orchestration.running import (
    FlowRun,
    Outcome,
    calls_to_json,
    paused_member,
    read_state,
    write_state,
)
from shoal.settings import ModelSettings
from shoal.threads import ThreadStore

__all__ = ["Router"]

_PROMPT = "Choose who should answer the user's message. Answer with one name only."
_SETTINGS = ModelSettings(temperature=0.0, max_tokens=16)


class Router(FlowBase):
    """Rules first, then an enum-constrained classifier, else ``default`` (module docstring)."""

    def __init__(
        self,
        name: str,
        routes: Mapping[str, Agent[Any] | Flow],
        *,
        rules: Sequence[RouteRule] = (),
        classifier: str | Model | None = None,
        descriptions: Mapping[str, str] | None = None,
        default: str | None = None,
        instructions: str | None = None,
        store: ThreadStore | None = None,
        description: str = "",
    ) -> None:
        check_name(name, "router")
        if not routes:
            raise UserError(f"router {name!r}: give at least one route")
        for label in routes:
            check_name(label, f"router {name!r}: route")
        if default is not None and default not in routes:
            raise UserError(f"router {name!r}: default {default!r} is not one of its routes")
        if classifier is None and default is None:
            raise UserError(
                f"router {name!r}: give a classifier or a default (where a message that no "
                "rule matches goes)"
            )
        for rule in rules:
            if rule.route not in routes:
                raise UserError(f"router {name!r}: a rule routes to unknown route {rule.route!r}")
            if rule.pattern is None and rule.when is None:
                raise UserError(f"router {name!r}: a rule needs a pattern or a predicate")
            if rule.pattern is not None:
                try:
                    re.compile(rule.pattern)
                except re.error as exc:
                    raise UserError(
                        f"router {name!r}: bad pattern {rule.pattern!r}: {exc}"
                    ) from None
        given = dict(descriptions or {})
        unknown = [label for label in given if label not in routes]
        if unknown:
            raise UserError(f"router {name!r}: descriptions of unknown routes {unknown}")
        self.name = name
        self.description = description
        self.store = store if store is not None else first_store(list(routes.values()))
        #: route name -> the member, as a flow on the router's store
        self.routes: dict[str, Flow] = {
            label: bind_member(member, self.store) for label, member in routes.items()
        }
        #: route name -> the line the classifier is shown
        self.descriptions = {
            label: given.get(label) or describe(member) for label, member in routes.items()
        }
        self.rules = tuple(rules)
        self.default = default
        self.instructions = instructions
        self._classifier_ref = classifier
        self._classifier: Model | None = classifier if isinstance(classifier, Model) else None

    @property
    def classifier(self) -> Model | None:
        """The classifier model, resolved from its reference on first use."""
        if self._classifier is None and self._classifier_ref is not None:
            self._classifier = resolve_model(self._classifier_ref)
        return self._classifier

    def rebind_members(self, store: ThreadStore) -> None:
        self.routes = {label: bind_member(member, store) for label, member in self.routes.items()}

    # -- deciding ---------------------------------------------------------------------------

    async def choose(self, text: str) -> RouteChoice:
        """Where ``text`` goes, decided by rule, classifier or default; nothing runs."""
        choice, _ = await self._choose(text, None)
        return choice

    async def _choose(self, text: str, recorder: RunRecorder | None) -> tuple[RouteChoice, Usage]:
        rule = next((r for r in self.rules if r.matches(text)), None)
        if rule is not None:
            return RouteChoice(rule.route, "rule", rule.describe()), Usage()
        if self.classifier is None:
            return self._fallback("no rule matched"), Usage()
        if not text.strip() and self.default is not None:
            return RouteChoice(self.default, "default", "no message to route by"), Usage()
        return await self._classify(self.classifier, text, recorder)

    def _fallback(self, why: str, error: BaseException | None = None) -> RouteChoice:
        if self.default is None:
            raise ModelBehaviorError(f"router {self.name!r}: {why}, and it has no default") from (
                error
            )
        return RouteChoice(self.default, "default", why)

    async def _classify(
        self, model: Model, text: str, recorder: RunRecorder | None
    ) -> tuple[RouteChoice, Usage]:
        lines = "\n".join(f"- {label}: {about}" for label, about in self.descriptions.items())
        prompt = f"{self.instructions or _PROMPT}\nChoices:\n{lines}"
        labels = list(self.routes)
        params = ModelRequestParameters(output_schema={"enum": labels}, settings=_SETTINGS)
        messages: list[Message] = [SystemMessage(content=prompt), UserMessage(content=text)]
        span = (
            recorder.span("model.request", model=model.name, step=0, tool_choice="none", tools=[])
            if recorder is not None
            else contextlib.nullcontext()
        )
        try:
            with span as current:
                response = await model.request(messages, params)
                if current is not None:
                    current.update(
                        prompt_tokens=response.usage.prompt_tokens,
                        completion_tokens=response.usage.completion_tokens,
                        finish_reason=response.finish_reason,
                        text=(response.text or "")[:200],
                    )
        except UserError:
            raise
        except Exception as exc:  # a failing classifier sends the message to the default
            detail = str(exc).strip() or type(exc).__name__
            return self._fallback(f"classifier {model.name} failed: {detail[:200]}", exc), Usage()
        answer = response.text if response.text is not None else response.raw
        label = read_label(answer, labels)
        if label is None:
            why = f"classifier answered {answer.strip()[:80]!r}, not a route"
            return self._fallback(why), response.usage
        return RouteChoice(label, "classifier", f"classified as {label}"), response.usage

    # -- running ----------------------------------------------------------------------------

    async def run(
        self, message: str | None, *, thread: str | None = None, role: str | None = None
    ) -> FlowResult:
        """Choose a member for ``message`` (or, with None, the thread's last user message) and
        run it on ``thread``."""
        text = message or ""
        if thread is not None:
            await self.store.get_thread(thread)
            if await read_state(self.store, thread, self.name) is not None:
                raise ApprovalError(
                    f"thread {thread} has a run waiting for approval: resume it first"
                )
            if message is None:
                text = last_user_text(await self.store.get_messages(thread))
        run = FlowRun(self, thread)

        async def body() -> Outcome:
            choice, usage = await self._choose(text, run.recorder)
            run.usage = run.usage + usage
            run.recorder.event(
                "agent.route",
                router=self.name,
                target=choice.target,
                by=choice.by,
                reason=choice.reason,
            )
            member = self.routes[choice.target]
            result = run.add(await member.run(message, thread=thread, role=role))
            return await self._passed_on(run, choice, result)

        return await run.execute(body, system=self.name, entry=None, message=preview(text))

    async def resume(
        self,
        thread: str,
        *,
        approve: bool | Mapping[str, bool] = True,
        reason: str = "",
        role: str | None = None,
    ) -> FlowResult:
        """Go on with the member that paused for approval in ``thread``."""
        state = await read_state(self.store, thread, self.name)
        if state is not None:
            target = str(state.get("member"))
            route = state.get("route") or {}
            choice = RouteChoice(
                target, route.get("by", "default"), str(route.get("reason", "resumed"))
            )
        else:  # paused elsewhere (a member run on its own): find the agent that waits
            agent = await paused_member(self.store, thread)
            target = agent if agent in self.routes else ""
            choice = RouteChoice(target, "default", "resumed")
        if target not in self.routes:
            raise ApprovalError(f"router {self.name!r}: nothing of it waits in thread {thread}")
        await write_state(self.store, thread, self.name, None)
        run = FlowRun(self, thread)

        async def body() -> Outcome:
            member = self.routes[target]
            resumed = await member.resume(thread, approve=approve, reason=reason, role=role)
            return await self._passed_on(run, choice, run.add(resumed))

        return await run.execute(body, system=self.name, entry=target, message=None)

    async def pending_approvals(self, thread: str) -> list[ToolCall]:
        """The calls of the member that waits for approval in ``thread``."""
        state = await read_state(self.store, thread, self.name)
        member = self.routes.get(str(state.get("member"))) if state else None
        if member is None:
            agent = await paused_member(self.store, thread)
            member = self.routes.get(agent or "")
        return await member.pending_approvals(thread) if member is not None else []

    async def _passed_on(self, run: FlowRun, choice: RouteChoice, result: FlowResult) -> Outcome:
        """The member's result as the router's; a pause is recorded in the member's thread."""
        if run.thread_id is None and result.thread_id is not None:
            run.use_thread(result.thread_id)
        if result.stop_reason == "approval" and run.thread_id is not None:
            state = {
                "member": choice.target,
                "route": {"by": choice.by, "reason": choice.reason},
                "waiting": calls_to_json(result.pending_approvals),
            }
            await write_state(self.store, run.thread_id, self.name, state)
        return Outcome.of(result, route=choice)


def read_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an answer names: a JSON string or a bare word, case-insensitive."""
    value: Any = answer.strip()
    with contextlib.suppress(ValueError):
        value = json.loads(value)
    if not isinstance(value, str):
        return None
    by_folded = {label.casefold(): label for label in labels}
    return by_folded.get(value.strip().rstrip(".").strip().casefold())
