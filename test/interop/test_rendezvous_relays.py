"""Tests for L{p2pnet.services.rendezvous_relays} that need real sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from p2pnet.services.rendezvous_relays import RelaySelector


class RelayReachabilityTests(TestCase):
    """The relay list keeps only servers that accept a TCP connection (rustdesk.md §4.9)."""

    @defer.inlineCallbacks
    def test_check(self) -> Any:
        import socket

        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol

        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        deadPort = closed.getsockname()[1]
        closed.close()
        up = f"127.0.0.1:{port.getHost().port}"
        selector = RelaySelector(reactor, [f"127.0.0.1:{deadPort}", up])
        self.assertEqual(selector.active, selector.configured)
        yield selector.check()
        self.assertEqual(selector.active, (up,))
        self.assertEqual({selector.choose() for _ in range(4)}, {up})
