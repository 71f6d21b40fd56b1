"""BalancedModel: least-outstanding choice, round robin, failover, cooldown and health checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from shoal.exceptions import ModelError, RemoteModelError, UserError
from shoal.messages import Message, UserMessage
from shoal.models import (
    FunctionModel,
    Model,
    ModelProfile,
    ModelRequestParameters,
    ModelResponse,
    ResponseDone,
    TextDelta,
)
from shoal.models import balanced as balanced_module
from shoal.models import registry as model_registry
from shoal.models.balanced import BalancedModel
from shoal.models.base import ModelStreamEvent
from shoal.observability import LIBRARY_REGISTRY

Action = str | BaseException | asyncio.Event


class Endpoint(Model):
    """An endpoint answering ``"<name> says hi"``; ``script`` gives, per request, an error to
    raise (before or after a first piece of text) or a gate to wait for."""

    def __init__(self, name: str, *script: Action, context: int = 4096) -> None:
        self.name = name
        self.profile = ModelProfile(family="test", context_length=context)
        self.script = list(script)
        self.requests = 0
        self.in_flight = 0

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        self.requests += 1
        self.in_flight += 1
        try:
            action = self.script.pop(0) if self.script else None
            if isinstance(action, asyncio.Event):
                await action.wait()
            elif isinstance(action, BaseException):
                raise action
            elif action == "fail-after-text":
                yield TextDelta("partial")
                raise RemoteModelError("reset", status=None)
            text = f"{self.name} says hi"
            yield TextDelta(text)
            yield ResponseDone(ModelResponse(text=text, raw=text, model_name=self.name))
        finally:
            self.in_flight -= 1


class Checked(Endpoint):
    """An endpoint with a ``health()`` coroutine answering ``answers`` in turn."""

    def __init__(self, name: str, *answers: bool | BaseException | float) -> None:
        super().__init__(name)
        self.answers = list(answers)
        self.checks = 0

    async def health(self) -> bool:
        self.checks += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, float):
            await asyncio.sleep(answer)
            return True
        return answer


def user(text: str = "hi") -> list[Message]:
    return [UserMessage(content=text)]


async def ask(model: Model) -> ModelResponse:
    return await model.request(user(), ModelRequestParameters())


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def counted(router: str, model: str) -> float:
    labels = {"router": router, "kind": "balance", "model": model}
    return LIBRARY_REGISTRY.get_sample_value("shoal_routing_decisions_total", labels) or 0.0


# -- choosing an endpoint --------------------------------------------------------------------


async def test_requests_in_turn_go_round_robin() -> None:
    a, b, c = Endpoint("a"), Endpoint("b"), Endpoint("c")
    model = BalancedModel([a, b, c], name="pool")
    before = counted("pool", "b")

    answered = [(await ask(model)).model_name for _ in range(5)]

    assert answered == ["a", "b", "c", "a", "b"]
    assert counted("pool", "b") == before + 2


async def test_the_endpoint_with_fewest_requests_in_flight_is_chosen() -> None:
    gates = {name: asyncio.Event() for name in "abc"}
    a = Endpoint("a", gates["a"], gates["a"], gates["a"])
    b = Endpoint("b", gates["b"], gates["b"])
    c = Endpoint("c", gates["c"], gates["c"])
    model = BalancedModel([a, b, c])

    first = asyncio.create_task(ask(model))
    await until(lambda: a.in_flight == 1)
    second = asyncio.create_task(ask(model))
    await until(lambda: b.in_flight == 1)
    third = asyncio.create_task(ask(model))
    await until(lambda: c.in_flight == 1)
    # all busy with one each: round robin goes on with a
    fourth = asyncio.create_task(ask(model))
    await until(lambda: a.in_flight == 2)
    assert model.outstanding() == {"a": 2, "b": 1, "c": 1}

    # c's request finishes: c is now the least busy, though round robin would say b
    gates["c"].set()
    assert (await third).model_name == "c"
    fifth = asyncio.create_task(ask(model))
    await until(lambda: c.requests == 2)
    assert (a.requests, b.requests, c.requests) == (2, 1, 2)

    for gate in gates.values():
        gate.set()
    results = await asyncio.gather(first, second, fourth, fifth)
    assert [r.model_name for r in results] == ["a", "b", "a", "c"]
    assert model.outstanding() == {"a": 0, "b": 0, "c": 0}


async def test_many_concurrent_requests_spread_evenly() -> None:
    gate = asyncio.Event()
    endpoints = [Endpoint(name, *[gate] * 4) for name in ("a", "b", "c")]
    model = BalancedModel(endpoints)

    tasks = [asyncio.create_task(ask(model)) for _ in range(12)]
    await until(lambda: sum(e.in_flight for e in endpoints) == 12)
    assert [e.in_flight for e in endpoints] == [4, 4, 4]
    gate.set()
    await asyncio.gather(*tasks)

    assert [e.requests for e in endpoints] == [4, 4, 4]


async def test_the_decision_names_the_endpoint_and_how_busy_it_was() -> None:
    response = await ask(BalancedModel([Endpoint("a"), Endpoint("b")], name="pool"))

    (decision,) = response.decisions
    assert (decision.router, decision.kind, decision.model) == ("pool", "balance", "a")
    assert decision.reason == "0 in flight; 2 of 2 endpoints usable"


async def test_endpoints_with_the_same_name_are_told_apart() -> None:
    model = BalancedModel([Endpoint("vllm:qwen"), Endpoint("vllm:qwen"), Endpoint("other")])

    names = [(await ask(model)).decisions[0].model for _ in range(3)]

    assert names == ["vllm:qwen#1", "vllm:qwen#2", "other"]


async def test_the_stream_passes_through() -> None:
    events = [
        event
        async for event in BalancedModel([Endpoint("a")]).request_stream(
            user(), ModelRequestParameters()
        )
    ]

    assert events[0] == TextDelta("a says hi")
    assert isinstance(events[-1], ResponseDone)


async def test_a_stream_closed_early_frees_its_slot() -> None:
    a = Endpoint("a")
    model = BalancedModel([a])
    stream = model.request_stream(user(), ModelRequestParameters())

    assert isinstance(stream, AsyncGenerator)
    assert await anext(stream) == TextDelta("a says hi")
    assert model.outstanding() == {"a": 1}
    await stream.aclose()

    assert model.outstanding() == {"a": 0}
    assert a.in_flight == 0


# -- failover --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [None, 500, 502, 503])
async def test_a_server_failure_fails_over_to_the_next_endpoint(status: int | None) -> None:
    a = Endpoint("a", RemoteModelError(f"HTTP {status}", status=status))
    b = Endpoint("b")
    model = BalancedModel([a, b], failure_cooldown=60)

    response = await ask(model)

    assert response.model_name == "b"
    assert [d.model for d in response.decisions] == ["a", "b"]
    assert response.decisions[1].reason == f"failover: a failed: HTTP {status}"
    # a stays out while it cools down
    assert [(await ask(model)).model_name for _ in range(3)] == ["b", "b", "b"]
    assert a.requests == 1


async def test_a_failed_endpoint_is_used_again_after_its_cooldown() -> None:
    a = Endpoint("a", RemoteModelError("down", status=None))
    b = Endpoint("b")
    model = BalancedModel([a, b], failure_cooldown=0)

    await ask(model)
    answered = [(await ask(model)).model_name for _ in range(2)]

    assert answered == ["a", "b"]
    assert a.requests == 2


async def test_a_client_error_propagates_without_failover() -> None:
    a = Endpoint("a", RemoteModelError("HTTP 400: bad request", status=400))
    b = Endpoint("b")

    with pytest.raises(RemoteModelError, match="bad request"):
        await ask(BalancedModel([a, b]))
    assert b.requests == 0


async def test_other_errors_propagate_without_failover() -> None:
    a = Endpoint("a", ModelError("engine bug"))
    b = Endpoint("b")
    model = BalancedModel([a, b])

    with pytest.raises(ModelError, match="engine bug"):
        await ask(model)
    assert b.requests == 0
    assert model.outstanding() == {"a": 0, "b": 0}


async def test_no_failover_once_text_was_streamed() -> None:
    a = Endpoint("a", "fail-after-text")
    b = Endpoint("b")
    seen: list[ModelStreamEvent] = []

    async def consume() -> None:
        async for event in BalancedModel([a, b]).request_stream(user(), ModelRequestParameters()):
            seen.append(event)

    with pytest.raises(RemoteModelError, match="reset"):
        await consume()
    assert seen == [TextDelta("partial")]
    assert b.requests == 0


async def test_when_every_endpoint_fails_the_last_error_lists_them_all() -> None:
    a = Endpoint("a", RemoteModelError("refused", status=None, url="http://a/v1"))
    b = Endpoint("b", RemoteModelError("HTTP 503", status=503, url="http://b/v1"))

    with pytest.raises(RemoteModelError) as caught:
        await ask(BalancedModel([a, b]))

    assert str(caught.value) == "every endpoint failed (a: refused; b: HTTP 503)"
    assert caught.value.status == 503
    assert caught.value.url == "http://b/v1"


async def test_when_no_endpoint_is_usable_they_are_tried_anyway() -> None:
    a = Endpoint("a", RemoteModelError("down", status=None))
    b = Endpoint("b", RemoteModelError("down", status=None))
    model = BalancedModel([a, b], failure_cooldown=60)
    with pytest.raises(RemoteModelError):
        await ask(model)

    response = await ask(model)  # both cooling down, both answer again

    assert response.model_name == "a"
    assert response.decisions[0].reason.endswith("no endpoint is usable, trying anyway")
    # and the one that answered is usable again
    again = await ask(model)
    assert again.decisions[0].reason == "0 in flight; 1 of 2 endpoints usable"


# -- health checks ---------------------------------------------------------------------------


async def test_an_unhealthy_endpoint_is_left_out() -> None:
    a, b = Checked("a", False), Checked("b", True)
    model = BalancedModel([a, b], health_interval=3600)

    answered = [(await ask(model)).model_name for _ in range(3)]

    assert answered == ["b", "b", "b"]
    assert a.requests == 0


async def test_health_is_checked_at_most_once_per_interval() -> None:
    a, b = Checked("a", True), Checked("b", True)
    model = BalancedModel([a, b], health_interval=3600)

    for _ in range(4):
        await ask(model)

    assert (a.checks, b.checks) == (1, 1)


async def test_health_is_checked_again_when_due() -> None:
    a, b = Checked("a", False, True), Checked("b", True)
    model = BalancedModel([a, b], health_interval=0)

    first = await ask(model)  # a says no
    second = await ask(model)  # a says yes again

    assert first.model_name == "b"
    assert second.model_name == "a"
    assert (a.checks, b.checks) == (2, 2)


@pytest.mark.parametrize("answer", [ModelError("GET /models: 500"), OSError("refused")])
async def test_a_health_check_that_raises_means_unhealthy(answer: BaseException) -> None:
    a, b = Checked("a", answer), Checked("b", True)

    response = await ask(BalancedModel([a, b]))

    assert response.model_name == "b"


async def test_a_health_check_that_hangs_means_unhealthy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(balanced_module, "HEALTH_TIMEOUT", 0.05)
    a, b = Checked("a", 30.0), Checked("b", True)

    response = await ask(BalancedModel([a, b]))

    assert response.model_name == "b"


async def test_concurrent_requests_share_one_health_check() -> None:
    a, b = Checked("a", 0.01), Checked("b", True)
    model = BalancedModel([a, b], health_interval=3600)

    await asyncio.gather(*(ask(model) for _ in range(5)))

    assert (a.checks, b.checks) == (1, 1)


async def test_a_failed_endpoint_is_health_checked_after_its_cooldown() -> None:
    a = Checked("a", True)
    a.script = [RemoteModelError("down", status=None)]
    b = Checked("b", True)
    model = BalancedModel([a, b], health_interval=3600, failure_cooldown=0)

    await ask(model)  # both checked; a fails, b answers
    await ask(model)  # a's cooldown is over: checked again before use

    assert (a.checks, b.checks) == (2, 1)


async def test_endpoints_without_health_are_not_checked() -> None:
    plain, checked = Endpoint("plain"), Checked("checked", True)

    await ask(BalancedModel([plain, checked]))

    assert checked.checks == 1
    assert not hasattr(plain, "health")


# -- the rest of the Model interface ---------------------------------------------------------


class Lifecycle(Endpoint):
    def __init__(self, name: str, context: int) -> None:
        super().__init__(name, context=context)
        self.events: list[str] = []

    async def prepare(self) -> None:
        self.events.append("prepare")

    async def close(self) -> None:
        self.events.append("close")

    def count_tokens(self, messages: Sequence[Message], params: ModelRequestParameters) -> int:
        return 7


async def test_profile_context_and_lifecycle() -> None:
    first, second = Lifecycle("a", 8192), Lifecycle("b", 4096)
    model = BalancedModel([first, second])

    assert model.profile is first.profile
    assert model.context_length == 8192
    assert model.count_tokens(user(), ModelRequestParameters()) == 7
    assert await model.route(user()) == (model, ())
    await model.prepare()
    await model.close()
    assert first.events == second.events == ["prepare", "close"]


async def test_endpoint_references_are_resolved_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Any] = []

    def resolve(reference: str | Model) -> Model:
        seen.append(reference)
        assert isinstance(reference, str)
        return FunctionModel(lambda m, p: "ok", name=reference)

    monkeypatch.setattr(model_registry, "resolve_model", resolve)
    model = BalancedModel(["vllm:http://a/v1#m", "vllm:http://b/v1#m"])
    await model.close()
    assert seen == []

    response = await ask(model)

    assert response.model_name == "vllm:http://a/v1#m"
    assert seen == ["vllm:http://a/v1#m", "vllm:http://b/v1#m"]


@pytest.mark.parametrize(
    "options",
    [{"endpoints": []}, {"health_interval": -1}, {"failure_cooldown": -1}],
)
def test_configuration_errors(options: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"endpoints": ["a"], **options}

    with pytest.raises(UserError):
        BalancedModel(**arguments)
