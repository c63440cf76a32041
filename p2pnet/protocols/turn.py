# -*- test-case-name: test.unit.test_protocols_turn -*-
"""TURN server transports on the relay side: the relayed UDP sockets (RFC 8656) and the
relayed TCP listeners and peer connections (RFC 6062).

Thin: a relayed socket hands each datagram to its L{RelayHandler} (the TURN data path)
with the allocation it belongs to; it holds no policy. The TURN service makes relayed
sockets only through a L{RelaySockets} it is given: L{KernelRelaySockets} binds them
here (C{bindRelaySocket}) and has the reactor adopt them, so a reserved port (EVEN-PORT's
R bit) is a bound but unread socket; tests hand in
L{p2pnet.testing.MemoryRelaySockets}, which binds nothing.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import base, tcp, udp
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IConnector, IListeningPort, IReactorSocket
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import (
    ClientFactory,
    DatagramProtocol,
    Factory,
    Protocol,
    connectionDone,
)
from twisted.python.failure import Failure

__all__ = [
    "ConnectFactory",
    "KernelRelaySockets",
    "RelaySockets",
    "PeerConnection",
    "PeerConnectionHandler",
    "PeerListenerFactory",
    "RelayDatagramProtocol",
    "RelayHandler",
    "bindRelaySocket",
    "adoptRelaySocket",
    "connectFromRelay",
    "listenRelayTCP",
    "portInUse",
    "setDontFragment",
]

#: Linux socket options for the DF bit (RFC 8656 DONT-FRAGMENT); CPython before 3.12
#: does not name them, so Linux's numbers (<linux/in.h>, <linux/in6.h>) are the fallback.
_LINUX = sys.platform.startswith("linux")
_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10 if _LINUX else None)
_IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2 if _LINUX else None)
_IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23 if _LINUX else None)
_IPV6_PMTUDISC_DO = getattr(socket, "IPV6_PMTUDISC_DO", 2 if _LINUX else None)

#: Whether this platform can send UDP with the DF bit set.
DONT_FRAGMENT_SUPPORTED = _IP_MTU_DISCOVER is not None and _IP_PMTUDISC_DO is not None


class RelayHandler(TypingProtocol):
    """What a relayed socket reports to (implemented by the TURN service)."""

    def peerDatagramReceived(self, allocation: Any, data: bytes,
                             peer: tuple[str, int]) -> None:
        """A UDP datagram from C{peer} arrived at C{allocation}'s relayed address."""

    def relayError(self, failure: Failure) -> None:
        """Handling input on a relayed socket raised."""


def portInUse(error: OSError) -> bool:
    """Whether C{error} from L{bindRelaySocket} means "try another port"."""
    return error.errno in (errno.EADDRINUSE, errno.EACCES)


def bindRelaySocket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to C{(host, port)}; raises C{OSError}."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def setDontFragment(sock: socket.socket) -> None:
    """Ask the kernel to send with the DF bit set (no fragmentation; EMSGSIZE instead)."""
    if sock.family == socket.AF_INET6:
        if _IPV6_MTU_DISCOVER is not None and _IPV6_PMTUDISC_DO is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_DO)
    elif _IP_MTU_DISCOVER is not None and _IP_PMTUDISC_DO is not None:
        sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)


class _QuietPort(udp.Port):
    """Twisted's UDP port without its two log lines per socket ("... starting on N",
    "(UDP Port N Closed)"): a relayed socket opens and closes with each allocation, and
    the TURN service logs that itself, with the user and the 5-tuple."""

    def _bindSocket(self) -> None:
        sock: Any = self._preexistingSocket
        self._preexistingSocket = None
        self._realPortNumber = sock.getsockname()[1]
        self.connected = 1
        self.socket = sock
        self.fileno = sock.fileno  # type: ignore[method-assign]

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._realPortNumber = None
        self.maxThroughput = -1
        base.BasePort.connectionLost(self, reason)
        self.protocol.doStop()
        self.socket.close()
        del self.socket
        del self.fileno
        if hasattr(self, "d"):
            self.d.callback(None)
            del self.d


