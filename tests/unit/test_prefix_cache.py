"""The prefix cache's bookkeeping: longest-prefix lookup, LRU eviction by bytes, subsumption."""

from __future__ import annotations

import pytest

from shoal.exceptions import UserError
from shoal.models.llamacpp import DEFAULT_PREFIX_CACHE_MB, LlamaCppModel
from shoal.models.prefix_cache import PrefixCache, common_prefix_length


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([], [], 0),
        ([1, 2, 3], [], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2, 3, 4], 3),
        ([1, 2, 3, 4], [1, 2, 9, 4], 2),
        ([5], [6], 0),
        (list(range(1000)), [*range(777), -1, *range(778, 1000)], 777),
    ],
)
def test_common_prefix_length(a: list[int], b: list[int], expected: int) -> None:
    assert common_prefix_length(a, b) == expected
    assert common_prefix_length(b, a) == expected


def test_lookup_returns_the_entry_sharing_the_longest_prefix() -> None:
    cache = PrefixCache(10_000, min_tokens=2)
    agent_a = [1, 2, 3, 4, 5, 6]
    agent_b = [1, 2, 7, 8, 9, 10]
    cache.store(agent_a, b"a" * 10)
    cache.store(agent_b, b"b" * 10)
    entry, shared = cache.lookup([1, 2, 3, 4, 99])
    assert entry.tokens == tuple(agent_a)
    assert entry.state == b"a" * 10
    assert shared == 4
    entry, shared = cache.lookup([1, 2, 7, 8, 9, 10, 11])
    assert entry.tokens == tuple(agent_b)
    assert shared == 6
    stats = cache.stats()
    assert (stats.lookups, stats.hits, stats.tokens_restored) == (2, 2, 10)


def test_lookup_misses_when_the_engine_already_holds_as_much() -> None:
    cache = PrefixCache(10_000, min_tokens=2)
    cache.store([1, 2, 3, 4], b"x")
    with pytest.raises(KeyError):
        cache.lookup([1, 2, 3, 4, 5], better_than=4)
    _, shared = cache.lookup([1, 2, 3, 4, 5], better_than=3)
    assert shared == 4
    with pytest.raises(KeyError):
        cache.lookup([9, 9, 9])  # nothing shared
    with pytest.raises(KeyError):
        PrefixCache(10_000, min_tokens=8).lookup([1, 2, 3, 4])  # below min_tokens


def test_least_recently_used_entries_go_first_when_over_capacity() -> None:
    cache = PrefixCache(30, min_tokens=1)
    cache.store([1, 1], b"1" * 10)
    cache.store([2, 2], b"2" * 10)
    cache.store([3, 3], b"3" * 10)
    cache.lookup([1, 1, 5])  # 1 becomes the most recently used
    cache.store([4, 4], b"4" * 10)  # 2 goes
    assert cache.covers([1, 1])
    assert cache.covers([3, 3])
    assert cache.covers([4, 4])
    assert not cache.covers([2, 2])
    stats = cache.stats()
    assert stats.bytes == 30
    assert stats.entries == 3
    assert stats.evictions == 1


def test_an_entry_that_a_longer_one_extends_is_dropped() -> None:
    cache = PrefixCache(1000, min_tokens=1)
    cache.store([1, 2, 3], b"short")
    cache.store([1, 2, 3, 4, 5], b"longer")
    assert not cache.covers([1, 2, 3])
    assert cache.stats().entries == 1
    assert cache.stats().bytes == len(b"longer")
    # a sibling that diverges is kept
    cache.store([1, 2, 9], b"other")
    assert cache.stats().entries == 2


def test_storing_the_same_tokens_replaces_the_entry() -> None:
    cache = PrefixCache(1000, min_tokens=1)
    cache.store([1, 2], b"old")
    cache.store([1, 2], b"newer")
    entry, _ = cache.lookup([1, 2, 3])
    assert entry.state == b"newer"
    assert cache.stats().bytes == 5


def test_a_state_bigger_than_the_capacity_is_not_kept_and_zero_disables() -> None:
    cache = PrefixCache(4, min_tokens=1)
    assert not cache.store([1], b"12345")
    assert cache.stats().entries == 0
    off = PrefixCache(0)
    assert not off.enabled
    assert not off.store([1], b"")
    with pytest.raises(ValueError, match=">= 0"):
        PrefixCache(-1)


def test_clear_empties_the_cache() -> None:
    cache = PrefixCache(100, min_tokens=1)
    cache.store([1, 2], b"ab")
    cache.clear()
    assert cache.stats().entries == 0
    assert cache.stats().bytes == 0
    with pytest.raises(KeyError):
        cache.lookup([1, 2, 3])


# -- the cache's size on a LlamaCppModel (nothing is loaded) ----------------------------------


def test_prefix_cache_size_comes_from_the_argument_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOAL_PREFIX_CACHE_MB", "8")
    assert LlamaCppModel("m.gguf").prefix_cache.capacity_bytes == 8 * 2**20
    assert LlamaCppModel("m.gguf", prefix_cache_mb=2).prefix_cache.capacity_bytes == 2 * 2**20
    assert not LlamaCppModel("m.gguf", prefix_cache_mb=0).prefix_cache.enabled
    monkeypatch.delenv("SHOAL_PREFIX_CACHE_MB")
    default = LlamaCppModel("m.gguf").prefix_cache.capacity_bytes
    assert default == DEFAULT_PREFIX_CACHE_MB * 2**20


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "SHOAL_PREFIX_CACHE_MB must be a whole number of megabytes, not 'lots'"),
        ("1.5", "SHOAL_PREFIX_CACHE_MB must be a whole number of megabytes, not '1.5'"),
        ("-3", "the prefix cache size must be >= 0 MB, not -3"),
    ],
)
def test_a_bad_prefix_cache_size_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("SHOAL_PREFIX_CACHE_MB", value)
    with pytest.raises(UserError) as info:
        LlamaCppModel("m.gguf")
    assert str(info.value) == message
    monkeypatch.delenv("SHOAL_PREFIX_CACHE_MB")
    with pytest.raises(UserError) as info:
        LlamaCppModel("m.gguf", prefix_cache_mb=-1)
    assert str(info.value) == "the prefix cache size must be >= 0 MB, not -1"
