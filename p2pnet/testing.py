# -*- test-case-name: test.unit.test_testing -*-
"""Fakes for testing p2pnet protocols and services without sockets (and for embedders).

Twisted's C{MemoryReactor} has no C{listenUDP}, and C{FakeDatagramTransport} records
only C{write}; L{FakeDatagramTransport} here also knows its own address and can be
connected, and L{UDPMemoryReactor} hands every datagram port it is asked for a fake
transport, so a service can be started and driven entirely in memory.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory
from twisted.internet.testing import MemoryReactor, MemoryReactorClock

__all__ = [
    "FakeDatagramTransport",
    "FakeListeningPort",
    "MemoryRelaySockets",
    "UDPMemoryReactor",
    "address",
]


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


class _RelayTransport(FakeDatagramTransport):
    """A relayed UDP socket in memory; stopping it gives its address back."""

    def __init__(self, owner: MemoryRelaySockets, address: tuple[str, int]) -> None:
        super().__init__(*address)
        self.owner = owner
        self.address = address
        self.dontFragment = False

    def stopListening(self) -> None:
        """Mark the transport closed and free its address."""
        self.stopped = True
        self.owner.bound.discard(self.address)

    loseConnection = stopListening


class MemoryRelaySockets:
    """The TURN service's relayed sockets in memory (a
    L{p2pnet.protocols.turn.RelaySockets}): nothing is bound in the kernel.

    UDP ports get a L{FakeDatagramTransport} (recorded in C{udpPorts}, and in the
    reactor's C{udpPorts} when it has one); TCP listeners and connections go to the
    C{MemoryReactor}'s C{tcpServers} and C{tcpClients}.

    @ivar bound: addresses held (by a relayed socket or a reservation).
    @ivar taken: addresses to pretend someone else holds (binding them fails).
    """

    def __init__(self, reactor: MemoryReactor) -> None:
        self.reactor = reactor
        self.bound: set[tuple[str, int]] = set()
        self.taken: set[tuple[str, int]] = set()
        self.udpPorts: dict[tuple[str, int], DatagramProtocol] = {}

    def bindUdp(self, host: str, port: int) -> tuple[str, int]:
        """Hold C{(host, port)}; C{OSError(EADDRINUSE)} when it is held or taken."""
        address = (host, port)
        if address in self.bound or address in self.taken:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        self.bound.add(address)
        return address

    def releaseUdp(self, handle: tuple[str, int]) -> None:
        """Give a held address back."""
        self.bound.discard(handle)

    def adoptUdp(self, handle: tuple[str, int], protocol: DatagramProtocol,
                 dontFragment: bool = False) -> _RelayTransport:
        """Start C{protocol} on a fake transport at the held address."""
        transport = _RelayTransport(self, handle)
        transport.dontFragment = dontFragment
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        self.udpPorts[handle] = protocol
        ports = getattr(self.reactor, "udpPorts", None)
        if ports is not None:
            ports[handle] = protocol
        return transport

    def setDontFragment(self, port: Any) -> None:
        """Record that DF was asked for."""
        port.dontFragment = True

    def listenTcp(self, factory: Factory, host: str, port: int) -> Any:
        """C{listenTCP} on the memory reactor; taken addresses raise."""
        if (host, port) in self.taken:
            raise CannotListenError(host, port, OSError(errno.EADDRINUSE, "in use"))
        return self.reactor.listenTCP(port, factory, interface=host)

    def connectTcp(self, host: str, port: int, factory: ClientFactory, timeout: float,
                   bindAddress: tuple[str, int]) -> Any:
        """C{connectTCP} on the memory reactor, from C{bindAddress}."""
        return self.reactor.connectTCP(host, port, factory, timeout=timeout,
                                       bindAddress=bindAddress)
