# -*- test-case-name: test.unit.test_testing -*-
"""Fakes for testing p2pnet protocols and services without sockets (and for embedders).

Twisted's C{MemoryReactor} has no C{listenUDP}, and C{FakeDatagramTransport} records
only C{write}; L{FakeDatagramTransport} here also knows its own address and can be
connected, and L{UDPMemoryReactor} hands every datagram port it is asked for a fake
transport, so a service can be started and driven entirely in memory.
"""

from __future__ import annotations

import socket

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.testing import MemoryReactorClock

__all__ = ["FakeDatagramTransport", "FakeListeningPort", "UDPMemoryReactor", "address"]


def address(kind: str, host: str, port: int) -> IPv4Address | IPv6Address:
    """A Twisted address object of the right family for C{host}."""
    cls = IPv6Address if ":" in host else IPv4Address
    return cls(kind, host, port)  # type: ignore[arg-type]


class FakeDatagramTransport:
    """A datagram transport that records what is written and where.

    @ivar written: C{(data, (host, port))} pairs, oldest first.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 3478) -> None:
        self.host = address("UDP", host, port)
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.connected: tuple[str, int] | None = None
        self.stopped = False

    def write(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        """Record one datagram; C{addr} may be omitted on a connected transport."""
        if addr is None:
            if self.connected is None:
                raise ValueError("no address on an unconnected transport")
            addr = self.connected
        self.written.append((bytes(data), addr))

    def connect(self, host: str, port: int) -> None:
        """Remember a default destination, like a connected UDP socket."""
        self.connected = (host, port)

    def getHost(self) -> IPv4Address | IPv6Address:
        """The local address this transport pretends to be bound to."""
        return self.host

    def stopListening(self) -> None:
        """Mark the transport closed."""
        self.stopped = True

    loseConnection = stopListening



class FakeListeningPort:
    """A listening stream port that records being stopped."""

    def __init__(self, host: IPv4Address | IPv6Address) -> None:
        self.host = host
        self.stopped = False

    def getHost(self) -> IPv4Address | IPv6Address:
        """The address the port was bound to."""
        return self.host

    def stopListening(self) -> None:
        """Mark the port closed."""
        self.stopped = True


def _sockname(fileno: int) -> tuple[str, int]:
    sock = socket.socket(fileno=socket.dup(fileno))
    try:
        host, port = sock.getsockname()[:2]
    finally:
        sock.close()
    return host, port


class UDPMemoryReactor(MemoryReactorClock):
    """A C{MemoryReactorClock} whose datagram ports get a L{FakeDatagramTransport}.

    C{listenUDP} and C{adoptDatagramPort} both start the protocol on a fake transport;
    C{udpPorts} maps C{(host, port)} to the protocol listening there. An adopted socket's
    real address is read from its file descriptor, so services built on
    L{p2pnet.listen} can be started against this reactor; C{adoptStreamPort} records the
    factory in C{streamPorts} under its real address, so tests can connect protocols by
    hand.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udpPorts: dict[tuple[str, int], DatagramProtocol] = {}
        self.streamPorts: dict[tuple[str, int], Factory] = {}

    def _attach(self, protocol: DatagramProtocol, host: str, port: int) -> FakeDatagramTransport:
        transport = FakeDatagramTransport(host, port)
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        self.udpPorts[(host, port)] = protocol
        return transport

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> FakeDatagramTransport:
        return self._attach(protocol, interface or "0.0.0.0", port)

    def adoptDatagramPort(
        self, fileno: int, addressFamily: int, protocol: DatagramProtocol, maxPacketSize: int = 8192
    ) -> FakeDatagramTransport:
        return self._attach(protocol, *_sockname(fileno))

    def adoptStreamPort(self, fileno: int, addressFamily: int, factory: Factory
                        ) -> FakeListeningPort:
        host, port = _sockname(fileno)
        self.streamPorts[(host, port)] = factory
        return FakeListeningPort(address("TCP", host, port))
