"""The drain (L{p2pnet.drain}) on a clock, with fake services."""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.drain import CHECK_INTERVAL, DrainService


class FakeService:
    def __init__(self, left: int) -> None:
        self.left = left
        self.draining = False

    def startDrain(self) -> None:
        self.draining = True

    def remaining(self) -> int:
        return self.left


class Reactor(Clock):
    def callFromThread(self, f: Any, *args: Any) -> None:
        self.callLater(0, f, *args)


class DrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Reactor()
        self.turn, self.relay = FakeService(2), FakeService(1)
        self.stops: list[bool] = []
        self.notes: list[str] = []
        self.drain = DrainService(
            self.clock, lambda: {"turn": self.turn, "relay": self.relay, "stun": object()},
            lambda: self.stops.append(True), self.notes.append)
        self.drain.startService()
        self.addCleanup(self.drain.stopService)

    def test_drainsThenStops(self) -> None:
        self.assertEqual(self.drain.status(), {"draining": False, "remaining": {}})
        status = self.drain.drain({})
        self.assertEqual(status, {"draining": True, "remaining": {"turn": 2, "relay": 1}})
        self.assertTrue(self.turn.draining and self.relay.draining)
        self.assertEqual(self.notes[-1], "STATUS=draining: relay 1, turn 2 left")
        self.turn.left = self.relay.left = 0
        self.assertEqual(self.stops, [])
        self.clock.advance(CHECK_INTERVAL)
        self.assertEqual(self.stops, [True])
        self.clock.advance(10 * CHECK_INTERVAL)
        self.assertEqual(self.stops, [True])  # once
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_secondCallOnlyReports(self) -> None:
        self.drain.drain({})
        self.turn.draining = False
        self.assertTrue(self.drain.drain({})["draining"])
        self.assertFalse(self.turn.draining)  # startDrain not called twice

    def test_nothingToDrainStopsAtOnce(self) -> None:
        self.turn.left = self.relay.left = 0
        self.drain.drain({})
        self.assertEqual(self.stops, [True])

    def test_sigusr1(self) -> None:
        """SIGUSR1 starts the drain in the reactor thread; stopping gives it back."""
        os.kill(os.getpid(), signal.SIGUSR1)
        self.clock.advance(0)
        self.assertTrue(self.drain.draining)
        self.drain.stopService()
        self.assertNotEqual(signal.getsignal(signal.SIGUSR1), self.drain._signalled)
