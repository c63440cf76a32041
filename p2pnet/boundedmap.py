# -*- test-case-name: test.unit.test_boundedmap -*-
"""A dictionary with a ceiling: the one bounded table every service uses.

Tables that grow with what the network sends (failed-auth counters, per-source budgets,
half-open pairings, peers seen) must not grow without bound. L{BoundedMap} keeps at most
C{maxEntries} items and forgets the least recently used one to make room, counting what
it forgot, so a flood of new keys costs a fixed amount of memory and shows in the
counters instead of in the process's size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, ItemsView, Iterator, KeysView, MutableMapping, ValuesView
from typing import Generic, TypeVar

__all__ = ["BoundedMap"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(MutableMapping[K, V], Generic[K, V]):
    """A mapping of at most C{maxEntries} items, evicting the least recently used.

    Reading an item with C{[]} or L{get} or writing it marks it used; L{peek} reads
    without marking. C{onEvict(key, value)} is called for every item forgotten to make
    room (not for items deleted by the caller).

    @ivar evicted: how many items were forgotten to make room since creation.
    """

    __slots__ = ("maxEntries", "evicted", "_items", "_onEvict")

    def __init__(
        self, maxEntries: int, onEvict: Callable[[K, V], None] | None = None
    ) -> None:
        if maxEntries < 1:
            raise ValueError("maxEntries must be at least 1")
        self.maxEntries = maxEntries
        self.evicted = 0
        self._items: OrderedDict[K, V] = OrderedDict()
        self._onEvict = onEvict

    def __getitem__(self, key: K) -> V:
        value = self._items[key]
        self._items.move_to_end(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        items = self._items
        if key in items:
            items.move_to_end(key)
        elif len(items) >= self.maxEntries:
            oldKey, oldValue = items.popitem(last=False)
            self.evicted += 1
            if self._onEvict is not None:
                self._onEvict(oldKey, oldValue)
        items[key] = value

    def __delitem__(self, key: K) -> None:
        del self._items[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def keys(self) -> KeysView[K]:
        """The keys, oldest first; iterating marks nothing used."""
        return self._items.keys()

    def values(self) -> ValuesView[V]:
        """The values, oldest first; iterating marks nothing used."""
        return self._items.values()

    def items(self) -> ItemsView[K, V]:
        """The items, oldest first; iterating marks nothing used."""
        return self._items.items()

    def peek(self, key: K, default: V | None = None) -> V | None:
        """The item for C{key} without marking it used."""
        return self._items.get(key, default)

    def oldest(self) -> tuple[K, V] | None:
        """The least recently used item, or C{None} when empty (for pruning by age)."""
        for key in self._items:
            return key, self._items[key]
        return None
