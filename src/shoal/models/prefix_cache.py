"""Evaluated prompt prefixes kept in memory, so a turn evaluates only the tokens that are new.

An engine that has evaluated a prompt holds its attention state (the KV cache) for those
tokens; evaluating the same tokens again gives the same state. llama.cpp keeps the state of
the *last* sequence only, so as soon as two agents (different system prompts and tools) or two
conversations take turns, every turn re-reads its whole prompt. :class:`PrefixCache` keeps the
state of several sequences, each keyed by the exact tokens it covers, and gives back the one
that shares the longest prefix with a new prompt; the engine restores it and evaluates only
what follows. One cache serves one loaded model (a state is meaningless to another model or
another context size).

What is stored is opaque bytes (the engine's serialised state of one sequence) and the token
ids it covers. Memory is bounded: ``capacity_bytes`` over all entries, least recently used
evicted first; an entry whose tokens are a prefix of a newer entry's is dropped when the newer
one is stored (restoring the longer state and discarding its tail gives the same result).

The longest common prefix of two token sequences is found by binary search over slice
equality, so each comparison runs in C; a lookup costs a few slice compares per entry.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CachedPrefix", "PrefixCache", "PrefixCacheStats", "common_prefix_length"]


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items ``a`` and ``b`` share."""
    a, b = tuple(a), tuple(b)
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    # invariant: a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class CachedPrefix:
    """One stored state: the tokens it covers and the engine's bytes for them."""

    tokens: tuple[int, ...]
    state: bytes

    @property
    def size(self) -> int:
        return len(self.state)


@dataclass(frozen=True)
class PrefixCacheStats:
    entries: int
    bytes: int
    capacity_bytes: int
    lookups: int
    hits: int
    #: prompt tokens restored from the cache instead of being evaluated, over all hits
    tokens_restored: int
    stores: int
    evictions: int


class PrefixCache:
    """Bounded, least-recently-used store of evaluated prefixes (thread-safe)."""

    def __init__(self, capacity_bytes: int, *, min_tokens: int = 16) -> None:
        if capacity_bytes < 0:
            raise ValueError("capacity_bytes must be >= 0")
        self.capacity_bytes = capacity_bytes
        #: a hit must share at least this many tokens to be worth a restore
        self.min_tokens = min_tokens
        self._entries: OrderedDict[tuple[int, ...], CachedPrefix] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._lookups = self._hits = self._restored = self._stores = self._evictions = 0

    @property
    def enabled(self) -> bool:
        return self.capacity_bytes > 0

    def lookup(self, tokens: Sequence[int], *, better_than: int = 0) -> tuple[CachedPrefix, int]:
        """The entry sharing the longest prefix with ``tokens`` and that length.

        Returns ``(entry, shared)`` only if ``shared`` exceeds both ``better_than`` (what the
        engine already holds) and :attr:`min_tokens`; raises :class:`KeyError` otherwise.
        """
        wanted = tuple(tokens)
        with self._lock:
            self._lookups += 1
            best: CachedPrefix | None = None
            best_len = max(better_than, self.min_tokens - 1)
            for entry in self._entries.values():
                if len(entry.tokens) <= best_len:
                    continue  # cannot beat what we have
                shared = common_prefix_length(entry.tokens, wanted)
                if shared > best_len:
                    best, best_len = entry, shared
            if best is None:
                raise KeyError("no cached prefix")
            self._entries.move_to_end(best.tokens)
            self._hits += 1
            self._restored += best_len
            return best, best_len

    def store(self, tokens: Sequence[int], state: bytes) -> bool:
        """Keep ``state`` for ``tokens``; False if it is bigger than the whole capacity."""
        key = tuple(tokens)
        if not self.enabled or len(state) > self.capacity_bytes or not key:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            # entries this one extends are now redundant
            for other in [k for k in self._entries if len(k) < len(key) and key[: len(k)] == k]:
                self._bytes -= self._entries.pop(other).size
            self._entries[key] = CachedPrefix(key, state)
            self._bytes += len(state)
            self._stores += 1
            while self._bytes > self.capacity_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.size
                self._evictions += 1
            return True

    def covers(self, tokens: Sequence[int]) -> bool:
        """Whether exactly these tokens are stored already (a store would add nothing)."""
        with self._lock:
            key = tuple(tokens)
            if key in self._entries:
                self._entries.move_to_end(key)
                return True
            return False

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> PrefixCacheStats:
        with self._lock:
            return PrefixCacheStats(
                entries=len(self._entries),
                bytes=self._bytes,
                capacity_bytes=self.capacity_bytes,
                lookups=self._lookups,
                hits=self._hits,
                tokens_restored=self._restored,
                stores=self._stores,
                evictions=self._evictions,
            )
