"""A response cache for repeated inputs: exact-match LRU keyed by (model sha256, input), with hit/miss counts.

The same class serves live requests (serving/app.py) and is timed by the optimization cycle (tasks/cycle.py),
so the hit rate and gain the cycle measures come from the code path the endpoint runs.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Upper bound on entries (a MiniLM row is 1.5 KiB, so the bound is ~1.5 GiB): a typo in a config cannot
# exhaust the replica's memory.
MAX_ENTRIES = 1_000_000


@dataclass(frozen=True)
class CacheStats:
    capacity: int
    entries: int
    hits: int
    misses: int

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "entries": self.entries,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": None if self.hit_rate is None else round(self.hit_rate, 4),
        }


def input_key(sha256: str, item: Any, variant_flag: str = "") -> bytes:
    """Exact-match key: the model's sha256, a flag that changes the output (truncation) and the input's bytes."""
    h = hashlib.blake2b(digest_size=20)
    h.update(sha256.encode())
    h.update(variant_flag.encode())
    if isinstance(item, str):
        h.update(b"s")
        h.update(item.encode("utf-8", "surrogatepass"))
    else:
        array = np.ascontiguousarray(item)
        h.update(f"a{array.dtype.str}{array.shape}".encode())
        h.update(array.tobytes())
    return h.digest()


class ResponseCache:
    """LRU of output rows; `capacity` 0 turns it off (every lookup misses and nothing is stored)."""

    def __init__(self, capacity: int = 0) -> None:
        self._lock = threading.Lock()  # the cycle's timing threads and the replica's event loop both call in
        self._rows: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.capacity = 0
        self.hits = 0
        self.misses = 0
        self.resize(capacity)

    def resize(self, capacity: int) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or not 0 <= capacity <= MAX_ENTRIES:
            raise ValueError(f"cache capacity {capacity!r} must be an integer from 0 (off) to {MAX_ENTRIES}")
        with self._lock:
            self.capacity = capacity
            while len(self._rows) > capacity:
                self._rows.popitem(last=False)

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def get(self, key: bytes) -> np.ndarray | None:
        if not self.enabled:
            return None
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                self.misses += 1
                return None
            self._rows.move_to_end(key)
            self.hits += 1
            return row

    def put(self, key: bytes, row: np.ndarray) -> None:
        if not self.enabled:
            return
        stored = np.array(row, copy=True)
        stored.flags.writeable = False  # callers share the row: nobody may edit a cached answer in place
        with self._lock:
            self._rows[key] = stored
            self._rows.move_to_end(key)
            while len(self._rows) > self.capacity:
                self._rows.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry and reset the counts (a model switch makes every cached answer stale)."""
        with self._lock:
            self._rows.clear()
            self.hits = self.misses = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self.capacity, len(self._rows), self.hits, self.misses)


def cached_batch_infer(
    infer: Callable[[Any], np.ndarray], cache: ResponseCache, sha256: str
) -> Callable[[Sequence[Any] | np.ndarray], np.ndarray]:
    """Wrap a batch `infer` so only the items the cache misses reach the engine; outputs keep the input order.

    A tensor batch is cached row by row (one digit image = one request), a text batch text by text.
    """

    def run(batch: Sequence[Any] | np.ndarray) -> np.ndarray:
        items = (
            list(batch)
            if not isinstance(batch, np.ndarray)
            else [batch[i : i + 1] for i in range(len(batch))]
        )
        keys = [input_key(sha256, it) for it in items]
        rows: list[np.ndarray | None] = [cache.get(k) for k in keys]
        missing = [i for i, r in enumerate(rows) if r is None]
        if missing:
            if isinstance(batch, np.ndarray):
                fresh = infer(np.concatenate([items[i] for i in missing], axis=0))
            else:
                fresh = infer([items[i] for i in missing])
            for j, i in enumerate(missing):
                rows[i] = fresh[j]
                cache.put(keys[i], fresh[j])
        return np.stack([r for r in rows if r is not None])

    return run
