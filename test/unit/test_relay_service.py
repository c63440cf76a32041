"""Tests for L{p2pnet.services.relay} and L{p2pnet.protocols.relay} (rustdesk.md §5)."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.proto.rendezvous_pb2 import RegisterPeer, RendezvousMessage, RequestRelay
from p2pnet.codecs.rustdesk_frame import encodeFrame
from p2pnet.codecs.websocket_frame import (
    OP_BINARY,
    OP_CLOSE,
    MessageDecoder,
    decodeClose,
)
from p2pnet.codecs.websocket_frame import encodeFrame as wsEncode
from p2pnet.protocols.relay import RelayStreamProtocol, relayWebSocketSite
from p2pnet.services.relay import (
    PAIR_TIMEOUT,
    Pair,
    RelayService,
    bandwidthBucket,
    megabitsToBytes,
    readAddressList,
)


def request(uuid: str, key: str = "") -> bytes:
    return encodeFrame(RendezvousMessage(request_relay=RequestRelay(
        uuid=uuid, licence_key=key)).SerializeToString())


def pairUp(service: RelayService) -> tuple[RelayStreamProtocol, Pair]:
    """Two TCP legs from 192.0.2.1 and 192.0.2.2 paired on uuid C{u}: the first, and the
    pair."""
    a, b = RelayStreamProtocol(service), RelayStreamProtocol(service)
    a.makeConnection(Transport("192.0.2.1"))
    b.makeConnection(Transport("192.0.2.2"))
    a.dataReceived(request("u"))
    b.dataReceived(request("u"))
    [pair] = service.activePairs
    return a, pair


class Transport(StringTransport):
    def __init__(self, host: str) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, 1234))
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class LegTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.service = RelayService(self.clock, key="k", dataDir=self.dir,
                                    maxPendingPerIp=3)

    def leg(self, host: str = "192.0.2.1") -> tuple[RelayStreamProtocol, Transport]:
        proto = RelayStreamProtocol(self.service)
        transport = Transport(host)
        proto.makeConnection(transport)
        return proto, transport

    def lose(self, proto: RelayStreamProtocol, transport: Transport) -> None:
        proto.connectionLost(None)

    def test_rawSplicingWithLeftovers(self) -> None:
        a, ta = self.leg()
        b, tb = self.leg("192.0.2.2")
        a.dataReceived(request("u1", "k") + b"early bytes")
        self.assertEqual(ta.producerState, "paused")
        self.assertEqual(self.service.stats.snapshot()["waiting"], 1)
        b.dataReceived(request("u1", "k") + b"\x00\x01")
        self.assertEqual((ta.producerState, tb.producerState), ("producing", "producing"))
        self.assertEqual(tb.value(), b"early bytes")
        self.assertEqual(ta.value(), b"\x00\x01")
        a.dataReceived(b"\xff\xff\xff\xff raw")
        self.assertEqual(tb.value(), b"early bytes\xff\xff\xff\xff raw")
        self.assertEqual(self.service.stats.snapshot()["pairs"], 1)

    def test_backPressureWiring(self) -> None:
        """A full partner transport pauses our reading, and only that resumes it."""
        a, ta = self.leg()
        b, tb = self.leg("192.0.2.2")
        a.dataReceived(request("u1", "k"))
        b.dataReceived(request("u1", "k"))
        self.assertIs(tb.producer, a.gate)
        tb.producer.pauseProducing()
        self.assertEqual(ta.producerState, "paused")
        a.pauseReading("rate")
        tb.producer.resumeProducing()
        self.assertEqual(ta.producerState, "paused")
        a.resumeReading("rate")
        self.assertEqual(ta.producerState, "producing")

    def test_wrongKeyEmptyUuidBadFirstMessage(self) -> None:
        for first in (request("u", "bad"), request("", "k"),
                      encodeFrame(RendezvousMessage(register_peer=RegisterPeer(
                          id="x")).SerializeToString()), encodeFrame(b"\xff\xff")):
            proto, transport = self.leg()
            proto.dataReceived(first)
            self.assertTrue(transport.disconnecting, first)
            self.lose(proto, transport)
        self.assertEqual(self.service.connections, 0)
        self.assertEqual(self.service.waiting, {})

    def test_oversizedFirstFrame(self) -> None:
        proto, transport = self.leg()
        proto.dataReceived(b"\xff\xff\xff\xff")
        self.assertTrue(transport.aborted)

    def test_firstMessageTimeout(self) -> None:
        proto, transport = self.leg()
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_draining(self) -> None:
        """Draining: a leg whose partner waits is paired, a new uuid is refused."""
        a, ta = self.leg()
        a.dataReceived(request("u1", "k"))
        self.service.startDrain()
        self.assertEqual(self.service.remaining(), 1)
        b, tb = self.leg("192.0.2.2")
        b.dataReceived(request("u1", "k"))
        self.assertEqual(len(self.service.activePairs), 1)
        c, tc = self.leg("192.0.2.3")
        c.dataReceived(request("u2", "k"))
        self.assertTrue(tc.disconnecting)
        self.assertEqual(self.service.stats.counters["refused_draining"], 1)
        self.assertEqual(self.service.remaining(), 1)

    def test_unpairedTimeout(self) -> None:
        proto, transport = self.leg()
        proto.dataReceived(request("u1", "k"))
        self.clock.advance(PAIR_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.service.waiting, {})

    def test_idleTimeout(self) -> None:
        a, ta = self.leg()
        b, tb = self.leg("192.0.2.2")
        a.dataReceived(request("u1", "k"))
        b.dataReceived(request("u1", "k"))
        self.clock.advance(27)
        a.dataReceived(b"x")
        self.clock.advance(27)
        self.service.sweep()
        self.assertFalse(ta.disconnecting)
        self.clock.advance(3)
        self.service.sweep()
        self.assertTrue(ta.disconnecting and tb.disconnecting)

    def test_pendingPerIpBound(self) -> None:
        legs = [self.leg() for _ in range(4)]
        self.assertEqual([t.disconnecting for _, t in legs], [False, False, False, True])
        self.assertTrue(self.leg("192.0.2.9")[1].connected)

    def test_bandwidthThrottle(self) -> None:
        service = RelayService(self.clock, bandwidth=100_000)
        a, ta = RelayStreamProtocol(service), Transport("192.0.2.1")
        b, tb = RelayStreamProtocol(service), Transport("192.0.2.2")
        a.makeConnection(ta)
        b.makeConnection(tb)
        a.dataReceived(request("u"))
        b.dataReceived(request("u"))
        a.dataReceived(b"x" * 100_000)
        self.assertEqual((ta.producerState, tb.producerState), ("paused", "paused"))
        self.clock.advance(0.4)
        self.assertEqual(ta.producerState, "producing")

    def test_totalBandwidthSharedByPairs(self) -> None:
        service = RelayService(self.clock, totalBandwidth=100_000)
        transports = []
        for uuid in ("u1", "u2"):
            for host in ("192.0.2.1", "192.0.2.2"):
                proto, transport = RelayStreamProtocol(service), Transport(host)
                proto.makeConnection(transport)
                proto.dataReceived(request(uuid))
                transports.append((proto, transport))
        (a1, t1), _, (a2, t2), _ = transports
        a1.dataReceived(b"x" * 50_000)
        self.assertEqual(t1.producerState, "producing")
        a2.dataReceived(b"x" * 50_000)
        self.assertEqual(t2.producerState, "paused")  # the second pair spent the rest

    def test_blocklistAndBlacklistReread(self) -> None:
        with open(os.path.join(self.dir, "blocklist.txt"), "w") as f:
            f.write("192.0.2.66 noisy\nnot-an-ip\n")
        self.service.reloadLists()
        self.flushLoggedErrors()
        self.assertEqual(self.service.blocklist, frozenset({"192.0.2.66"}))
        proto, transport = self.leg("192.0.2.66")
        self.assertTrue(transport.disconnecting)
        a, ta = self.leg()
        b, tb = self.leg("192.0.2.2")
        a.dataReceived(request("u1", "k"))
        b.dataReceived(request("u1", "k"))
        with open(os.path.join(self.dir, "blocklist.txt"), "w") as f:
            f.write("192.0.2.2\n")
        self.service.sweep()
        self.assertTrue(tb.disconnecting)

    def test_blacklistedPairIsLimited(self) -> None:
        service = RelayService(self.clock, dataDir=self.dir, bandwidth=0,
                               limitSpeed=megabitsToBytes(1))
        with open(os.path.join(self.dir, "blacklist.txt"), "w") as f:
            f.write("192.0.2.2\n")
        service.reloadLists()
        _, pair = pairUp(service)
        self.assertEqual(pair.bucket.rate, 131072)


class DowngradeTests(SynchronousTestCase):
    def test_fastPairIsDowngraded(self) -> None:
        clock = Clock()
        service = RelayService(clock, bandwidth=1000, limitSpeed=100,
                               downgradeThreshold=0.5, downgradeStart=10)
        a, pair = pairUp(service)
        for _ in range(4):
            clock.advance(3)
            a.dataReceived(b"x" * 1000)
            service.sweep()
        self.assertFalse(pair.downgraded)  # past 10 s, but 4000 B / 12 s is under 500 B/s
        clock.advance(3)
        a.dataReceived(b"x" * 4000)
        service.sweep()
        self.assertTrue(pair.downgraded)
        self.assertEqual(pair.bucket.rate, 100)


class FuzzTests(SynchronousTestCase):
    @settings(max_examples=200)
    @given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
    def test_randomFirstBytes(self, data: bytes, chunk: int) -> None:
        service = RelayService(Clock(), key="k")
        proto, transport = RelayStreamProtocol(service), Transport("192.0.2.1")
        proto.makeConnection(transport)
        for i in range(0, len(data), chunk):
            proto.dataReceived(data[i : i + chunk])
        proto.connectionLost(None)
        self.assertEqual((service.connections, service.waiting), (0, {}))


class HelperTests(SynchronousTestCase):
    def test_bandwidthBucket(self) -> None:
        """A pair's budget holds at least 64 KiB; overspending says how long to wait."""
        bucket = bandwidthBucket(1000, 0.0)
        self.assertEqual(bucket.debit(64 * 1024, 0.0), 0.0)
        self.assertAlmostEqual(bucket.debit(1000, 0.0), 1.0)
        self.assertEqual(bucket.debit(0, 2.0), 0.0)

    def test_missingListIsEmpty(self) -> None:
        self.assertEqual(readAddressList("/nonexistent/list"), frozenset())


