# -*- test-case-name: test.unit.test_protocols_turn -*-
"""Tests for L{p2pnet.protocols.turn}: relayed sockets and RFC 6062 peer connections, in
memory (the kernel side is in C{test/interop/test_turn_sockets.py})."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.protocols.turn import (
    PENDING_LIMIT,
    PENDING_TOTAL_LIMIT,
    PeerConnection,
    PeerListenerFactory,
    RelayDatagramProtocol,
)
from p2pnet.testing import FakeDatagramTransport


class Recorder:
    """A record-keeping handler."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.made: list[PeerConnection] = []
        self.lost: list[PeerConnection] = []
        self.datagrams: list[tuple[Any, bytes, tuple[str, int]]] = []
        self.errors: list[Any] = []
        self.pendingBytes = 0
        self.relayed: list[tuple[Any, int, bool]] = []

    def tcpRelayed(self, allocation: Any, size: int, fromPeer: bool) -> None:
        self.relayed.append((allocation, size, fromPeer))

    def peerConnectionMade(self, connection: PeerConnection) -> None:
        self.made.append(connection)

    def peerConnectionLost(self, connection: PeerConnection) -> None:
        self.lost.append(connection)

    def peerConnectFailed(self, context: Any) -> None:
        raise AssertionError("not expected")

    def acceptPeer(self, allocation: Any, host: str) -> bool:
        return self.accept

    def peerDatagramReceived(self, allocation: Any, data: bytes,
                             peer: tuple[str, int]) -> None:
        if data == b"boom":
            raise ValueError("a handler bug")
        self.datagrams.append((allocation, data, peer))

    def relayError(self, failure: Any) -> None:
        self.errors.append(failure)


class RelaySocketTests(SynchronousTestCase):
    def test_datagrams(self) -> None:
        """Datagrams go to the handler with the allocation; handler errors are
        contained; sending uses the transport."""
        handler = Recorder()
        protocol = RelayDatagramProtocol(handler, "allocation")
        transport = FakeDatagramTransport()
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        protocol.datagramReceived(b"data", ("192.0.2.1", 5, 0, 0))
        protocol.datagramReceived(b"boom", ("192.0.2.1", 5))
        self.assertEqual(handler.datagrams, [("allocation", b"data", ("192.0.2.1", 5))])
        self.assertEqual(len(handler.errors), 1)
        protocol.send(b"out", ("192.0.2.2", 6))
        self.assertEqual(transport.written, [(b"out", ("192.0.2.2", 6))])


class PeerConnectionTests(SynchronousTestCase):
    def connection(self, handler: Recorder) -> tuple[PeerConnection, StringTransport]:
        connection = PeerConnection(handler, "allocation")
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.5", 7000))
        connection.makeConnection(transport)
        return connection, transport

    def test_bufferedThenSpliced(self) -> None:
        """Before the bind, data is held and reading pauses past the limit; splicing
        flushes it, resumes, and makes each transport the other's producer."""
        handler = Recorder()
        connection, transport = self.connection(handler)
        self.assertEqual(handler.made, [connection])
        self.assertEqual(connection.peer, ("192.0.2.5", 7000))
        connection.dataReceived(b"a" * (PENDING_LIMIT - 1))
        self.assertEqual(transport.producerState, "producing")
        connection.dataReceived(b"b")
        self.assertEqual(transport.producerState, "paused")

        class Client:
            def __init__(self) -> None:
                self.transport = StringTransport()
                self.raw: Any = None

            def startRaw(self, receiver: Any) -> None:
                self.raw = receiver

        client = Client()
        connection.splice(client)
        self.assertEqual(client.transport.value(), b"a" * (PENDING_LIMIT - 1) + b"b")
        self.assertEqual(transport.producerState, "producing")
        self.assertIs(client.transport.producer, transport)
        self.assertIs(transport.producer, client.transport)
        client.raw(b"to the peer")
        self.assertEqual(transport.value(), b"to the peer")
        connection.dataReceived(b"to the client")
        self.assertTrue(client.transport.value().endswith(b"to the client"))
        connection.close()
        self.assertTrue(transport.disconnecting)
        connection.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(handler.lost, [connection])

    def test_counted(self) -> None:
        """Bytes through a spliced pair are reported to the handler both ways, the
        buffered ones when they are flushed."""
        handler = Recorder()
        connection, transport = self.connection(handler)
        connection.dataReceived(b"early")
        self.assertEqual(handler.pendingBytes, 5)

        class Client:
            transport = StringTransport()

            def startRaw(self, receiver: Any) -> None:
                self.raw = receiver

        client = Client()
        connection.splice(client)
        self.assertEqual(handler.pendingBytes, 0)
        client.raw(b"abc")
        connection.dataReceived(b"xy")
        self.assertEqual(handler.relayed, [("allocation", 5, True), ("allocation", 3, False),
                                           ("allocation", 2, True)])

    def test_totalPendingBounded(self) -> None:
        """Past the handler-wide limit every unbound connection pauses reading; what it
        held is given back when it closes."""
        handler = Recorder()
        handler.pendingBytes = PENDING_TOTAL_LIMIT - 10
        connection, transport = self.connection(handler)
        connection.dataReceived(b"x" * 9)
        self.assertEqual(transport.producerState, "producing")
        connection.dataReceived(b"x")
        self.assertEqual(transport.producerState, "paused")
        connection.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(handler.pendingBytes, PENDING_TOTAL_LIMIT - 10)

    def test_listenerAsksHandler(self) -> None:
        """Peers connecting in are refused (no protocol) when the handler says so."""
        self.assertIsNone(PeerListenerFactory(Recorder(False), "a").buildProtocol(
            IPv4Address("TCP", "192.0.2.5", 1)))
        self.assertIsInstance(PeerListenerFactory(Recorder(), "a").buildProtocol(
            IPv4Address("TCP", "192.0.2.5", 1)), PeerConnection)
