"""ResidencyManager with fake residents and a fake clock; the residency settings."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from shoal.exceptions import MemoryBudgetError, ModelLoadError, UserError
from shoal.models import (
    FunctionModel,
    ResidencyManager,
    ResidencySettings,
    Resident,
    TestModel,
    default_residency,
    residency_settings,
    set_default_residency,
)
from shoal.models.residency import (
    UNLOAD_RETRY_S,
    format_duration,
    parse_keep_alive,
    parse_max_loaded_models,
    parse_max_memory,
)

MB = 2**20
Event = tuple[str, str, str]


class FakeResident:
    """A model that loads and unloads instantly (or when ``gate`` opens), ``size_mb`` big."""

    def __init__(self, name: str, size_mb: int = 100, *, measurable: bool = True) -> None:
        self.name = name
        self.size = size_mb * MB
        self.measurable = measurable
        self.loaded = False
        self.prepares = 0
        self.unloads = 0
        self.fail_load: str | None = None
        self.fail_unload = False
        self.gate: asyncio.Event | None = None

    def memory_bytes(self) -> int | None:
        return self.size if self.loaded and self.measurable else None

    def estimated_bytes(self) -> int:
        return self.size

    async def prepare(self) -> None:
        if self.loaded:
            return
        self.prepares += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_load:
            raise ModelLoadError(self.fail_load)
        self.loaded = True

    async def unload(self) -> None:
        if self.fail_unload:
            raise OSError("stuck")
        self.unloads += 1
        self.loaded = False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def manager(
    *,
    memory_mb: int | None = None,
    models: int | None = None,
    keep_alive: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[ResidencyManager, list[Event]]:
    events: list[Event] = []
    m = ResidencyManager(
        None if memory_mb is None else memory_mb * MB,
        models,
        keep_alive,
        on_event=lambda kind, model, reason: events.append((kind, model.name, reason)),
        clock=clock,
    )
    return m, events


async def use(m: ResidencyManager, *models: FakeResident) -> None:
    for model in models:
        async with m.use(model):
            assert model.loaded


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not become true in time"
        await asyncio.sleep(0.01)


def test_residents_and_models_that_are_not() -> None:
    assert isinstance(FakeResident("a"), Resident)
    assert not isinstance(TestModel(), Resident)
    assert not isinstance(FunctionModel(lambda m, p: "x"), Resident)


async def test_a_model_that_is_not_a_resident_passes_through() -> None:
    m, events = manager(models=1)
    model = TestModel()
    async with m.use(model), m.use(model):
        pass
    await m.load(model)  # prepared, not managed
    assert m.status(model) is None
    assert events == []


async def test_a_request_loads_an_unloaded_model_and_counts_it_in_use() -> None:
    clock = Clock()
    m, events = manager(clock=clock)
    a = FakeResident("a", 300)
    async with m.use(a):
        status = m.status(a)
        assert status is not None
        assert (status.state, status.in_use, status.idle_seconds) == ("ready", 1, None)
        assert status.memory_bytes == 300 * MB
    clock.advance(7)
    status = m.status(a)
    assert status is not None
    assert (status.loaded, status.in_use, status.loads, status.idle_seconds) == (True, 0, 1, 7.0)
    assert events == [("load", "a", "request")]
    snap = m.snapshot()
    assert (snap.loaded_models, snap.used_bytes) == (1, 300 * MB)


async def test_least_recently_used_idle_models_go_first_under_max_loaded_models() -> None:
    clock = Clock()
    m, events = manager(models=2, clock=clock)
    a, b, c, d = (FakeResident(n) for n in "abcd")
    for model in (a, b):
        clock.advance(1)
        await use(m, model)
    clock.advance(1)
    await use(m, c)  # a is the least recently used
    assert (a.loaded, b.loaded, c.loaded) == (False, True, True)
    clock.advance(1)
    await use(m, b)  # now c is
    clock.advance(1)
    await use(m, d)
    assert (b.loaded, c.loaded, d.loaded) == (True, False, True)
    assert [e for e in events if e[0] == "unload"] == [
        ("unload", "a", "lru"),
        ("unload", "c", "lru"),
    ]
    status = m.status(a)
    assert status is not None
    assert (status.state, status.loads, dict(status.unloads)) == ("unloaded", 1, {"lru": 1})


async def test_the_memory_budget_unloads_just_enough() -> None:
    clock = Clock()
    m, events = manager(memory_mb=1000, clock=clock)
    a, b, c = FakeResident("a", 300), FakeResident("b", 300), FakeResident("c", 300)
    for model in (a, b, c):
        clock.advance(1)
        await use(m, model)
    d = FakeResident("d", 200)  # 900 + 200 > 1000: one must go, the oldest
    await use(m, d)
    assert [x.loaded for x in (a, b, c, d)] == [False, True, True, True]
    assert events[-2:] == [("unload", "a", "budget"), ("load", "d", "request")]
    assert m.snapshot().used_bytes == 800 * MB


async def test_an_unmeasurable_model_counts_with_its_estimate() -> None:
    m, _ = manager(memory_mb=500)
    a = FakeResident("a", 300, measurable=False)
    await use(m, a)
    status = m.status(a)
    assert status is not None
    assert (status.memory_bytes, status.resident_bytes) == (None, 300 * MB)
    await use(m, FakeResident("b", 300))
    assert not a.loaded


async def test_a_busy_model_is_never_unloaded_and_the_refusal_names_it() -> None:
    m, _ = manager(models=1)
    a, b = FakeResident("a", 700), FakeResident("b")
    async with m.use(a):
        with pytest.raises(MemoryBudgetError) as info:
            await use(m, b)
        assert a.loaded
    message = str(info.value)
    assert message.startswith("cannot load b (about 100 MB): 1 of at most 1 models are loaded")
    assert "a (1 request(s) running, 700 MB)" in message
    assert "--max-loaded-models" in message
    assert b.prepares == 0
    await use(m, b)  # once a is idle, it makes room
    assert (a.loaded, b.loaded) == (False, True)


async def test_a_refusal_by_memory_names_the_budget() -> None:
    m, _ = manager(memory_mb=1000)
    a, b = FakeResident("a", 600), FakeResident("b", 500)
    async with m.use(a):
        with pytest.raises(MemoryBudgetError, match=r"600 MB of the 1000 MB memory budget"):
            await use(m, b)


async def test_a_model_bigger_than_the_whole_budget_fails_at_once() -> None:
    m, _ = manager(memory_mb=500)
    small, big = FakeResident("small", 100), FakeResident("big", 600)
    await use(m, small)
    with pytest.raises(MemoryBudgetError, match=r"^big needs about 600 MB, more than the whole"):
        await use(m, big)
    assert (big.prepares, small.loaded) == (0, True)  # nothing was unloaded for nothing


async def test_keep_alive_unloads_idle_models_by_the_clock() -> None:
    clock = Clock()
    m, events = manager(keep_alive=60, clock=clock)
    a, b = FakeResident("a"), FakeResident("b")
    await use(m, a)
    clock.advance(30)
    await use(m, b)
    clock.advance(29)
    assert await m.reap() == []
    clock.advance(2)  # a idle 61 s, b 31 s
    assert await m.reap() == ["a"]
    assert (a.loaded, b.loaded) == (False, True)
    assert events[-1] == ("unload", "a", "idle")
    async with m.use(b):  # a model in use is never idle
        clock.advance(1000)
        assert await m.reap() == []
    await m.aclose()


async def test_keep_alive_none_and_negative_never_unload() -> None:
    for keep_alive in (None, -1.0):
        clock = Clock()
        m, _ = manager(keep_alive=keep_alive, clock=clock)
        a = FakeResident("a")
        await use(m, a)
        clock.advance(10**9)
        assert await m.reap() == []
        assert a.loaded
        assert m.keep_alive_s is None


async def test_keep_alive_zero_unloads_right_after_the_request() -> None:
    m, events = manager(keep_alive=0)
    a = FakeResident("a")
    async with m.use(a):
        pass
    assert a.loaded  # the reaper runs once the caller yields to the loop
    await until(lambda: not a.loaded)
    assert events == [("load", "a", "request"), ("unload", "a", "idle")]


async def test_the_reaper_sleeps_until_the_keep_alive_runs_out() -> None:
    m, _ = manager(keep_alive=0.2)
    a = FakeResident("a")
    await use(m, a)
    await asyncio.sleep(0)
    assert a.loaded
    await until(lambda: not a.loaded)
    await use(m, a)  # a new reaper for the next idle period
    await until(lambda: not a.loaded)
    assert (a.prepares, a.unloads) == (2, 2)


async def test_a_failed_unload_keeps_the_model_counted_and_is_retried_later() -> None:
    clock = Clock()
    m, events = manager(keep_alive=10, clock=clock)
    a = FakeResident("a")
    await use(m, a)
    a.fail_unload = True
    clock.advance(11)
    assert await m.reap() == []
    assert a.loaded
    clock.advance(UNLOAD_RETRY_S - 1)
    assert await m.reap() == []  # not hammered
    a.fail_unload = False
    clock.advance(2)
    assert await m.reap() == ["a"]
    assert events[-1] == ("unload", "a", "idle")


async def test_a_model_unloaded_is_loaded_again_by_its_next_request() -> None:
    clock = Clock()
    m, events = manager(keep_alive=5, clock=clock)
    a = FakeResident("a")
    await use(m, a)
    clock.advance(6)
    await m.reap()
    await use(m, a)
    status = m.status(a)
    assert status is not None
    assert (a.prepares, status.loads, dict(status.unloads)) == (2, 2, {"idle": 1})
    assert [e[0] for e in events] == ["load", "unload", "load"]


async def test_concurrent_requests_for_an_unloaded_model_load_it_once() -> None:
    m, events = manager(models=1)
    a = FakeResident("a")
    a.gate = asyncio.Event()
    inside: list[int] = []

    async def request() -> None:
        async with m.use(a):
            status = m.status(a)
            assert status is not None
            inside.append(status.in_use)
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(request()) for _ in range(3)]
    await until(lambda: a.prepares == 1)
    await asyncio.sleep(0.01)
    status = m.status(a)
    assert status is not None
    assert (status.state, status.in_use) == ("loading", 0)
    a.gate.set()
    await asyncio.gather(*tasks)
    assert a.prepares == 1
    assert max(inside) >= 2  # they ran side by side on the one load
    assert events == [("load", "a", "request")]


async def test_a_failed_load_fails_its_waiters_and_the_next_request_tries_again() -> None:
    m, _ = manager()
    a = FakeResident("a")
    a.fail_load = "weights are corrupt"
    a.gate = asyncio.Event()
    tasks = [asyncio.create_task(use(m, a)) for _ in range(2)]
    await until(lambda: a.prepares == 1)
    a.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [str(r) for r in results] == ["weights are corrupt"] * 2
    assert a.prepares == 1
    a.fail_load = None
    await use(m, a)
    status = m.status(a)
    assert status is not None
    assert (a.prepares, status.loads, status.state) == (2, 1, "ready")


async def test_a_cancelled_load_lets_a_waiter_load_instead() -> None:
    m, _ = manager()
    a = FakeResident("a")
    a.gate = asyncio.Event()
    first = asyncio.create_task(use(m, a))
    await until(lambda: a.prepares == 1)
    second = asyncio.create_task(use(m, a))
    await asyncio.sleep(0.01)
    first.cancel()
    await until(lambda: a.prepares == 2)  # the waiter took over
    a.gate.set()
    await second
    assert a.loaded
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_nested_use_of_the_same_model_is_not_managed_twice() -> None:
    outer, _ = manager()
    inner, inner_events = manager(models=1)
    a = FakeResident("a")
    async with outer.use(a), inner.use(a):  # as a self-guarding in-process model does
        pass
    assert inner.status(a) is None
    assert inner_events == []
    async with inner.use(a):  # alone, the inner manager does manage it
        pass
    assert inner.status(a) is not None


async def test_aclose_unloads_everything_for_shutdown() -> None:
    m, events = manager(keep_alive=300)
    a, b = FakeResident("a"), FakeResident("b")
    await use(m, a, b)
    await m.aclose()
    assert (a.loaded, b.loaded) == (False, False)
    assert sorted(e for e in events if e[0] == "unload") == [
        ("unload", "a", "shutdown"),
        ("unload", "b", "shutdown"),
    ]


async def test_a_failing_event_callback_breaks_nothing() -> None:
    def boom(kind: str, model: object, reason: str) -> None:
        raise RuntimeError("observer bug")

    m = ResidencyManager(max_loaded_models=1, on_event=boom)
    a, b = FakeResident("a"), FakeResident("b")
    await use(m, a, b)
    assert (a.loaded, b.loaded) == (False, True)


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_loaded_models"):
        ResidencyManager(max_loaded_models=0)
    with pytest.raises(ValueError, match="max_memory_bytes"):
        ResidencyManager(max_memory_bytes=0)


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mb"),
    [
        ("6GB", 6144),
        ("6 gb", 6144),
        ("6000MB", 6000),
        ("512MiB", 512),
        ("1.5g", 1536),
        ("2097152k", 2048),
        ("50%", 4096),
        ("none", None),
        ("unlimited", None),
    ],
)
def test_parse_max_memory(text: str, mb: int | None) -> None:
    assert parse_max_memory(text, total_bytes=8192 * MB) == mb


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("6000", "SHOAL_MAX_MEMORY='6000' needs a unit: 6000MB, 6000GB or 6000%"),
        ("6XB", "SHOAL_MAX_MEMORY='6XB' is not a memory size"),
        ("0%", "between 0 and 100%"),
        ("150%", "between 0 and 100%"),
        ("10KB", "less than 1 MB"),
        ("", "is not a memory size"),
    ],
)
def test_parse_max_memory_refuses(text: str, error: str) -> None:
    with pytest.raises(UserError, match=re.escape(error)):
        parse_max_memory(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300", 300.0),
        ("5m", 300.0),
        ("30s", 30.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("0", 0.0),
        ("-1", None),
        ("-5m", None),
        ("never", None),
    ],
)
def test_parse_keep_alive(text: str, seconds: float | None) -> None:
    assert parse_keep_alive(text) == seconds


def test_parse_keep_alive_and_max_loaded_models_refuse_nonsense() -> None:
    with pytest.raises(UserError, match=r"^--keep-alive='soon' is not a duration: use seconds"):
        parse_keep_alive("soon", label="--keep-alive")
    assert parse_max_loaded_models("2") == 2
    assert parse_max_loaded_models("none") is None
    for bad in ("0", "-1", "two"):
        with pytest.raises(UserError, match="is not a number of models"):
            parse_max_loaded_models(bad)


def test_residency_settings_defaults_environment_then_arguments() -> None:
    total_mb = psutil.virtual_memory().total // MB
    defaults = residency_settings(environ={})
    assert defaults.max_memory_mb is not None
    assert abs(defaults.max_memory_mb - total_mb * 3 // 4) <= 1
    assert (defaults.max_loaded_models, defaults.keep_alive_s) == (3, 300.0)

    env = {"SHOAL_MAX_MEMORY": "2GB", "SHOAL_MAX_LOADED_MODELS": "2", "SHOAL_KEEP_ALIVE": "-1"}
    assert residency_settings(environ=env) == ResidencySettings(2048, 2, None)
    given = residency_settings(max_memory="1GB", keep_alive="0", environ=env)
    assert given == ResidencySettings(1024, 2, 0.0)
    empty = {"SHOAL_MAX_LOADED_MODELS": ""}  # empty counts as unset
    assert residency_settings(environ=empty).max_loaded_models == 3

    with pytest.raises(UserError, match=r"^SHOAL_KEEP_ALIVE='later'"):
        residency_settings(environ={"SHOAL_KEEP_ALIVE": "later"})
    with pytest.raises(UserError, match=r"^--max-loaded-models='0'"):
        residency_settings(max_loaded_models="0", environ={})


def test_describe_is_one_line_for_humans() -> None:
    assert ResidencySettings(6144, 3, 300.0).describe() == (
        "up to 3 models loaded within a memory budget of 6144 MB; idle models unload after 5m"
    )
    assert ResidencySettings(None, None, None).describe() == (
        "any number of models loaded within no memory budget; idle models stay loaded"
    )
    assert ResidencySettings(1024, 1, 0.0).describe().endswith("models unload after each request")
    assert [format_duration(s) for s in (45.5, 90, 3600, 5400)] == ["45.5s", "1m30s", "1h", "1h30m"]
    with pytest.raises(UserError, match="at least one model"):
        ResidencySettings(1024, 0, 1.0)


@pytest.fixture
def fresh_default() -> Iterator[None]:
    set_default_residency(None)
    yield
    set_default_residency(None)


def test_the_default_manager_comes_from_the_environment_and_is_shared(
    monkeypatch: pytest.MonkeyPatch, fresh_default: None
) -> None:
    monkeypatch.setenv("SHOAL_MAX_MEMORY", "3GB")
    monkeypatch.setenv("SHOAL_MAX_LOADED_MODELS", "2")
    monkeypatch.setenv("SHOAL_KEEP_ALIVE", "10m")
    m = default_residency()
    assert (m.max_memory_bytes, m.max_loaded_models, m.keep_alive_s) == (3 * 2**30, 2, 600.0)
    assert default_residency() is m
    mine = ResidencyManager()
    set_default_residency(mine)
    assert default_residency() is mine
