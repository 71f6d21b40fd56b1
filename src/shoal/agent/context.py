"""Fitting a request into the model's context window.

The system prompt and the tool definitions are never dropped. When the conversation outgrows
the window, whole earlier turns (a user message and everything that answered it) are dropped,
oldest first, and the count is reported. If the system prompt, tools and the current turn still
do not fit, the request fails with :class:`~shoal.exceptions.ContextOverflowError` rather than
being silently truncated.
"""

from __future__ import annotations

from collections.abc import Sequence

from shoal.exceptions import ContextOverflowError
from shoal.messages import Message
from shoal.models import Model, ModelRequestParameters

__all__ = ["fit_to_context", "split_turns"]


def split_turns(history: Sequence[Message]) -> list[list[Message]]:
    """Group messages into turns, each starting at a user message."""
    turns: list[list[Message]] = []
    for message in history:
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def fit_to_context(
    model: Model,
    system: Sequence[Message],
    history: Sequence[Message],
    current: Sequence[Message],
    params: ModelRequestParameters,
    *,
    reserve: int,
) -> tuple[list[Message], int]:
    """The messages to send, and how many history messages were left out.

    ``reserve`` is the room kept for the answer (the request's ``max_tokens``).
    """
    budget = model.context_length - reserve
    turns = split_turns(history)
    dropped = 0
    while True:
        kept = [m for turn in turns for m in turn]
        messages = [*system, *kept, *current]
        size = model.count_tokens(messages, params)
        if size <= budget:
            return messages, dropped
        if not turns:
            raise ContextOverflowError(
                f"the request needs {size} tokens (system prompt, tool definitions and the "
                f"current turn) plus {reserve} for the answer, but {model.name} holds "
                f"{model.context_length}: shorten the instructions, offer fewer tools, or "
                "lower max_tokens"
            )
        dropped += len(turns.pop(0))
