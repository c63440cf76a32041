"""What the kernel fast path is told (L{p2pnet.services.turn_fastpath}): the maps follow
the allocation table, on a L{Clock}, with a fake kernel and fake routes. Also the map
entries' bytes (L{p2pnet.codecs.fastpath_maps}) and rtnetlink (L{p2pnet.codecs.rtnetlink})."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis.strategies import binary
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.fastpath_maps import Counters, forwardEntry, reverseEntry, unpackCounters
from p2pnet.codecs.rtnetlink import Route, RouteError, encodeRouteRequest, parseRouteReply
from p2pnet.errors import ConfigError
from p2pnet.fastpath.kernel import FastPathUnavailable
from p2pnet.services.turn import fastPathFor
from p2pnet.services.turn_allocation import (
    CHANNEL_CONFIRM_DELAY,
    CHANNEL_LIFETIME,
    PERMISSION_LIFETIME,
    Allocation,
    FiveTuple,
)
from p2pnet.services.turn_fastpath import FastPathEntries
from p2pnet.services.turn_table import AllocationTable
from p2pnet.stats import Stats
from test.unit.test_services_turn import TurnMixin

CLIENT = ("198.51.100.7", 50000)
SERVER = ("203.0.113.1", 3478)
RELAYED = ("203.0.113.1", 49200)
PEER = ("192.0.2.9", 6000)
NS = 1_000_000_000


class FakeMap:
    def __init__(self) -> None:
        self.entries: dict[bytes, bytes] = {}
        self.writes = 0

    def update(self, key: bytes, value: bytes) -> None:
        self.entries[key] = value
        self.writes += 1

    def delete(self, key: bytes) -> bool:
        return self.entries.pop(key, None) is not None


class FakeKernel:
    def __init__(self) -> None:
        self.forward = FakeMap()
        self.reverse = FakeMap()
        self.tracked: dict[int, Counters] = {}
        self.closed = False
        self.interfaces = ["lo"]

    def track(self, allocation: int) -> None:
        self.tracked[allocation] = Counters(0, 0, 0, 0)

    def counters(self, allocation: int) -> Counters:
        return self.tracked[allocation]

    def untrack(self, allocation: int) -> None:
        del self.tracked[allocation]

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.closed = True


def fakeRoute(destination: str, source: str = "") -> Route:
    if destination == "192.0.2.66":
        raise RouteError("no route")
    return Route(2, "203.0.113.1", False)


class EntriesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.kernel = FakeKernel()
        self.denied: set[str] = set()
        self.stats = Stats()
        self.table = AllocationTable(self.clock, self.stats, Logger(), maxAllocations=10,
                                     userQuota=10, ipQuota=10)
        self.entries = FastPathEntries(self.clock, self.kernel, self.stats,
                                       lambda host: host not in self.denied, fakeRoute,
                                       monotonicNs=lambda: 5 * NS)
        self.table.observers.append(self.entries)

    def allocation(self, protocol: str = "udp", maxBps: float = 0.0,
                   server: tuple[str, int] = SERVER) -> Allocation:
        allocation = Allocation(FiveTuple(protocol, CLIENT, server), "alice", object(),
                                self.clock.seconds(), 600, maxBps=maxBps)
        allocation.relayed[4] = RELAYED
        self.table.add(allocation, 600)
        return allocation

    def bind(self, allocation: Allocation, peer: tuple[str, int] = PEER,
             number: int = 0x4000) -> None:
        self.assertTrue(self.table.installPermission(allocation, peer[0]))
        self.assertIsNone(self.table.bindChannel(allocation, number, peer))

    def expected(self, deadline: float, confirmed: bool,
                 server: tuple[str, int] = SERVER) -> tuple[dict[bytes, bytes], ...]:
        """The two maps for one channel 0x4000 of the first allocation."""
        ns = 5 * NS + int(deadline * 1e9)
        fwd = forwardEntry(CLIENT, server, 0x4000, RELAYED, PEER, 1, 2, ns)
        rev = reverseEntry(PEER, RELAYED, CLIENT, server, 0x4000, 1, 2, ns, confirmed)
        return {fwd[0]: fwd[1]}, {rev[0]: rev[1]}

    def test_bindWritesBothDirections(self) -> None:
        """A bound channel: the forward entry at once, the reverse one unconfirmed
        (Data indications from Python) until the confirmation delay passes."""
        allocation = self.allocation()
        self.bind(allocation)
        fwd, rev = self.expected(min(CHANNEL_LIFETIME, PERMISSION_LIFETIME), False)
        self.assertEqual(self.kernel.forward.entries, fwd)
        self.assertEqual(self.kernel.reverse.entries, rev)
        self.clock.advance(CHANNEL_CONFIRM_DELAY)
        fwd, rev = self.expected(PERMISSION_LIFETIME - CHANNEL_CONFIRM_DELAY, True)
        self.assertEqual(self.kernel.reverse.entries, rev)

    def test_deadlineIsTheEarliestEnd(self) -> None:
        """The permission (300 s) ends first; a refresh of it moves the deadline; the
        allocation's end bounds it too."""
        allocation = self.allocation()
        self.bind(allocation)
        self.clock.advance(200)
        self.table.installPermission(allocation, PEER[0])  # refreshed: 300 s from now
        fwd, _ = self.expected(min(CHANNEL_LIFETIME - 200, PERMISSION_LIFETIME), True)
        self.assertEqual(self.kernel.forward.entries, fwd)
        self.table.refresh(allocation, 60)
        fwd, _ = self.expected(60, True)
        self.assertEqual(self.kernel.forward.entries, fwd)

    def test_expiryRemovesEntries(self) -> None:
        """The permission lapses: the kernel stopped at its deadline already; the sweep
        removes the entries."""
        allocation = self.allocation()
        self.bind(allocation)
        self.clock.advance(PERMISSION_LIFETIME + 1)
        self.table.sweep()
        self.assertEqual(self.kernel.forward.entries, {})
        self.assertEqual(self.kernel.reverse.entries, {})

    def test_deleteRemovesEntriesAndCountsWhatTheKernelDid(self) -> None:
        allocation = self.allocation()
        self.bind(allocation)
        self.kernel.tracked[1] = Counters(3, 300, 2, 200)
        self.entries.collect(allocation)
        self.kernel.tracked[1] = Counters(4, 400, 2, 200)
        self.table.delete(allocation, "deleted")
        self.assertEqual((allocation.packetsOut, allocation.bytesOut, allocation.packetsIn,
                          allocation.bytesIn), (4, 400, 2, 200))
        self.assertEqual(self.stats.counters["turn.fastpath.bytes_to_peers"], 400)
        self.assertEqual(self.kernel.forward.entries, {})
        self.assertEqual(self.kernel.reverse.entries, {})
        self.assertEqual(self.kernel.tracked, {})
        self.assertEqual(self.entries.written, {})

    def test_deniedPeerNeverWritten(self) -> None:
        """The peer policy is asked again before an entry is written (a policy reloaded
        to deny a peer keeps it out of the kernel)."""
        allocation = self.allocation()
        self.denied.add(PEER[0])
        self.bind(allocation)
        self.assertEqual(self.kernel.forward.entries, {})
        self.assertEqual(self.kernel.forward.writes, 0)

    def test_notForTheKernel(self) -> None:
        """TCP and TLS clients, bandwidth-limited allocations, a peer of the other
        family, a peer without a route: the Python path's."""
        for allocation in (self.allocation("tcp"), self.allocation(maxBps=1e6)):
            self.bind(allocation)
        mixed = self.allocation()
        mixed.relayed[6] = ("2001:db8::1", 49300)
        self.bind(mixed, ("2001:db8::9", 7000))
        self.bind(mixed, ("192.0.2.66", 7000), 0x4001)
        self.assertEqual(self.kernel.forward.entries, {})
        self.assertEqual(self.stats.counters["turn.fastpath.no_route"], 1)

    def test_wildcardListenerAnswersFromTheRoutesSource(self) -> None:
        allocation = self.allocation(server=("0.0.0.0", 3478))
        self.bind(allocation)
        fwd, _ = self.expected(PERMISSION_LIFETIME, False)
        self.assertEqual(self.kernel.forward.entries, fwd)

    def test_rebindingToAnotherPeerReplacesTheReverseKey(self) -> None:
        allocation = self.allocation()
        self.bind(allocation)
        self.table.refresh(allocation, 3600)
        self.clock.advance(CHANNEL_LIFETIME + 301)  # past the reuse delay
        self.table.sweep()
        other = ("192.0.2.10", 6001)
        self.bind(allocation, other)
        self.assertEqual(len(self.kernel.forward.entries), 1)
        self.assertEqual(len(self.kernel.reverse.entries), 1)
        key = next(iter(self.kernel.reverse.entries))
        self.assertEqual(key[:4], socket.inet_aton(other[0]))


