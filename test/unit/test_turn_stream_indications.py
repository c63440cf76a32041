"""L{TurnStreamClientProtocol} relays datagrams of a UDP allocation made over TCP/TLS:
Send indications out (RFC 8656 §11.1), Data indications in (RFC 8656 §11.4)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.stun import Attr, Message, Method, StunClass, decode, decodeXorAddress
from p2pnet.protocols.turn_client import TurnStreamClientProtocol


class StreamIndicationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.client = TurnStreamClientProtocol("user", "password", reactor=Clock())
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)

    def test_send(self) -> None:
        """C{send} writes one Send indication with XOR-PEER-ADDRESS and DATA."""
        self.client.send(("192.0.2.7", 5000), b"payload")
        message = decode(self.transport.value())
        self.assertEqual((message.method, message.cls), (Method.SEND, StunClass.INDICATION))
        self.assertEqual(decodeXorAddress(message.get(Attr.XOR_PEER_ADDRESS),
                                          message.transactionId), ("192.0.2.7", 5000))
        self.assertEqual(message.get(Attr.DATA), b"payload")

    def test_data(self) -> None:
        """A Data indication, split across reads, reaches C{onData}; one without DATA
        does not."""
        got = []
        self.client.onData = lambda peer, data: got.append((peer, data))
        indication = Message(Method.DATA, StunClass.INDICATION)
        indication.add(Attr.XOR_PEER_ADDRESS, indication.xorMapped("192.0.2.7", 5000))
        indication.add(Attr.DATA, b"back")
        raw = indication.encode()
        self.client.dataReceived(raw[:7])
        self.client.dataReceived(raw[7:])
        empty = Message(Method.DATA, StunClass.INDICATION)
        empty.add(Attr.XOR_PEER_ADDRESS, empty.xorMapped("192.0.2.7", 5000))
        self.client.dataReceived(empty.encode())
        self.assertEqual(got, [(("192.0.2.7", 5000), b"back")])
