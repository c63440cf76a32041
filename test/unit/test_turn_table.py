# -*- test-case-name: test.unit.test_turn_table -*-
"""Tests for L{p2pnet.services.turn_table} (the allocation table, its events and its
operator views) and L{p2pnet.services.turn_relays} (relayed addresses), in memory."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.addresses import ExternalAddresses
from p2pnet.services.turn_allocation import Allocation, ChannelBinding, FiveTuple
from p2pnet.services.turn_relays import RelayAllocator
from p2pnet.services.turn_table import (
    RESERVATION_LIFETIME,
    AllocationTable,
    Reservation,
    TurnSession,
)
from p2pnet.stats import Stats
from p2pnet.testing import MemoryRelaySockets, UDPMemoryReactor

PEER = ("203.0.113.7", 9000)


class Recorder:
    """A L{TableObserver} that records every event."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def allocationCreated(self, allocation: Allocation) -> None:
        self.events.append(("created", allocation.username))

    def allocationDeleted(self, allocation: Allocation, why: str) -> None:
        self.events.append(("deleted", allocation.username, why))

    def permissionCreated(self, allocation: Allocation, peer: str) -> None:
        self.events.append(("permission", peer))

    def permissionExpired(self, allocation: Allocation, peer: str) -> None:
        self.events.append(("permission expired", peer))

    def channelBound(self, allocation: Allocation, binding: ChannelBinding) -> None:
        self.events.append(("channel", binding.number, binding.peer))

    def channelExpired(self, allocation: Allocation, binding: ChannelBinding) -> None:
        self.events.append(("channel expired", binding.number))

    def allocationChanged(self, allocation: Allocation) -> None:
        self.events.append(("changed",))

    def allocationEnding(self, allocation: Allocation) -> None:
        self.events.append(("ending", allocation.username))


class TableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.table = AllocationTable(self.clock, Stats(), Logger(), maxAllocations=10,
                                     userQuota=3, ipQuota=2)
        self.recorder = Recorder()
        self.table.observers.append(self.recorder)
        self.link = object()

    def allocation(self, user: str = "alice", client: tuple[str, int] = ("192.0.2.1", 5000),
                   lifetime: float = 600.0) -> Allocation:
        allocation = Allocation(FiveTuple("udp", client, ("198.51.100.1", 3478)), user,
                                self.link, self.clock.seconds(), lifetime,
                                budget=self.table.budget)
        allocation.announced[4] = ("198.51.100.1", 50000 + len(self.table))
        self.table.add(allocation, lifetime)
        return allocation

    def test_sessions(self) -> None:
        """sessions() describes every allocation, oldest first, or one user's."""
        alice = self.allocation()
        self.clock.advance(5)
        self.allocation("bob", ("192.0.2.2", 6000))
        self.table.installPermission(alice, "203.0.113.7")
        self.table.bindChannel(alice, 0x4000, PEER)
        alice.bytesOut, alice.packetsOut, alice.bytesIn, alice.packetsIn = 100, 2, 50, 1
        sessions = self.table.sessions()
        self.assertEqual([s.user for s in sessions], ["alice", "bob"])
        self.assertEqual(sessions[0], TurnSession(
            user="alice", client=("192.0.2.1", 5000), transport="udp",
            relayed=(("198.51.100.1", 50000),), age=5.0, expiresIn=595.0,
            bytesToPeers=100, packetsToPeers=2, bytesFromPeers=50, packetsFromPeers=1,
            permissions=("203.0.113.7",), channels=((0x4000, PEER),)))
        self.assertEqual([s.user for s in self.table.sessions(user="bob")], ["bob"])
        self.assertEqual(self.table.sessions(user="carol"), [])

    def test_kill(self) -> None:
        """kill() deletes by user or by client (address or exact 5-tuple side), returns
        the count, and the observers hear "killed"; naming nothing kills nothing."""
        self.allocation("alice", ("192.0.2.1", 1))
        self.allocation("alice", ("192.0.2.2", 2))
        self.allocation("bob", ("192.0.2.1", 3))
        self.assertEqual(self.table.kill(), 0)
        self.assertEqual(self.table.kill(client=("192.0.2.1", 9)), 0)
        self.assertEqual(self.table.kill(client=("192.0.2.1", 3)), 1)
        self.assertEqual(self.table.kill(client="::ffff:192.0.2.1"), 1)
        self.assertEqual(self.table.kill(user="alice"), 1)
        self.assertEqual(len(self.table), 0)
        self.assertIn(("deleted", "alice", "killed"), self.recorder.events)

    def test_quotas(self) -> None:
        """Per user and per client address, reservations counting for their user."""
        self.allocation("alice", ("192.0.2.1", 1))
        self.assertTrue(self.table.withinQuota("alice", "192.0.2.1"))
        self.allocation("alice", ("192.0.2.1", 2))
        self.assertFalse(self.table.withinQuota("bob", "192.0.2.1"))
        self.assertTrue(self.table.withinQuota("alice", "192.0.2.9"))
        self.assertFalse(self.table.withinQuota("alice", "192.0.2.9", needed=2))
        closed: list[bool] = []
        self.table.addReservation(Reservation(b"t" * 8, None, "198.51.100.1", 50001, "alice",
                                              lambda: closed.append(True)))
        self.assertFalse(self.table.withinQuota("alice", "192.0.2.9"))
        self.clock.advance(RESERVATION_LIFETIME)
        self.assertEqual((self.table.reservations, closed), ({}, [True]))
        self.assertTrue(self.table.withinQuota("alice", "192.0.2.9"))

    def test_events(self) -> None:
        """The lifecycle hook: created, permission, channel, their expiry at the sweep,
        and the end; a refresh is only a change (lifetimes moved)."""
        allocation = self.allocation(lifetime=700)
        self.table.installPermission(allocation, "203.0.113.7")
        self.table.installPermission(allocation, "203.0.113.7")
        self.table.bindChannel(allocation, 0x4000, PEER)
        self.table.bindChannel(allocation, 0x4000, PEER)
        self.clock.advance(300)
        self.table.sweep()
        self.clock.advance(300)
        self.table.sweep()
        self.table.sweep()
        self.clock.advance(100)
        self.assertEqual(self.recorder.events, [
            ("created", "alice"), ("permission", "203.0.113.7"), ("changed",), ("changed",),
            ("channel", 0x4000, PEER), ("changed",), ("changed",),
            ("permission expired", "203.0.113.7"), ("channel expired", 0x4000),
            ("ending", "alice"), ("deleted", "alice", "expired")])


