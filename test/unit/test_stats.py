"""Tests for L{p2pnet.stats}."""

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.stats import Stats


class StatsTests(SynchronousTestCase):
    def test_countersAndGauges(self) -> None:
        stats = Stats()
        stats.add("x")
        stats.add("x", 4)
        level = [3]
        stats.gauge("g", lambda: level[0])
        self.assertEqual(stats.snapshot(), {"x": 5, "g": 3})
        level[0] = 7
        self.assertEqual(stats.snapshot()["g"], 7)
