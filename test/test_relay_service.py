"""Tests for L{p2pnet.services.relay} and L{p2pnet.protocols.relay} (spec §5)."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pnet.codecs.proto.rendezvous_pb2 import RegisterPeer, RendezvousMessage, RequestRelay
from p2pnet.codecs.rustdesk_frame import encodeFrame
from p2pnet.protocols.relay import SPLICE_BUFFER, RelayStreamProtocol
from p2pnet.protocols.rustdesk_client import RelayLegClient
from p2pnet.services.relay import (
    PAIR_TIMEOUT,
    Pair,
    RelayService,
    TokenBucket,
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
    [pair] = service.pairs
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
    def test_tokenBucket(self) -> None:
        bucket = TokenBucket(1000, 0.0)
        self.assertEqual(bucket.take(64 * 1024, 0.0), 0.0)
        self.assertAlmostEqual(bucket.take(1000, 0.0), 1.0)
        self.assertEqual(bucket.take(0, 2.0), 0.0)

    def test_missingListIsEmpty(self) -> None:
        self.assertEqual(readAddressList("/nonexistent/list"), frozenset())


class SlowReaderTests(TestCase):
    """A slow reader does not make the relay buffer without bound (real sockets)."""

    timeout = 20

    @defer.inlineCallbacks
    def test_slowReader(self) -> Any:
        service = RelayService(reactor, listen=("127.0.0.1",), port=0)
        service.startService()
        self.addCleanup(service.stopService)
        port = service.boundPorts["tcp"]
        writer = RelayLegClient("slow")
        reader = RelayLegClient("slow")
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), writer)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), reader)
        reader.transport.pauseProducing()
        yield deferLater(reactor, 0.2, lambda: None)
        chunk = b"z" * 65536
        for _ in range(400):  # 25 MiB, far more than socket buffers hold
            writer.transport.write(chunk)
        yield deferLater(reactor, 1.0, lambda: None)
        [pair] = service.pairs
        for leg in (pair.a, pair.b):
            held = sum(len(x) for x in leg.transport._tempDataBuffer) + \
                len(leg.transport.dataBuffer)
            # At most one read beyond the buffer size that pauses the reader.
            self.assertLessEqual(held, 2 * SPLICE_BUFFER)
        self.assertLess(pair.bytes, 25 * 1024 * 1024)
        reader.transport.resumeProducing()
        received = yield reader.waitFor(400 * 65536)
        self.assertEqual(received, chunk * 400)
        writer.transport.loseConnection()
        reader.transport.loseConnection()
        yield defer.DeferredList([writer.closed, reader.closed])
