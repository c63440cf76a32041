# -*- test-case-name: test.unit.test_ratelimit -*-
"""Token buckets: the one rate limiter every service uses.

A L{TokenBucket} holds up to C{capacity} tokens and gains C{rate} per second, computed
lazily from the time the caller passes in (services pass their injected reactor's
C{seconds()}, so tests drive it with C{task.Clock}). It limits bytes (TURN C{max-bps},
relay bandwidth) as well as events (requests, error answers, failed logins).

L{SourceBudgets} keeps one bucket per key (a source address, an IPv6 /64, a user) in a
L{BoundedMap}, so a flood of new keys cannot grow it without bound.
"""

from __future__ import annotations

from collections.abc import Hashable

from p2pnet.boundedmap import BoundedMap

__all__ = ["SourceBudgets", "TokenBucket"]


class TokenBucket:
    """C{rate} tokens per second, at most C{capacity} held (default: one second's).

    A new bucket starts full.
    """

    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float, now: float, capacity: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.capacity = float(rate if capacity is None else capacity)
        self.tokens = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def take(self, amount: float, now: float) -> bool:
        """Spend C{amount} tokens if there are that many; return whether it did."""
        self._refill(now)
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True

    def debit(self, amount: float, now: float) -> float:
        """Spend C{amount} even into debt; return the seconds until the bucket is out of
        debt (0 when it stayed in budget). For back-pressure: pause that long."""
        self._refill(now)
        self.tokens -= amount
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate

    def available(self, now: float) -> float:
        """The tokens held at C{now} (negative while in debt)."""
        self._refill(now)
        return self.tokens


class SourceBudgets:
    """One L{TokenBucket} per key, for at most C{maxSources} keys at once.

    When the table is full the least recently active key is forgotten: it starts again
    with a full bucket, which is the generous direction, and the table stays bounded.

    @ivar refused: how many L{allow} calls said no.
    """

    __slots__ = ("rate", "burst", "refused", "_buckets")

    def __init__(self, rate: float, burst: float | None = None, maxSources: int = 65536) -> None:
        self.rate = rate
        self.burst = burst
        self.refused = 0
        self._buckets: BoundedMap[Hashable, TokenBucket] = BoundedMap(maxSources)

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        """Spend C{cost} from C{key}'s bucket; return whether it was within budget."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, now, self.burst)
        if bucket.take(cost, now):
            return True
        self.refused += 1
        return False

    def __len__(self) -> int:
        return len(self._buckets)
