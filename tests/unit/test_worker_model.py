"""WorkerModel: a model in a child process, its protocol, errors, cancellation and crashes.

The children run ``test`` (the default factory) or :mod:`tests.unit.worker_models`; each spawn
costs about half a second, so most tests share one worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from types import MappingProxyType

import pytest

from shoal.exceptions import (
    ContextOverflowError,
    ModelCrashedError,
    ModelError,
    ModelLoadError,
    ToolTimeoutError,
    UnknownModelError,
)
from shoal.hardware import estimate_model_memory
from shoal.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from shoal.models import (
    Model,
    ModelRequestParameters,
    Resident,
    ResponseDone,
    TextDelta,
    WorkerModel,
)
from shoal.models.worker import DEFAULT_ESTIMATED_BYTES
from tests.unit.worker_models import FAIL_LOAD

SCRIPT = "tests.unit.worker_models:script_model"
PARAMS = ModelRequestParameters()


def user(text: str) -> list[Message]:
    return [UserMessage(content=text)]


def assert_reaped(pid: int) -> None:
    """The process is gone and was waited for (a zombie would still accept signal 0)."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert pid not in {p.pid for p in multiprocessing.active_children()}


def state_of(model: WorkerModel) -> str:
    """The state read afresh (mypy would otherwise keep a literal narrowed before an await)."""
    return model.state


def pid_of(model: WorkerModel) -> int | None:
    return model.pid


async def until_running(model: WorkerModel, generations: int) -> None:
    """Wait until the child runs that many generations (the script model counts them)."""
    deadline = time.monotonic() + 3.0
    while model.count_tokens(user("x"), PARAMS) != 1 + 1000 * generations:
        assert time.monotonic() < deadline, f"the child did not reach {generations} generations"
        await asyncio.sleep(0.02)


async def kill_mid_stream(model: WorkerModel, pid: int) -> None:
    """Stream a slow answer and SIGKILL the child once the first piece arrived."""
    async for event in model.request_stream(user("slow"), PARAMS):
        if event == TextDelta("0 "):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def scripted() -> Iterator[WorkerModel]:
    """One script-model worker shared by the tests that do not kill or fail it."""
    model = WorkerModel("script", factory=SCRIPT, start_timeout=60)
    yield model
    pid = model.pid
    asyncio.run(model.close())
    if pid is not None:
        assert_reaped(pid)


def test_factory_must_name_a_module_and_a_callable() -> None:
    with pytest.raises(ValueError, match="module:callable"):
        WorkerModel("test", factory="shoal.models.registry")


def test_count_tokens_is_estimated_until_the_worker_is_ready() -> None:
    model = WorkerModel("script", factory=SCRIPT)
    messages = [SystemMessage(content="be brief"), *user("hello")]
    assert model.count_tokens(messages, PARAMS) == Model.count_tokens(model, messages, PARAMS)
    assert model.state == "stopped"
    assert model.pid is None  # no child was started for an estimate


async def test_test_model_round_trip_in_a_child() -> None:
    events: list[str] = []
    model = WorkerModel("test", on_event=events.append, start_timeout=60)
    assert (model.name, model.state, model.pid) == ("test", "stopped", None)
    tool = ToolDefinition(
        name="lookup",
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    )
    # a read-only mapping does not pickle: it must still cross the pipe
    params = ModelRequestParameters(
        tools=(tool,), call_schemas=MappingProxyType({"lookup": tool.parameters})
    )
    try:
        await model.prepare()
        pid = model.pid
        assert model.state == "ready"
        assert pid is not None
        assert pid != os.getpid()
        assert model.profile.family == "test"
        assert model.context_length == 8192
        assert model.load_seconds is not None
        assert model.load_seconds > 0

        first = await model.request(user("where is my order?"), params)
        assert first.finish_reason == "tool_calls"
        assert [(c.name, c.arguments) for c in first.tool_calls] == [("lookup", {"order_id": "a"})]
        call = first.tool_calls[0]
        result = ToolMessage(tool_call_id=call.id, name="lookup", content="shipped")
        history = [*user("where is my order?"), AssistantMessage(tool_calls=(call,)), result]
        second = await model.request(history, params)
        assert second.text == '{"lookup": "shipped"}'
        assert second.model_name == "test"
        assert model.pid == pid
    finally:
        await model.close()
    assert (state_of(model), pid_of(model)) == ("stopped", None)
    assert_reaped(pid)
    assert events == ["load", "ready"]


async def test_deltas_arrive_in_order_then_the_response(scripted: WorkerModel) -> None:
    events = [e async for e in scripted.request_stream(user("hello there"), PARAMS)]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == ["sc", "ri", "pt", ": ", "he", "ll", "o ", "th", "er", "e"]
    assert isinstance(events[-1], ResponseDone)
    assert events[-1].response.text == "script: hello there"
    assert scripted.state == "ready"
    assert scripted.profile.context_length == 1234


