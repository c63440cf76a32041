# -*- test-case-name: test.unit.test_turn_table -*-
"""The TURN allocation table: allocations by 5-tuple, quotas, reservations, lifetimes,
and what operators see and do (L{AllocationTable.sessions}, L{AllocationTable.kill}).

No sockets and no bytes: the relayed sockets are L{p2pnet.services.turn_relays}'s, the
requests the handlers'. The table owns each allocation's expiry timer (on the injected
clock), counts allocations per user and per client address against their quotas, keeps
the EVEN-PORT reservations (RFC 8656 §7.2 step 5), and tells its observers of every
change (L{TableObserver}): the relay allocator closes sockets when an allocation goes,
the RFC 6062 relays close connections, and a later kernel fast path can mirror the
table from the same events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from p2pnet.addresses import unmapped
from p2pnet.services.turn_allocation import Allocation, ChannelBinding, TableBudget
from p2pnet.stats import Stats

__all__ = ["AllocationTable", "QuietObserver", "Reservation", "TableObserver", "TurnSession"]

#: RFC 8656 §7.2 step 5 / §14.9: a reserved port is held this long for its token.
RESERVATION_LIFETIME = 30.0
#: Seconds between sweeps that forget expired permissions and channels everywhere.
SWEEP_INTERVAL = 60.0

Key = tuple[Any, tuple[str, int]]


class TableObserver(TypingProtocol):
    """What the table reports. Every method is optional in spirit: implement all, do
    nothing where nothing is needed. Expiry of permissions and channels is noticed
    lazily: at the next sweep (at most L{SWEEP_INTERVAL} late) or when data meets it."""

    def allocationCreated(self, allocation: Allocation) -> None:
        """An allocation was installed."""

    def allocationDeleted(self, allocation: Allocation, why: str) -> None:
        """An allocation ended: C{why} is expired, deleted, killed or stopped."""

    def permissionCreated(self, allocation: Allocation, peer: str) -> None:
        """A permission for peer IP C{peer} was installed (not on refreshes)."""

    def permissionExpired(self, allocation: Allocation, peer: str) -> None:
        """A permission was found expired and forgotten."""

    def channelBound(self, allocation: Allocation, binding: ChannelBinding) -> None:
        """A channel was bound (not on refreshes)."""

    def channelExpired(self, allocation: Allocation, binding: ChannelBinding) -> None:
        """A channel binding was found expired (data stops flowing on it)."""

    def allocationChanged(self, allocation: Allocation) -> None:
        """The allocation, a permission or a channel was made or refreshed: lifetimes
        moved."""

    def allocationEnding(self, allocation: Allocation) -> None:
        """The allocation is about to be deleted: last chance to add to its totals
        (logged next)."""


class QuietObserver:
    """A L{TableObserver} that does nothing: subclasses override the events they need."""

    def allocationCreated(self, allocation: Allocation) -> None:
        """Nothing to do."""

    def allocationDeleted(self, allocation: Allocation, why: str) -> None:
        """Nothing to do."""

    def permissionCreated(self, allocation: Allocation, peer: str) -> None:
        """Nothing to do."""

    def permissionExpired(self, allocation: Allocation, peer: str) -> None:
        """Nothing to do."""

    def channelBound(self, allocation: Allocation, binding: ChannelBinding) -> None:
        """Nothing to do."""

    def channelExpired(self, allocation: Allocation, binding: ChannelBinding) -> None:
        """Nothing to do."""

    def allocationChanged(self, allocation: Allocation) -> None:
        """Nothing to do."""

    def allocationEnding(self, allocation: Allocation) -> None:
        """Nothing to do."""


@dataclass(frozen=True, slots=True)
class TurnSession:
    """One allocation as an operator sees it (L{AllocationTable.sessions}).

    @ivar user: who authenticated it.
    @ivar client: the client's transport address.
    @ivar transport: C{udp}, C{tcp} or C{tls} (client to server), C{/tcp} appended for
        an RFC 6062 TCP allocation.
    @ivar relayed: the relayed transport addresses announced to the client.
    @ivar age: seconds since it was made.
    @ivar expiresIn: seconds until it ends unless refreshed.
    @ivar bytesToPeers: bytes relayed from the client to peers.
    @ivar packetsToPeers: datagrams (or stream reads) relayed to peers.
    @ivar bytesFromPeers: bytes relayed from peers to the client.
    @ivar packetsFromPeers: datagrams (or stream reads) relayed from peers.
    @ivar permissions: peer IP addresses with a live permission.
    @ivar channels: live channel bindings as C{(number, (host, port))}.
    """

    user: str
    client: tuple[str, int]
    transport: str
    relayed: tuple[tuple[str, int], ...]
    age: float
    expiresIn: float
    bytesToPeers: int
    packetsToPeers: int
    bytesFromPeers: int
    packetsFromPeers: int
    permissions: tuple[str, ...]
    channels: tuple[tuple[int, tuple[str, int]], ...]


class Reservation:
    """A relayed port held for a RESERVATION-TOKEN (EVEN-PORT with the R bit), counted
    against the quota of the user who asked for it.

    @ivar handle: the relay socket factory's bound socket.
    @ivar close: gives the port back (called when the reservation ends unused).
    """

    __slots__ = ("token", "handle", "host", "port", "username", "timer", "close")

    def __init__(self, token: bytes, handle: Any, host: str, port: int, username: str,
                 close: Callable[[], None]) -> None:
        self.token = token
        self.handle = handle
        self.host = host
        self.port = port
        self.username = username
        self.timer: IDelayedCall | None = None
        self.close = close


def autoQuotas(relayPorts: tuple[int, int], maxAllocations: int, userQuota: int,
               ipQuota: int) -> tuple[int, int]:
    """The per-user and per-address allocation quotas, 0 meaning automatic.

    Automatic: an eighth of the relay port range per user (an allocation holds at most
    two relayed ports, so a user holds at most a quarter of them) and a sixteenth per
    client address; never above C{maxAllocations}, never below 1.
    """
    ports = relayPorts[1] - relayPorts[0] + 1
    user = userQuota or min(maxAllocations, max(1, ports // 8))
    ip = ipQuota or min(maxAllocations, max(1, ports // 16))
    return user, ip


def _uncount(counts: dict[str, int], name: str) -> None:
    left = counts.get(name, 1) - 1
    if left > 0:
        counts[name] = left
    else:
        counts.pop(name, None)


class AllocationTable:
    """Allocations by 5-tuple (the link they arrived on and the client's address).

    @param clock: the reactor's time.
    @param stats: where C{turn.allocations.*} are counted.
    @param log: where one line per allocation event goes.
    @param maxAllocations: allocations at once (coturn's C{total-quota}).
    @param userQuota: allocations and reservations per user.
    @param ipQuota: allocations per client IP address.
    @param budget: the permissions and channels of all allocations together.
    """

    def __init__(self, clock: IReactorTime, stats: Stats, log: Logger, *,
                 maxAllocations: int, userQuota: int, ipQuota: int,
                 budget: TableBudget | None = None) -> None:
        self.clock = clock
        self.stats = stats
        self.log = log
        self.maxAllocations = maxAllocations
        self.userQuota = userQuota
        self.ipQuota = ipQuota
        self.budget = budget if budget is not None else TableBudget()
        self.allocations: dict[Key, Allocation] = {}
        self.reservations: dict[bytes, Reservation] = {}
        self.observers: list[TableObserver] = []
        self._perUser: dict[str, int] = {}
        self._perIp: dict[str, int] = {}
        #: In a cluster: how many ports a user holds at the other nodes (from the node
        #: table, L{p2pnet.cluster}); counted against the user quota with this node's.
        self.elsewhere: Callable[[str], int] = lambda username: 0

    # -- lookups ----------------------------------------------------------------------------

    def get(self, key: Key) -> Allocation | None:
        """The allocation of 5-tuple C{key}, or C{None}."""
        return self.allocations.get(key)

    def live(self, allocation: Allocation) -> bool:
        """Whether C{allocation} is still in the table."""
        return self.allocations.get((allocation.link, allocation.client)) is allocation

    def __len__(self) -> int:
        return len(self.allocations)

    # -- quotas (RFC 8656 §7.2 step 10) ----------------------------------------------------

    def withinQuota(self, username: str, host: str, needed: int = 1) -> bool:
        """Whether C{username} may hold C{needed} more ports and C{host} one more
        allocation."""
        held = self._perUser.get(username, 0) + self.elsewhere(username)
        return held + needed <= self.userQuota and self._perIp.get(host, 0) < self.ipQuota

    def perUser(self) -> dict[str, int]:
        """Ports (allocations and reservations) each user holds here."""
        return dict(self._perUser)

    def full(self) -> bool:
        """Whether the table holds C{maxAllocations} already."""
        return len(self.allocations) >= self.maxAllocations

    # -- lifecycle ------------------------------------------------------------------------

    def add(self, allocation: Allocation, lifetime: float) -> None:
        """Install C{allocation} under its 5-tuple; it expires after C{lifetime}."""
        self.allocations[(allocation.link, allocation.client)] = allocation
        self._perUser[allocation.username] = self._perUser.get(allocation.username, 0) + 1
        host = unmapped(allocation.client[0])
        self._perIp[host] = self._perIp.get(host, 0) + 1
        allocation.timer = self.clock.callLater(lifetime, self._expire, allocation)
        self.stats.add("turn.allocations.created")
        self.log.info(
            "TURN allocation created for {user} on {fiveTuple}, relayed {relayed}, "
            "lifetime {lifetime:.0f}s",
            user=allocation.username, fiveTuple=str(allocation.fiveTuple),
            relayed=" ".join(f"{h}:{p}" for h, p in allocation.announced.values()),
            lifetime=lifetime, event="turn.allocation.created",
        )
        for observer in self.observers:
            observer.allocationCreated(allocation)

    def refresh(self, allocation: Allocation, lifetime: float) -> None:
        """Set the allocation's time-to-expiry to C{lifetime} (RFC 8656 §7.3)."""
        allocation.refresh(self.clock.seconds(), lifetime)
        if allocation.timer is not None:
            allocation.timer.reset(lifetime)
        self.stats.add("turn.allocations.refreshed")
        for observer in self.observers:
            observer.allocationChanged(allocation)
        self.log.info("TURN allocation refreshed for {user} on {fiveTuple}",
                      user=allocation.username, fiveTuple=str(allocation.fiveTuple),
                      lifetime=lifetime, event="turn.allocation.refreshed")

    def _expire(self, allocation: Allocation) -> None:
        allocation.timer = None
        self.delete(allocation, "expired")

    def delete(self, allocation: Allocation, why: str) -> None:
        """Remove C{allocation} (C{why}: expired, deleted, killed or stopped), log its
        totals and tell the observers, which close its sockets and connections."""
        if not self.live(allocation):
            return
        del self.allocations[(allocation.link, allocation.client)]
        if allocation.timer is not None and allocation.timer.active():
            allocation.timer.cancel()
        allocation.timer = None
        for observer in self.observers:
            observer.allocationEnding(allocation)
        allocation.release()
        _uncount(self._perUser, allocation.username)
        _uncount(self._perIp, unmapped(allocation.client[0]))
        self.stats.add(f"turn.allocations.{why}")
        self.log.info(
            "TURN allocation {why} for {user} on {fiveTuple}: {bytesOut} bytes in "
            "{packetsOut} packets to peers, {bytesIn} bytes in {packetsIn} from peers",
            why=why, user=allocation.username, fiveTuple=str(allocation.fiveTuple),
            bytesOut=allocation.bytesOut, packetsOut=allocation.packetsOut,
            bytesIn=allocation.bytesIn, packetsIn=allocation.packetsIn,
            event=f"turn.allocation.{why}",
        )
        for observer in self.observers:
            observer.allocationDeleted(allocation, why)

    def clear(self) -> None:
        """Delete every allocation and drop every reservation (the service stops)."""
        for allocation in list(self.allocations.values()):
            self.delete(allocation, "stopped")
        for token in list(self.reservations):
            self.dropReservation(token)

    # -- permissions and channels (events for the observers) -----------------------------

    def installPermission(self, allocation: Allocation, peer: str) -> bool:
        """Install or refresh a permission; C{False} when no room is left."""
        new = peer not in allocation.permissions
        if not allocation.installPermission(peer, self.clock.seconds()):
            return False
        for observer in self.observers:
            if new:
                observer.permissionCreated(allocation, peer)
            observer.allocationChanged(allocation)
        return True

    def bindChannel(self, allocation: Allocation, number: int,
                    peer: tuple[str, int]) -> int | None:
        """Bind or refresh a channel; C{None} on success, else the error code."""
        before = allocation.channels.get(number)
        code = allocation.bindChannel(number, peer, self.clock.seconds())
        binding = allocation.channels.get(number)
        if code is None and binding is not None:
            for observer in self.observers:
                if binding is not before:
                    observer.channelBound(allocation, binding)
                observer.allocationChanged(allocation)
        return code

    def sweep(self) -> None:
        """Forget expired permissions and channels of every allocation (so the
        L{TableBudget} counts what is live) and report them."""
        now = self.clock.seconds()
        for allocation in list(self.allocations.values()):
            for binding in allocation.channels.values():
                if not binding.alive(now) and not binding.reported:
                    binding.reported = True
                    for observer in self.observers:
                        observer.channelExpired(allocation, binding)
            expired = [p for p, v in allocation.permissions.items() if not v.alive(now)]
            allocation.purge(now)
            for peer in expired:
                for observer in self.observers:
                    observer.permissionExpired(allocation, peer)

    # -- reservations (RFC 8656 §7.2 step 5, §14.9) --------------------------------------

    def addReservation(self, reservation: Reservation) -> None:
        """Hold a reserved port for L{RESERVATION_LIFETIME} seconds."""
        reservation.timer = self.clock.callLater(RESERVATION_LIFETIME, self.dropReservation,
                                                 reservation.token)
        self.reservations[reservation.token] = reservation
        self._perUser[reservation.username] = self._perUser.get(reservation.username, 0) + 1

    def takeReservation(self, token: bytes) -> Reservation | None:
        """The reservation of C{token}, removed from the table (its port stays bound)."""
        reservation = self.reservations.pop(token, None)
        if reservation is None:
            return None
        if reservation.timer is not None and reservation.timer.active():
            reservation.timer.cancel()
        _uncount(self._perUser, reservation.username)
        return reservation

    def dropReservation(self, token: bytes) -> None:
        """End a reservation unused: its port is given back."""
        reservation = self.takeReservation(token)
        if reservation is not None:
            reservation.close()

    # -- operators ------------------------------------------------------------------------

    def sessions(self, user: str | None = None) -> list[TurnSession]:
        """Every allocation (of C{user}, when given), oldest first."""
        now = self.clock.seconds()
        out = []
        for allocation in sorted(self.allocations.values(), key=lambda a: a.createdAt):
            if user is not None and allocation.username != user:
                continue
            transport = allocation.fiveTuple.protocol
            if allocation.transport == 6:
                transport += "/tcp"
            out.append(TurnSession(
                user=allocation.username,
                client=allocation.client,
                transport=transport,
                relayed=tuple(allocation.announced[f] for f in sorted(allocation.announced)),
                age=now - allocation.createdAt,
                expiresIn=max(0.0, allocation.expiresAt - now),
                bytesToPeers=allocation.bytesOut,
                packetsToPeers=allocation.packetsOut,
                bytesFromPeers=allocation.bytesIn,
                packetsFromPeers=allocation.packetsIn,
                permissions=tuple(sorted(p for p, v in allocation.permissions.items()
                                         if v.alive(now))),
                channels=tuple(sorted((n, b.peer) for n, b in allocation.channels.items()
                                      if b.alive(now))),
            ))
        return out

    def kill(self, user: str | None = None,
             client: str | tuple[str, int] | None = None) -> int:
        """Delete the allocations of C{user}, or of C{client} (an IP address, or an exact
        C{(host, port)}); return how many. Naming neither deletes nothing."""
        if user is None and client is None:
            return 0
        doomed = []
        for allocation in self.allocations.values():
            if user is not None and allocation.username != user:
                continue
            if isinstance(client, tuple) and allocation.client != client:
                continue
            if isinstance(client, str) and unmapped(allocation.client[0]) != unmapped(client):
                continue
            doomed.append(allocation)
        for allocation in doomed:
            self.delete(allocation, "killed")
        return len(doomed)

    # -- gauges ---------------------------------------------------------------------------

    def livePermissions(self) -> int:
        """Permissions alive now, all allocations together."""
        now = self.clock.seconds()
        return sum(a.livePermissions(now) for a in self.allocations.values())

    def liveChannels(self) -> int:
        """Channel bindings alive now, all allocations together."""
        now = self.clock.seconds()
        return sum(a.liveChannels(now) for a in self.allocations.values())
