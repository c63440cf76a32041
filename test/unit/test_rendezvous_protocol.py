"""Tests for L{p2pnet.protocols.rendezvous}: framing, KeyExchange, heartbeats, bad input."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.proto.rendezvous_pb2 import (
    KeyExchange,
    PunchHoleRequest,
    RegisterPeer,
    RegisterPk,
    RendezvousMessage,
    TestNatRequest,
)
from p2pnet.codecs.rustdesk_crypto import (
    SecretStream,
    openServerKeyExchange,
    sealKeyExchangeReply,
)
from p2pnet.codecs.rustdesk_frame import FrameDecoder, encodeFrame
from p2pnet.protocols.rendezvous import (
    KEY_EXCHANGE_DELAY,
    STREAM_RETRY,
    RendezvousDatagramProtocol,
    RendezvousStreamFactory,
)
from p2pnet.services.rendezvous import RendezvousService
from p2pnet.services.rendezvous_keys import ServerKey
from p2pnet.testing import FakeDatagramTransport
from test.unit.test_rendezvous_service import PK, FakeStore

SERVER = SigningKey(b"\x01" * 32)


class Transport(StringTransport):
    def __init__(self, host: str = "192.0.2.1", port: int = 5555) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, port))
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


def frame(message: RendezvousMessage) -> bytes:
    return encodeFrame(message.SerializeToString())


class StreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.service = RendezvousService(self.clock, FakeStore(),  # type: ignore[arg-type]
                                         ServerKey(SERVER, ""), maxConnectionsPerIp=2)

    def connect(self, natPort: bool = False, host: str = "192.0.2.1"):  # type: ignore[no-untyped-def]
        proto = RendezvousStreamFactory(self.service, natPort).buildProtocol(None)
        transport = Transport(host)
        proto.makeConnection(transport)
        return proto, transport

    def messages(self, transport: Transport, stream: SecretStream | None = None) -> list:
        payloads = FrameDecoder().feed(transport.value())
        transport.clear()
        out = []
        for p in payloads:
            if stream is not None and len(p) > 1:
                p = stream.open(p)
            out.append(RendezvousMessage.FromString(p) if p else None)
        return out

    def test_keyExchangeThenEncrypted(self) -> None:
        proto, transport = self.connect()
        self.assertEqual(transport.value(), b"")
        self.clock.advance(KEY_EXCHANGE_DELAY)
        [offer] = self.messages(transport)
        boxPk = openServerKeyExchange(bytes(SERVER.verify_key), offer.key_exchange.keys[0])
        key = os.urandom(32)
        ours, sealed = sealKeyExchangeReply(boxPk, key)
        proto.dataReceived(frame(RendezvousMessage(key_exchange=KeyExchange(
            keys=[ours, sealed]))))
        client = SecretStream(key)
        rk = RendezvousMessage(register_pk=RegisterPk(id="tcppeer1", uuid=b"u", pk=PK))
        proto.dataReceived(encodeFrame(client.seal(rk.SerializeToString())))
        [reply] = self.messages(transport, client)
        self.assertEqual(reply.register_pk_response.keep_alive, 30)
        # A heartbeat is answered with a heartbeat, in the clear.
        proto.dataReceived(b"\x00")
        self.assertEqual(transport.value(), b"\x00")
        transport.clear()
        self.clock.advance(15)
        self.assertEqual(transport.value(), b"\x00")
        transport.clear()
        proto.dataReceived(b"\x00")  # the client's answer is not answered again
        self.assertEqual(transport.value(), b"")
        self.clock.advance(15)
        self.assertEqual(transport.value(), b"\x00")
        # Unanswered: the link is dropped 45 s after the last thing received.
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_clientSpeakingFirstGetsNoOffer(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(frame(RendezvousMessage(test_nat_request=TestNatRequest())))
        self.clock.advance(KEY_EXCHANGE_DELAY)
        [reply] = self.messages(transport)
        self.assertEqual(reply.test_nat_response.port, 5555)
        self.assertTrue(transport.disconnecting)

    def test_plainClientAfterOffer(self) -> None:
        proto, transport = self.connect()
        self.clock.advance(KEY_EXCHANGE_DELAY)
        transport.clear()
        proto.dataReceived(frame(RendezvousMessage(test_nat_request=TestNatRequest())))
        [reply] = self.messages(transport)
        self.assertEqual(reply.test_nat_response.port, 5555)

    def test_badKeyExchangeCloses(self) -> None:
        proto, transport = self.connect()
        self.clock.advance(KEY_EXCHANGE_DELAY)
        proto.dataReceived(frame(RendezvousMessage(key_exchange=KeyExchange(
            keys=[b"x" * 32, b"y" * 48]))))
        self.assertTrue(transport.disconnecting)

    def test_natPortNoOffer(self) -> None:
        proto, transport = self.connect(natPort=True)
        self.clock.advance(KEY_EXCHANGE_DELAY)
        self.assertEqual(transport.value(), b"")

    def test_unsolicitedKeyExchangeCloses(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(frame(RendezvousMessage(key_exchange=KeyExchange(
            keys=[b"x" * 32, b"y" * 48]))))
        self.assertTrue(transport.disconnecting)

    def test_idleTimeout(self) -> None:
        proto, transport = self.connect()
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        self.assertEqual(self.service.stats.snapshot()["connections"], 0)

    def test_oversizedFrameAborts(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(b"\xff\xff\xff\xff")
        self.assertTrue(transport.aborted)
        self.assertEqual(self.service.stats.counters["bad_frame"], 1)

    def test_garbageMessageCloses(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(encodeFrame(b"\xff\xff\xff"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.service.stats.counters["bad_message"], 1)

    def test_perIpLimit(self) -> None:
        self.connect()
        self.connect()
        proto, transport = self.connect()
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        self.assertEqual(self.service.stats.snapshot()["connections"], 2)
        self.assertFalse(self.connect(host="192.0.2.2")[1].disconnecting)

    @settings(max_examples=200)
    @given(st.binary(max_size=600))
    def test_fuzzStream(self, data: bytes) -> None:
        proto, transport = self.connect(host="198.51.100.9")
        for i in range(0, len(data), 50):
            if transport.disconnecting:
                break
            proto.dataReceived(data[i : i + 50])
        proto.connectionLost(None)
        self.assertEqual(self.service.tcpPunch, {})


class SourceBudgetTests(SynchronousTestCase):
    """One source's flood of TCP messages pauses its own reading, not anyone else's
    (issue 14 item 14)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.service = RendezvousService(self.clock, FakeStore(),  # type: ignore[arg-type]
                                         ServerKey(SERVER, ""), streamRatePerIp=10)

    def connect(self, host: str) -> tuple[Any, Transport]:
        proto = RendezvousStreamFactory(self.service, False).buildProtocol(None)
        transport = Transport(host)
        proto.makeConnection(transport)
        return proto, transport

    def test_floodPausesOnlyItsSource(self) -> None:
        ask = frame(RendezvousMessage(punch_hole_request=PunchHoleRequest(id="nobody")))
        flooder, ft = self.connect("192.0.2.1")
        flooder.dataReceived(ask * 50)
        answered = len(FrameDecoder().feed(ft.value()))
        self.assertEqual(answered, 20)  # the burst: twice the rate
        self.assertEqual(ft.producerState, "paused")
        self.assertEqual(self.service.stats.counters["stream_throttled"], 1)
        # A second connection from the same source shares the budget ...
        second, st2 = self.connect("192.0.2.1")
        second.dataReceived(ask)
        self.assertEqual((st2.value(), st2.producerState), (b"", "paused"))
        # ... another source does not.
        other, ot = self.connect("192.0.2.2")
        other.dataReceived(ask)
        self.assertEqual(len(FrameDecoder().feed(ot.value())), 1)
        # The held messages are handled, in order, as the budget refills.
        for _ in range(40):
            self.clock.advance(STREAM_RETRY)
        self.assertEqual(len(FrameDecoder().feed(ft.value())), 50)
        self.assertEqual(len(FrameDecoder().feed(st2.value())), 1)
        self.assertEqual((ft.producerState, st2.producerState), ("producing", "producing"))

    def test_closedWhileHeld(self) -> None:
        ask = frame(RendezvousMessage(punch_hole_request=PunchHoleRequest(id="nobody")))
        proto, transport = self.connect("192.0.2.1")
        proto.dataReceived(ask * 30)
        proto.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopDropsHeldLinks(self) -> None:
        """Stopping the service aborts its connections at once, a throttled one (reading
        paused, so it would not see its peer leave) included, and leaves no timers."""
        ask = frame(RendezvousMessage(punch_hole_request=PunchHoleRequest(id="nobody")))
        held, ht = self.connect("192.0.2.1")
        held.dataReceived(ask * 30)
        quiet, qt = self.connect("192.0.2.2")
        self.service.stopService()
        self.assertEqual((ht.aborted, qt.aborted), (True, True))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.service.stats.snapshot()["connections"], 0)
        held.connectionLost(None)  # the reactor's later notice changes nothing
        self.assertEqual(self.service.stats.snapshot()["connections"], 0)


class DatagramTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = RendezvousService(Clock(), FakeStore(),  # type: ignore[arg-type]
                                         ServerKey(SERVER, ""))
        self.proto = RendezvousDatagramProtocol(self.service)
        self.transport = FakeDatagramTransport("127.0.0.1", 21116)
        self.proto.makeConnection(self.transport)  # type: ignore[arg-type]

    def test_registerPeerAnswered(self) -> None:
        self.proto.datagramReceived(RendezvousMessage(register_peer=RegisterPeer(
            id="123456789")).SerializeToString(), ("192.0.2.1", 9))
        self.assertEqual(self.transport.written, [(bytes.fromhex("3a021001"),
                                                   ("192.0.2.1", 9))])

    @settings(max_examples=300)
    @given(st.binary(max_size=200))
    def test_fuzzDatagrams(self, data: bytes) -> None:
        self.proto.datagramReceived(data, ("192.0.2.1", 9))
        self.assertLessEqual(len(self.service.peers), 1)

    def test_oversizedAndNested(self) -> None:
        self.proto.datagramReceived(b"\x32" + b"\xff" * 5000, ("192.0.2.1", 9))
        nested = b"\x0b" * 100000  # deeply nested groups
        self.proto.datagramReceived(nested[:4000], ("192.0.2.1", 9))
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.service.stats.counters["bad_datagram"], 2)


class WebSocketSiteTests(SynchronousTestCase):
    def test_unupgradedConnectionTimesOut(self) -> None:
        from p2pnet.protocols.rendezvous import webSocketSite

        clock = Clock()
        service = RendezvousService(clock, FakeStore(),  # type: ignore[arg-type]
                                    ServerKey(SERVER, ""))
        site = webSocketSite(service)
        channel = site.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
        transport = Transport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET / HTTP/1.1\r\n")
        clock.advance(29)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)