async def test_count_tokens_is_answered_by_the_child(scripted: WorkerModel) -> None:
    await scripted.prepare()
    messages = [SystemMessage(content="be brief"), *user("hello")]
    estimate = Model.count_tokens(scripted, messages, PARAMS)
    assert estimate != 2
    assert scripted.count_tokens(messages, PARAMS) == 2  # the script model's own count


async def test_errors_in_the_child_keep_their_class(scripted: WorkerModel) -> None:
    with pytest.raises(ContextOverflowError, match=r"^the prompt is too long$"):
        await scripted.request(user("raise overflow"), PARAMS)
    with pytest.raises(ToolTimeoutError, match=r"^the tool ran too long$"):
        await scripted.request(user("raise tool"), PARAMS)
    with pytest.raises(ModelError, match=r"^ValueError: bad value$") as info:
        await scripted.request(user("raise value"), PARAMS)
    assert type(info.value) is ModelError  # not a Shoal error: named, never unpickled
    assert (await scripted.request(user("still here"), PARAMS)).text == "script: still here"


async def test_the_no_real_models_switch_reaches_the_child(scripted: WorkerModel) -> None:
    assert (await scripted.request(user("guard"), PARAMS)).text == "allowed=False"


async def test_a_closed_stream_stops_the_generation_in_the_child(scripted: WorkerModel) -> None:
    await scripted.prepare()
    received: list[str] = []
    generator = scripted.request_stream(user("slow"), PARAMS)
    assert isinstance(generator, AsyncGenerator)
    async with contextlib.aclosing(generator) as stream:
        async for event in stream:
            assert isinstance(event, TextDelta)
            received.append(event.text)
            if len(received) == 2:
                # a count overlaps the running generation, which it sees
                assert scripted.count_tokens(user("x"), PARAMS) == 1001
                break
    assert received == ["0 ", "1 "]
    await until_running(scripted, 0)  # without the cancel it would run for another 10 s
    # the model serialises its requests: the next one gets through only if the slow one ended
    answer = await asyncio.wait_for(scripted.request(user("next"), PARAMS), 3.0)
    assert answer.text == "script: next"


async def test_a_cancelled_request_stops_the_generation_in_the_child(
    scripted: WorkerModel,
) -> None:
    await scripted.prepare()
    slow = asyncio.create_task(scripted.request(user("slow"), PARAMS))
    await until_running(scripted, 1)
    slow.cancel()  # as a client disconnect or a deadline does
    with pytest.raises(asyncio.CancelledError):
        await slow
    await until_running(scripted, 0)
    answer = await asyncio.wait_for(scripted.request(user("next"), PARAMS), 3.0)
    assert answer.text == "script: next"


async def test_a_killed_child_fails_its_request_and_is_restarted() -> None:
    events: list[str] = []
    model = WorkerModel("script", factory=SCRIPT, on_event=events.append, start_timeout=60)
    try:
        await model.prepare()
        first_pid = model.pid
        assert first_pid is not None
        crashed = r"died \(killed by signal 9 \(SIGKILL\)\); the request was lost"
        with pytest.raises(ModelCrashedError, match=crashed):
            await kill_mid_stream(model, first_pid)
        assert model.restarts == 1
        assert model.state in ("loading", "ready")
        assert model.last_error is not None
        assert "SIGKILL" in model.last_error
        assert_reaped(first_pid)

        answer = await model.request(user("again"), PARAMS)  # waits for the new child
        assert answer.text == "script: again"
        assert model.state == "ready"
        second_pid = model.pid
        assert second_pid not in (None, first_pid)
        assert model.restarts == 1

        # closing fails what is in flight, and is not a crash
        pending = asyncio.create_task(model.request(user("slow"), PARAMS))
        await until_running(model, 1)
        await model.close()
        with pytest.raises(ModelError, match=r"^script was closed$"):
            await pending
        assert (model.state, model.pid, model.restarts) == ("stopped", None, 1)
        assert second_pid is not None
        assert_reaped(second_pid)
    finally:
        await model.close()  # a second close does nothing
    assert collections.Counter(events) == {"load": 2, "ready": 2, "crash": 1, "restart": 1}
    assert events[:3] == ["load", "ready", "crash"]


