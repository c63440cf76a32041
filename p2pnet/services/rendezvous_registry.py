# -*- test-case-name: test.unit.test_rendezvous_registry -*-
"""The rendezvous server's peer table: registration, the online rule, bounds, pruning.

C{RegisterPeer} and C{RegisterPk} (rustdesk.md §4.3) land here, whatever transport
they came over; so does the lookup of a peer by id (memory, then the durable store).
The table is bounded by count and by bytes, peers that stopped registering are pruned
from memory (they stay in the store), and a public key must be a 32-byte Ed25519 key,
so what a client sends cannot grow the process without bound (issue 14 item 18).

Where hbbs limits registrations per source IP with a counter that never resets under
steady load and 300 ids a day (rustdesk.md §4.7), which locks out a NAT full of
clients, this registry gives each source (an IPv4 address, an IPv6 /64) a token
bucket of RegisterPk and a daily budget of ids it may create (rustdesk.md §4.7.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nacl.bindings import crypto_core_ed25519_is_valid_point
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from p2pnet.addresses import isLoopback, sourceKey
from p2pnet.boundedmap import BoundedMap
from p2pnet.codecs.proto.rendezvous_pb2 import RegisterPk, RegisterPkResponse, RendezvousMessage
from p2pnet.ratelimit import SourceBudgets
from p2pnet.ratelog import RateLimitedLog
from p2pnet.stats import Stats
from p2pnet.store.peers import IPeerStore, PeerRecord

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_PEER_BYTES",
    "MAX_UUID_LENGTH",
    "MIN_ID_LENGTH",
    "PRUNE_AFTER",
    "REG_TIMEOUT",
    "OnlinePeer",
    "PeerInfo",
    "PeerRegistry",
    "RegistrationLink",
    "isPublicKey",
]

log = Logger()

#: A peer is online iff its last registration is younger than this (seconds, rustdesk.md §4.4).
REG_TIMEOUT = 30.0
#: Seconds between presence writes for a peer that stays where it is.
PRESENCE_INTERVAL = 10.0


class Presence(Protocol):
    """Which node holds which peer's registration, shared by a cluster's nodes."""

    def markOnline(self, peerId: str, node: str, addr: tuple[str, int],
                   ttl: float) -> Deferred[None]:
        """Record that C{node} holds C{peerId} (at C{addr}) for the next C{ttl} seconds."""

    def online(self, peerIds: Sequence[str]) -> Deferred[set[str]]:
        """Which of C{peerIds} some node holds now."""
#: Per-id RegisterPk rate limit: at most 3 per burst with gaps of this many seconds (rustdesk.md §4.3).
REG_PK_GAP = 6.0
REG_PK_BURST = 2
#: Shortest id accepted by RegisterPk (rustdesk.md §4.3 step 2).
MIN_ID_LENGTH = 6
#: Longest id kept (hbbs's column is varchar(100); real clients use at most 16).
MAX_ID_LENGTH = 100
#: Longest uuid kept (real clients send a machine id of 16 to 64 bytes).
MAX_UUID_LENGTH = 256
#: A peer out of contact this long (seconds) is dropped from memory, not from the store.
PRUNE_AFTER = 120.0
#: Bytes counted for one peer besides its id, uuid and key (the object, dict slot).
PEER_OVERHEAD = 400
#: Default bound on the bytes the table holds.
MAX_PEER_BYTES = 128 * 1024 * 1024
#: Seconds of the per-source budget of new ids.
NEW_IDS_WINDOW = 86400.0
#: Most sources whose budgets are remembered at once.
MAX_SOURCES = 65536

Result = RegisterPkResponse.Result


class RegistrationLink(Protocol):
    """A TCP or WebSocket connection a peer registered over (rustdesk.md §4.17)."""

    peer: tuple[str, int]
    ws: bool
    registeredId: str | None

    def send(self, message: RendezvousMessage) -> None:
        """Frame (and encrypt, once keyed) one message."""

    def close(self) -> None:
        """Flush and close the connection."""

    def becomeRegistered(self, keepAlive: float) -> None:
        """Switch to the long-lived registration mode with heartbeats."""


def isPublicKey(pk: bytes) -> bool:
    """Whether C{pk} is a 32-byte Ed25519 public key (a valid point, not of small order),
    what RustDesk clients register (rustdesk.md §4.3)."""
    return len(pk) == 32 and bool(crypto_core_ed25519_is_valid_point(pk))


class OnlinePeer:
    """The in-memory state of one peer (small: one per registered peer).

    @ivar seen: when the peer last registered or was loaded (for pruning).
    @ivar transport: C{udp}, C{tcp} or C{ws}: how it last registered.
    """

    __slots__ = ("id", "uuid", "pk", "addr", "ip", "lastRegTime", "regPkCount", "regPkTime",
                 "link", "seen", "transport", "presentAt")

    def __init__(self, peerId: str, uuid: bytes = b"", pk: bytes = b"", ip: str = "") -> None:
        self.id = peerId
        self.uuid = uuid
        self.pk = pk
        self.ip = ip
        self.addr: tuple[str, int] = ("", 0)
        self.lastRegTime = float("-inf")
        self.regPkCount = 0
        self.regPkTime = float("-inf")
        self.link: RegistrationLink | None = None
        self.seen = float("-inf")
        self.transport = "udp"
        self.presentAt = float("-inf")

    def online(self, now: float) -> bool:
        """Registered within L{REG_TIMEOUT}, or holding an open registration link."""
        return self.link is not None or now - self.lastRegTime < REG_TIMEOUT

    def size(self) -> int:
        """The bytes this peer is counted for in the table's bound."""
        return PEER_OVERHEAD + len(self.id) + len(self.uuid) + len(self.pk)


