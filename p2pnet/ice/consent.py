# -*- test-case-name: test.unit.test_ice_core -*-
"""Consent freshness (RFC 7675) and keep-alives (RFC 8445 §11) on the selected
pair, as deadlines: the owner asks what is due at C{now}. Sans-IO.

Consent checks are Binding requests on the selected pair sent every 5 s, each interval
drawn uniformly from 50 % to 150 % of that so agents do not fall into step; consent is
lost when no authenticated success response has come for 30 s (RFC 7675 §5.1),
and the agent must then stop sending. A keep-alive Binding indication goes out when
nothing at all has been sent on the pair for 15 s (RFC 8445 §11, Tr).
"""

from __future__ import annotations

import random

__all__ = ["CONSENT_INTERVAL", "CONSENT_TIMEOUT", "KEEPALIVE_INTERVAL", "Consent"]

#: RFC 7675 §5.1: the basic consent-check period, seconds.
CONSENT_INTERVAL = 5.0
#: RFC 7675 §5.1: consent expires this long after the last response, seconds.
CONSENT_TIMEOUT = 30.0
#: RFC 8445 §11: Tr, at least 15 s.
KEEPALIVE_INTERVAL = 15.0


class Consent:
    """Consent and keep-alive timers for one selected pair.

    @param now: when the pair was selected (consent starts granted then: the check that
        nominated it was answered).
    @param checks: whether this agent sends consent checks (a lite agent does not).
    """

    def __init__(self, now: float, rng: random.Random, checks: bool = True,
                 interval: float = CONSENT_INTERVAL, timeout: float = CONSENT_TIMEOUT,
                 keepalive: float = KEEPALIVE_INTERVAL) -> None:
        self._rng = rng
        self.checks = checks
        self.interval = interval
        self.timeout = timeout
        self.keepalive = keepalive
        self.lastResponse = now
        self.lastSent = now
        self.nextCheck = now + self._draw() if checks else None
        self.lost = False

    def _draw(self) -> float:
        return self.interval * self._rng.uniform(0.5, 1.5)

    def responded(self, now: float) -> None:
        """An authenticated success response to a consent check arrived."""
        self.lastResponse = now

    def sent(self, now: float) -> None:
        """Something (data, a check) was sent on the pair."""
        self.lastSent = now

    @property
    def expiry(self) -> float | None:
        """When consent runs out unless a response comes (C{None} without checks)."""
        return self.lastResponse + self.timeout if self.checks else None

    def nextDeadline(self) -> float:
        """The earliest time something is due."""
        due = [self.lastSent + self.keepalive]
        if self.checks and self.nextCheck is not None:
            due += [self.nextCheck, self.lastResponse + self.timeout]
        return min(due)

    def due(self, now: float) -> tuple[bool, bool]:
        """C{(sendConsentCheck, sendKeepalive)} at C{now}; sets L{lost} once consent
        has expired (after which nothing is due)."""
        if self.lost:
            return False, False
        if self.checks and now >= self.lastResponse + self.timeout:
            self.lost = True
            return False, False
        check = False
        if self.checks and self.nextCheck is not None and now >= self.nextCheck:
            check = True
            self.nextCheck = now + self._draw()
            self.lastSent = now
        keepalive = not check and now >= self.lastSent + self.keepalive
        if keepalive:
            self.lastSent = now
        return check, keepalive
