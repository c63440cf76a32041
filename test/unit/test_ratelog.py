"""Tests for L{p2pnet.ratelog}."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.ratelog import RateLimitedLog


class RateLimitedLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        self.clock = Clock()
        self.log = RateLimitedLog(Logger(observer=self.events.append), self.clock,
                                  interval=60, burst=3)

    def test_burstThenQuiet(self) -> None:
        results = [self.log.warn("a", "x") for _ in range(10)]
        self.assertEqual(results, [True] * 3 + [False] * 7)
        self.assertEqual(len(self.events), 3)
        self.assertEqual(self.log.suppressed, {"a": 7})

    def test_nextWindowReportsHeldBack(self) -> None:
        for _ in range(10):
            self.log.warn("a", "x")
        self.clock.advance(60)
        self.assertTrue(self.log.warn("a", "x"))
        self.assertEqual(self.events[-1]["held"], 7)
        self.assertIn("7 similar events not logged", self.events[-1]["log_format"].format(
            held=7))
        self.assertEqual(self.log.suppressed, {})

    def test_categoriesIndependent(self) -> None:
        for _ in range(5):
            self.log.warn("a", "x")
        self.assertTrue(self.log.warn("b", "y"))
