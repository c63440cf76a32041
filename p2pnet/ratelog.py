# -*- test-case-name: test.unit.test_ratelog -*-
"""Logging of bad input at a rate that cannot flood the log."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Emit at most C{burst} events per C{interval} seconds per category.

    What is held back is counted, and the count is reported with the next event that is
    let through, so a flood of garbage costs one line per interval, not one per packet.

    @ivar suppressed: events held back since the last line, by category.
    """

    def __init__(
        self, log: Logger, clock: IReactorTime, interval: float = 60.0, burst: int = 5
    ) -> None:
        self._log = log
        self._clock = clock
        self._interval = interval
        self._burst = burst
        self._windows: dict[str, tuple[float, int]] = {}
        self.suppressed: dict[str, int] = {}

    def warn(self, category: str, format: str, **fields: Any) -> bool:
        """Log C{format} under C{category} unless its budget is spent; return whether logged."""
        return self._emit(self._log.warn, category, format, fields)

    def info(self, category: str, format: str, **fields: Any) -> bool:
        """Like L{warn} at level info: for per-event lines (a peer registered, a relay
        paired) that a flood would otherwise turn into one line per event."""
        return self._emit(self._log.info, category, format, fields)

    def _emit(self, emit: Any, category: str, format: str, fields: dict[str, Any]) -> bool:
        now = self._clock.seconds()
        start, count = self._windows.get(category, (now, 0))
        if now - start >= self._interval:
            start, count = now, 0
        if count >= self._burst:
            self._windows[category] = (start, count)
            self.suppressed[category] = self.suppressed.get(category, 0) + 1
            return False
        self._windows[category] = (start, count + 1)
        held = self.suppressed.pop(category, 0)
        if held:
            format += " ({held} similar events not logged)"
        emit(format, held=held, category=category, **fields)
        return True
