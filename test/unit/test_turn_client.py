"""Tests for L{p2pnet.protocols.turn_client} and C{p2pnet turn}: against the real TURN
service on loopback, and with a Clock for the keep-alive timers."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from p2pnet.codecs.stun import (
    Attr,
    Message,
    Method,
    StunClass,
    decode,
    encodeUInt32,
)
from p2pnet.protocols.turn_client import TurnClientProtocol
from p2pnet.testing import FakeDatagramTransport


class KeepAliveTests(unittest.SynchronousTestCase):
    """The refresh timers, on a Clock, answering the client's requests by hand."""

    server = ("192.0.2.1", 3478)

    def setUp(self) -> None:
        self.clock = Clock()
        self.client = TurnClientProtocol(self.server, "u", "p", reactor=self.clock)
        self.transport = FakeDatagramTransport("192.0.2.9", 5000)
        self.client.makeConnection(self.transport)  # type: ignore[arg-type]

    def answer(self, *attributes: tuple[int, bytes]) -> Message:
        """Answer the last request with success (unsigned: no credentials yet)."""
        data, _ = self.transport.written[-1]
        request = decode(data)
        reply = request.reply()
        for attribute in attributes:
            reply.add(*attribute)
        self.client.datagramReceived(reply.encode(), self.server)
        return request

    def test_refreshTimers(self) -> None:
        """The allocation is refreshed a minute before it ends; permissions after 240 s;
        channels after 540 s."""
        d = self.client.allocate()
        self.answer((Attr.LIFETIME, encodeUInt32(600)),
                    (Attr.XOR_RELAYED_ADDRESS, b"\x00\x01" + bytes(6)))
        self.successResultOf(d)
        d = self.client.createPermission("198.51.100.7")
        self.answer()
        self.successResultOf(d)
        self.transport.written.clear()
        self.clock.advance(240)
        self.assertEqual(decode(self.transport.written[-1][0]).method, Method.CREATE_PERMISSION)
        self.answer()
        self.transport.written.clear()
        self.clock.advance(300)
        methods = [decode(d).method for d, _ in self.transport.written]
        self.assertIn(Method.REFRESH, methods)

    def test_channelData(self) -> None:
        """ChannelData from the server reaches onData with the bound peer."""
        d = self.client.channelBind(("198.51.100.7", 9))
        self.answer()
        self.assertEqual(self.successResultOf(d), 0x4000)
        got = []
        self.client.onData = lambda peer, data: got.append((peer, data))
        self.client.datagramReceived(b"\x40\x00\x00\x03abc\x00", self.server)
        indication = Message(Method.DATA, StunClass.INDICATION)
        indication.add(Attr.XOR_PEER_ADDRESS, indication.xorMapped("198.51.100.8", 7))
        indication.add(Attr.DATA, b"xyz")
        self.client.datagramReceived(indication.encode(), self.server)
        self.client.datagramReceived(b"\x40\x00\x00\x03abc\x00", ("203.0.113.1", 3478))
        self.assertEqual(got, [(("198.51.100.7", 9), b"abc"), (("198.51.100.8", 7), b"xyz")])
