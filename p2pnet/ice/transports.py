# -*- test-case-name: test.interop.test_ice_agent -*-
"""The ways an ICE agent's datagrams leave: a host UDP socket (which also asks STUN
servers for the server-reflexive address), and a TURN allocation over UDP, TCP or TLS
(RFC 8656), which relays them once a permission for the peer is installed.

Each is a I{path}: C{send(remote, data)} and a C{receiver(base, source, data)} callback
the agent sets. Time comes from the injected reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime

from p2pnet.codecs.stun import Message, Method, StunClass, isStun
from p2pnet.protocols.stun_client import StunClientProtocol, mappedAddress, normalAddress
from p2pnet.protocols.turn_client import (
    TurnAllocation,
    TurnClientProtocol,
    TurnStreamClientProtocol,
    connectTurnStream,
)
from p2pnet.services.turn_credentials import restPassword

__all__ = ["HostSocket", "StreamRelay", "TurnServer", "UdpRelay"]

Address = tuple[str, int]
Receiver = Callable[[Address, Address, bytes], None]

#: Datagrams held per peer while its TURN permission is being installed.
MAX_QUEUED = 32
#: Seconds between refreshes of a stream relay's allocation and permissions (they last
#: 600 s and 300 s, RFC 8656 §7 and §9).
STREAM_REFRESH = 240.0


@dataclass(frozen=True)
class TurnServer:
    """A TURN server to gather a relayed candidate from.

    @ivar transport: C{udp}, C{tcp} or C{tls} between the agent and the server (the
        relayed address is UDP in every case).
    @ivar tlsOptions: for C{tls}: e.g. C{optionsForClientTLS(host, trustRoot=...)}.
    """

    host: str
    port: int
    username: str
    password: str
    transport: str = "udp"
    tlsOptions: Any = None

    @classmethod
    def rest(cls, host: str, port: int, secret: str, now: float, user: str = "",
             ttl: int = 86400, **kwargs: Any) -> TurnServer:
        """A server with TURN REST credentials made from the shared C{secret}: user name
        C{EXPIRY:USER}, password base64(HMAC-SHA1(secret, username))."""
        username = f"{int(now) + ttl}:{user}" if user else str(int(now) + ttl)
        return cls(host, port, username, restPassword(secret, username), **kwargs)


class HostSocket(StunClientProtocol):
    """A host candidate's UDP socket: STUN answers to its own Binding requests (the
    server-reflexive query) stay here; everything else goes to L{receiver}."""

    noisy = False

    def __init__(self, reactor: IReactorTime) -> None:
        super().__init__(reactor)
        self.receiver: Receiver | None = None
        self.base: Address = ("", 0)

    def startProtocol(self) -> None:
        host = self.transport.getHost()  # type: ignore[union-attr]
        self.base = normalAddress((host.host, host.port))

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if isStun(datagram) and self._table.get(datagram[8:20]) is not None:
            super().datagramReceived(datagram, addr)
            return
        if self.receiver is not None:
            try:
                source = normalAddress(addr)
            except ValueError:
                return
            self.receiver(self.base, source, datagram)

    def send(self, remote: Address, data: bytes) -> None:
        """Send C{data} to C{remote} from this socket."""
        self.transport.write(data, remote)  # type: ignore[union-attr]

    async def reflexive(self, server: Address) -> Address | None:
        """This socket's server-reflexive address from the STUN server, or C{None}."""
        response = await self.request(Message(Method.BINDING, StunClass.REQUEST), server)
        return mappedAddress(response)


class _Permissions:
    """Permissions installed on a TURN allocation, and datagrams waiting for one."""

    def __init__(self, install: Callable[[str], Deferred[Any]],
                 send: Callable[[Address, bytes], None]) -> None:
        self._install = install
        self._send = send
        self.hosts: set[str] = set()
        self._waiting: dict[str, list[tuple[Address, bytes]]] = {}

    def send(self, remote: Address, data: bytes) -> None:
        remote = normalAddress(remote)
        if remote[0] in self.hosts:
            self._send(remote, data)
            return
        queue = self._waiting.get(remote[0])
        if queue is None:
            queue = self._waiting[remote[0]] = []
            self._install(remote[0]).addCallbacks(
                lambda _, h=remote[0]: self._installed(h),
                lambda _, h=remote[0]: self._waiting.pop(h, None))
        if len(queue) < MAX_QUEUED:
            queue.append((remote, data))

    def _installed(self, host: str) -> None:
        self.hosts.add(host)
        for remote, data in self._waiting.pop(host, []):
            self._send(remote, data)


