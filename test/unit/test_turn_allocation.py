"""Tests for L{p2pnet.services.turn_allocation}: the allocation's state, time as a number."""

from __future__ import annotations

import tracemalloc

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.ratelimit import TokenBucket
from p2pnet.services.turn_allocation import (
    CHANNEL_BYTES,
    CHANNEL_LIFETIME,
    CHANNEL_REUSE_DELAY,
    PERMISSION_BYTES,
    PERMISSION_LIFETIME,
    Allocation,
    ChannelBinding,
    FiveTuple,
    Permission,
    TableBudget,
)

TUPLE = FiveTuple("udp", ("192.0.2.1", 5000), ("198.51.100.1", 3478))
PEER = ("203.0.113.7", 9000)


class FiveTupleTests(SynchronousTestCase):
    def test_str(self) -> None:
        """Shown as protocol, client and server; IPv6 in brackets."""
        self.assertEqual(str(TUPLE), "udp 192.0.2.1:5000->198.51.100.1:3478")
        six = FiveTuple("tls", ("2001:db8::1", 1), ("2001:db8::2", 5349))
        self.assertEqual(str(six), "tls [2001:db8::1]:1->[2001:db8::2]:5349")

    def test_hashable(self) -> None:
        """Equal tuples are one key."""
        self.assertEqual(len({TUPLE, FiveTuple("udp", ("192.0.2.1", 5000),
                                                ("198.51.100.1", 3478))}), 1)


class PermissionTests(SynchronousTestCase):
    def test_lifetime(self) -> None:
        """300 seconds, restarted by refresh."""
        permission = Permission(PEER[0], 100.0)
        self.assertTrue(permission.alive(100.0 + PERMISSION_LIFETIME - 0.001))
        self.assertFalse(permission.alive(100.0 + PERMISSION_LIFETIME))
        permission.refresh(350.0)
        self.assertTrue(permission.alive(600.0))


class ChannelBindingTests(SynchronousTestCase):
    def test_lifetimeAndReuse(self) -> None:
        """600 seconds alive, reserved for 300 more."""
        binding = ChannelBinding(0x4000, PEER, 0.0)
        self.assertTrue(binding.alive(CHANNEL_LIFETIME - 1))
        self.assertFalse(binding.alive(CHANNEL_LIFETIME))
        self.assertTrue(binding.reserved(CHANNEL_LIFETIME + CHANNEL_REUSE_DELAY - 1))
        self.assertFalse(binding.reserved(CHANNEL_LIFETIME + CHANNEL_REUSE_DELAY))


class TokenBucketTests(SynchronousTestCase):
    def test_budget(self) -> None:
        """The bucket TURN's max-bps uses: one second's worth at most; refilled with time; a refusal spends nothing."""
        bucket = TokenBucket(1000, 0.0)
        self.assertTrue(bucket.take(600, 0.0))
        self.assertFalse(bucket.take(600, 0.0))
        self.assertTrue(bucket.take(400, 0.0))
        self.assertTrue(bucket.take(500, 0.5))
        self.assertFalse(bucket.take(1, 0.5))
        self.assertTrue(bucket.take(1000, 100.0))  # never more than one second's
        self.assertFalse(bucket.take(1, 100.0))