class EncodingTests(SynchronousTestCase):
    def test_forwardLayout(self) -> None:
        """The C struct: addresses in 16 bytes, ports and channel in network order,
        family and numbers in host order."""
        key, value = forwardEntry(("10.0.0.1", 1), ("10.0.0.2", 3478), 0x4001,
                                  ("10.0.0.2", 50000), ("10.0.0.3", 80), 7, 3, 99)
        self.assertEqual(len(key), 40)
        self.assertEqual(key[:4], bytes([10, 0, 0, 1]))
        self.assertEqual(key[32:38], b"\x00\x01\x0d\x96\x40\x01")
        self.assertEqual(struct.unpack("=H", key[38:])[0], 2)
        self.assertEqual(len(value), 56)
        self.assertEqual(struct.unpack("=IIIQ", value[36:]), (7, 3, 0, 99))

    def test_reverseLayoutIPv6(self) -> None:
        key, value = reverseEntry(("2001:db8::9", 7), ("2001:db8::1", 8), ("2001:db8::2", 9),
                                  ("2001:db8::1", 3478), 0x4fff, 1, 4, 5, True)
        self.assertEqual(len(key), 40)
        self.assertEqual(key[:16], socket.inet_pton(socket.AF_INET6, "2001:db8::9"))
        self.assertEqual(struct.unpack("=H", key[36:38])[0], 10)
        self.assertEqual(len(value), 56)
        self.assertEqual(value[36:40], b"\x4f\xff\x01\x00")

    def test_counters(self) -> None:
        self.assertEqual(unpackCounters(struct.pack("=QQQQ", 1, 2, 3, 4)),
                         Counters(1, 2, 3, 4))


