"""Tests for the connection guard of L{p2pnet.listen}: the caps every TCP listener has
(issue 14 item 13), driven in memory."""

from __future__ import annotations

import resource
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.listen import (
    ConnectionGuard,
    GuardedConnection,
    GuardedFactory,
    _AcceptLogObserver,
    descriptorLimit,
    descriptorReserve,
    markEstablished,
    raiseDescriptorLimit,
)
from p2pnet.protocols.websocket import WebSocketSite, WebSocketUpgrade

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Recorder(Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost = 0

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost += 1


class Transport(StringTransport):
    """A StringTransport that, like a socket's, knows its protocol and can be aborted."""

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class Harness:
    def __init__(self, guard: ConnectionGuard, handshake: str) -> None:
        self.clock = Clock()
        self.guard = guard
        inner = Factory.forProtocol(Recorder)
        self.factory = GuardedFactory(inner, guard, self.clock, "test", handshake)

    def connect(self, host: str = "192.0.2.1", port: int = 5000) -> GuardedConnection | None:
        cls = IPv6Address if ":" in host else IPv4Address
        protocol = self.factory.buildProtocol(cls("TCP", host, port))
        if protocol is None:
            return None
        transport = Transport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol


class CapTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_pendingPerSource(self) -> None:
        """A source gets C{maxPendingPerSource} connections in their handshake; the next
        is closed at accept (no protocol built), counted and logged; another source and
        a settled connection's source go on."""
        h = Harness(ConnectionGuard(maxOpen=100, maxPendingPerSource=3), "websocket")
        first = [h.connect() for _ in range(3)]
        self.assertNotIn(None, first)
        self.assertIsNone(h.connect())
        self.assertIsNotNone(h.connect("192.0.2.2"))
        self.assertEqual(h.guard.refused["source"], 1)
        first[0].established()  # type: ignore[union-attr]
        self.assertIsNotNone(h.connect())
        self.assertEqual(h.guard.open, 5)
        warnings = [e for e in self.events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["source"], "192.0.2.1")

    def test_ipv6PerSlash64(self) -> None:
        h = Harness(ConnectionGuard(maxOpen=100, maxPendingPerSource=2), "tls")
        self.assertIsNotNone(h.connect("2001:db8::1"))
        self.assertIsNotNone(h.connect("2001:db8::2"))
        self.assertIsNone(h.connect("2001:db8::ffff:3"))
        self.assertIsNotNone(h.connect("2001:db8:0:1::1"))

    def test_total(self) -> None:
        """Established or not, no more than C{maxOpen} at once; a closed one frees a place."""
        h = Harness(ConnectionGuard(maxOpen=4, maxPendingPerSource=100), "")
        opened = [h.connect(f"192.0.2.{i}") for i in range(4)]
        self.assertIsNone(h.connect("198.51.100.1"))
        self.assertEqual(h.guard.refused["total"], 1)
        opened[0].connectionLost(None)  # type: ignore[union-attr]
        self.assertIsNotNone(h.connect("198.51.100.1"))

    def test_pendingTotal(self) -> None:
        """Connections in their handshake hold at most half the budget."""
        h = Harness(ConnectionGuard(maxOpen=8, maxPendingPerSource=100), "tls")
        for i in range(4):
            self.assertIsNotNone(h.connect(f"192.0.2.{i}"))
        self.assertIsNone(h.connect("198.51.100.1"))
        self.assertEqual(h.guard.refused["pending"], 1)

    def test_logBounded(self) -> None:
        """A flood of refusals writes a bounded number of lines."""
        h = Harness(ConnectionGuard(maxOpen=1, maxPendingPerSource=1), "")
        h.connect()
        for _ in range(1000):
            self.assertIsNone(h.connect())
        warnings = [e for e in self.events if e.get("log_level") == LogLevel.warn]
        self.assertLessEqual(len(warnings), 5)
        self.assertEqual(h.guard.refused["total"], 1000)

    def test_pendingTimeout(self) -> None:
        h = Harness(ConnectionGuard(maxOpen=10, pendingTimeout=15), "websocket")
        slow = h.connect()
        done = h.connect()
        done.established()  # type: ignore[union-attr]
        h.clock.advance(14.9)
        self.assertFalse(slow.transport.aborted)  # type: ignore[union-attr]
        h.clock.advance(0.2)
        self.assertTrue(slow.transport.aborted)  # type: ignore[union-attr]
        self.assertFalse(done.transport.aborted)  # type: ignore[union-attr]
        self.assertEqual(h.guard.refused["timeout"], 1)

    def test_plainEstablishedAtOnce(self) -> None:
        h = Harness(ConnectionGuard(maxOpen=10, maxPendingPerSource=1), "")
        for _ in range(5):
            self.assertFalse(h.connect().pending)  # type: ignore[union-attr]
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_closeReleases(self) -> None:
        h = Harness(ConnectionGuard(maxOpen=10, maxPendingPerSource=1), "tls")
        connection = h.connect()
        connection.connectionLost(None)  # type: ignore[union-attr]
        connection.connectionLost(None)  # type: ignore[union-attr]  # twice: counted once
        self.assertEqual((h.guard.open, h.guard.pendingTotal, dict(h.guard.pending)),
                         (0, 0, {}))
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(connection.wrapped.lost, 2)  # type: ignore[union-attr]

    def test_passesThrough(self) -> None:
        """The listener's protocol gets the bytes and the real transport."""
        h = Harness(ConnectionGuard(), "")
        connection = h.connect()
        connection.dataReceived(b"abc")  # type: ignore[union-attr]
        inner = connection.wrapped  # type: ignore[union-attr]
        self.assertEqual(inner.received, [b"abc"])
        self.assertIs(inner.transport, connection.transport)  # type: ignore[union-attr]

    def test_serviceRefuses(self) -> None:
        """A factory returning None (a service's own cap): no protocol, nothing held
        (issue 14 item 18: a refused STUN-TLS connection stayed open forever)."""
        guard = ConnectionGuard(maxOpen=10)
        refusing = Factory()
        refusing.buildProtocol = lambda addr: None  # type: ignore[method-assign]
        factory = GuardedFactory(refusing, guard, Clock(), "test", "tls")
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)))
        self.assertEqual((guard.open, guard.pendingTotal), (0, 0))

    def test_webSocketUpgradeEstablishes(self) -> None:
        """The upgrade ends the pending state of a WebSocket site's connection."""
        guard = ConnectionGuard(maxOpen=10, maxPendingPerSource=1)
        clock = Clock()

        class Messages(Recorder):
            def negotiationStarted(self, transport: Any) -> None:
                pass

            def negotiationFinished(self) -> None:
                pass

        class Protocols:
            def buildProtocol(self, request: Any) -> Any:
                return Messages()

        site = WebSocketSite(WebSocketUpgrade(Protocols(), 100), 30, clock)  # type: ignore[arg-type]
        factory = GuardedFactory(site, guard, clock, "test")
        self.assertEqual(factory.handshake, "websocket")
        connection = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
        transport = Transport()
        transport.protocol = connection
        connection.makeConnection(transport)  # type: ignore[union-attr]
        self.assertTrue(connection.pending)  # type: ignore[union-attr]
        connection.dataReceived(UPGRADE)  # type: ignore[union-attr]
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        self.assertFalse(connection.pending)  # type: ignore[union-attr]
        self.assertEqual(guard.pendingTotal, 0)

    def test_markEstablishedWithoutGuard(self) -> None:
        markEstablished(StringTransport())  # nothing to find: nothing happens
        markEstablished(None)


