# -*- test-case-name: test.interop.test_turn_external -*-
"""C{external-ip} and C{no-tcp-relay} end to end: the server built from its settings
(L{p2pnet.app.buildService}) on real loopback sockets, driven by p2pnet's STUN and TURN
clients.

With C{external-ip 203.0.113.50/127.0.0.1} the client is told 203.0.113.50 (the
"public" side) in XOR-RELAYED-ADDRESS while the relayed socket is bound to 127.0.0.1
with the same port: a peer sending to 127.0.0.1:PORT reaches the client, as a packet
sent to the public address would after a 1:1 NAT."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.trial import unittest

from p2pnet.app import buildService
from p2pnet.codecs.stun import Attr, Message, Method, StunClass, decodeAddress
from p2pnet.config import Config
from p2pnet.protocols.stun_client import StunClientProtocol, StunErrorResponse
from p2pnet.protocols.turn_client import TurnClientProtocol, connectTurnStream


class ExternalIpTests(unittest.TestCase):
    timeout = 30

    def server(self, **overrides: Any) -> tuple[int, int]:
        settings: dict[str, Any] = dict(
            services=("stun", "turn"), listen=("127.0.0.1",), stun_port=0, tls_port=0,
            data_dir=self.mktemp(), user=(("alice", "pw"),), allow_loopback_peers=True,
            relay_ports=(40000, 49999))
        settings.update(overrides)
        root = buildService(Config(**settings))
        root.startService()
        self.addCleanup(root.stopService)
        stun: Any = IService(root.getServiceNamed("stun"))
        udp = next(p.getHost().port for p in stun.ports if getattr(p, "factory", None) is None)
        tcp = next(p.getHost().port for p in stun.ports
                   if getattr(p, "factory", None) is not None)
        return udp, tcp

    @defer.inlineCallbacks
    def test_announcedPublicBoundPrivate(self) -> Any:
        """XOR-RELAYED-ADDRESS is the public address; data sent to the private one
        (where the socket is bound) is relayed to the client."""
        port, _ = self.server(external_ip=("203.0.113.50/127.0.0.1",))
        client = TurnClientProtocol(("127.0.0.1", port), "alice", "pw", reactor=reactor)
        listening = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        allocation = yield client.allocate()
        self.addCleanup(client.close)
        public, relayedPort = allocation.relayed[0]
        self.assertEqual(public, "203.0.113.50")
        peer = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(peer.stopListening)
        yield client.createPermission("127.0.0.1")
        got: Deferred[bytes] = Deferred()
        client.onData = lambda source, data: got.called or got.callback(data)
        peer.write(b"through the NAT", ("127.0.0.1", relayedPort))
        data = yield got
        self.assertEqual(data, b"through the NAT")

    @defer.inlineCallbacks
    def test_rfc5780AttributesPublic(self) -> Any:
        """With two mapped private addresses (listen, alt-listen), RESPONSE-ORIGIN and
        OTHER-ADDRESS name the public ones, ports kept."""
        port, _ = self.server(services=("stun",), alt_listen=("127.0.0.2",), alt_port=0,
                              external_ip=("203.0.113.50/127.0.0.1", "203.0.113.51/127.0.0.2"))
        client = StunClientProtocol(reactor=reactor)
        listening = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        reply = yield client.request(Message(Method.BINDING, StunClass.REQUEST),
                                     ("127.0.0.1", port))
        self.assertEqual(decodeAddress(reply.get(Attr.RESPONSE_ORIGIN)), ("203.0.113.50", port))
        otherHost, otherPort = decodeAddress(reply.get(Attr.OTHER_ADDRESS))
        self.assertEqual(otherHost, "203.0.113.51")
        self.assertNotEqual(otherPort, port)
        mapped = decodeAddress(reply.get(Attr.MAPPED_ADDRESS))
        self.assertEqual(mapped, ("127.0.0.1", listening.getHost().port))

    @defer.inlineCallbacks
    def test_noTcpRelay(self) -> Any:
        """With no-tcp-relay an RFC 6062 allocation is refused with 442, and a UDP
        relay over the same TCP connection is still granted."""
        _, tcp = self.server(no_tcp_relay=True)
        control = yield connectTurnStream("127.0.0.1", tcp, "alice", "pw", reactor=reactor)
        self.addCleanup(control.transport.loseConnection)
        with self.assertRaises(StunErrorResponse) as caught:
            yield control.allocate(tcp=True)
        self.assertEqual(caught.exception.code, 442)
        allocation = yield control.allocate(tcp=False)
        self.assertEqual(allocation.relayed[0][0], "127.0.0.1")
