"""Tests for L{p2pnet.testing} that adopt real sockets."""

from __future__ import annotations

import socket

from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.testing import UDPMemoryReactor


class UDPMemoryReactorTests(SynchronousTestCase):
    def test_listenUDP(self) -> None:
        reactor = UDPMemoryReactor()
        protocol = DatagramProtocol()
        port = reactor.listenUDP(5000, protocol, "127.0.0.1")
        self.assertIs(protocol.transport, port)
        self.assertIs(reactor.udpPorts[("127.0.0.1", 5000)], protocol)

    def test_adoptReadsRealAddress(self) -> None:
        reactor = UDPMemoryReactor()
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = socket.socket(socket.AF_INET, kind)
            sock.bind(("127.0.0.1", 0))
            self.addCleanup(sock.close)
            port = sock.getsockname()[1]
            if kind == socket.SOCK_DGRAM:
                transport = reactor.adoptDatagramPort(sock.fileno(), socket.AF_INET,
                                                      DatagramProtocol())
                self.assertEqual(transport.getHost().port, port)
            else:
                factory = Factory()
                listening = reactor.adoptStreamPort(sock.fileno(), socket.AF_INET, factory)
                self.assertEqual(listening.getHost().port, port)
                self.assertIs(reactor.streamPorts[("127.0.0.1", port)], factory)
