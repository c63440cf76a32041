"""Tests for L{p2pnet.listen}: one port number on every address, closing, log text."""

from __future__ import annotations

import socket

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.errors import ConfigError
from p2pnet.listen import closePorts, describePorts, listenSamePort, listenTCP, listenUDP
from p2pnet.testing import FakeListeningPort, UDPMemoryReactor, address


class Blocker:
    """A real listening TCP socket holding C{host:port} (port 0: any free one)."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, port))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def blockedOnlyOn(host: str, free: str) -> Blocker:
    """A L{Blocker} on C{host} whose port is free on C{free} right now (other processes
    on the machine may hold any port of 127.0.0.1: a few tries find one they do not)."""
    for _ in range(50):
        blocker = Blocker(host)
        probe = socket.socket()
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((free, blocker.port))
        except OSError:
            blocker.close()
            continue
        finally:
            probe.close()
        return blocker
    raise AssertionError(f"no port busy on {host} and free on {free} in 50 tries")


class ListenSamePortTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = UDPMemoryReactor()
        self.bound: list[FakeListeningPort] = []

    def bind(self, host: str, port: int) -> IListeningPort:
        listening = listenTCP(self.reactor, Factory(), host, port, "test-port")
        self.bound.append(listening)
        return listening

    def test_zeroChosenOnceForEveryAddress(self) -> None:
        ports = listenSamePort(("127.0.0.1", "127.0.0.2"), 0, self.bind)
        numbers = {p.getHost().port for p in ports}
        self.assertEqual(len(ports), 2)
        self.assertEqual(len(numbers), 1)
        self.assertNotIn(0, numbers)
        self.assertEqual([p.getHost().host for p in ports], ["127.0.0.1", "127.0.0.2"])

    def test_givenPortOnEveryAddress(self) -> None:
        free = Blocker("127.0.0.1")
        free.close()
        ports = listenSamePort(("127.0.0.1", "127.0.0.2"), free.port, self.bind)
        self.assertEqual([p.getHost().port for p in ports], [free.port, free.port])

    def test_inUseClosesWhatWasBound(self) -> None:
        blocker = blockedOnlyOn("127.0.0.2", "127.0.0.1")
        self.addCleanup(blocker.close)
        e = self.assertRaises(ConfigError, listenSamePort, ("127.0.0.1", "127.0.0.2"),
                              blocker.port, self.bind)
        self.assertEqual(e.key, "test-port")
        self.assertIn(f"127.0.0.2:{blocker.port}: address already in use", str(e))
        self.assertEqual(len(self.bound), 1)
        self.assertTrue(self.bound[0].stopped)

    def test_udp(self) -> None:
        def bind(host: str, port: int) -> IListeningPort:
            return listenUDP(self.reactor, DatagramProtocol(), host, port, "test-port")

        ports = listenSamePort(("127.0.0.1", "127.0.0.2"), 0, bind)
        self.assertEqual(len({p.getHost().port for p in ports}), 1)
        self.assertEqual(len(self.reactor.udpPorts), 2)


class ClosePortsTests(SynchronousTestCase):
    def test_stopsEveryPort(self) -> None:
        ports = [FakeListeningPort(address("TCP", "127.0.0.1", n)) for n in (1, 2)]
        self.assertIsNone(self.successResultOf(closePorts(ports)))
        self.assertEqual([p.stopped for p in ports], [True, True])

    def test_waitsForEveryPort(self) -> None:
        stopped: Deferred[None] = Deferred()

        class Slow(FakeListeningPort):
            def stopListening(self) -> Deferred[None]:
                return stopped

        class Broken(FakeListeningPort):
            def stopListening(self) -> Deferred[None]:
                return fail(OSError("stuck"))

        host = address("TCP", "127.0.0.1", 1)
        closing = closePorts([Slow(host), Broken(host)])
        self.assertNoResult(closing)
        stopped.callback(None)
        self.failureResultOf(closing, OSError)

    def test_nothing(self) -> None:
        self.assertIsNone(self.successResultOf(closePorts([])))


class DescribePortsTests(SynchronousTestCase):
    def test_format(self) -> None:
        ports = [
            FakeListeningPort(address("TCP", "0.0.0.0", 18789)),
            FakeListeningPort(address("TCP", "::", 18789)),
            FakeListeningPort(address("UDP", "192.0.2.1", 21116)),
        ]
        self.assertEqual(describePorts(ports),
                         "tcp 0.0.0.0:18789, tcp [::]:18789, udp 192.0.2.1:21116")
