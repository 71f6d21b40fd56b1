"""Model factories that tests run inside a :class:`~shoal.models.worker.WorkerModel` child.

The child imports this module by name (``tests.unit.worker_models:script_model``); a spawned
child inherits the parent's ``sys.path``, which holds the project root under pytest.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence

from shoal.exceptions import ContextOverflowError, ModelLoadError, ToolTimeoutError
from shoal.messages import Message, Usage
from shoal.models import (
    Model,
    ModelProfile,
    ModelRequestParameters,
    ModelResponse,
    ResponseDone,
    TextDelta,
    default_residency,
    model_requests_allowed,
)

#: set in the environment of the parent (inherited by a spawned child): loading fails
FAIL_LOAD = "SHOAL_TEST_WORKER_FAIL_LOAD"
#: pieces a ``slow`` request streams, one every :data:`SLOW_STEP` seconds (10 s in all)
SLOW_PIECES = 200
SLOW_STEP = 0.05


class ScriptModel(Model):
    """Answers by the last message's text, one request at a time (like the embedded engine).

    - ``slow``: streams ``0 1 2 ...``, one piece every 50 ms for 10 s;
    - ``raise overflow`` / ``raise tool`` / ``raise value``: raises ContextOverflowError,
      ToolTimeoutError (a class with keyword-only extras) or ValueError (not a Shoal error);
    - ``guard``: answers whether real model requests are allowed in the child;
    - ``residency``: answers the limits of the child's default residency manager;
    - anything else: ``<reference>: <text>``, streamed two characters at a time.

    ``count_tokens`` returns the number of messages plus 1000 per generation running now.
    """

    def __init__(self, reference: str) -> None:
        self.name = reference
        self.profile = ModelProfile(family="script", context_length=1234)
        self._lock = asyncio.Lock()
        self._running = 0

    async def prepare(self) -> None:
        if os.environ.get(FAIL_LOAD):
            raise ModelLoadError(f"cannot load {self.name}: {os.environ[FAIL_LOAD]}")

    def count_tokens(self, messages: Sequence[Message], params: ModelRequestParameters) -> int:
        return len(messages) + 1000 * self._running

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[TextDelta | ResponseDone]:
        text = str(messages[-1].content)
        async with self._lock:
            self._running += 1
            try:
                if text == "slow":
                    pieces = [f"{i} " for i in range(SLOW_PIECES)]
                    for piece in pieces:
                        await asyncio.sleep(SLOW_STEP)
                        yield TextDelta(piece)
                    answer = "".join(pieces)
                elif text.startswith("raise "):
                    raise _ERRORS[text.removeprefix("raise ")]()
                elif text == "guard":
                    answer = f"allowed={model_requests_allowed()}"
                elif text == "residency":
                    limits = default_residency()
                    answer = (
                        f"memory={limits.max_memory_bytes} models={limits.max_loaded_models} "
                        f"keep_alive={limits.keep_alive_s}"
                    )
                else:
                    answer = f"{self.name}: {text}"
                    for start in range(0, len(answer), 2):
                        yield TextDelta(answer[start : start + 2])
            finally:
                self._running -= 1
        yield ResponseDone(ModelResponse(text=answer, raw=answer, usage=Usage(requests=1)))


_ERRORS: dict[str, Callable[[], Exception]] = {
    "overflow": lambda: ContextOverflowError("the prompt is too long"),
    "tool": lambda: ToolTimeoutError("the tool ran too long", tool_name="lookup"),
    "value": lambda: ValueError("bad value"),
}


def script_model(reference: str) -> Model:
    return ScriptModel(reference)