UPGRADE = (
    b"GET /ws/relay HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
MASK = b"\x01\x02\x03\x04"


class WebSocketLeg:
    """A relay WebSocket leg driven in memory through its upgrade."""

    def __init__(self, service: RelayService, clock: Clock, host: str = "192.0.2.9") -> None:
        site = relayWebSocketSite(service, clock)
        self.channel = site.buildProtocol(IPv4Address("TCP", host, 1))
        self.transport = Transport(host)
        self.channel.makeConnection(self.transport)
        self.channel.dataReceived(UPGRADE)
        assert self.transport.value().startswith(b"HTTP/1.1 101")
        self.transport.clear()

    def send(self, payload: bytes, opcode: int = OP_BINARY, fin: bool = True) -> None:
        self.channel.dataReceived(wsEncode(opcode, payload, fin, MASK))

    def received(self) -> list[tuple[int, Any]]:
        return MessageDecoder(1 << 26, masked=False).feed(self.transport.value())


class WebSocketLegTests(SynchronousTestCase):
    """Item 18 of issue 14: nothing large is buffered before pairing, and a TCP leg's
    frames reach a WebSocket partner in pieces."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.service = RelayService(self.clock)

    def test_firstMessageCappedOnItsHeader(self) -> None:
        """A 16 MiB first message is refused on its frame header: 1009, nothing held."""
        leg = WebSocketLeg(self.service, self.clock)
        big = bytes([0x82, 0x80 | 127]) + (16 * 1024 * 1024).to_bytes(8, "big") + MASK
        leg.channel.dataReceived(big + b"x" * 1000)
        [(opcode, payload)] = leg.received()
        self.assertEqual((opcode, decodeClose(payload)[0]), (OP_CLOSE, 1009))
        self.assertTrue(leg.transport.disconnecting)
        counters = self.service.stats.counters
        self.assertEqual(counters["bad_first_message"], 1)

    def test_firstMessageAtTheLimitAccepted(self) -> None:
        leg = WebSocketLeg(self.service, self.clock)
        rr = RendezvousMessage(request_relay=RequestRelay(uuid="u", id="x" * 3000))
        leg.send(rr.SerializeToString())
        self.assertEqual(list(self.service.waiting), ["u"])
        self.assertFalse(leg.transport.disconnecting)

    def test_tcpFramesReachWebSocketInPieces(self) -> None:
        ws = WebSocketLeg(self.service, self.clock)
        ws.send(RendezvousMessage(request_relay=RequestRelay(uuid="u")).SerializeToString())
        tcp, tt = RelayStreamProtocol(self.service), Transport("192.0.2.1")
        tcp.makeConnection(tt)
        payload = os.urandom(300_000)
        frame = encodeFrame(payload)
        tcp.dataReceived(request("u") + frame[:10_000])
        self.assertTrue(ws.transport.value(), "the first piece left before the frame ended")
        written = len(ws.transport.value())
        self.assertLess(written, 20_000)
        for i in range(10_000, len(frame), 10_000):
            tcp.dataReceived(frame[i : i + 10_000])
        self.assertEqual(ws.received(), [(OP_BINARY, payload)])
        # And the other way: a WS message (now up to 16 MiB) becomes one TCP frame.
        ws.send(b"y" * 100_000)
        self.assertEqual(tt.value(), encodeFrame(b"y" * 100_000))

    def test_emptyTcpFramesNotForwarded(self) -> None:
        ws = WebSocketLeg(self.service, self.clock)
        ws.send(RendezvousMessage(request_relay=RequestRelay(uuid="u")).SerializeToString())
        tcp, tt = RelayStreamProtocol(self.service), Transport("192.0.2.1")
        tcp.makeConnection(tt)
        tcp.dataReceived(request("u") + encodeFrame(b"") + encodeFrame(b"ab"))
        self.assertEqual(ws.received(), [(OP_BINARY, b"ab")])


class OperatorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.service = RelayService(self.clock)

    def test_pairsAndKill(self) -> None:
        self.assertEqual(self.service.pairs(), [])
        a, pair = pairUp(self.service)
        self.clock.advance(1)
        a.dataReceived(b"x" * 3000)
        self.clock.advance(2)
        self.service.sweep()
        [info] = self.service.pairs()
        self.assertEqual((info.uuid, info.a, info.b, info.age, info.bytes),
                         ("u", "192.0.2.1", "192.0.2.2", 3.0, 3000))
        self.assertEqual(info.rate, 1000.0)
        self.assertFalse(self.service.kill("other"))
        self.assertTrue(self.service.kill("u"))
        self.assertTrue(pair.closed and a.transport.disconnecting)
        self.assertEqual(self.service.pairs(), [])
        self.assertFalse(self.service.kill("u"))

    def test_pairingLinesAggregated(self) -> None:
        """1,000 pairings write a bounded number of lines, not 2,000 (issue 14 item 19)."""
        lines: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(lines.append)
        self.addCleanup(globalLogPublisher.removeObserver, lines.append)
        for i in range(1000):
            a, b = RelayStreamProtocol(self.service), RelayStreamProtocol(self.service)
            a.makeConnection(Transport("192.0.2.1"))
            b.makeConnection(Transport("192.0.2.2"))
            a.dataReceived(request(f"u{i}"))
            b.dataReceived(request(f"u{i}"))
            a.connectionLost(None)
            b.connectionLost(None)
        relayLines = [e for e in lines if e.get("category", "").startswith("relay-")]
        self.assertLessEqual(len(relayLines), 40)
        self.assertEqual(self.service.stats.counters["paired"], 1000)