class DescriptorTests(SynchronousTestCase):
    def test_raise(self) -> None:
        """The soft limit ends at the hard limit."""
        before = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, before)
        if before[1] != resource.RLIM_INFINITY and before[1] > 64:
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, before[1]))
            self.assertEqual(raiseDescriptorLimit(), (64, before[1]))
            self.assertEqual(descriptorLimit(), before[1])
        self.assertEqual(raiseDescriptorLimit()[0], raiseDescriptorLimit()[1])

    def test_budgetBelowLimit(self) -> None:
        self.assertEqual(descriptorReserve(1024), 128)
        self.assertEqual(descriptorReserve(256), 64)
        guard = ConnectionGuard()
        self.assertEqual(guard.limit, descriptorLimit() - descriptorReserve(descriptorLimit()))

    def test_acceptLogBounded(self) -> None:
        seen: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        observer = _AcceptLogObserver(burst=3, interval=60)
        for i in range(100):
            observer({"log_format": "Could not accept new connection (EMFILE)",
                      "log_time": 1000.0 + i * 0.01, "log_level": LogLevel.info,
                      "log_namespace": "t"})
        observer({"log_format": "again", "log_time": 1100.0, "log_level": LogLevel.info,
                  "log_namespace": "t"})
        self.assertEqual(len(seen), 4)
        self.assertIn("97 similar events not logged", seen[-1]["log_format"])
