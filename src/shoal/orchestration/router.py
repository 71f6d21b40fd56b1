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
from collections.abc import Mapping, Sequence
from typing import Any

from shoal.agent import Agent, calls_to_json
from shoal.exceptions import ApprovalError, ModelBehaviorError, UserError
from shoal.messages import ToolCall, Usage, last_user_text
from shoal.models import Model, RouteRule, resolve_model
from shoal.models.routing import check_rules, classify
from shoal.observability import RunRecorder
from shoal.orchestration.base import (
    Flow,
    FlowBase,
    FlowResult,
    Resumption,
    RouteChoice,
    bind_member,
    check_name,
    first_store,
    member_descriptions,
)
from shoal.orchestration.running import (
    FlowRun,
    Outcome,
    paused_member,
    read_state,
    write_state,
)
from shoal.threads import ThreadStore

__all__ = ["Router"]

_PROMPT = "Choose who should answer the user's message. Answer with one name only."


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
        check_rules(name, rules, routes)
        about = member_descriptions(f"router {name!r}", "routes", routes, descriptions)
        self.name = name
        self.description = description
        self.store = store if store is not None else first_store(list(routes.values()))
        #: route name -> the member, as a flow on the router's store
        self.routes: dict[str, Flow] = {
            label: bind_member(member, self.store) for label, member in routes.items()
        }
        #: route name -> the line the classifier is shown
        self.descriptions = about
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
        span = (
            recorder.span("model.request", model=model.name, step=0, tool_choice="none", tools=[])
            if recorder is not None
            else contextlib.nullcontext()
        )
        try:
            with span as current:
                label, answer, response = await classify(model, prompt, text, list(self.routes))
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

        return await run.execute(body, entry=None, message=text)

    async def _resume(self, thread: str, decision: Resumption) -> FlowResult:
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
            resumed = await decision.of(self.routes[target], thread)()
            return await self._passed_on(run, choice, run.add(resumed))

        return await run.execute(body, entry=target, message=None)

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
