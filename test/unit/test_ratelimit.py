"""Tests for L{p2pnet.ratelimit}."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.ratelimit import SourceBudgets, TokenBucket


class TokenBucketTests(SynchronousTestCase):
    def test_startsFullAndRefillsWithTime(self) -> None:
        bucket = TokenBucket(10, now=0.0)
        self.assertTrue(bucket.take(10, 0.0))
        self.assertFalse(bucket.take(1, 0.0))
        self.assertFalse(bucket.take(1, 0.05))  # half a token back
        self.assertTrue(bucket.take(1, 0.1))

    def test_capacityCapsTheBurst(self) -> None:
        bucket = TokenBucket(10, now=0.0, capacity=2)
        self.assertEqual(bucket.available(100.0), 2)
        self.assertTrue(bucket.take(2, 100.0))
        self.assertFalse(bucket.take(1, 100.0))

    def test_debitReportsTheWait(self) -> None:
        bucket = TokenBucket(100, now=0.0)
        self.assertEqual(bucket.debit(50, 0.0), 0.0)
        self.assertAlmostEqual(bucket.debit(100, 0.0), 0.5)
        self.assertAlmostEqual(bucket.available(0.5), 0.0)

    def test_clockGoingBackwardsGivesNothing(self) -> None:
        bucket = TokenBucket(10, now=5.0)
        bucket.take(10, 5.0)
        self.assertFalse(bucket.take(1, 4.0))
        self.assertTrue(bucket.take(1, 5.2))

    def test_rateMustBePositive(self) -> None:
        self.assertRaises(ValueError, TokenBucket, 0, 0.0)


class SourceBudgetsTests(SynchronousTestCase):
    def test_perKeyBudgets(self) -> None:
        budgets = SourceBudgets(rate=1, burst=2)
        self.assertTrue(budgets.allow("a", 0.0))
        self.assertTrue(budgets.allow("a", 0.0))
        self.assertFalse(budgets.allow("a", 0.0))
        self.assertTrue(budgets.allow("b", 0.0))
        self.assertEqual(budgets.refused, 1)
        self.assertTrue(budgets.allow("a", 1.0))

    def test_tableIsBounded(self) -> None:
        budgets = SourceBudgets(rate=1, maxSources=100)
        for n in range(10_000):
            budgets.allow(n, 0.0)
        self.assertEqual(len(budgets), 100)
