# -*- test-case-name: test.unit.test_connection_guard -*-
"""Opening listening sockets with errors a person can act on.

Twisted's C{listenUDP}/C{listenTCP} leave C{IPV6_V6ONLY} at the kernel default, so on
Linux C{::} and C{0.0.0.0} on the same port collide. Here each socket is made and bound
by hand (IPv6 sockets are IPv6-only, so both families can share a port number) and then
adopted by the reactor. A failure raises L{ConfigError} naming the setting that chose
the port.

L{listenSamePort} binds one kind of listener on every address with one port number,
L{closePorts} closes listeners, and L{describePorts} writes them for a log line.

Every TCP listener opened by L{listenTCP} is guarded (issue 14 item 13): its factory is
wrapped in a L{GuardedFactory} that answers to the process's L{ConnectionGuard}. A
connection over a cap is closed as soon as it is accepted, before any protocol object
exists, counted, and logged at a bounded rate:

  - all guarded connections together stay below the process's descriptor limit minus a
    reserve (for UDP and relayed sockets, outgoing connections, database files), so a
    flood on one port cannot leave another service without descriptors;
  - connections that have not finished their handshake (TLS, or the WebSocket upgrade
    on a WebSocket port) are capped per source address (IPv6: per /64), capped in
    total at half the budget, and closed after C{pending-timeout} seconds.

L{raiseDescriptorLimit} lifts the soft C{RLIMIT_NOFILE} to the hard limit at start, and
the accept loop's own EMFILE messages go through a rate-limited observer.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IProtocol,
    IReactorSocket,
    IReactorTime,
)
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from p2pnet.addresses import sourceKey
from p2pnet.errors import ConfigError
from p2pnet.ratelog import RateLimitedLog

__all__ = [
    "ConnectionGuard",
    "GuardedConnection",
    "GuardedFactory",
    "WILDCARDS",
    "bindAddresses",
    "closePorts",
    "describePorts",
    "listenSamePort",
    "listenTCP",
    "listenUDP",
    "markEstablished",
    "processGuard",
    "raiseDescriptorLimit",
    "setProcessGuard",
]

#: What an empty C{listen} setting means: every IPv4 and every IPv6 address.
WILDCARDS = ("0.0.0.0", "::")

#: Kernel receive buffer asked for on UDP sockets; Linux caps it at net.core.rmem_max.
UDP_RCVBUF = 4 * 1024 * 1024


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def ipv6Available() -> bool:
    """Whether this kernel can open an IPv6 socket at all.

    On Linux that is whether the IPv6 stack is loaded, which C{/proc/net/if_inet6}
    says without opening a socket (so building a service binds nothing); elsewhere a
    socket is opened and closed.
    """
    if os.path.isdir("/proc/net"):
        return os.path.exists("/proc/net/if_inet6")
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        return False
    return True


def bindAddresses(configured: Iterable[str]) -> tuple[str, ...]:
    """The addresses to bind: the configured ones, or both wildcards.

    With nothing configured, C{::} is left out on a host without IPv6.
    """
    configured = tuple(configured)
    if configured:
        return configured
    return WILDCARDS if ipv6Available() else WILDCARDS[:1]


def _bound(kind: int, host: str, port: int, key: str, proto: str) -> socket.socket:
    family = _family(host)
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        reason = e.strerror or str(e)
        if e.errno == errno.EADDRINUSE:
            reason = "address already in use"
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise ConfigError(key, f"cannot listen on {proto} {where}: {reason}") from None
    return sock


def listenUDP(
    reactor: IReactorSocket, protocol: DatagramProtocol, host: str, port: int, key: str
) -> IListeningPort:
    """Bind a UDP socket and hand it to C{protocol}; C{key} names the setting for errors."""
    sock = _bound(socket.SOCK_DGRAM, host, port, key, "UDP")
    try:
        return reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol, 65535)
    finally:
        sock.close()  # the reactor holds its own duplicate


def listenTCP(reactor: IReactorSocket, factory: Factory[Any], host: str, port: int, key: str,
              proto: str = "TCP", guard: ConnectionGuard | None = None) -> IListeningPort:
    """Bind a listening TCP socket served by C{factory}; C{key} names the setting for errors.

    The factory is wrapped in a L{GuardedFactory} answering to C{guard} (default: the
    process's, L{processGuard}). A TLS factory's connections, and a WebSocket site's,
    count as pending until their handshake ends (see L{GuardedFactory}).
    """
    sock = _bound(socket.SOCK_STREAM, host, port, key, proto)
    guarded = GuardedFactory(factory, guard or processGuard(), reactor, f"{proto} {port}")
    try:
        listening = reactor.adoptStreamPort(
            sock.fileno(), sock.family, guarded  # type: ignore[arg-type]
        )
    finally:
        sock.close()
    accepting: Any = listening
    if hasattr(accepting, "_logger"):  # a real tcp.Port: its accept loop's EMFILE lines
        accepting._logger = Logger(
            namespace=accepting._logger.namespace, observer=_acceptLogObserver
        )
    return listening


# -- descriptors and connection caps ---------------------------------------------------


def raiseDescriptorLimit() -> tuple[int, int]:
    """Lift the soft C{RLIMIT_NOFILE} to the hard limit (as coturn does at start).

    @return: C{(before, after)} soft limits (equal when nothing could be raised).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, wanted


def descriptorLimit() -> int:
    """The process's soft descriptor limit now."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def descriptorReserve(limit: int) -> int:
    """Descriptors kept out of the guarded listeners' reach: an eighth, at least 64."""
    return max(64, limit // 8)


@implementer(ILogObserver)
class _AcceptLogObserver:
    """Twisted's accept loop logs every EMFILE (and every socket its recovery closes):
    at most C{burst} such events a minute reach the log, and the count of the others is
    said in the next line let through."""

    def __init__(self, burst: int = 5, interval: float = 60.0) -> None:
        self.burst = burst
        self.interval = interval
        self.window = -interval
        self.count = 0
        self.dropped = 0

    def __call__(self, event: dict[str, Any]) -> None:
        now = float(event.get("log_time") or 0.0)
        if now - self.window >= self.interval:
            self.window, self.count = now, 0
        self.count += 1
        if self.count > self.burst:
            self.dropped += 1
            return
        if self.dropped:
            event = dict(event, log_format=str(event.get("log_format", ""))
                         + f" ({self.dropped} similar events not logged)")
            self.dropped = 0
        globalLogPublisher(event)


_acceptLogObserver = _AcceptLogObserver()


class ConnectionGuard:
    """Counts of open TCP connections, shared by every guarded listener of a process.

    @ivar maxOpen: most guarded connections open at once (0: the descriptor limit minus
        L{descriptorReserve}, read when the first connection comes).
    @ivar maxPendingPerSource: most connections from one source (IPv4 address, IPv6 /64)
        that have not finished their handshake.
    @ivar pendingTimeout: seconds a connection may stay pending before it is closed.
    @ivar open: guarded connections open now.
    @ivar pending: pending connections open now, by source key.
    @ivar refused: connections closed at accept, by reason (C{"total"}, C{"pending"},
        C{"source"}); C{"timeout"} counts pending connections closed by the timer.
    """

    log = Logger()

    def __init__(self, maxOpen: int = 0, maxPendingPerSource: int = 32,
                 pendingTimeout: float = 15.0, clock: IReactorTime | None = None) -> None:
        self.maxOpen = maxOpen
        self.maxPendingPerSource = maxPendingPerSource
        self.pendingTimeout = pendingTimeout
        self.open = 0
        self.pendingTotal = 0
        self.pending: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._clock = clock
        self._ratelog: RateLimitedLog | None = None

    @property
    def limit(self) -> int:
        """The cap on guarded connections in force."""
        if self.maxOpen:
            return self.maxOpen
        limit = descriptorLimit()
        return max(1, limit - descriptorReserve(limit))

    def admit(self, source: str, handshake: bool, clock: IReactorTime) -> bool:
        """Count a new connection in, or say why not (counted and logged)."""
        limit = self.limit
        reason = ""
        if self.open >= limit:
            reason = "total"
        elif handshake:
            if self.pendingTotal >= max(1, limit // 2):
                reason = "pending"
            elif self.pending[source] >= self.maxPendingPerSource:
                reason = "source"
        if reason:
            self.refused[reason] += 1
            if self._ratelog is None:
                self._ratelog = RateLimitedLog(self.log, self._clock or clock)
            self._ratelog.warn(
                "connection-refused",
                "refused TCP connections from {source}: {why} (counts so far: {counts})",
                source=source,
                why={
                    "total": f"{limit} connections open, the process's budget",
                    "pending": f"{self.pendingTotal} connections still in their handshake",
                    "source": f"{self.maxPendingPerSource} connections from this source "
                    "still in their handshake",
                }[reason],
                counts=dict(self.refused),
            )
            return False
        self.open += 1
        if handshake:
            self.pending[source] += 1
            self.pendingTotal += 1
        return True

    def settle(self, source: str) -> None:
        """A pending connection finished its handshake (or closed)."""
        left = self.pending[source] - 1
        if left > 0:
            self.pending[source] = left
        else:
            del self.pending[source]
        self.pendingTotal -= 1

    def release(self) -> None:
        """A connection closed."""
        self.open -= 1


_processGuard = ConnectionGuard()


def processGuard() -> ConnectionGuard:
    """The guard L{listenTCP} uses unless given one."""
    return _processGuard


def setProcessGuard(guard: ConnectionGuard) -> None:
    """Replace the process's guard (the appliance does, from its settings); listeners
    opened before keep the one they were opened with."""
    global _processGuard
    _processGuard = guard


class GuardedConnection(Protocol):
    """One connection admitted by a L{ConnectionGuard}: the protocol the transport
    calls, passing everything on to the listener's own protocol (L{wrapped}).

    The wrapped protocol gets the real transport, so writes cost nothing extra; only
    reads pass through here.

    @ivar source: the key its source address is counted under.
    @ivar pending: it has not finished its handshake yet.
    """

    transport: Any

    def __init__(self, factory: GuardedFactory, wrapped: IProtocol, source: str,
                 pending: bool) -> None:
        self.factory = factory
        self.wrapped = wrapped
        self.source = source
        self.pending = pending
        self._timer: IDelayedCall | None = None
        self._tls = pending and factory.handshake == "tls" and isinstance(
            wrapped, TLSMemoryBIOProtocol)
        directlyProvides(self, providedBy(wrapped))

    def __getattr__(self, name: str) -> Any:
        # What a test or a service reads of the listener's protocol (never "wrapped"
        # itself: that would recurse before __init__ ran).
        if name == "wrapped":
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def logPrefix(self) -> str:
        """The wrapped protocol's prefix."""
        prefix = getattr(self.wrapped, "logPrefix", None)
        return prefix() if prefix is not None else self.wrapped.__class__.__name__

    def makeConnection(self, transport: Any) -> None:
        """Start the pending timer, then connect the wrapped protocol."""
        self.transport = transport
        self.connected = True
        if self.pending:
            guard = self.factory.guard
            self._timer = self.factory.clock.callLater(guard.pendingTimeout, self._expire)
        self.wrapped.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        """Pass the bytes on; a TLS connection is established once its handshake is done."""
        self.wrapped.dataReceived(data)
        if self._tls and self.pending and getattr(self.wrapped, "_handshakeDone", True):
            self.established()

    def readConnectionLost(self) -> None:
        """Half-close: passed on (the transport only calls it when the wrapped protocol
        provides C{IHalfCloseableProtocol})."""
        self.wrapped.readConnectionLost()  # type: ignore[attr-defined]

    def writeConnectionLost(self) -> None:
        """Half-close: passed on."""
        self.wrapped.writeConnectionLost()  # type: ignore[attr-defined]

    def established(self) -> None:
        """The handshake is over: the connection no longer counts as pending."""
        if self.pending:
            self.pending = False
            self.factory.guard.settle(self.source)
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.pending:
            self.factory.guard.refused["timeout"] += 1
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Give the connection's place back, then tell the wrapped protocol."""
        self.established()
        if self.connected:
            self.connected = False
            self.factory.guard.release()
        self.wrapped.connectionLost(reason)


class GuardedFactory(Factory):
    """A listener's factory behind a L{ConnectionGuard}.

    C{handshake} is C{"tls"} for a TLS factory (pending until the TLS handshake ends),
    C{"websocket"} for a WebSocket site, plain or under TLS (pending until the upgrade,
    see L{markEstablished}), or C{""} (established at once: only the total cap applies).
    By default it is read from the factory.
    """

    noisy = False

    def __init__(self, wrappedFactory: Factory, guard: ConnectionGuard, clock: Any,
                 name: str = "", handshake: str | None = None) -> None:
        self.wrappedFactory = wrappedFactory
        self.guard = guard
        self.clock = clock
        self.name = name
        self.handshake = _handshakeKind(wrappedFactory) if handshake is None else handshake

    def logPrefix(self) -> str:
        """The wrapped factory's prefix."""
        return self.wrappedFactory.logPrefix()

    def buildProtocol(self, addr: IAddress) -> GuardedConnection | None:  # type: ignore[override]
        """Admit the connection or return C{None} (Twisted then closes the socket)."""
        source = sourceKey(getattr(addr, "host", "") or "")
        pending = bool(self.handshake)
        if not self.guard.admit(source, pending, self.clock):
            return None
        try:
            wrapped = self.wrappedFactory.buildProtocol(addr)
        except BaseException:
            wrapped = None
            self.guard.log.failure("building a protocol for {addr}", addr=addr)
        if wrapped is None:  # the service refused it itself: nothing to wrap
            if pending:
                self.guard.settle(source)
            self.guard.release()
            return None
        return GuardedConnection(self, wrapped, source, pending)

    def doStart(self) -> None:
        """Start the wrapped factory too."""
        self.wrappedFactory.doStart()
        super().doStart()

    def doStop(self) -> None:
        """Stop the wrapped factory too."""
        self.wrappedFactory.doStop()
        super().doStop()


def _handshakeKind(factory: Any) -> str:
    inner = factory.wrappedFactory if isinstance(factory, TLSMemoryBIOFactory) else factory
    from twisted.web.server import Site

    if isinstance(inner, Site):
        return "websocket"
    return "tls" if inner is not factory else ""


def markEstablished(transport: Any) -> None:
    """Tell the guard a connection finished its handshake (the WebSocket upgrade).

    C{transport} is a transport of the connection at any depth (TLS, HTTP channel): the
    chain of C{transport} attributes is followed to the socket, whose protocol is the
    L{GuardedConnection}; nothing happens when there is none (a test transport, an
    unguarded listener).
    """
    for _ in range(8):
        if transport is None:
            return
        protocol = getattr(transport, "protocol", None)
        if isinstance(protocol, GuardedConnection):
            protocol.established()
            return
        transport = getattr(transport, "transport", None)


def closePorts(ports: Iterable[IListeningPort]) -> Deferred[None]:
    """Stop every port in C{ports}; fires once all have stopped.

    If one failed to stop, fails with its error once the others stopped.
    """
    def firstFailure(results: list[tuple[bool, Any]]) -> Failure | None:
        return next((value for ok, value in results if not ok), None)

    stopping = [maybeDeferred(port.stopListening) for port in ports]
    return DeferredList(stopping, consumeErrors=True).addCallback(firstFailure)


def listenSamePort(
    hosts: Iterable[str], port: int, bind: Callable[[str, int], IListeningPort]
) -> list[IListeningPort]:
    """Bind one kind of listener on every address in C{hosts} with one port number.

    C{bind(host, port)} binds one socket (with L{listenTCP} or L{listenUDP}). With
    C{port} 0 the kernel chooses the first socket's port and every other address gets
    that number too; binding 0 on each would give each address its own. If a bind
    fails, the sockets this call bound are closed and the error (a L{ConfigError})
    propagates.
    """
    bound: list[IListeningPort] = []
    try:
        for host in hosts:
            bound.append(bind(host, port))
            port = port or _portOf(bound[0])
    except BaseException:
        closePorts(bound)
        raise
    return bound


def _portOf(listening: IListeningPort) -> int:
    """The port number a listener got (its address is an IPv4Address or IPv6Address)."""
    address: Any = listening.getHost()
    return int(address.port)


def describePorts(ports: Iterable[IListeningPort]) -> str:
    """C{udp 0.0.0.0:21116, tcp [::]:21116} for a log line."""
    described = []
    for port in ports:
        address: Any = port.getHost()
        host = f"[{address.host}]" if ":" in address.host else address.host
        described.append(f"{address.type.lower()} {host}:{address.port}")
    return ", ".join(described)
