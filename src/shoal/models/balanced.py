"""Load balancing over several endpoints that serve the same model.

:class:`BalancedModel` is a :class:`~shoal.models.base.Model` over endpoint references
(``str`` or ``Model``, resolved with :func:`~shoal.models.registry.resolve_model` on the first
request). Each request goes to one endpoint:

- **Choice**: among the healthy endpoints, the one with the fewest requests in flight
  (outstanding in this process); ties go round robin. The choice is a ``balance``
  :class:`~shoal.models.base.RouteDecision` naming the endpoint (``name#n``, its position
  from 1, when two endpoints share a name), in ``ModelResponse.decisions`` and the metrics.
- **Failover**: an endpoint that raises :class:`~shoal.exceptions.RemoteModelError` with no
  status (refused, reset, timed out) or a 5xx status is marked failed for
  ``failure_cooldown`` seconds and the request goes to the next endpoint (a ``balance``
  decision saying why), as long as no text has been streamed yet. A 4xx status, or any other
  error, is the caller's business and propagates. When every endpoint failed, the last error
  is raised with every endpoint's error in its message.
- **Health**: an endpoint with a ``health()`` coroutine (``OpenAICompatModel`` has one; the
  attribute is looked up, not required) is checked at most every ``health_interval``
  seconds, in the request path (no background task or thread): a request that finds checks
  due runs them concurrently first, and requests arriving meanwhile go by the last results.
  A failed endpoint is checked again when its cooldown is over. An endpoint answering
  ``False``, raising, or taking longer than :data:`HEALTH_TIMEOUT` is left out until the
  next check. When no endpoint is usable, the request tries them anyway.

The profile, token counts and context length are the first endpoint's (the endpoints serve
one model).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from shoal.exceptions import RemoteModelError, UserError
from shoal.messages import Message
from shoal.models.base import (
    Model,
    ModelRequestParameters,
    ModelResponse,
    ModelStreamEvent,
    ResponseDone,
    RouteDecision,
    TextDelta,
)
from shoal.models.routing import (
    LazyModel,
    WrapperModel,
    aclose,
    all_failed,
    decide,
    describe_error,
    with_decisions,
)

__all__ = ["HEALTH_TIMEOUT", "BalancedModel"]

#: seconds a health check may take before the endpoint counts as unhealthy
HEALTH_TIMEOUT = 5.0


@dataclass
class _Endpoint:
    """What the balancer knows about one endpoint."""

    slot: LazyModel
    label: str = ""
    outstanding: int = 0
    #: the endpoint's last health check said yes (or it has no ``health()``)
    healthy: bool = True
    #: when the last health check started (monotonic seconds)
    checked_at: float = -math.inf
    #: failed by a request: left out until then (monotonic seconds)
    failed_until: float = -math.inf

    @property
    def model(self) -> Model:
        return self.slot.get()

    def usable(self, now: float) -> bool:
        return self.healthy and now >= self.failed_until


class BalancedModel(WrapperModel):
    """Spreads requests over endpoints of one model (see the module docstring)."""

    def __init__(
        self,
        endpoints: Sequence[str | Model],
        *,
        name: str = "balanced",
        health_interval: float = 10.0,
        failure_cooldown: float = 5.0,
    ) -> None:
        if not endpoints:
            raise UserError(f"balanced model {name!r}: give at least one endpoint")
        if health_interval < 0 or failure_cooldown < 0:
            raise UserError(
                f"balanced model {name!r}: health_interval and failure_cooldown cannot be negative"
            )
        self.health_interval = health_interval
        self.failure_cooldown = failure_cooldown
        self.endpoints = [_Endpoint(LazyModel(ref)) for ref in endpoints]
        super().__init__(name, [e.slot for e in self.endpoints], 1)
        self._next = 0  # round-robin position among tied endpoints
        self._labelled = False

    def outstanding(self) -> dict[str, int]:
        """Requests in flight per endpoint label."""
        self._label_endpoints()
        return {e.label: e.outstanding for e in self.endpoints}

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        self._label_endpoints()
        await self._check_health()
        decisions: list[RouteDecision] = []
        errors: list[tuple[str, BaseException]] = []
        tried: set[int] = set()
        reason = ""
        while True:
            picked = self._pick(tried)
            if picked is None:
                raise all_failed(errors, "endpoint")
            index, why = picked
            tried.add(index)
            endpoint = self.endpoints[index]
            decisions.append(decide(self.name, "balance", endpoint.label, reason or why))
            endpoint.outstanding += 1
            started = False
            final: ModelResponse | None = None
            events = aiter(endpoint.model.request_stream(messages, params))
            try:
                async for event in events:
                    if isinstance(event, TextDelta):
                        started = True
                        yield event
                    else:
                        final = event.response
            except RemoteModelError as exc:
                if started or not _fails_over(exc):
                    raise
                endpoint.failed_until = time.monotonic() + self.failure_cooldown
                endpoint.checked_at = -math.inf  # checked again once the cooldown is over
                errors.append((endpoint.label, exc))
                reason = f"failover: {endpoint.label} failed: {describe_error(exc)}"
                continue
            finally:
                endpoint.outstanding -= 1
                await aclose(events)
            if final is None:  # pragma: no cover - a backend bug
                raise RuntimeError(f"{endpoint.label} ended its stream without a response")
            endpoint.healthy, endpoint.failed_until = True, -math.inf
            yield ResponseDone(with_decisions(final, decisions))
            return

    def _label_endpoints(self) -> None:
        """Resolve the endpoints and name them for decisions (``name#n`` when names repeat)."""
        if self._labelled:
            return
        names = [e.model.name for e in self.endpoints]
        for position, (endpoint, name) in enumerate(zip(self.endpoints, names, strict=True)):
            endpoint.label = name if names.count(name) == 1 else f"{name}#{position + 1}"
        self._labelled = True

    def _pick(self, tried: set[int]) -> tuple[int, str] | None:
        """The endpoint for the next try and why, or None when every one was tried."""
        now = time.monotonic()
        untried = [i for i in range(len(self.endpoints)) if i not in tried]
        if not untried:
            return None
        pool = [i for i in untried if self.endpoints[i].usable(now)]
        note = ""
        if not pool:
            pool, note = untried, "; no endpoint is usable, trying anyway"
        fewest = min(self.endpoints[i].outstanding for i in pool)
        tied = [i for i in pool if self.endpoints[i].outstanding == fewest]
        count = len(self.endpoints)
        chosen = min(tied, key=lambda i: (i - self._next) % count)
        self._next = (chosen + 1) % count
        usable = sum(self.endpoints[i].usable(now) for i in range(count))
        return chosen, f"{fewest} in flight; {usable} of {count} endpoints usable{note}"

    async def _check_health(self) -> None:
        """Run the health checks that are due (see the module docstring)."""
        now = time.monotonic()
        due: list[tuple[_Endpoint, Callable[[], Awaitable[bool]]]] = []
        for endpoint in self.endpoints:
            health = getattr(endpoint.model, "health", None)
            if not callable(health) or now < endpoint.failed_until:
                continue
            if now - endpoint.checked_at >= self.health_interval:
                endpoint.checked_at = now  # requests arriving meanwhile do not check again
                due.append((endpoint, health))
        if not due:
            return
        results = await asyncio.gather(*(_healthy(health) for _, health in due))
        for (endpoint, _), healthy in zip(due, results, strict=True):
            endpoint.healthy = healthy


async def _healthy(health: Callable[[], Awaitable[bool]]) -> bool:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            return bool(await health())
    except Exception:  # an endpoint that cannot say it is healthy is not
        return False


def _fails_over(exc: RemoteModelError) -> bool:
    return exc.status is None or exc.status >= 500
