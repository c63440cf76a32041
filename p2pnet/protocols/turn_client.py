# -*- test-case-name: test.unit.test_turn_client,test.interop.test_turn_client -*-
"""TURN clients for Twisted (RFC 8656): L{TurnClientProtocol} over UDP, and
L{TurnStreamClientProtocol} over TCP/TLS with RFC 6062 TCP relays (L{TurnDataConnection}
for the data connections).

Built on L{StunClientProtocol} (retransmissions, long-term credentials answering 401
and 438 by themselves); adds the TURN methods, the data paths and the timers that keep
an allocation alive: the allocation is refreshed a minute before it ends, permissions
every 4 minutes (they last 5), channel bindings every 9 minutes (they last 10). Time
comes from the injected reactor, so a C{task.Clock} drives every timer in tests.

The node client and the ICE agent use it as::

    client = TurnClientProtocol(("192.0.2.1", 3478), "user", "password", reactor=reactor)
    reactor.listenUDP(0, client)
    relayed = await client.allocate()
    await client.createPermission("198.51.100.7")
    await client.channelBind(("198.51.100.7", 5000))
    client.onData = lambda peer, data: ...
    client.send(("198.51.100.7", 5000), b"hello")
    await client.close()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from p2pnet.codecs.stun import (
    CHANNEL_MAX,
    CHANNEL_MAX_RFC5766,
    CHANNEL_MIN,
    FAMILY_IPV6,
    HEADER_LENGTH,
    PROTOCOL_TCP,
    PROTOCOL_UDP,
    Attr,
    Message,
    Method,
    StunClass,
    StunDecodeError,
    decode,
    decodeUInt32,
    decodeXorAddress,
    encodeAddressFamily,
    encodeChannelData,
    encodeChannelNumber,
    encodeRequestedTransport,
    encodeUInt32,
    encodeXorAddress,
    splitChannelData,
)
from p2pnet.protocols.stun_client import (
    LongTermCredentials,
    StunClientProtocol,
    StunErrorResponse,
    StunStreamClientProtocol,
    normalAddress,
)

__all__ = [
    "TurnAllocation",
    "TurnClientProtocol",
    "TurnDataConnection",
    "TurnStreamClientProtocol",
    "connectTurnStream",
]

Address = tuple[str, int]

#: Seconds before the end of the allocation's lifetime that it is refreshed.
REFRESH_MARGIN = 60.0
#: Permissions last 300 s (RFC 8656 §9); refreshed after this many seconds.
PERMISSION_REFRESH = 240.0
#: Channel bindings last 600 s (RFC 8656 §12); refreshed after this many seconds.
CHANNEL_REFRESH = 540.0


class TurnAllocation:
    """What an Allocate success response said.

    @ivar relayed: the relayed transport addresses (one, or two for dual stack).
    @ivar mapped: the client's server-reflexive address (XOR-MAPPED-ADDRESS).
    @ivar lifetime: seconds granted.
    """

    def __init__(self, relayed: list[Address], mapped: Address | None, lifetime: int) -> None:
        self.relayed = relayed
        self.mapped = mapped
        self.lifetime = lifetime


def _xorAddresses(message: Message, attrType: int) -> list[Address]:
    found = []
    for t, value in message.attributes:
        if t == attrType:
            try:
                found.append(decodeXorAddress(value, message.transactionId))
            except StunDecodeError:
                continue
    return found


def _deliverData(message: Message, onData: Callable[[Address, bytes], None] | None) -> None:
    """Hand a Data indication's peer and DATA to C{onData} (RFC 8656 §11.4:
    one without XOR-PEER-ADDRESS or DATA is discarded)."""
    peers = _xorAddresses(message, Attr.XOR_PEER_ADDRESS)
    data = message.get(Attr.DATA)
    if peers and data is not None and onData is not None:
        onData(peers[0], data)


class TurnClientProtocol(StunClientProtocol):
    """A TURN client on one UDP socket, talking to one server.

    @param server: the TURN server, C{(ip, port)}.
    @param username: long-term user name (or a TURN REST C{EXPIRY:USER} name).
    @param password: its password.
    @param reactor: clock and scheduler.
    @ivar onData: called with C{(peer, data)} for every datagram relayed from a peer.
    @ivar allocation: the current L{TurnAllocation}, or C{None}.
    """

    def __init__(self, server: Address, username: str, password: str,
                 reactor: IReactorTime | None = None, **transactionArgs: Any) -> None:
        super().__init__(reactor, **transactionArgs)
        self.server = normalAddress(server)
        self.credentials = LongTermCredentials(username, password)
        self.onData: Callable[[Address, bytes], None] | None = None
        self.allocation: TurnAllocation | None = None
        self.permissions: dict[str, float] = {}
        self.channels: dict[Address, int] = {}
        self._channelPeers: dict[int, Address] = {}
        self._channelTimes: dict[Address, float] = {}
        self._nextChannel = CHANNEL_MIN
        self._maintenance: IDelayedCall | None = None
        self._refreshAt = 0.0

    # -- requests ------------------------------------------------------------------------------

    def _turnRequest(self, method: int, *attributes: tuple[int, bytes]) -> Deferred[Message]:
        message = Message(method, StunClass.REQUEST, attributes=list(attributes))
        return self.request(message, self.server, credentials=self.credentials)

    def allocate(self, lifetime: int | None = None, ipv6: bool = False,
                 dualStack: bool = False) -> Deferred[TurnAllocation]:
        """Allocate a UDP relayed address (RFC 8656 §7.1).

        @param lifetime: LIFETIME to ask for (default: the server's, 600 s).
        @param ipv6: ask for an IPv6 relayed address (REQUESTED-ADDRESS-FAMILY).
        @param dualStack: ask for an IPv6 one too (ADDITIONAL-ADDRESS-FAMILY).
        """
        attributes = [(Attr.REQUESTED_TRANSPORT, encodeRequestedTransport(PROTOCOL_UDP))]
        if lifetime is not None:
            attributes.append((Attr.LIFETIME, encodeUInt32(lifetime)))
        if ipv6:
            attributes.append((Attr.REQUESTED_ADDRESS_FAMILY, encodeAddressFamily(FAMILY_IPV6)))
        elif dualStack:
            attributes.append((Attr.ADDITIONAL_ADDRESS_FAMILY,
                               encodeAddressFamily(FAMILY_IPV6)))

        def allocated(response: Message) -> TurnAllocation:
            relayed = _xorAddresses(response, Attr.XOR_RELAYED_ADDRESS)
            mapped = _xorAddresses(response, Attr.XOR_MAPPED_ADDRESS)
            value = response.get(Attr.LIFETIME)
            granted = decodeUInt32(value) if value is not None else 600
            self.allocation = TurnAllocation(relayed, mapped[0] if mapped else None, granted)
            self._refreshAt = self._reactor.seconds() + max(granted - REFRESH_MARGIN,
                                                             granted / 2)
            self._schedule()
            return self.allocation

        return self._turnRequest(Method.ALLOCATE, *attributes).addCallback(allocated)

    def refresh(self, lifetime: int | None = None) -> Deferred[int]:
        """Refresh the allocation (0 deletes it); fires with the LIFETIME granted."""
        attributes = []
        if lifetime is not None:
            attributes.append((Attr.LIFETIME, encodeUInt32(lifetime)))

        def refreshed(response: Message) -> int:
            value = response.get(Attr.LIFETIME)
            granted = decodeUInt32(value) if value is not None else 0
            if self.allocation is not None:
                self.allocation.lifetime = granted
            self._refreshAt = self._reactor.seconds() + max(granted - REFRESH_MARGIN,
                                                             granted / 2)
            return granted

        return self._turnRequest(Method.REFRESH, *attributes).addCallback(refreshed)

    def createPermission(self, *hosts: str) -> Deferred[None]:
        """Install or refresh permissions for peer IP addresses (RFC 8656 §10.1)."""
        def created(_: Message) -> None:
            now = self._reactor.seconds()
            for host in hosts:
                self.permissions[host] = now
            self._rescheduleMaintenance()

        # XOR-PEER-ADDRESS of IPv6 peers depends on the transaction ID: build the
        # request with its final ID.
        message = Message(Method.CREATE_PERMISSION, StunClass.REQUEST)
        for host in hosts:
            message.add(Attr.XOR_PEER_ADDRESS, encodeXorAddress(host, 0, message.transactionId))
        return self.request(message, self.server, credentials=self.credentials).addCallback(
            created)

    def channelBind(self, peer: Address) -> Deferred[int]:
        """Bind (or refresh) a channel to C{peer}; fires with the channel number."""
        peer = normalAddress(peer)
        channel = self.channels.get(peer)
        if channel is None:
            if self._nextChannel > CHANNEL_MAX:
                raise ValueError("every channel number is in use")
            channel = self._nextChannel
            self._nextChannel += 1
        message = Message(Method.CHANNEL_BIND, StunClass.REQUEST)
        message.add(Attr.CHANNEL_NUMBER, encodeChannelNumber(channel))
        message.add(Attr.XOR_PEER_ADDRESS, encodeXorAddress(*peer, message.transactionId))

        def bound(_: Message) -> int:
            now = self._reactor.seconds()
            self.channels[peer] = channel
            self._channelPeers[channel] = peer
            self._channelTimes[peer] = now
            self.permissions[peer[0]] = now  # ChannelBind installs the permission too
            self._rescheduleMaintenance()
            return channel

        return self.request(message, self.server, credentials=self.credentials).addCallback(
            bound)

    # -- data ----------------------------------------------------------------------------------

    def send(self, peer: Address, data: bytes) -> None:
        """Relay C{data} to C{peer}: as ChannelData when a channel is bound, else in a
        Send indication (RFC 8656 §11.1)."""
        peer = normalAddress(peer)
        channel = self.channels.get(peer)
        if channel is not None:
            self.transport.write(encodeChannelData(channel, data), self.server)  # type: ignore[union-attr]
            return
        indication = Message(Method.SEND, StunClass.INDICATION)
        indication.add(Attr.XOR_PEER_ADDRESS, indication.xorMapped(*peer))
        indication.add(Attr.DATA, data)
        self.transport.write(indication.encode(), self.server)  # type: ignore[union-attr]

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """ChannelData and Data indications from the server go to L{onData}; STUN
        responses to their requests."""
        if not datagram or (addr[0], addr[1]) != self.server:
            super().datagramReceived(datagram, addr)
            return
        first = datagram[0]
        if 0x40 <= first < 0x80:
            try:
                channel, data = splitChannelData(datagram, CHANNEL_MAX_RFC5766)
            except StunDecodeError:
                return
            peer = self._channelPeers.get(channel)
            if peer is not None and self.onData is not None:
                self.onData(peer, data)
            return
        if first < 0x40 and len(datagram) >= 20 and datagram[0:2] == b"\x00\x17":
            try:
                message = decode(datagram)
            except StunDecodeError:
                return
            if message.method == Method.DATA and message.cls == StunClass.INDICATION:
                _deliverData(message, self.onData)
            return
        super().datagramReceived(datagram, addr)

    # -- keeping it alive ----------------------------------------------------------------------

    def _rescheduleMaintenance(self) -> None:
        """Recompute the next maintenance time, unless a round is running now."""
        if self.allocation is not None and self._maintenance is not None:
            self._schedule()

    def _schedule(self) -> None:
        if self._maintenance is not None and self._maintenance.active():
            self._maintenance.cancel()
        due = [self._refreshAt]
        due += [t + PERMISSION_REFRESH for t in self.permissions.values()]
        due += [t + CHANNEL_REFRESH for t in self._channelTimes.values()]
        delay = max(0.0, min(due) - self._reactor.seconds())
        self._maintenance = self._reactor.callLater(delay, self._maintain)

    def _maintain(self) -> None:
        """Refresh whatever is due; failures are left to the next round or the owner."""
        self._maintenance = None
        now = self._reactor.seconds()
        waiting: list[Deferred[Any]] = []
        if now >= self._refreshAt:
            self._refreshAt = now + REFRESH_MARGIN  # until the answer says otherwise
            waiting.append(self.refresh())
        for peer, stamp in list(self._channelTimes.items()):
            if now >= stamp + CHANNEL_REFRESH:
                self._channelTimes[peer] = now
                waiting.append(self.channelBind(peer))
        stale = [h for h, stamp in self.permissions.items() if now >= stamp + PERMISSION_REFRESH]
        if stale:
            for host in stale:
                self.permissions[host] = now
            waiting.append(self.createPermission(*stale))
        for d in waiting:
            d.addErrback(lambda _: None)
        if self.allocation is not None:
            self._schedule()

    def close(self) -> Deferred[None]:
        """Delete the allocation (a Refresh with LIFETIME 0) and stop the timers."""
        if self._maintenance is not None and self._maintenance.active():
            self._maintenance.cancel()
        self._maintenance = None
        if self.allocation is None:
            return succeed(None)
        self.allocation = None

        def gone(failure: Any) -> None:
            # RFC 8656 7.1: a 437 to a LIFETIME 0 Refresh means it is gone already.
            failure.trap(StunErrorResponse)
            if failure.value.code != 437:
                return failure

        return self.refresh(0).addCallbacks(lambda _: None, gone)


# -- TCP/TLS control connections and RFC 6062 TCP relays --------------------------------------


class TurnStreamClientProtocol(StunStreamClientProtocol):
    """A TURN client on one TCP or TLS control connection; with C{tcp=True} allocations
    it speaks RFC 6062: L{connect} asks the server to open a TCP connection to a peer,
    L{onConnectionAttempt} hears of peers connecting in, and L{bindConnection} turns a
    new connection into the byte stream to that peer.

    Open one with L{connectTurnStream}.

    @ivar onConnectionAttempt: called with C{(peer, connectionId)} for each
        ConnectionAttempt indication.
    @ivar onData: called with C{(peer, data)} for each Data indication (UDP allocations
        over TCP or TLS, L{send}).
    """

    def __init__(self, username: str, password: str, reactor: IReactorTime | None = None,
                 **transactionArgs: Any) -> None:
        super().__init__(reactor, **transactionArgs)
        self.credentials = LongTermCredentials(username, password)
        self.allocation: TurnAllocation | None = None
        self.onConnectionAttempt: Callable[[Address, int], None] | None = None
        self.onData: Callable[[Address, bytes], None] | None = None

    def _turnRequest(self, method: int, *attributes: tuple[int, bytes]) -> Deferred[Message]:
        message = Message(method, StunClass.REQUEST, attributes=list(attributes))
        return self.request(message, credentials=self.credentials)

    def allocate(self, tcp: bool = True, lifetime: int | None = None
                 ) -> Deferred[TurnAllocation]:
        """Allocate a TCP (RFC 6062) or UDP relayed address over this connection."""
        attributes = [(Attr.REQUESTED_TRANSPORT,
                       encodeRequestedTransport(PROTOCOL_TCP if tcp else PROTOCOL_UDP))]
        if lifetime is not None:
            attributes.append((Attr.LIFETIME, encodeUInt32(lifetime)))

        def allocated(response: Message) -> TurnAllocation:
            mapped = _xorAddresses(response, Attr.XOR_MAPPED_ADDRESS)
            value = response.get(Attr.LIFETIME)
            self.allocation = TurnAllocation(
                _xorAddresses(response, Attr.XOR_RELAYED_ADDRESS),
                mapped[0] if mapped else None, decodeUInt32(value) if value else 600)
            return self.allocation

        return self._turnRequest(Method.ALLOCATE, *attributes).addCallback(allocated)

    def refresh(self, lifetime: int | None = None) -> Deferred[int]:
        """Refresh the allocation (0 deletes it); fires with the LIFETIME granted."""
        attributes = [(Attr.LIFETIME, encodeUInt32(lifetime))] if lifetime is not None else []

        def refreshed(response: Message) -> int:
            value = response.get(Attr.LIFETIME)
            return decodeUInt32(value) if value is not None else 0

        return self._turnRequest(Method.REFRESH, *attributes).addCallback(refreshed)

    def createPermission(self, *hosts: str) -> Deferred[None]:
        """Permissions for peer IP addresses (needed for peers connecting in)."""
        message = Message(Method.CREATE_PERMISSION, StunClass.REQUEST)
        for host in hosts:
            message.add(Attr.XOR_PEER_ADDRESS, encodeXorAddress(host, 0, message.transactionId))
        return self.request(message, credentials=self.credentials).addCallback(lambda _: None)

    def send(self, peer: Address, data: bytes) -> None:
        """Relay C{data} to C{peer} from a UDP allocation made over this connection, in
        a Send indication (RFC 8656 §11.1); what peers send back reaches
        L{onData} from Data indications."""
        indication = Message(Method.SEND, StunClass.INDICATION)
        indication.add(Attr.XOR_PEER_ADDRESS, indication.xorMapped(*normalAddress(peer)))
        indication.add(Attr.DATA, data)
        self.transport.write(indication.encode())  # type: ignore[union-attr]

    def connect(self, peer: Address) -> Deferred[int]:
        """RFC 6062 4.3: have the server connect to C{peer}; fires with the
        CONNECTION-ID to bind (L{bindConnection}), or fails with 446/447/403..."""
        message = Message(Method.CONNECT, StunClass.REQUEST)
        message.add(Attr.XOR_PEER_ADDRESS, encodeXorAddress(*peer, message.transactionId))

        def connected(response: Message) -> int:
            value = response.get(Attr.CONNECTION_ID)
            if value is None:
                raise StunDecodeError("Connect success without CONNECTION-ID")
            return decodeUInt32(value)

        return self.request(message, credentials=self.credentials).addCallback(connected)

    def _messageReceived(self, message: Message, source: Address | None) -> None:
        if (message.method == Method.CONNECTION_ATTEMPT
                and message.cls == StunClass.INDICATION):
            peers = _xorAddresses(message, Attr.XOR_PEER_ADDRESS)
            value = message.get(Attr.CONNECTION_ID)
            if peers and value is not None and len(value) == 4 and self.onConnectionAttempt:
                self.onConnectionAttempt(peers[0], decodeUInt32(value))
            return
        if message.method == Method.DATA and message.cls == StunClass.INDICATION:
            _deliverData(message, self.onData)
            return
        super()._messageReceived(message, source)


class TurnDataConnection(StunStreamClientProtocol):
    """A client data connection of RFC 6062: STUN until its ConnectionBind succeeds, then
    the byte stream to the peer (L{write}; L{setReceiver} for what arrives, which is
    held until a receiver is set)."""

    def __init__(self, credentials: LongTermCredentials, reactor: IReactorTime | None = None,
                 **transactionArgs: Any) -> None:
        super().__init__(reactor, **transactionArgs)
        self.credentials = credentials
        self.bound = False
        self._receiver: Callable[[bytes], None] | None = None
        self._held: list[bytes] = []
        self._early = b""

    def bind(self, connectionId: int) -> Deferred[None]:
        """Send ConnectionBind for C{connectionId}; afterwards bytes flow as they are."""
        message = Message(Method.CONNECTION_BIND, StunClass.REQUEST)
        message.add(Attr.CONNECTION_ID, encodeUInt32(connectionId))

        def bound(_: Message) -> None:
            self.bound = True

        return self.request(message, credentials=self.credentials).addCallback(bound)

    def setReceiver(self, receiver: Callable[[bytes], None]) -> None:
        """Hand every byte from the peer to C{receiver}, starting with those held."""
        self._receiver = receiver
        held, self._held = self._held, []
        for data in held:
            receiver(data)

    def _deliver(self, data: bytes) -> None:
        if self._receiver is None:
            self._held.append(data)
        else:
            self._receiver(data)

    def dataReceived(self, data: bytes) -> None:
        if self.bound:
            self._deliver(data)
            return
        # Until bound, take whole STUN responses one at a time: the peer's bytes may
        # follow the ConnectionBind success response in the same read.
        self._early += data
        while not self.bound and len(self._early) >= HEADER_LENGTH:
            size = HEADER_LENGTH + int.from_bytes(self._early[2:4], "big")
            if len(self._early) < size:
                return
            frame, self._early = self._early[:size], self._early[size:]
            super().dataReceived(frame)
        if self.bound and self._early:
            rest, self._early = self._early, b""
            self._deliver(rest)

    def write(self, data: bytes) -> None:
        """Send C{data} to the peer (after L{bind})."""
        self.transport.write(data)  # type: ignore[union-attr]


def connectTurnStream(host: str, port: int, username: str, password: str, *,
                      reactor: Any = None, tlsOptions: Any = None,
                      credentials: LongTermCredentials | None = None,
                      dataConnection: bool = False) -> Deferred[Any]:
    """Open a TCP (or TLS, with C{tlsOptions}) connection to a TURN server: a
    L{TurnStreamClientProtocol}, or with C{dataConnection} a L{TurnDataConnection}
    sharing C{credentials} (pass the control connection's, so its nonce is reused)."""
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=30)
    if tlsOptions is not None:
        endpoint = wrapClientTLS(tlsOptions, endpoint)
    protocol: Any
    if dataConnection:
        protocol = TurnDataConnection(credentials or LongTermCredentials(username, password),
                                      reactor=reactor)
    else:
        protocol = TurnStreamClientProtocol(username, password, reactor=reactor)
    return connectProtocol(endpoint, protocol)
