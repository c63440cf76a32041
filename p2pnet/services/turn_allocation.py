# -*- test-case-name: test.unit.test_turn_allocation -*-
"""The state of one TURN allocation (RFC 8656 §2.2, §9, §11), without I/O.

Small separate types, each with its own tests, as pion/turn's C{internal/allocation}:
L{FiveTuple} names an allocation, L{Permission} and L{ChannelBinding} live inside an
L{Allocation}, a L{p2pnet.ratelimit.TokenBucket} limits its bandwidth and a
L{TableBudget} bounds the permissions and channels of all allocations together. Time is always a parameter
(C{now}, seconds on the reactor's clock): nothing here owns a timer. Permissions and
channel bindings expire by comparison with C{now} where they are used, and are purged
when the table would otherwise grow, so each table stays within its limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pnet.ratelimit import TokenBucket

__all__ = [
    "CHANNEL_CONFIRM_DELAY",
    "CHANNEL_LIFETIME",
    "CHANNEL_REUSE_DELAY",
    "PERMISSION_LIFETIME",
    "Allocation",
    "ChannelBinding",
    "FiveTuple",
    "Permission",
    "TableBudget",
]

#: RFC 8656 §9: "The Permission Lifetime MUST be 300 seconds (= 5 minutes)."
PERMISSION_LIFETIME = 300.0
#: RFC 8656 §12: "a channel binding lasts for 10 minutes unless refreshed".
CHANNEL_LIFETIME = 600.0
#: RFC 8656 §12: after a binding expires, the channel number and the peer address
#: are not bound to anything else for 5 more minutes.
CHANNEL_REUSE_DELAY = 300.0
#: Seconds after a new ChannelBind during which a peer's data still goes to the client
#: as Data indications, unless the client shows earlier that it has the success
#: response (RFC 8656 §12: a client "SHOULD be prepared to receive ChannelData ... as
#: soon as it has sent the ChannelBind request" -- SHOULD, and over UDP the response
#: can be lost or overtaken; a Data indication is understood either way).
CHANNEL_CONFIRM_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class FiveTuple:
    """The client's and the server's transport addresses and the transport between them
    (RFC 8656 §2.2): what an allocation is found by.

    @ivar protocol: C{"udp"}, C{"tcp"} or C{"tls"}.
    @ivar client: the client's address as the server sees it.
    @ivar server: the server's address the client sent to.
    """

    protocol: str
    client: tuple[str, int]
    server: tuple[str, int]

    def __str__(self) -> str:
        return f"{self.protocol} {_hostPort(self.client)}->{_hostPort(self.server)}"


def _hostPort(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Permission:
    """Permission for one peer IP address (any port) to exchange data (RFC 8656 §9)."""

    __slots__ = ("peer", "expiresAt")

    def __init__(self, peer: str, now: float) -> None:
        self.peer = peer
        self.expiresAt = now + PERMISSION_LIFETIME

    def refresh(self, now: float) -> None:
        """Start a fresh lifetime."""
        self.expiresAt = now + PERMISSION_LIFETIME

    def alive(self, now: float) -> bool:
        """Whether the permission still holds at C{now}."""
        return now < self.expiresAt


class ChannelBinding:
    """A channel number bound to one peer transport address (RFC 8656 §12).

    @ivar confirmedAt: from when the server sends the peer's data as ChannelData rather
        than Data indications: a moment after the bind (L{CHANNEL_CONFIRM_DELAY}), or at
        once when the client shows it knows the binding (ChannelData from it on this
        channel, or the same ChannelBind again).
    @ivar reported: the table told its observers this binding expired.
    """

    __slots__ = ("number", "peer", "expiresAt", "confirmedAt", "reported")

    def __init__(self, number: int, peer: tuple[str, int], now: float) -> None:
        self.number = number
        self.peer = peer
        self.expiresAt = now + CHANNEL_LIFETIME
        self.confirmedAt = now + CHANNEL_CONFIRM_DELAY
        self.reported = False

    def refresh(self, now: float) -> None:
        """Start a fresh lifetime (the client knows this binding: it asked again)."""
        self.expiresAt = now + CHANNEL_LIFETIME
        self.confirmedAt = min(self.confirmedAt, now)
        self.reported = False

    def confirm(self, now: float) -> None:
        """The client used the channel: it knows the binding."""
        if now < self.confirmedAt:
            self.confirmedAt = now

    def alive(self, now: float) -> bool:
        """Whether data may flow on this channel at C{now}."""
        return now < self.expiresAt

    def reserved(self, now: float) -> bool:
        """Whether the number and peer are still held (alive, or within the reuse delay)."""
        return now < self.expiresAt + CHANNEL_REUSE_DELAY


class TableBudget:
    """Permissions and channel bindings held by all allocations together, against their
    limits: each allocation has its own limits, and this one keeps the sum bounded too
    (every entry costs memory, about L{PERMISSION_BYTES} and L{CHANNEL_BYTES}).

    Counts entries stored, including expired ones not yet purged; the service purges
    every allocation now and then (and when the budget is full).
    """

    __slots__ = ("maxPermissions", "maxChannels", "permissions", "channels")

    def __init__(self, maxPermissions: int = 100_000, maxChannels: int = 100_000) -> None:
        self.maxPermissions = maxPermissions
        self.maxChannels = maxChannels
        self.permissions = 0
        self.channels = 0


#: Bytes one stored permission costs (entry, object, key), measured by the tests.
PERMISSION_BYTES = 400
#: Bytes one channel binding costs (two index entries, object, peer tuple).
CHANNEL_BYTES = 600


class Allocation:
    """One allocation: its relayed addresses, lifetime, permissions and channels.

    @ivar fiveTuple: the client 5-tuple.
    @ivar username: who authenticated the Allocate request.
    @ivar link: the STUN service link (socket or connection) that reaches the client.
    @ivar relays: address family (4 or 6) to the relayed socket's protocol (set by the
        relay allocator, which owns the sockets).
    @ivar relayed: address family to the relayed transport address the socket is bound to.
    @ivar announced: address family to the relayed transport address told to the client
        (XOR-RELAYED-ADDRESS): the bound one, or its public address behind 1:1 NAT
        (C{external-ip}).
    @ivar createdAt: the clock time the allocation was made.
    @ivar transport: the REQUESTED-TRANSPORT protocol number (17 UDP, 6 TCP).
    @ivar expiresAt: the clock time the allocation ends unless refreshed.
    @ivar timer: the service's expiry call (a C{DelayedCall}).
    @ivar transactionId: the Allocate transaction, to answer a retransmission again.
    @ivar response: the encoded success response to that Allocate.
    @ivar connections: RFC 6062 peer data connections by peer transport address (what
        RFC 6062 §5.2's 446 rule is about); C{None} while the connection is being made.
        (CONNECTION-IDs index the pending ones in the TCP relays.)
    """

    __slots__ = (
        "fiveTuple", "username", "link", "client", "relays", "relayed", "transport",
        "expiresAt", "timer", "transactionId", "response", "permissions", "channels",
        "peerChannels", "maxPermissions", "maxChannels", "inBucket", "outBucket",
        "bytesIn", "bytesOut", "packetsIn", "packetsOut", "connections", "dontFragment",
        "sendToClient", "budget", "announced", "createdAt",
    )

    def __init__(self, fiveTuple: FiveTuple, username: str, link: Any, now: float,
                 lifetime: float, *, transport: int = 17, maxPermissions: int = 100,
                 maxChannels: int = 100, maxBps: float = 0.0,
                 budget: TableBudget | None = None) -> None:
        self.fiveTuple = fiveTuple
        self.username = username
        self.link = link
        self.client = fiveTuple.client
        self.relays: dict[int, Any] = {}
        self.relayed: dict[int, tuple[str, int]] = {}
        #: The same dict as C{relayed} until an external-ip mapping makes them differ.
        self.announced: dict[int, tuple[str, int]] = self.relayed
        self.createdAt = now
        self.transport = transport
        self.expiresAt = now + lifetime
        self.timer: Any = None
        self.transactionId = b""
        self.response = b""
        self.permissions: dict[str, Permission] = {}
        self.channels: dict[int, ChannelBinding] = {}
        self.peerChannels: dict[tuple[str, int], ChannelBinding] = {}
        self.maxPermissions = maxPermissions
        self.maxChannels = maxChannels
        self.inBucket = TokenBucket(maxBps, now) if maxBps else None
        self.outBucket = TokenBucket(maxBps, now) if maxBps else None
        self.bytesIn = self.bytesOut = self.packetsIn = self.packetsOut = 0
        self.connections: dict[tuple[str, int], Any] = {}
        self.dontFragment = False
        #: C{(data, address)} -> None: how data reaches the client (set by the service).
        self.sendToClient: Any = None
        self.budget = budget if budget is not None else TableBudget()

    # -- lifetime -------------------------------------------------------------------------

    def refresh(self, now: float, lifetime: float) -> None:
        """Set the remaining lifetime to C{lifetime} seconds from C{now}."""
        self.expiresAt = now + lifetime

    # -- permissions (RFC 8656 §9) ----------------------------------------------------------

    def hasPermission(self, peer: str, now: float) -> bool:
        """Whether peer IP C{peer} may exchange data at C{now}."""
        permission = self.permissions.get(peer)
        return permission is not None and now < permission.expiresAt

    def installPermission(self, peer: str, now: float) -> bool:
        """Install or refresh the permission for C{peer}; C{False} when the table is full."""
        permission = self.permissions.get(peer)
        if permission is not None:
            permission.refresh(now)
            return True
        budget = self.budget
        if len(self.permissions) >= self.maxPermissions or (
                budget.permissions >= budget.maxPermissions):
            self._purgePermissions(now)
            if len(self.permissions) >= self.maxPermissions or (
                    budget.permissions >= budget.maxPermissions):
                return False
        self.permissions[peer] = Permission(peer, now)
        budget.permissions += 1
        return True

    def canInstallPermissions(self, peers: list[str], now: float) -> bool:
        """Whether every one of C{peers} would fit (all or none, RFC 8656 §10.2)."""
        new = {p for p in peers if p not in self.permissions}
        budget = self.budget
        if len(self.permissions) + len(new) > self.maxPermissions or (
                budget.permissions + len(new) > budget.maxPermissions):
            self._purgePermissions(now)
        return len(self.permissions) + len(new) <= self.maxPermissions and (
            budget.permissions + len(new) <= budget.maxPermissions)

    def livePermissions(self, now: float) -> int:
        """How many permissions hold at C{now}."""
        return sum(1 for p in self.permissions.values() if now < p.expiresAt)

    def _purgePermissions(self, now: float) -> None:
        for peer in [p for p, v in self.permissions.items() if not v.alive(now)]:
            del self.permissions[peer]
            self.budget.permissions -= 1

    def purge(self, now: float) -> None:
        """Forget expired permissions and channel bindings past their reuse delay."""
        self._purgePermissions(now)
        self._purgeChannels(now)

    def release(self) -> None:
        """Give every entry back to the budget (the allocation is gone)."""
        self.budget.permissions -= len(self.permissions)
        self.budget.channels -= len(self.channels)
        self.permissions.clear()
        self.channels.clear()
        self.peerChannels.clear()

    # -- channels (RFC 8656 §12) ------------------------------------------------------------

    def channel(self, number: int, now: float) -> ChannelBinding | None:
        """The live binding of channel C{number}, or C{None}."""
        binding = self.channels.get(number)
        if binding is None or now >= binding.expiresAt:
            return None
        return binding

    def channelForPeer(self, peer: tuple[str, int], now: float) -> ChannelBinding | None:
        """The live binding whose peer is C{peer}, or C{None}."""
        binding = self.peerChannels.get(peer)
        if binding is None or now >= binding.expiresAt:
            return None
        return binding

    def bindChannel(self, number: int, peer: tuple[str, int], now: float) -> int | None:
        """Bind or refresh C{number} to C{peer}; C{None} on success, else an error code.

        400 when the number is (or within the reuse delay was) bound to another peer or
        the peer to another number; 508 when the table is full.
        """
        byNumber = self.channels.get(number)
        byPeer = self.peerChannels.get(peer)
        if byNumber is not None and byNumber.reserved(now) and byNumber.peer != peer:
            return 400
        if byPeer is not None and byPeer.reserved(now) and byPeer.number != number:
            return 400
        if byNumber is not None and byNumber.peer == peer:
            byNumber.refresh(now)
            return None
        for stale in (byNumber, byPeer):  # past the reuse delay: forget them
            if stale is not None and self.channels.get(stale.number) is stale:
                del self.channels[stale.number]
                del self.peerChannels[stale.peer]
                self.budget.channels -= 1
        budget = self.budget
        if len(self.channels) >= self.maxChannels or budget.channels >= budget.maxChannels:
            self._purgeChannels(now)
            if len(self.channels) >= self.maxChannels or (
                    budget.channels >= budget.maxChannels):
                return 508
        binding = ChannelBinding(number, peer, now)
        self.channels[number] = binding
        self.peerChannels[peer] = binding
        budget.channels += 1
        return None

    def liveChannels(self, now: float) -> int:
        """How many channel bindings hold at C{now}."""
        return sum(1 for c in self.channels.values() if now < c.expiresAt)

    def _purgeChannels(self, now: float) -> None:
        for binding in [c for c in self.channels.values() if not c.reserved(now)]:
            del self.channels[binding.number]
            del self.peerChannels[binding.peer]
            self.budget.channels -= 1