@dataclass(frozen=True)
class PeerInfo:
    """One online peer, as operators list them.

    @ivar id: the RustDesk id.
    @ivar address: where it registered from, C{(host, port)}.
    @ivar lastSeen: seconds (on the service's clock) since its last registration.
    @ivar transport: C{udp}, C{tcp} or C{ws}.
    """

    id: str
    address: tuple[str, int]
    lastSeen: float
    transport: str


class _NewIds:
    __slots__ = ("start", "count")

    def __init__(self, now: float) -> None:
        self.start = now
        self.count = 0


class PeerRegistry:
    """The peers known in memory, backed by a durable store.

    @param clock: the time source.
    @param store: the durable registry.
    @param stats: where counters go (C{register_pk_*}, C{peers_*}).
    @param maxPeers: most peers held in memory; C{maxBytes} most bytes they may count.
    @param registerRate: RegisterPk per second one source may send (bursts of
        C{registerBurst}).
    @param newIdsPerSource: ids one source may create per day (0: no limit).
    @param keepAlive: seconds announced to peers registered over a link.
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: IPeerStore,
        stats: Stats,
        *,
        maxPeers: int = 200_000,
        maxBytes: int = MAX_PEER_BYTES,
        registerRate: float = 20.0,
        registerBurst: float = 200.0,
        newIdsPerSource: int = 1000,
        keepAlive: float = 30.0,
    ) -> None:
        self.clock = clock
        self.store = store
        self.stats = stats
        self.maxPeers = maxPeers
        self.maxBytes = maxBytes
        self.newIdsPerSource = newIdsPerSource
        self.keepAlive = keepAlive
        self.peers: dict[str, OnlinePeer] = {}
        self.bytes = 0
        self._loading: dict[str, Deferred[OnlinePeer | None]] = {}
        self._registerBudgets = SourceBudgets(registerRate, registerBurst, MAX_SOURCES)
        self._newIds: BoundedMap[str, _NewIds] = BoundedMap(MAX_SOURCES)
        self._lastFullPrune = float("-inf")
        self.badInput = RateLimitedLog(log, clock)
        self.events = RateLimitedLog(log, clock, burst=20)
        #: The cluster's presence table (a shared store), or C{None} on one node.
        self.presence: Presence | None = None
        #: This node's name in it.
        self.nodeName = ""
        stats.gauge("peers_in_memory", lambda: len(self.peers))
        stats.gauge("peers_bytes", lambda: self.bytes)
        stats.gauge("peers_online", self.countOnline)

    # -- the table ----------------------------------------------------------------------------

    def now(self) -> float:
        """The clock's time."""
        return self.clock.seconds()

    def get(self, peerId: str) -> OnlinePeer | None:
        """The peer in memory, or C{None} (the store is not asked)."""
        return self.peers.get(peerId)

    @property
    def pendingLookups(self) -> int:
        """Store reads in flight."""
        return len(self._loading)

    def countOnline(self) -> int:
        """How many peers are online now."""
        now = self.now()
        return sum(1 for p in self.peers.values() if p.online(now))

    def admit(self, peer: OnlinePeer) -> bool:
        """Put C{peer} in the table if there is room (pruning first when full)."""
        size = peer.size()
        if len(self.peers) >= self.maxPeers or self.bytes + size > self.maxBytes:
            now = self.now()
            if now - self._lastFullPrune >= 1.0:
                self._lastFullPrune = now
                self.prune()
            if len(self.peers) >= self.maxPeers or self.bytes + size > self.maxBytes:
                self.stats.add("peers_table_full")
                self.badInput.warn("peers-full", "peer table full ({n} peers, {bytes} "
                                   "bytes); refusing {id}", n=len(self.peers),
                                   bytes=self.bytes, id=peer.id)
                return False
        self.peers[peer.id] = peer
        self.bytes += size
        return True

    def _forget(self, peer: OnlinePeer) -> None:
        if self.peers.get(peer.id) is peer:
            del self.peers[peer.id]
            self.bytes -= peer.size()

    def prune(self) -> int:
        """Drop from memory the peers offline, without a link, and out of contact for
        L{PRUNE_AFTER} seconds; return how many. They stay in the store."""
        now = self.now()
        stale = [p for p in self.peers.values()
                 if p.link is None and not p.online(now) and now - p.seen >= PRUNE_AFTER]
        for peer in stale:
            self._forget(peer)
        if stale:
            self.stats.add("peers_pruned", len(stale))
        return len(stale)

    def getPeer(self, peerId: str) -> Deferred[OnlinePeer | None]:
        """The peer from memory, else from the store (then kept in memory if there is
        room), else C{None}."""
        peer = self.peers.get(peerId)
        if peer is not None:
            return defer.succeed(peer)
        pending = self._loading.get(peerId)
        if pending is None:
            pending = self._load(peerId)
        result: Deferred[OnlinePeer | None] = Deferred()

        def share(loaded: OnlinePeer | None) -> OnlinePeer | None:
            result.callback(loaded)
            return loaded

        pending.addCallback(share)
        return result

    def _load(self, peerId: str) -> Deferred[OnlinePeer | None]:
        reading = self.store.get(peerId)
        pending: Deferred[OnlinePeer | None] = Deferred()
        # Registered before the read's callbacks: a store that answers at once must
        # still find (and remove) its own entry.
        self._loading[peerId] = pending

        def loaded(record: PeerRecord | None) -> None:
            self._loading.pop(peerId, None)
            existing = self.peers.get(peerId)
            if existing is None and record is not None:
                existing = OnlinePeer(peerId, record.uuid, record.pk, record.ip)
                existing.seen = self.now()
                self.admit(existing)
            pending.callback(existing)

        def failed(f: Any) -> None:
            self._loading.pop(peerId, None)
            self.stats.add("store_errors")
            self.badInput.warn("store-read", "peer registry read failed: {error}",
                               error=f.getErrorMessage())
            pending.callback(None)

        reading.addCallbacks(loaded, failed)
        return pending

    def linkClosed(self, link: RegistrationLink) -> None:
        """A registration link closed: its peer is offline from now on."""
        if link.registeredId is None:
            return
        peer = self.peers.get(link.registeredId)
        if peer is not None and peer.link is link:
            peer.link = None
            peer.lastRegTime = float("-inf")
            self.events.info("peer-disconnected", "peer {id} disconnected",
                             id=link.registeredId)

    def onlinePeers(self, offset: int = 0, limit: int = 100) -> list[PeerInfo]:
        """The online peers ordered by id, C{limit} of them from C{offset}."""
        now = self.now()
        online = sorted((p for p in self.peers.values() if p.online(now)),
                        key=lambda p: p.id)
        return [PeerInfo(p.id, p.addr, max(0.0, now - p.lastRegTime) if p.link is None
                         else 0.0, p.transport)
                for p in online[max(0, offset):max(0, offset) + max(0, limit)]]

    # -- RegisterPeer ---------------------------------------------------------------------------

    def registerPeer(self, peerId: str, source: tuple[str, int]) -> bool:
        """RegisterPeer (rustdesk.md §4.3): refresh a known peer; return C{request_pk}."""
        peer = self.peers.get(peerId)
        if peer is None:
            return True
        stored = peer.addr[0] if peer.addr[1] else peer.ip
        ipChange = source[0] != stored and not isLoopback(source[0])
        requestPk = not peer.pk or ipChange
        if not requestPk:
            now = self.now()
            moved = peer.addr != source
            peer.addr = source
            peer.lastRegTime = peer.seen = now
            if peer.link is None:
                peer.transport = "udp"
            self._present(peer, now, moved)
        return requestPk

    def _present(self, peer: OnlinePeer, now: float, moved: bool) -> None:
        """Tell the cluster this node holds C{peer}'s registration: on a move, else at
        most every L{PRESENCE_INTERVAL} (an entry lives L{REG_TIMEOUT})."""
        if self.presence is None or (not moved and now - peer.presentAt < PRESENCE_INTERVAL):
            return
        peer.presentAt = now
        self.presence.markOnline(peer.id, self.nodeName, peer.addr, REG_TIMEOUT).addErrback(
            self._presenceFailed)

    def _presenceFailed(self, failure: Any) -> None:
        self.stats.add("presence_errors")
        self.badInput.warn("presence", "cannot write presence to the store: {error}",
                           error=failure.getErrorMessage())

    # -- RegisterPk -----------------------------------------------------------------------------

    def _sourceAllows(self, host: str) -> bool:
        return self._registerBudgets.allow(sourceKey(host), self.now())

    def _newIdAllowed(self, host: str) -> bool:
        if not self.newIdsPerSource:
            return True
        now = self.now()
        key = sourceKey(host)
        entry = self._newIds.get(key)
        if entry is None or now - entry.start >= NEW_IDS_WINDOW:
            entry = self._newIds[key] = _NewIds(now)
        if entry.count >= self.newIdsPerSource:
            return False
        entry.count += 1
        return True

    def registerPk(self, rk: RegisterPk, source: tuple[str, int],
                   link: RegistrationLink | None) -> Deferred[int | None]:
        """RegisterPk (rustdesk.md §4.3): the result to answer, or C{None} to stay silent.

        The Deferred fires after a changed registration is durable, so an acknowledged
        registration survives a crash. Over a link (rustdesk.md §4.17) the link becomes the peer's
        delivery path.
        """
        peerId, uuid, pk = rk.id, bytes(rk.uuid), bytes(rk.pk)
        if not uuid or not pk:
            if link is not None:
                return defer.succeed(Result.NOT_SUPPORT)  # change-ID requests (old_id)
            return defer.succeed(None)
        if len(peerId) < MIN_ID_LENGTH:
            return defer.succeed(Result.UUID_MISMATCH)
        if len(peerId) > MAX_ID_LENGTH:
            self.stats.add("register_pk_bad_id")
            return defer.succeed(Result.INVALID_ID_FORMAT)
        if len(uuid) > MAX_UUID_LENGTH or not isPublicKey(pk):
            self.stats.add("register_pk_bad_key")
            self.badInput.warn("bad-pk", "RegisterPk from {host} ignored: not a 32-byte "
                               "Ed25519 key or an overlong uuid", host=source[0])
            return defer.succeed(None)
        if not self._sourceAllows(source[0]):
            self.stats.add("register_pk_too_frequent_ip")
            return defer.succeed(Result.TOO_FREQUENT)
        return self.getPeer(peerId).addCallback(self._found, peerId, uuid, pk, source, link)

    def _found(self, peer: OnlinePeer | None, peerId: str, uuid: bytes, pk: bytes,
               source: tuple[str, int], link: RegistrationLink | None) -> Any:
        ip = source[0]
        if peer is None:
            if not self._newIdAllowed(ip):
                self.stats.add("register_pk_too_many_ids")
                self.badInput.warn("new-ids", "{host} created {n} ids today; refusing "
                                   "{id}", host=ip, n=self.newIdsPerSource, id=peerId)
                return Result.TOO_FREQUENT
            peer = OnlinePeer(peerId)
        if self.peers.get(peerId) is not peer:
            peer.seen = self.now()
            if not self.admit(peer):
                return Result.SERVER_ERROR
        if not peer.uuid:
            changed = True
        elif peer.uuid == uuid:
            if peer.ip != ip and peer.pk != pk:
                return Result.UUID_MISMATCH
            changed = peer.pk != pk or peer.ip != ip
        else:
            return Result.UUID_MISMATCH
        now = self.now()
        if now - peer.regPkTime > REG_PK_GAP:
            peer.regPkCount = 0
        elif peer.regPkCount > REG_PK_BURST:
            self.stats.add("register_pk_too_frequent_id")
            return Result.TOO_FREQUENT
        peer.regPkCount += 1
        peer.regPkTime = now
        if peer.ip and peer.ip != ip:
            self.events.info("peer-ip", "peer {id} changed IP from {old} to {new}",
                             id=peerId, old=peer.ip, new=ip)
        peer.addr = source
        peer.lastRegTime = peer.seen = now
        self._present(peer, now, True)
        if link is not None:
            if peer.link is not None and peer.link is not link:
                peer.link.registeredId = None
                peer.link.close()
            peer.link = link
            peer.transport = "ws" if link.ws else "tcp"
            link.registeredId = peerId
            link.becomeRegistered(self.keepAlive)
        else:
            peer.transport = "udp"
        if not changed:
            return Result.OK
        return self._store(peer, uuid, pk, ip)

    def _store(self, peer: OnlinePeer, uuid: bytes, pk: bytes, ip: str) -> Deferred[int]:
        previous = (peer.uuid, peer.pk, peer.ip)
        self.bytes += len(uuid) + len(pk) - len(peer.uuid) - len(peer.pk)
        peer.uuid, peer.pk, peer.ip = uuid, pk, ip
        d = self.store.put(PeerRecord(peer.id, uuid, pk, ip))

        def stored(_: None) -> int:
            self.events.info("peer-registered", "peer {id} registered its key from {ip}",
                             id=peer.id, ip=ip)
            return Result.OK

        def failed(f: Any) -> int:
            self.stats.add("store_errors")
            self.badInput.warn("store-write", "peer registry write failed for {id}: {error}",
                               id=peer.id, error=f.getErrorMessage())
            # Forget the unsaved change, so the client's retry is written again.
            if (peer.uuid, peer.pk, peer.ip) == (uuid, pk, ip):
                self._restore(peer, *previous)
            return Result.SERVER_ERROR

        return d.addCallbacks(stored, failed)

    def _restore(self, peer: OnlinePeer, uuid: bytes, pk: bytes, ip: str) -> None:
        inTable = self.peers.get(peer.id) is peer
        if inTable:
            self.bytes += len(uuid) + len(pk) - len(peer.uuid) - len(peer.pk)
        peer.uuid, peer.pk, peer.ip = uuid, pk, ip