async def test_a_failed_load_is_retried_by_the_next_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FAIL_LOAD, "disk on fire")  # inherited by the spawned child
    events: list[str] = []
    model = WorkerModel("script", factory=SCRIPT, on_event=events.append, start_timeout=60)
    try:
        with pytest.raises(ModelLoadError, match=r"^cannot load script: disk on fire$"):
            await model.prepare()
        assert (model.state, model.pid) == ("failed", None)
        assert model.last_error == "ModelLoadError: cannot load script: disk on fire"
        with pytest.raises(ModelLoadError, match="disk on fire"):  # tried again, failed again
            await model.request(user("hi"), PARAMS)
        assert model.state == "failed"

        monkeypatch.delenv(FAIL_LOAD)  # the cause goes away: the next request heals
        assert (await model.request(user("hi"), PARAMS)).text == "script: hi"
        assert state_of(model) == "ready"
        assert model.restarts == 0
    finally:
        await model.close()
    assert events == ["load", "failed", "load", "failed", "load", "ready"]


async def test_profile_waits_for_the_load_and_raises_its_error() -> None:
    model = WorkerModel("no-such-model", start_timeout=60)
    try:
        with pytest.raises(UnknownModelError, match="unknown model 'no-such-model'"):
            _ = model.profile  # the synchronous path: starts the child and blocks
        assert model.state == "failed"
        assert model.last_error is not None
        assert model.last_error.startswith("UnknownModelError: unknown model")
    finally:
        await model.close()
    assert state_of(model) == "stopped"


async def test_close_while_loading_stops_the_child_and_fails_the_waiters() -> None:
    model = WorkerModel("script", factory=SCRIPT, start_timeout=60)
    loading = asyncio.create_task(model.prepare())
    await asyncio.sleep(0)
    pid = model.pid
    assert pid is not None
    assert model.state == "loading"
    await model.close()
    with pytest.raises(ModelError, match="script was closed"):
        await loading
    assert (model.state, model.pid) == ("stopped", None)
    assert_reaped(pid)


# -- residency: unload and reload ---------------------------------------------------------------


async def test_the_child_leaves_residency_to_its_parent(scripted: WorkerModel) -> None:
    answer = await scripted.request(user("residency"), PARAMS)
    assert answer.text == "memory=None models=None keep_alive=None"


async def test_unload_stops_the_child_and_the_next_request_starts_another() -> None:
    events: list[str] = []
    model = WorkerModel("script", factory=SCRIPT, on_event=events.append, start_timeout=60)
    assert isinstance(model, Resident)
    assert (model.loaded, model.memory_bytes()) == (False, None)
    assert model.estimated_bytes() == DEFAULT_ESTIMATED_BYTES
    await model.unload()  # no child: nothing to do
    assert state_of(model) == "stopped"
    try:
        await model.prepare()
        first_pid = model.pid
        assert first_pid is not None
        assert model.loaded
        measured = model.memory_bytes()
        assert measured is not None
        assert measured > 10 * 2**20  # a Python interpreter with shoal imported
        assert model.estimated_bytes() >= measured  # the measurement replaces the guess

        await model.unload()
        assert (state_of(model), pid_of(model), model.loaded, model.memory_bytes()) == (
            "unloaded",
            None,
            False,
            None,
        )
        assert_reaped(first_pid)
        assert model.estimated_bytes() >= measured  # kept for the next load

        answer = await model.request(user("again"), PARAMS)  # loads it again
        assert answer.text == "script: again"
        assert state_of(model) == "ready"
        assert model.pid not in (None, first_pid)
        assert model.restarts == 0  # an unload is not a crash
    finally:
        await model.close()
    assert state_of(model) == "stopped"
    assert events == ["load", "ready", "unload", "load", "ready"]


async def test_unload_fails_what_is_in_flight_as_unloaded() -> None:
    model = WorkerModel("script", factory=SCRIPT, start_timeout=60)
    try:
        await model.prepare()
        pending = asyncio.create_task(model.request(user("slow"), PARAMS))
        await until_running(model, 1)
        await model.unload()
        with pytest.raises(ModelError, match=r"^script was unloaded$"):
            await pending
        assert model.state == "unloaded"
    finally:
        await model.close()


def test_estimated_bytes_from_the_caller_or_the_gguf_file(tmp_path: Path) -> None:
    assert WorkerModel("script", factory=SCRIPT, estimated_bytes=123).estimated_bytes() == 123
    gguf = tmp_path / "tiny.gguf"
    with gguf.open("wb") as f:
        f.truncate(300 * 2**20)  # sparse: nothing is written
    expected = estimate_model_memory(300 * 2**20) * 2**20
    assert WorkerModel(str(gguf)).estimated_bytes() == expected
    assert WorkerModel(f"llamacpp:{gguf}").estimated_bytes() == expected
    missing = WorkerModel(str(tmp_path / "missing.gguf"))
    assert missing.estimated_bytes() == DEFAULT_ESTIMATED_BYTES
