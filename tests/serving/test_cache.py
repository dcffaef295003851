"""The response cache: exact-match LRU semantics, bounded size, answers identical to the engine's."""

from __future__ import annotations

import numpy as np
import pytest

from serving.cache import MAX_ENTRIES, ResponseCache, cached_batch_infer, input_key

SHA_A = "a" * 64
SHA_B = "b" * 64


def test_keys_separate_models_flags_and_inputs() -> None:
    keys = {
        input_key(SHA_A, "hello"),
        input_key(SHA_B, "hello"),
        input_key(SHA_A, "hello", "t"),
        input_key(SHA_A, "hello "),
        input_key(SHA_A, np.zeros((1, 4), np.float32)),
        input_key(SHA_A, np.zeros((4, 1), np.float32)),  # same bytes, other shape
        input_key(SHA_A, np.zeros((1, 4), np.float64)),
    }
    assert len(keys) == 7
    assert input_key(SHA_A, "hello") == input_key(SHA_A, "hello")


def test_lru_evicts_least_recently_used_and_counts_hits() -> None:
    cache = ResponseCache(2)
    for i, key in enumerate((b"a", b"b")):
        cache.put(key, np.full(3, i, np.float32))
    assert cache.get(b"a") is not None  # a is now the most recent
    cache.put(b"c", np.zeros(3, np.float32))  # evicts b
    assert cache.get(b"b") is None and cache.get(b"c") is not None
    stats = cache.stats()
    assert (stats.capacity, stats.entries, stats.hits, stats.misses) == (2, 2, 2, 1)
    assert stats.hit_rate == pytest.approx(2 / 3)
    cache.resize(1)
    assert cache.stats().entries == 1 and cache.get(b"c") is not None  # shrinking keeps the most recent


def test_cached_rows_are_copies_nobody_can_edit() -> None:
    cache = ResponseCache(4)
    row = np.ones(3, np.float32)
    cache.put(b"k", row)
    row[:] = 5  # the caller's array changing later does not change the cached answer
    cached = cache.get(b"k")
    assert cached is not None and cached.tolist() == [1, 1, 1]
    with pytest.raises(ValueError):
        cached[0] = 7


def test_capacity_zero_is_off_and_bad_capacities_are_refused() -> None:
    cache = ResponseCache(0)
    cache.put(b"k", np.ones(2))
    assert cache.get(b"k") is None and cache.stats().misses == 0  # off: not even counted
    for bad in (-1, MAX_ENTRIES + 1, 2.5, True):
        with pytest.raises(ValueError, match="cache capacity"):
            cache.resize(bad)  # type: ignore[arg-type]
    assert cache.capacity == 0


def test_batch_wrapper_sends_only_misses_and_keeps_order() -> None:
    seen: list[list[str]] = []

    def engine(batch: list[str]) -> np.ndarray:
        seen.append(list(batch))
        return np.stack([np.array([len(t), ord(t[0])], np.float32) for t in batch])

    cache = ResponseCache(16)
    infer = cached_batch_infer(engine, cache, SHA_A)
    first = infer(["aa", "b", "ccc"])
    second = infer(["b", "dddd", "aa"])
    assert seen == [["aa", "b", "ccc"], ["dddd"]]
    assert second.tolist() == [first[1].tolist(), engine(["dddd"])[0].tolist(), first[0].tolist()]
    assert cache.stats().hits == 2


def test_batch_wrapper_caches_tensor_rows() -> None:
    calls: list[int] = []

    def engine(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return x.reshape(len(x), -1).sum(axis=1, keepdims=True)

    infer = cached_batch_infer(engine, ResponseCache(8), SHA_A)
    x = np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2)
    a = infer(x)
    b = infer(x[::-1].copy())
    assert calls == [3] and b[::-1].tolist() == a.tolist()
