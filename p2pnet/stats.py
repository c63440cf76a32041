# -*- test-case-name: test.unit.test_stats -*-
"""In-process counters that every service exposes (a metrics endpoint reads them)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

__all__ = ["Stats"]


class Stats:
    """Named monotonically increasing counters plus gauges computed on demand.

    Counters are plain integers in a C{Counter} so the hot path costs one dict update.
    Gauges are callables registered by the owner (e.g. the number of open connections).
    """

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self._gauges: dict[str, Callable[[], int]] = {}

    def add(self, name: str, amount: int = 1) -> None:
        """Increase counter C{name} by C{amount}."""
        self.counters[name] += amount

    def gauge(self, name: str, read: Callable[[], int]) -> None:
        """Register C{read()} as the current value of gauge C{name}."""
        self._gauges[name] = read

    def snapshot(self) -> dict[str, int]:
        """Every counter and gauge, by name."""
        values = dict(self.counters)
        for name, read in self._gauges.items():
            values[name] = read()
        return values
