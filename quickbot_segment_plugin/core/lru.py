"""`LruCache`: the one bounded, thread-safe least-recently-used map the plugin's caches share.

Opened credentials, compiled block plans, recently seen message ids and dead-letter tokens are
each read and written by every conversation thread, and each must stay bounded however many
workspaces or messages a process sees. They had grown their own copies of the same
`OrderedDict`-under-a-lock code; one class keeps the eviction and locking rules in one place.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["LruCache"]

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most `capacity` entries; a `get` or `put` makes an entry the most recently used.

    Every operation holds one lock for its whole length, so a check and the write that follows
    it (`add_if_absent`) cannot interleave with another thread's. A capacity of 0 (or less)
    keeps nothing: `get` always misses and `add_if_absent` always reports the key as new.
    """

    __slots__ = ("_capacity", "_items", "_lock")

    def __init__(self, capacity: int) -> None:
        self._capacity = max(0, capacity)
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    def get(self, key: K) -> V | None:
        """The value for `key` (now the most recently used), or None when it is not kept.

        A stored None cannot be told from a miss, so None is not a value worth keeping.
        """
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        """Keep `value` for `key` as the most recently used, evicting the least recently used."""
        if self._capacity == 0:
            return
        with self._lock:
            if key not in self._items:
                self._make_room()
            self._items[key] = value
            self._items.move_to_end(key)

    def add_if_absent(self, key: K, value: V) -> bool:
        """Keep `value` unless `key` is already kept; False (and `key` made recent) when it was.

        The check and the insert are one step, so of several threads adding the same key at once
        exactly one gets True: the duplicate check a set-like use needs.
        """
        if self._capacity == 0:
            return True
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return False
            self._make_room()
            self._items[key] = value
            return True

    def discard(self, key: K) -> None:
        """Forget `key`, if it is kept."""
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def _make_room(self) -> None:
        """Drop least recently used entries until one more fits; the caller holds the lock.

        Before the insert, not after: `len()` reads without the lock, and must never see the
        cache over its capacity, even for the moment between an insert and its eviction.
        """
        while len(self._items) >= self._capacity:
            self._items.popitem(last=False)