class _Relay:
    """What both kinds of relay share: the base, the receiver, permissions."""

    receiver: Receiver | None = None
    base: Address = ("", 0)
    allocation: TurnAllocation | None = None
    _permissions: _Permissions

    def _data(self, peer: Address, data: bytes) -> None:
        if self.receiver is not None:
            self.receiver(self.base, peer, data)

    def send(self, remote: Address, data: bytes) -> None:
        """Relay C{data} to C{remote}, installing its permission first."""
        self._permissions.send(remote, data)

    def selected(self, remote: Address) -> None:
        """The pair to C{remote} carries the data from now on."""


class UdpRelay(_Relay):
    """A relayed candidate from a TURN allocation over UDP (RFC 8656)."""

    def __init__(self, reactor: Any, server: TurnServer) -> None:
        self.client = TurnClientProtocol((server.host, server.port), server.username,
                                         server.password, reactor=reactor)
        self._reactor = reactor
        self._port: Any = None
        self._permissions = _Permissions(
            lambda host: self.client.createPermission(host), self.client.send)
        self.client.onData = self._data

    async def allocate(self) -> TurnAllocation:
        """Open the socket and allocate; the relayed address is the base."""
        family = "::" if ":" in self.client.server[0] else "0.0.0.0"
        self._port = self._reactor.listenUDP(0, self.client, interface=family)
        self.allocation = await self.client.allocate()
        self.base = self.allocation.relayed[0]
        return self.allocation

    def selected(self, remote: Address) -> None:
        """Bind a channel to the selected peer (RFC 8656 §12): its datagrams then
        travel as ChannelData, 4 bytes of overhead instead of a Send indication's 36."""
        try:
            self.client.channelBind(remote).addErrback(lambda _: None)
        except ValueError:
            pass  # every channel number in use: Send indications go on working

    async def close(self) -> None:
        """Delete the allocation and close the socket."""
        try:
            await self.client.close()
        finally:
            if self._port is not None:
                await maybeDeferred(self._port.stopListening)


class StreamRelay(_Relay):
    """A relayed (UDP) candidate from a TURN allocation made over TCP or TLS; Send and
    Data indications carry the datagrams, a timer refreshes allocation and permissions."""

    def __init__(self, reactor: Any, server: TurnServer) -> None:
        self.server = server
        self._reactor = reactor
        self.client: TurnStreamClientProtocol | None = None
        self._permissions = _Permissions(self._permit, self._relay)
        self._timer: Any = None

    async def allocate(self) -> TurnAllocation:
        """Connect to the server and allocate a UDP relayed address."""
        tls = self.server.tlsOptions if self.server.transport == "tls" else None
        self.client = await connectTurnStream(
            self.server.host, self.server.port, self.server.username, self.server.password,
            reactor=self._reactor, tlsOptions=tls)
        self.client.onData = self._data
        self.allocation = await self.client.allocate(tcp=False)
        self.base = self.allocation.relayed[0]
        self._timer = self._reactor.callLater(STREAM_REFRESH, self._refresh)
        return self.allocation

    def _permit(self, host: str) -> Deferred[Any]:
        assert self.client is not None
        return self.client.createPermission(host)

    def _relay(self, remote: Address, data: bytes) -> None:
        if self.client is not None:
            self.client.send(remote, data)

    def _refresh(self) -> None:
        self._timer = self._reactor.callLater(STREAM_REFRESH, self._refresh)
        if self.client is None:
            return
        self.client.refresh().addErrback(lambda _: None)
        if self._permissions.hosts:
            self.client.createPermission(*sorted(self._permissions.hosts)).addErrback(
                lambda _: None)

    async def close(self) -> None:
        """Delete the allocation and close the connection."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        client, self.client = self.client, None
        if client is None:
            return
        try:
            await client.refresh(0)
        except Exception:
            pass  # the allocation ends with its lifetime anyway
        await client.close()
