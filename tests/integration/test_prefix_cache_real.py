"""Prefix reuse on the real engine: interleaved agents each pay only for their new tokens, and
a restored prefix gives exactly the reply a cold evaluation gives (greedy decoding)."""

from __future__ import annotations

from shoal.messages import SystemMessage, UserMessage
from shoal.models import LlamaCppModel, ModelRequestParameters, ModelResponse
from shoal.models.registry import ALIASES
from shoal.settings import ModelSettings

SUPPORT = "You are the support desk of Acme routers. Answer in one short sentence. " * 12
KITCHEN = "You are a cooking assistant. Give one practical tip about the question. " * 12
PARAMS = ModelRequestParameters(settings=ModelSettings(max_tokens=16, temperature=0.0))


async def _ask(model: LlamaCppModel, system: str, question: str) -> ModelResponse:
    return await model.request(
        [SystemMessage(content=system), UserMessage(content=question)], PARAMS
    )


async def test_interleaved_agents_restore_their_prefix_and_reply_the_same() -> None:
    path = ALIASES["smollm2-135m"].locate()
    cold = LlamaCppModel(path, name="cold", prefix_cache_mb=0)
    warm = LlamaCppModel(path, name="warm", prefix_cache_mb=64)
    turns = [
        (SUPPORT, "My router blinks red."),
        (KITCHEN, "How long should I boil an egg?"),
        (SUPPORT, "How do I reset the admin password?"),
        (KITCHEN, "How much salt goes in pasta water?"),
    ]
    try:
        for index, (system, question) in enumerate(turns):
            expected = await _ask(cold, system, question)
            got = await _ask(warm, system, question)
            assert got.text == expected.text
            if index >= 2:
                # the other agent ran in between: without the cache only the BOS-level
                # prefix survives; with it, everything up to the new question is restored
                assert expected.usage.cached_prompt_tokens < 10
                assert got.usage.cached_prompt_tokens > 0.8 * got.usage.prompt_tokens
        stats = warm.prefix_cache.stats()
        assert stats.hits >= 2
        assert 0 < stats.bytes <= 64 * 2**20
    finally:
        await cold.close()
        await warm.close()
