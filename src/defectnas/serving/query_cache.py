"""``QueryCache``: the most recently used query encodings, so a repeated query costs no encoder pass.

Why: search traffic is head-heavy (a few queries make up much of it), and the query tower is
the larger part of a cached-products request's cost; its output depends only on the
normalised query text, so it can be remembered exactly. Bounded by entries (least recently
used first out), thread-safe (raw-title requests score on worker threads), with hit and miss
counts for ``/healthz`` and the benchmarks. ``capacity`` 0 turns it off (every lookup misses
and nothing is kept).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable


class QueryCache:
    """A least-recently-used map from a normalised query to its encoding, with hit/miss counts."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 0:
            raise ValueError(f"query cache capacity must be 0 or more, got {capacity}")
        self.capacity = int(capacity)  # entries kept at most (0: off)
        self.hits = 0  # lookups answered from the cache
        self.misses = 0  # lookups that ran the encoder
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: str, compute: Callable[[str], Any]) -> Any:
        """The cached value of ``key``, else ``compute(key)`` (kept, evicting the least recently used)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = compute(key)  # outside the lock: two threads may encode one new query at once (same result)
        if self.capacity:
            with self._lock:
                self._items[key] = value
                self._items.move_to_end(key)
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
        return value

    def get_or_compute_many(self, keys: list[str], compute_many: Callable[[list[str]], list[Any]]) -> list[Any]:
        """Values of ``keys`` in order: cached ones from the cache, the distinct others from one call
        of ``compute_many`` (a batched encoder pass); hits and misses counted as one lookup per key."""
        misses = [k for k in dict.fromkeys(keys) if k not in self]
        fresh = dict(zip(misses, compute_many(misses))) if misses else {}
        # counts hits and misses and keeps the new; a key cached at the check but evicted since by the
        # new ones (more misses than capacity) is computed again rather than lost
        return [self.get_or_compute(k, lambda k: fresh[k] if k in fresh else compute_many([k])[0]) for k in keys]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        """Whether ``key`` is cached (not counted as a hit or miss, order unchanged)."""
        with self._lock:
            return key in self._items

    def clear(self) -> None:
        """Forget every entry (the counts are kept)."""
        with self._lock:
            self._items.clear()

    def reset(self) -> None:
        """Forget every entry and zero the counts (after a service's warm-up requests)."""
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def stats(self) -> dict[str, float | int]:
        """``{"capacity", "size", "hits", "misses", "hit_rate"}`` (hit_rate 0.0 before any lookup)."""
        with self._lock:
            hits, misses, size = self.hits, self.misses, len(self._items)
        total = hits + misses
        return {"capacity": self.capacity, "size": size, "hits": hits, "misses": misses, "hit_rate": hits / total if total else 0.0}
