# -*- test-case-name: test.unit.test_services_turn -*-
"""RFC 6062 TCP relays: Connect, ConnectionAttempt, ConnectionBind and the spliced peer
and client data connections, with their bounds.

Each step of the RFC is quoted right above the code doing it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

from p2pnet.addresses import family, unmapped
from p2pnet.codecs.stun import PROTOCOL_TCP, Attr, Message, Method, StunClass
from p2pnet.protocols.stun import StunLink
from p2pnet.protocols.turn import ConnectFactory, PeerConnection
from p2pnet.services.turn_allocation import Allocation
from p2pnet.services.turn_context import TurnRequest, TurnResponder
from p2pnet.services.turn_permissions import PermissionHandler, peerAddresses
from p2pnet.services.turn_relays import RelayAllocator
from p2pnet.services.turn_table import AllocationTable, QuietObserver
from p2pnet.stats import Stats

__all__ = ["TcpRelays"]

#: RFC 6062 §5.2/§5.3: a peer data connection waits this long for its ConnectionBind,
#: and an outgoing connection attempt "MUST be at least 30 seconds".
CONNECTION_BIND_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30
#: Peer data connections (connecting, pending or spliced) per TCP allocation.
MAX_TCP_CONNECTIONS = 64
#: Peer data connections (connecting, pending or spliced) of all allocations together:
#: each holds a descriptor and up to PENDING_LIMIT buffered bytes before its bind.
MAX_TCP_CONNECTIONS_TOTAL = 4096
#: Peer data connections waiting for their ConnectionBind, all allocations together.
MAX_PENDING_CONNECTIONS = 1024


@dataclass(frozen=True, slots=True)
class _Connecting:
    """What an outgoing Connect needs when its connection is made or fails."""

    request: TurnRequest
    allocation: Allocation
    peer: tuple[str, int]


class TcpRelays(QuietObserver):
    """The RFC 6062 side of the TURN service: a L{PeerConnectionHandler} for relayed TCP
    listeners and connections, and the Connect and ConnectionBind handlers."""

    def __init__(self, clock: IReactorTime, table: AllocationTable, relays: RelayAllocator,
                 respond: TurnResponder, permissions: PermissionHandler, stats: Stats,
                 rng: random.Random | None = None) -> None:
        self.clock = clock
        self.table = table
        self.relays = relays
        self.respond = respond
        self.permissions = permissions
        self.stats = stats
        self.random = rng or random.SystemRandom()
        #: Peer data connections awaiting ConnectionBind, by CONNECTION-ID.
        self.pending: dict[int, PeerConnection] = {}
        #: Client data connections (STUN stream links) to their peer data connection.
        self.dataLinks: dict[Any, PeerConnection] = {}
        #: Peer data connections (connecting, pending or spliced), all together.
        self.connections = 0
        #: Bytes unbound peer data connections hold (kept by L{PeerConnection}).
        self.pendingBytes = 0

    def _add(self, allocation: Allocation, peer: tuple[str, int],
             connection: PeerConnection | None) -> None:
        if peer not in allocation.connections:
            self.connections += 1
        allocation.connections[peer] = connection

    def _drop(self, allocation: Allocation, peer: tuple[str, int]) -> None:
        if allocation.connections.pop(peer, 0) != 0:
            self.connections -= 1

    # -- Connect (RFC 6062 §5.2) ---------------------------------------------------------

    def connect(self, request: TurnRequest) -> None:
        """Open a TCP connection from the relayed address to a peer."""
        allocation = request.allocation
        assert allocation is not None
        if allocation.transport != PROTOCOL_TCP:
            self.respond.error(request, 400)
            return
        # RFC 6062 §5.2: "If the request does not contain an XOR-PEER-ADDRESS attribute,
        # or if such attribute is invalid, the server MUST return a 400 (Bad Request)
        # error."
        peers = peerAddresses(request.message)
        if not peers or len(peers) != 1:
            self.respond.error(request, 400)
            return
        peer = peers[0]
        if family(peer[0]) not in allocation.relayed:
            self.respond.error(request, 443)
            return
        # RFC 6062 §5.2: "If the server is currently processing a Connect request for
        # this allocation with the same XOR-PEER-ADDRESS, it MUST return a 446
        # (Connection Already Exists) error. If the server has already successfully
        # processed a Connect request for this allocation with the same
        # XOR-PEER-ADDRESS, and the resulting client and peer data connections are
        # either pending or active, it MUST return a 446 (Connection Already Exists)
        # error."
        if peer in allocation.connections:
            self.respond.error(request, 446)
            return
        # RFC 6062 §5.2: "If the new connection is forbidden by local policy, the server
        # MUST reject the request with a 403 (Forbidden) error."
        if not self.permissions.policy.permitted(peer[0]):
            self.permissions.forbidden(request)
            return
        if len(allocation.connections) >= MAX_TCP_CONNECTIONS or (
                self.connections >= MAX_TCP_CONNECTIONS_TOTAL):
            self.respond.error(request, 508)
            return
        # RFC 6062 §5.2: "Otherwise, the server MUST initiate an outgoing TCP connection.
        # The local endpoint is the relayed transport address associated with the
        # allocation." ... "The timeout value MUST be at least 30 seconds."
        self._add(allocation, peer, None)
        self.relays.sockets.connectTcp(
            peer[0], peer[1], ConnectFactory(self, allocation, _Connecting(request, allocation,
                                                                           peer)),
            CONNECT_TIMEOUT, allocation.relayed[family(peer[0])])

    def peerConnectFailed(self, context: _Connecting) -> None:
        """RFC 6062 §5.2: "If the connection attempt fails or times out, the server MUST
        return a 447 (Connection Timeout or Failure) error." """
        allocation = context.allocation
        if not self.table.live(allocation):
            return
        if allocation.connections.get(context.peer, 0) is None:
            self._drop(allocation, context.peer)
        self.respond.error(context.request, 447)

    # -- peers connecting in (RFC 6062 §5.3) ------------------------------------------------

    def acceptPeer(self, allocation: Allocation, host: str) -> bool:
        """RFC 6062 §5.3: a peer connecting in is accepted only with a permission (and
        within the connection limits); otherwise its connection is closed at once."""
        return (self.table.live(allocation)
                and allocation.hasPermission(unmapped(host), self.clock.seconds())
                and len(allocation.connections) < MAX_TCP_CONNECTIONS
                and self.connections < MAX_TCP_CONNECTIONS_TOTAL
                and len(self.pending) < MAX_PENDING_CONNECTIONS)

    def peerConnectionMade(self, connection: PeerConnection) -> None:
        """A peer data connection is up: give it a CONNECTION-ID and tell the client."""
        allocation = connection.allocation
        if not self.table.live(allocation):
            connection.close()
            return
        connectionId = self.random.getrandbits(32)
        while connectionId in self.pending or not connectionId:
            connectionId = self.random.getrandbits(32)
        connection.connectionId = connectionId
        self.pending[connectionId] = connection
        # RFC 6062 §5.3: "If no ConnectionBind request associated with this peer data
        # connection is received after 30 seconds, the peer data connection MUST be
        # closed."
        connection.timer = self.clock.callLater(CONNECTION_BIND_TIMEOUT, connection.close)
        self.stats.add("turn.tcp.connections")
        context = connection.context
        if context is not None:
            self._add(allocation, context.peer, connection)
            # RFC 6062 §5.2: "The server MUST include the CONNECTION-ID attribute in the
            # Connect success response."
            self.respond.success(context.request, (Attr.CONNECTION_ID, connectionId))
            return
        peer = (unmapped(connection.peer[0]), connection.peer[1])
        self._add(allocation, peer, connection)
        # RFC 6062 §5.3: "the server sends a ConnectionAttempt indication to the client
        # over the control connection. The indication MUST include an XOR-PEER-ADDRESS
        # attribute containing the peer's transport address, as well as a CONNECTION-ID
        # attribute".
        indication = Message(Method.CONNECTION_ATTEMPT, StunClass.INDICATION)
        indication.set(Attr.XOR_PEER_ADDRESS, peer).set(Attr.CONNECTION_ID, connectionId)
        self.respond.indication(allocation.link, allocation.client, indication)

    def peerConnectionLost(self, connection: PeerConnection) -> None:
        """RFC 6062 §5.5: "When a peer data connection is closed or times out, the server
        MUST close the corresponding client data connection." """
        if connection.timer is not None and connection.timer.active():
            connection.timer.cancel()
        if self.pending.get(connection.connectionId) is connection:
            del self.pending[connection.connectionId]
        allocation = connection.allocation
        for peer, value in list(allocation.connections.items()):
            if value is connection:
                self._drop(allocation, peer)
        context = connection.context
        if context is not None and allocation.connections.get(context.peer, 0) is None:
            self._drop(allocation, context.peer)
        client = connection.client
        if client is not None:
            self.dataLinks.pop(client, None)
            client.transport.loseConnection()

    def tcpRelayed(self, allocation: Allocation, size: int, fromPeer: bool) -> None:
        """Count C{size} bytes through an RFC 6062 pair (each read counts as a packet)."""
        counters = self.stats.counters
        if fromPeer:
            allocation.bytesIn += size
            allocation.packetsIn += 1
            counters["turn.bytes.from_peer"] += size
            counters["turn.packets.from_peer"] += 1
        else:
            allocation.bytesOut += size
            allocation.packetsOut += 1
            counters["turn.bytes.to_peer"] += size
            counters["turn.packets.to_peer"] += 1

    # -- ConnectionBind (RFC 6062 §5.4) ------------------------------------------------------

    def connectionBind(self, request: TurnRequest) -> None:
        """Make this new connection the client data connection of a peer data
        connection."""
        link = request.link
        # RFC 6062 §5.4: "If the client connection transport is not TCP or TLS, the
        # server MUST return a 400 (Bad Request) error." (Nor may a control or data
        # connection rebind.)
        if link.kind == "udp" or self.table.get(request.key) is not None or (
                link in self.dataLinks):
            self.respond.error(request, 400)
            return
        # RFC 6062 §5.4: "If the request does not contain the CONNECTION-ID attribute, or
        # if this attribute does not refer to an existing pending connection, the server
        # MUST return a 400 (Bad Request) error."
        connection = self.pending.get(request.message.value(Attr.CONNECTION_ID, 0))
        if connection is None:
            self.respond.error(request, 400)
            return
        if request.username != connection.allocation.username:
            self.respond.error(request, 441)
            return
        del self.pending[connection.connectionId]
        if connection.timer is not None and connection.timer.active():
            connection.timer.cancel()
        # RFC 6062 §5.4: "Otherwise, the client connection is now called a client data
        # connection. Data received on it MUST be sent as-is to the associated peer data
        # connection. Data received on the associated peer data connection MUST be sent
        # as-is on this client data connection. This includes data that was received on
        # the associated peer data connection before the ConnectionBind request was
        # received."
        self.respond.success(request)
        self.dataLinks[link] = connection
        connection.splice(link)
        self.stats.add("turn.tcp.bound")

    def streamClosed(self, link: StunLink) -> bool:
        """RFC 6062 §5.5: "When a client data connection is closed or times out, the
        server MUST close the corresponding peer data connection." Whether C{link} was
        one."""
        connection = self.dataLinks.pop(link, None)
        if connection is None:
            return False
        connection.close()
        return True

    # -- the table's events ------------------------------------------------------------------

    def allocationDeleted(self, allocation: Allocation, why: str) -> None:
        """RFC 6062 §5.5: "If the allocation associated with a data connection expires,
        the data connection MUST be closed." """
        for peer, connection in list(allocation.connections.items()):
            if connection is not None:
                connection.close()
            else:
                self._drop(allocation, peer)
