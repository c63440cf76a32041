# -*- test-case-name: test.test_listen -*-
"""Opening listening sockets with errors a person can act on.

Twisted's C{listenUDP}/C{listenTCP} leave C{IPV6_V6ONLY} at the kernel default, so on
Linux C{::} and C{0.0.0.0} on the same port collide. Here each socket is made and bound
by hand (IPv6 sockets are IPv6-only, so both families can share a port number) and then
adopted by the reactor. A failure raises L{ConfigError} naming the setting that chose
the port.

L{listenSamePort} binds one kind of listener on every address with one port number,
L{closePorts} closes listeners, and L{describePorts} writes them for a log line.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IReactorSocket
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.python.failure import Failure

from p2pnet.errors import ConfigError

__all__ = [
    "WILDCARDS",
    "bindAddresses",
    "closePorts",
    "describePorts",
    "listenSamePort",
    "listenTCP",
    "listenUDP",
]

#: What an empty C{listen} setting means: every IPv4 and every IPv6 address.
WILDCARDS = ("0.0.0.0", "::")

#: Kernel receive buffer asked for on UDP sockets; Linux caps it at net.core.rmem_max.
UDP_RCVBUF = 4 * 1024 * 1024


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def ipv6Available() -> bool:
    """Whether this kernel can open an IPv6 socket at all."""
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


def listenTCP(reactor: IReactorSocket, factory: Factory, host: str, port: int, key: str,
              proto: str = "TCP") -> IListeningPort:
    """Bind a listening TCP socket served by C{factory}; C{key} names the setting for errors."""
    sock = _bound(socket.SOCK_STREAM, host, port, key, proto)
    try:
        return reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
    finally:
        sock.close()


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
            port = port or bound[0].getHost().port
    except BaseException:
        closePorts(bound)
        raise
    return bound


def describePorts(ports: Iterable[IListeningPort]) -> str:
    """C{udp 0.0.0.0:21116, tcp [::]:21116} for a log line."""
    described = []
    for port in ports:
        address = port.getHost()
        host = f"[{address.host}]" if ":" in address.host else address.host
        described.append(f"{address.type.lower()} {host}:{address.port}")
    return ", ".join(described)