class AllocationTests(SynchronousTestCase):
    def allocation(self, **kwargs: object) -> Allocation:
        return Allocation(TUPLE, "alice", object(), 0.0, 600.0, **kwargs)  # type: ignore[arg-type]

    def test_refresh(self) -> None:
        """The expiry time follows refreshes."""
        allocation = self.allocation()
        self.assertEqual(allocation.expiresAt, 600.0)
        allocation.refresh(500.0, 900.0)
        self.assertEqual(allocation.expiresAt, 1400.0)

    def test_permissions(self) -> None:
        """Installed per IP, expiring, limited, all-or-none checked, purged when full."""
        allocation = self.allocation(maxPermissions=2)
        self.assertFalse(allocation.hasPermission("203.0.113.7", 0.0))
        self.assertTrue(allocation.installPermission("203.0.113.7", 0.0))
        self.assertTrue(allocation.installPermission("203.0.113.8", 10.0))
        self.assertFalse(allocation.canInstallPermissions(["203.0.113.9"], 10.0))
        self.assertTrue(allocation.canInstallPermissions(["203.0.113.7"], 10.0))
        self.assertFalse(allocation.installPermission("203.0.113.9", 10.0))
        self.assertEqual(allocation.livePermissions(10.0), 2)
        self.assertFalse(allocation.hasPermission("203.0.113.7", 300.0))
        self.assertEqual(allocation.livePermissions(300.0), 1)
        self.assertTrue(allocation.installPermission("203.0.113.9", 300.0))
        self.assertNotIn("203.0.113.7", allocation.permissions)

    def test_channels(self) -> None:
        """Bind, refresh, conflicts (400), limit (508), expiry and reuse after the delay."""
        allocation = self.allocation(maxChannels=2)
        self.assertIsNone(allocation.bindChannel(0x4000, PEER, 0.0))
        self.assertIs(allocation.channel(0x4000, 1.0), allocation.channelForPeer(PEER, 1.0))
        self.assertEqual(allocation.bindChannel(0x4000, ("203.0.113.7", 1), 1.0), 400)
        self.assertEqual(allocation.bindChannel(0x4001, PEER, 1.0), 400)
        self.assertIsNone(allocation.bindChannel(0x4000, PEER, 100.0))  # refresh
        self.assertIsNone(allocation.bindChannel(0x4001, ("203.0.113.8", 1), 100.0))
        self.assertEqual(allocation.bindChannel(0x4002, ("203.0.113.9", 1), 100.0), 508)
        self.assertIsNone(allocation.channel(0x4000, 700.0))
        self.assertEqual(allocation.liveChannels(650.0), 2)
        self.assertEqual(allocation.bindChannel(0x4000, ("203.0.113.7", 1), 700.0), 400)
        end = 100.0 + CHANNEL_LIFETIME + CHANNEL_REUSE_DELAY
        self.assertIsNone(allocation.bindChannel(0x4000, ("203.0.113.7", 1), end))
        self.assertIsNone(allocation.channelForPeer(PEER, end))
        self.assertEqual(allocation.channel(0x4000, end).peer, ("203.0.113.7", 1))

    def test_bandwidthBuckets(self) -> None:
        """Buckets exist only with a limit."""
        self.assertIsNone(self.allocation().inBucket)
        self.assertEqual(self.allocation(maxBps=10).outBucket.rate, 10)


class TableBudgetTests(SynchronousTestCase):
    """Permissions and channels of all allocations together stay within a budget."""

    def allocation(self, budget: TableBudget) -> Allocation:
        return Allocation(TUPLE, "alice", object(), 0.0, 600.0, budget=budget,
                          maxPermissions=1000, maxChannels=1000)

    def test_sharedBudget(self) -> None:
        """Two allocations share one budget; purging and releasing give entries back."""
        budget = TableBudget(maxPermissions=2, maxChannels=1)
        one, two = self.allocation(budget), self.allocation(budget)
        self.assertTrue(one.installPermission("203.0.113.1", 0.0))
        self.assertTrue(two.installPermission("203.0.113.1", 0.0))
        self.assertFalse(two.installPermission("203.0.113.2", 0.0))
        self.assertFalse(two.canInstallPermissions(["203.0.113.2"], 0.0))
        self.assertIsNone(one.bindChannel(0x4000, PEER, 0.0))
        self.assertEqual(two.bindChannel(0x4000, PEER, 0.0), 508)
        two.purge(PERMISSION_LIFETIME)
        self.assertEqual(budget.permissions, 1)
        self.assertTrue(two.installPermission("203.0.113.2", PERMISSION_LIFETIME))
        one.release()
        self.assertEqual((budget.permissions, budget.channels), (1, 0))
        self.assertIsNone(two.bindChannel(0x4000, PEER, PERMISSION_LIFETIME))

    def test_reboundAfterReuseDelayCounted(self) -> None:
        """A binding replaced after its reuse delay is counted once, not twice."""
        budget = TableBudget()
        allocation = self.allocation(budget)
        allocation.bindChannel(0x4000, PEER, 0.0)
        later = CHANNEL_LIFETIME + CHANNEL_REUSE_DELAY
        self.assertIsNone(allocation.bindChannel(0x4000, ("203.0.113.8", 1), later))
        self.assertEqual(budget.channels, 1)

    def test_bytesPerEntry(self) -> None:
        """The documented cost of an entry holds: the budget bounds memory."""
        budget = TableBudget(maxPermissions=10**6, maxChannels=10**6)
        allocation = Allocation(TUPLE, "alice", object(), 0.0, 600.0, budget=budget,
                                maxPermissions=10**6, maxChannels=20000)
        count = 2000
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(count):
                allocation.installPermission(f"2001:db8::{n:x}", 0.0)
            middle = tracemalloc.get_traced_memory()[0]
            for n in range(count):
                allocation.bindChannel(0x4000 + n, (f"2001:db8::{n:x}", 40000 + n), 0.0)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.assertLess((middle - before) / count, PERMISSION_BYTES)
        self.assertLess((after - middle) / count, CHANNEL_BYTES)
