# -*- test-case-name: test.unit.test_drain,test.interop.test_drain -*-
"""Draining: take a node out of a pool without cutting calls (coturn's SIGUSR1 habit).

SIGUSR1, or the gateway method C{server.drain} (C{operator.admin}), puts every service
that can drain into draining: TURN refuses new allocations with 508 (Insufficient
Capacity), so clients try another server, while existing allocations are refreshed and
relay as before; the RustDesk relay pairs no new uuid, while a leg whose partner already
waits is still paired. Once nothing is left (no allocation, no relay pair or waiting
leg), the process stops as after SIGTERM, with status 0, as coturn does when its drain
completes. The rendezvous server and the gateway keep serving until then: they hold no
session a restart would cut.

A service takes part by having C{startDrain()} and C{remaining()} (L{Drainable}); the
drain service finds them among its siblings when the drain starts, so this module
imports no service.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["CHECK_INTERVAL", "DrainService", "Drainable"]

log = Logger()

#: Seconds between looks at what is left while draining.
CHECK_INTERVAL = 1.0


class Drainable(Protocol):
    """A service that can stop taking new sessions and say how many it still holds."""

    def startDrain(self) -> None:
        """Refuse new sessions from now on; keep serving the existing ones."""

    def remaining(self) -> int:
        """Sessions still held."""


class DrainService(Service):
    """Runs a drain over its sibling services.

    @param reactor: clock (the check timer) and C{callFromThread} for the signal.
    @param siblings: the services to drain, by name, read when a drain starts (the
        appliance's named services).
    @param stop: called once nothing is left (C{reactor.stop} in the appliance).
    @param notify: told each status line (systemd's C{STATUS=}), if given.
    """

    name: str | None = "drain"

    def __init__(self, reactor: Any, siblings: Callable[[], Mapping[str, Any]],
                 stop: Callable[[], None],
                 notify: Callable[[str], object] | None = None) -> None:
        self.reactor = reactor
        self.siblings = siblings
        self.stop = stop
        self.notify = notify
        self.draining = False
        self.stopping = False
        self._check: LoopingCall | None = None
        self._previousHandler: Any = None

    def _drainables(self) -> dict[str, Drainable]:
        return {name: service for name, service in self.siblings().items()
                if service is not self and callable(getattr(service, "startDrain", None))
                and callable(getattr(service, "remaining", None))}

    def remaining(self) -> dict[str, int]:
        """What each draining service still holds (empty before a drain)."""
        if not self.draining:
            return {}
        return {name: service.remaining() for name, service in self._drainables().items()}

    def status(self) -> dict[str, Any]:
        """C{{draining, remaining: {service: count}}} (the C{server.drain} answer)."""
        return {"draining": self.draining, "remaining": self.remaining()}

    def drain(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Start draining (once; later calls only report); returns L{status}."""
        if not self.draining and self.running:
            self.draining = True
            for service in self._drainables().values():
                service.startDrain()
            left = self.remaining()
            log.info("draining: no new TURN allocations or relay pairs; stopping once "
                     "{left} are gone", left=_describe(left))
            self._check = LoopingCall(self._look)
            self._check.clock = self.reactor
            self._check.start(CHECK_INTERVAL, now=True)
        return self.status()

    def _look(self) -> None:
        left = self.remaining()
        if self.notify is not None:
            self.notify(f"STATUS=draining: {_describe(left)} left")
        if sum(left.values()) == 0 and not self.stopping:
            self.stopping = True
            log.info("drained: nothing left; stopping")
            if self._check is not None and self._check.running:
                self._check.stop()
            self.stop()

    def _signalled(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.drain)

    def startService(self) -> None:
        """Take SIGUSR1 (when the reactor runs in the main thread, as under twistd)."""
        super().startService()
        try:
            self._previousHandler = signal.signal(signal.SIGUSR1, self._signalled)
        except ValueError:  # not the main thread: only the gateway method drains
            self._previousHandler = None

    def stopService(self) -> None:
        """Give SIGUSR1 back and stop looking."""
        super().stopService()
        if self._previousHandler is not None:
            signal.signal(signal.SIGUSR1, self._previousHandler)
            self._previousHandler = None
        if self._check is not None and self._check.running:
            self._check.stop()


def _describe(left: Mapping[str, int]) -> str:
    if not left:
        return "nothing"
    return ", ".join(f"{name} {count}" for name, count in sorted(left.items()))