class RelayAddressTests(SynchronousTestCase):
    """Which address relayed sockets bind and announce."""

    class Link:
        def __init__(self, host: str) -> None:
            self.local = (host, 3478)

    def allocator(self, listen: tuple[str, ...], **kwargs: Any) -> RelayAllocator:
        return RelayAllocator(MemoryRelaySockets(UDPMemoryReactor()), (50000, 50099),
                              listenAddresses=lambda: listen, **kwargs)

    def test_order(self) -> None:
        """relay-ip, then external-ip's private side, then the reached address, then a
        specific listen address, then the default route."""
        link = self.Link("0.0.0.0")
        self.assertEqual(self.allocator(("0.0.0.0",), relayAddresses={4: "192.0.2.9"})
                         .relayHost(link, 4), "192.0.2.9")
        self.assertEqual(self.allocator(("0.0.0.0",),
                                        external=ExternalAddresses(["203.0.113.1/10.0.0.5"]))
                         .relayHost(link, 4), "10.0.0.5")
        self.assertEqual(self.allocator(("0.0.0.0",)).relayHost(self.Link("192.0.2.3"), 4),
                         "192.0.2.3")
        self.assertEqual(self.allocator(("0.0.0.0", "192.0.2.4")).relayHost(link, 4),
                         "192.0.2.4")
        self.assertEqual(self.allocator(("0.0.0.0",), routeAddress=lambda f: "192.0.2.5")
                         .relayHost(link, 4), "192.0.2.5")
        self.assertIsNone(self.allocator(("0.0.0.0",)).relayHost(link, 6))

    def test_announce(self) -> None:
        """external-ip maps bound addresses to public ones, per address or per family."""
        allocator = self.allocator((), external=ExternalAddresses(
            ["203.0.113.1/10.0.0.5", "198.51.100.7", "2001:db8::1/fd00::1"]))
        self.assertEqual(allocator.announce("10.0.0.5", 5), ("203.0.113.1", 5))
        self.assertEqual(allocator.announce("10.0.0.6", 5), ("198.51.100.7", 5))
        self.assertEqual(allocator.announce("fd00::1", 5), ("2001:db8::1", 5))
        self.assertEqual(allocator.announce("fd00::2", 5), ("fd00::2", 5))

    def test_noRouteLogged(self) -> None:
        """A wildcard listener without a default route: one clear line per family, not
        one per Allocate."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        allocator = self.allocator(("0.0.0.0",), routeAddress=lambda f: None)
        link = self.Link("0.0.0.0")
        self.assertIsNone(allocator.relayHost(link, 4))
        self.assertIsNone(allocator.relayHost(link, 4))
        said = [e for e in events if e.get("event") == "turn.no_relay_address"]
        self.assertEqual(len(said), 1)
        self.assertIn("relay-ip", said[0]["log_format"])


class ExternalAddressesTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """PUBLIC or PUBLIC/PRIVATE of one family; unspecified or mixed refused."""
        self.assertEqual(ExternalAddresses.parse("203.0.113.1"), ("203.0.113.1", None))
        self.assertEqual(ExternalAddresses.parse("203.0.113.1/10.0.0.1"),
                         ("203.0.113.1", "10.0.0.1"))
        self.assertEqual(ExternalAddresses.parse("[2001:db8::1]/fd00::1"),
                         ("2001:db8::1", "fd00::1"))
        for bad in ("0.0.0.0", "203.0.113.1/::1", "203.0.113.1/0.0.0.0", "nonsense"):
            with self.assertRaises(ValueError):
                ExternalAddresses.parse(bad)

    def test_duplicates(self) -> None:
        """One entry per private address and one without per family."""
        with self.assertRaises(ValueError):
            ExternalAddresses(["203.0.113.1", "203.0.113.2"])
        with self.assertRaises(ValueError):
            ExternalAddresses(["203.0.113.1/10.0.0.1", "203.0.113.2/10.0.0.1"])
        self.assertTrue(ExternalAddresses(["203.0.113.1", "2001:db8::1"]))
        self.assertFalse(ExternalAddresses())
