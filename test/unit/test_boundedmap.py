"""Tests for L{p2pnet.boundedmap}."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.boundedmap import BoundedMap


class BoundedMapTests(SynchronousTestCase):
    def test_evictsLeastRecentlyUsed(self) -> None:
        evicted: list[tuple[str, int]] = []
        table: BoundedMap[str, int] = BoundedMap(2, onEvict=lambda k, v: evicted.append((k, v)))
        table["a"] = 1
        table["b"] = 2
        self.assertEqual(table["a"], 1)  # a is now the most recent
        table["c"] = 3
        self.assertEqual(sorted(table), ["a", "c"])
        self.assertEqual(evicted, [("b", 2)])
        self.assertEqual(table.evicted, 1)

    def test_peekDoesNotMarkUsed(self) -> None:
        table: BoundedMap[str, int] = BoundedMap(2)
        table["a"] = 1
        table["b"] = 2
        self.assertEqual(table.peek("a"), 1)
        table["c"] = 3
        self.assertNotIn("a", table)
        self.assertEqual(table.oldest(), ("b", 2))

    def test_iterationMarksNothingUsed(self) -> None:
        """Iterating values() or items() neither fails nor reorders the table."""
        table: BoundedMap[str, int] = BoundedMap(3)
        for n, key in enumerate("abc"):
            table[key] = n
        self.assertEqual(list(table.values()), [0, 1, 2])
        self.assertEqual(list(table.items()), [("a", 0), ("b", 1), ("c", 2)])
        self.assertEqual(list(table.keys()), ["a", "b", "c"])
        table["d"] = 3
        self.assertNotIn("a", table)

    def test_overwriteDoesNotEvict(self) -> None:
        table: BoundedMap[str, int] = BoundedMap(1)
        table["a"] = 1
        table["a"] = 2
        self.assertEqual(dict(table), {"a": 2})
        self.assertEqual(table.evicted, 0)

    def test_deleteAndEmpty(self) -> None:
        table: BoundedMap[str, int] = BoundedMap(3)
        self.assertIsNone(table.oldest())
        table["a"] = 1
        del table["a"]
        self.assertEqual(len(table), 0)
        self.assertRaises(ValueError, BoundedMap, 0)

    @given(st.lists(st.integers(0, 50), max_size=300), st.integers(1, 10))
    def test_neverExceedsCeiling(self, keys: list[int], ceiling: int) -> None:
        table: BoundedMap[int, int] = BoundedMap(ceiling)
        for key in keys:
            table[key] = key
            self.assertLessEqual(len(table), ceiling)
        if keys:
            self.assertIn(keys[-1], table)