def adoptRelaySocket(reactor: IReactorSocket, sock: socket.socket,
                     protocol: RelayDatagramProtocol, dontFragment: bool = False
                     ) -> IListeningPort:
    """Hand a socket from L{bindRelaySocket} to the reactor, served by C{protocol}.

    On Twisted's POSIX reactors the port is a L{_QuietPort}; other reactors (test fakes)
    adopt it their own way. The socket object is closed (the reactor keeps its own
    descriptor).
    """
    try:
        if dontFragment:
            setDontFragment(sock)
        if isinstance(reactor, PosixReactorBase):
            port = _QuietPort._fromListeningDescriptor(
                reactor, sock.fileno(), sock.family, protocol, maxPacketSize=65535)
            port.startListening()
            return port
        return reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol, 65535)
    finally:
        sock.close()


def _shareAddress(sock: socket.socket) -> None:
    # A connecting socket may bind the address:port a listening socket holds only when
    # both set SO_REUSEPORT (Linux; same user). That is how an RFC 6062 connection to
    # a peer leaves from the relayed transport address while peers can still connect in.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def listenRelayTCP(reactor: Any, factory: Factory, host: str, port: int) -> IListeningPort:
    """Listen for peers on a TCP allocation's relayed address (RFC 6062 §5.3).

    On Twisted's POSIX reactors the socket shares its address (SO_REUSEPORT) so that
    L{connectFromRelay} can connect out from it; test fakes get a plain C{listenTCP}.

    @raise twisted.internet.error.CannotListenError: the address is taken.
    """
    if not isinstance(reactor, PosixReactorBase):
        return reactor.listenTCP(port, factory, interface=host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        _shareAddress(sock)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
        return reactor.adoptStreamPort(sock.fileno(), family, factory)
    except OSError as e:
        raise CannotListenError(host, port, e) from None
    finally:
        sock.close()


class _SharedAddressClient(tcp.Client):
    """A TCP client whose socket may bind an address a relayed listener holds."""

    def createInternetSocket(self) -> socket.socket:
        sock = super().createInternetSocket()
        _shareAddress(sock)
        return sock


class _SharedAddressConnector(tcp.Connector):
    def _makeTransport(self) -> _SharedAddressClient:
        return _SharedAddressClient(self.host, self.port, self.bindAddress, self, self.reactor)


def connectFromRelay(reactor: Any, host: str, port: int, factory: ClientFactory,
                     timeout: float, relayed: tuple[str, int]) -> IConnector:
    """Connect to a peer from the relayed transport address C{relayed}: RFC 6062
    §5.2, "The local endpoint is the relayed transport address associated with
    the allocation". Test fakes get a plain C{connectTCP} with that bind address."""
    if not isinstance(reactor, PosixReactorBase):
        return reactor.connectTCP(host, port, factory, timeout=timeout, bindAddress=relayed)
    connector = _SharedAddressConnector(host, port, factory, timeout, relayed, reactor)
    connector.connect()
    return connector


class RelayDatagramProtocol(DatagramProtocol):
    """One relayed UDP socket of one allocation."""

    noisy = False

    def __init__(self, handler: RelayHandler, allocation: Any) -> None:
        self.handler = handler
        self.allocation = allocation
        self.sendto: Any = None

    def startProtocol(self) -> None:
        """Pick the send function: the socket's own C{sendto} when there is a socket
        (Twisted's C{write} validates the address text again on every datagram, a
        measurable part of relaying one; errors then raise C{OSError} to the caller),
        else the transport's C{write} (test fakes)."""
        sock = getattr(self.transport, "socket", None)
        self.sendto = sock.sendto if sock is not None else self.transport.write  # type: ignore[union-attr]

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            self.handler.peerDatagramReceived(self.allocation, data, (addr[0], addr[1]))
        except Exception:
            self.handler.relayError(Failure())

    def send(self, data: bytes, peer: tuple[str, int]) -> None:
        """Send one datagram to C{peer} from the relayed address (may raise C{OSError})."""
        self.sendto(data, peer)


# -- RFC 6062 TCP relays ----------------------------------------------------------------------

#: Bytes a peer data connection holds before its ConnectionBind; then reading pauses.
PENDING_LIMIT = 64 * 1024
#: Bytes all peer data connections of one handler hold before their ConnectionBind;
#: beyond it every unbound connection pauses reading after its current read.
PENDING_TOTAL_LIMIT = 16 * 1024 * 1024


class PeerConnectionHandler(TypingProtocol):
    """What a peer data connection reports to (implemented by the TURN service).

    @ivar pendingBytes: bytes all unbound peer data connections hold (kept by them).
    """

    pendingBytes: int

    def tcpRelayed(self, allocation: Any, size: int, fromPeer: bool) -> None:
        """C{size} bytes went through a spliced pair, from the peer or to it."""

    def peerConnectionMade(self, connection: PeerConnection) -> None:
        """A peer connected in to a relayed TCP address, or our connect succeeded."""

    def peerConnectionLost(self, connection: PeerConnection) -> None:
        """The peer data connection closed."""

    def peerConnectFailed(self, context: Any) -> None:
        """The connection a Connect request asked for could not be made."""

    def acceptPeer(self, allocation: Any, host: str) -> bool:
        """Whether a peer at C{host} may connect in to C{allocation}'s relayed address."""


class PeerConnection(Protocol):
    """One RFC 6062 peer data connection: buffered until spliced to a client data
    connection, then a byte pipe both ways with producer/consumer back-pressure.

    @ivar allocation: the allocation whose relayed address this connection uses.
    @ivar connectionId: the CONNECTION-ID the client binds with (set by the service).
    @ivar client: the client data connection once spliced.
    """

    def __init__(self, handler: PeerConnectionHandler, allocation: Any) -> None:
        self.handler = handler
        self.allocation = allocation
        self.connectionId = 0
        self.peer: tuple[str, int] = ("", 0)
        self.client: Any = None
        self.timer: Any = None
        #: The Connect request this outgoing connection answers (C{None}: incoming).
        self.context: Any = None
        self._pending: list[bytes] = []
        self._pendingSize = 0
        self._paused = False

    def connectionMade(self) -> None:
        address: Any = self.transport.getPeer()  # type: ignore[union-attr]
        self.peer = (address.host, address.port)
        self.handler.peerConnectionMade(self)

    def dataReceived(self, data: bytes) -> None:
        if self.client is not None:
            self.client.transport.write(data)
            self.handler.tcpRelayed(self.allocation, len(data), True)
            return
        # RFC 6062 §5.3: "The server MUST buffer any data received from the peer."
        self._pending.append(data)
        self._pendingSize += len(data)
        self.handler.pendingBytes += len(data)
        if not self._paused and (self._pendingSize >= PENDING_LIMIT
                                 or self.handler.pendingBytes >= PENDING_TOTAL_LIMIT):
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def _fromClient(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]
        self.handler.tcpRelayed(self.allocation, len(data), False)

    def _dropPending(self) -> None:
        self.handler.pendingBytes -= self._pendingSize
        self._pending.clear()
        self._pendingSize = 0

    def splice(self, client: Any) -> None:
        """Join this connection to the client data connection C{client} (a STUN stream
        protocol switched to raw bytes): flush what was buffered and make each
        transport the other's producer, so a slow side pauses the fast one."""
        self.client = client
        if self._pending:
            client.transport.write(b"".join(self._pending))
            for chunk in self._pending:
                self.handler.tcpRelayed(self.allocation, len(chunk), True)
            self._dropPending()
        client.startRaw(self._fromClient)
        client.transport.registerProducer(self.transport, True)
        self.transport.registerProducer(client.transport, True)  # type: ignore[union-attr]
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def close(self) -> None:
        """Close this connection (and, through the service, its client side)."""
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._dropPending()
        self.handler.peerConnectionLost(self)


class PeerListenerFactory(Factory):
    """Accepts peers connecting in to one TCP allocation's relayed address.

    C{acceptPeer(allocation, host)} on the handler decides (permission and limits); a
    refused connection is closed at once, as RFC 6062 §5.3 requires.
    """

    noisy = False

    def __init__(self, handler: PeerConnectionHandler, allocation: Any) -> None:
        self.handler = handler
        self.allocation = allocation

    def buildProtocol(self, addr: Any) -> PeerConnection | None:
        if not self.handler.acceptPeer(self.allocation, getattr(addr, "host", "")):
            return None
        return PeerConnection(self.handler, self.allocation)


class ConnectFactory(ClientFactory):
    """The server's outgoing connection for one RFC 6062 Connect request.

    @ivar context: the service's record of the request, handed back on success (as the
        connection's C{context}) or failure (C{handler.peerConnectFailed(context)}).
    """

    noisy = False

    def __init__(self, handler: Any, allocation: Any, context: Any) -> None:
        self.handler = handler
        self.allocation = allocation
        self.context = context

    def buildProtocol(self, addr: Any) -> PeerConnection:
        connection = PeerConnection(self.handler, self.allocation)
        connection.context = self.context
        return connection

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.handler.peerConnectFailed(self.context)


# -- how the TURN service gets its relayed sockets --------------------------------------------


class RelaySockets(TypingProtocol):
    """Makes the TURN service's relayed sockets (injected, so unit tests bind nothing).

    A UDP port is had in two steps, so a reservation can hold it bound but unread:
    L{bindUdp} (raises C{OSError}; L{portInUse} says whether to try another port), then
    L{adoptUdp} or L{releaseUdp}.
    """

    def bindUdp(self, host: str, port: int) -> Any:
        """Bind a UDP socket to C{(host, port)}; a handle for L{adoptUdp}/L{releaseUdp}."""

    def releaseUdp(self, handle: Any) -> None:
        """Close a bound socket that was never adopted."""

    def adoptUdp(self, handle: Any, protocol: DatagramProtocol,
                 dontFragment: bool = False) -> IListeningPort:
        """Start serving a bound socket with C{protocol}; the port to stop it with."""

    def setDontFragment(self, port: IListeningPort) -> None:
        """Send with the DF bit from now on (RFC 8656 DONT-FRAGMENT)."""

    def listenTcp(self, factory: Factory, host: str, port: int) -> IListeningPort:
        """Listen for peers on a TCP relayed address; raises C{CannotListenError}."""

    def connectTcp(self, host: str, port: int, factory: ClientFactory, timeout: float,
                   bindAddress: tuple[str, int]) -> IConnector:
        """Connect to a peer from the relayed transport address C{bindAddress}."""


class KernelRelaySockets:
    """L{RelaySockets} on real sockets, adopted by C{reactor}."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def bindUdp(self, host: str, port: int) -> socket.socket:
        """A non-blocking UDP socket bound to C{(host, port)} (L{bindRelaySocket})."""
        return bindRelaySocket(host, port)

    def releaseUdp(self, handle: socket.socket) -> None:
        """Close the socket."""
        handle.close()

    def adoptUdp(self, handle: socket.socket, protocol: DatagramProtocol,
                 dontFragment: bool = False) -> IListeningPort:
        """Hand the socket to the reactor (L{adoptRelaySocket})."""
        return adoptRelaySocket(self.reactor, handle, protocol,  # type: ignore[arg-type]
                                dontFragment)

    def setDontFragment(self, port: IListeningPort) -> None:
        """Set DF on the port's socket."""
        setDontFragment(port.socket)  # type: ignore[attr-defined]

    def listenTcp(self, factory: Factory, host: str, port: int) -> IListeningPort:
        """L{listenRelayTCP}."""
        return listenRelayTCP(self.reactor, factory, host, port)

    def connectTcp(self, host: str, port: int, factory: ClientFactory, timeout: float,
                   bindAddress: tuple[str, int]) -> IConnector:
        """L{connectFromRelay}."""
        return connectFromRelay(self.reactor, host, port, factory, timeout, bindAddress)
