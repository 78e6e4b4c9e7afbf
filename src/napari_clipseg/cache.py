"""The one bounded LRU cache of this package (image features, text embeddings).

Thread-safe: a predictor may be read from a worker thread while another thread looks up or adds
entries, and a lookup never sees a half-updated cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LRUCache(Generic[V]):
    """Least-recently-used cache bounded by the total ``size`` of its values.

    Args:
        capacity: Largest total size kept; the oldest entries are dropped beyond it (the newest
            entry is kept even when it alone exceeds the capacity, unless the capacity is 0: then
            nothing is kept).
        size: Size of one value (default 1: ``capacity`` counts entries).

    Attributes:
        hits, misses: Lookups served from the cache / not found (for tests and statistics).
    """

    def __init__(self, capacity: int, size: Callable[[V], int] | None = None) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be at least 0; got {capacity}")
        self.capacity = capacity
        self._size = size or (lambda _value: 1)
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    @property
    def total_size(self) -> int:
        """Sum of the sizes of the cached values."""
        return self._total

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._total = 0

    def get(self, key: Hashable) -> V | None:
        """The value for ``key`` (now the most recent), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self.hits += 1
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: V) -> None:
        """Add or replace ``key``; drop the least recently used entries beyond the capacity."""
        size = int(self._size(value))
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._total -= old[1]
            self._items[key] = (value, size)
            self._total += size
            while self._total > self.capacity and len(self._items) > (1 if self.capacity else 0):
                _, (_, dropped) = self._items.popitem(last=False)
                self._total -= dropped