class RouteParsingTests(SynchronousTestCase):
    """rtnetlink answers, as bytes."""

    def reply(self, routeType: int, *attributes: tuple[int, bytes]) -> bytes:
        body = struct.pack("=BBBBBBBBI", 2, 32, 0, 0, 254, 0, 0, routeType, 0)
        for kind, data in attributes:
            size = 4 + len(data)
            body += struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)
        return struct.pack("=IHHII", 16 + len(body), 24, 0, 1, 0) + body

    def test_unicast(self) -> None:
        reply = self.reply(1, (4, struct.pack("=I", 3)), (7, bytes([192, 0, 2, 2])))
        self.assertEqual(parseRouteReply(reply), Route(3, "192.0.2.2", False))

    def test_local(self) -> None:
        reply = self.reply(2, (4, struct.pack("=I", 1)))
        self.assertEqual(parseRouteReply(reply), Route(1, "", True))

    def test_request(self) -> None:
        """What C{ip route get 192.0.2.9 from 203.0.113.1} sends."""
        request = encodeRouteRequest("192.0.2.9", "203.0.113.1")
        length, kind, flags, _, _ = struct.unpack_from("=IHHII", request)
        self.assertEqual((length, kind, flags), (len(request), 26, 1))
        self.assertEqual(request[16:20], bytes([socket.AF_INET, 32, 32, 0]))
        self.assertEqual(request[28:36], struct.pack("=HH", 8, 1) + bytes([192, 0, 2, 9]))
        self.assertEqual(request[36:44], struct.pack("=HH", 8, 2) + bytes([203, 0, 113, 1]))
        self.assertEqual(encodeRouteRequest("2001:db8::1")[16:18], bytes([socket.AF_INET6, 128]))

    @given(binary(max_size=120))
    def test_garbageIsARouteError(self, data: bytes) -> None:
        """Whatever the socket returns, the answer is a route or L{RouteError}."""
        try:
            parseRouteReply(data)
        except RouteError:
            pass
        try:
            parseRouteReply(self.reply(1, (4, struct.pack("=I", 3)), (7, data[:20])))
        except RouteError:
            pass

    def test_errors(self) -> None:
        error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -101) + bytes(16)
        self.assertIn("ENETUNREACH", str(self.assertRaises(
            RouteError, parseRouteReply, error)))
        self.assertRaises(RouteError, parseRouteReply, b"\0" * 4)
        self.assertRaises(RouteError, parseRouteReply, struct.pack("=IHHII", 16, 2, 0, 1, 0))
        self.assertRaises(RouteError, parseRouteReply, self.reply(1))


class ModeTests(SynchronousTestCase):
    """C{fast-path}: auto degrades to the Python path, on refuses to start, off never
    loads."""

    def refused(self) -> FakeKernel:
        raise FastPathUnavailable("no privilege to load BPF programs")

    def test_off(self) -> None:
        self.assertIsNone(fastPathFor("off", self.refused))

    def test_autoWithoutIt(self) -> None:
        self.assertIsNone(fastPathFor("auto", self.refused))

    def test_onWithoutIt(self) -> None:
        error = self.assertRaises(ConfigError, fastPathFor, "on", self.refused)
        self.assertEqual(error.key, "fast-path")
        self.assertIn("no privilege", str(error))

    def test_loaded(self) -> None:
        kernel = FakeKernel()
        self.assertIs(fastPathFor("auto", lambda: kernel), kernel)
        self.assertIs(fastPathFor("on", lambda: kernel), kernel)


class ServiceTests(TurnMixin, SynchronousTestCase):
    """The TURN service with a (fake) kernel: the observer in its table, the program
    closed when it stops; with a shared bandwidth budget, not used at all."""

    def test_wired(self) -> None:
        kernel = FakeKernel()
        turn = self.startTurn(fastPath=kernel)
        self.assertIn(turn.fastPath, turn.table.observers)
        turn.stopService()
        self.assertTrue(kernel.closed)

    def test_bpsCapacityKeepsEverythingInPython(self) -> None:
        kernel = FakeKernel()
        turn = self.startTurn(fastPath=kernel, bpsCapacity=1e6)
        self.assertIsNone(turn.fastPath)
        self.assertTrue(kernel.closed)
