# -*- test-case-name: test.interop.test_turn_sockets -*-
"""The relayed sockets on real sockets (L{p2pnet.protocols.turn}'s kernel side): RFC 6062
connections leave from the relayed address, taken addresses are refused, and
L{KernelRelaySockets} binds, adopts and releases UDP sockets on the real reactor."""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory, Protocol
from twisted.trial.unittest import TestCase

from p2pnet.protocols.turn import (
    DONT_FRAGMENT_SUPPORTED,
    KernelRelaySockets,
    RelayDatagramProtocol,
    bindRelaySocket,
    connectFromRelay,
    listenRelayTCP,
    portInUse,
    setDontFragment,
)


class RelaySocketTests(TestCase):
    def test_bindAndDontFragment(self) -> None:
        """A bound non-blocking socket; DF set through IP_MTU_DISCOVER on Linux."""
        sock = bindRelaySocket("127.0.0.1", 0)
        self.addCleanup(sock.close)
        self.assertEqual(sock.getsockname()[0], "127.0.0.1")
        self.assertFalse(sock.getblocking())
        if not DONT_FRAGMENT_SUPPORTED:
            raise self.skipTest("no DF socket option here")
        setDontFragment(sock)
        self.assertEqual(sock.getsockopt(socket.IPPROTO_IP, 10), 2)  # IP_PMTUDISC_DO



class RelayedAddressTests(TestCase):
    """RFC 6062 §5.2: a connection to a peer leaves from the relayed transport
    address, the same address and port peers connect in to."""

    def test_connectFromTheListeningAddress(self):  # noqa: ANN201
        relayed = listenRelayTCP(reactor, Factory.forProtocol(Protocol), "127.0.0.1", 0)
        self.addCleanup(relayed.stopListening)
        relayedAddress = ("127.0.0.1", relayed.getHost().port)

        accepted: defer.Deferred = defer.Deferred()

        class Peer(Protocol):
            def connectionMade(self) -> None:
                peer = self.transport.getPeer()
                accepted.callback((peer.host, peer.port))
                self.transport.loseConnection()

        peer = reactor.listenTCP(0, Factory.forProtocol(Peer), interface="127.0.0.1")
        self.addCleanup(peer.stopListening)
        connector = connectFromRelay(reactor, "127.0.0.1", peer.getHost().port,
                                     ClientFactory.forProtocol(Protocol), 5, relayedAddress)
        self.addCleanup(connector.disconnect)
        return accepted.addCallback(self.assertEqual, relayedAddress)

    def test_addressTaken(self) -> None:
        """A relayed address already taken by another listener cannot be listened on."""
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        self.assertRaises(CannotListenError, listenRelayTCP, reactor, Factory(), "127.0.0.1",
                          taken.getsockname()[1])


class KernelRelaySocketsTests(TestCase):
    """The factory the TURN service uses outside tests."""

    def test_udpRoundTrip(self) -> defer.Deferred[None]:
        """bindUdp holds the port (a second bind is "in use"), adoptUdp serves it, and
        a datagram sent to it reaches the handler."""
        sockets = KernelRelaySockets(reactor)
        handle = sockets.bindUdp("127.0.0.1", 0)
        port = handle.getsockname()[1]
        with self.assertRaises(OSError) as caught:
            sockets.bindUdp("127.0.0.1", port)
        self.assertTrue(portInUse(caught.exception))
        got: defer.Deferred[bytes] = defer.Deferred()

        class Handler:
            def peerDatagramReceived(self, allocation: object, data: bytes,
                                     peer: tuple[str, int]) -> None:
                got.callback(data)

            def relayError(self, failure: object) -> None:
                got.errback(failure)

        listening = sockets.adoptUdp(handle, RelayDatagramProtocol(Handler(), "a"))
        self.addCleanup(listening.stopListening)
        sender = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(sender.stopListening)
        sender.write(b"hello", ("127.0.0.1", port))
        return got.addCallback(self.assertEqual, b"hello")

    def test_release(self) -> None:
        """A released handle frees its port."""
        sockets = KernelRelaySockets(reactor)
        handle = sockets.bindUdp("127.0.0.1", 0)
        port = handle.getsockname()[1]
        sockets.releaseUdp(handle)
        sockets.releaseUdp(sockets.bindUdp("127.0.0.1", port))
