# -*- test-case-name: test.test_rendezvous_service -*-
"""The RustDesk rendezvous server (hbbs): registration, punch-hole routing, NAT test.

State and policy live here; L{p2pnet.protocols.rendezvous} frames bytes and hands each
decoded C{RendezvousMessage} to L{RendezvousService} together with a L{Link}: the reply
path of a TCP or WebSocket connection. Section numbers (§) refer to
C{shared/specs/rustdesk.md}.

Beyond hbbs (§4.17): a peer may register over its TCP or WebSocket connection
(C{RegisterPk} answered with C{keep_alive}); that connection is then its delivery path
for C{PunchHole}, C{FetchLocalAddr} and C{RequestRelay}, and it counts as online while
the connection is open.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import (
    ConfigUpdate,
    FetchLocalAddr,
    NatType,
    OnlineResponse,
    PunchHole,
    PunchHoleResponse,
    RegisterPeerResponse,
    RegisterPkResponse,
    RendezvousMessage,
    SoftwareUpdate,
    TestNatResponse,
)
from p2pnet.codecs.rustdesk_crypto import signIdPk
from p2pnet.listen import bindAddresses, listenTCP, listenUDP
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.listening import ListeningService
from p2pnet.services.rendezvous_keys import ServerKey
from p2pnet.stats import Stats
from p2pnet.store.peers import FILENAME as PEERS_FILE
from p2pnet.store.peers import PeerRecord, PeerStore

__all__ = [
    "IP_BLOCK_DUR",
    "Link",
    "OnlinePeer",
    "REG_TIMEOUT",
    "RelaySelector",
    "RendezvousService",
    "versionFromUrl",
]

log = Logger()

#: A peer is online iff its last registration is younger than this (seconds, §4.4).
REG_TIMEOUT = 30.0
#: Idle-reset window of the per-IP RegisterPk counter (§4.7).
IP_BLOCK_DUR = 60.0
#: RegisterPk from one IP beyond this count within the window are refused (§4.7).
IP_BLOCK_COUNT = 30
#: Window and bound of distinct ids registered from one IP (§4.7).
IP_IDS_DUR = 86400.0
IP_IDS_MAX = 300
#: Most source IPs the blocker remembers; the least recently seen is forgotten first.
IP_BLOCKER_ENTRIES = 65536
#: Per-id RegisterPk rate limit: at most 3 per burst with gaps of this many seconds (§4.3).
REG_PK_GAP = 6.0
REG_PK_BURST = 2
#: Seconds between relay-server reachability checks (§4.9).
CHECK_RELAY_INTERVAL = 3.0
#: Registry reads in flight above which a PunchHoleRequest for a peer not in memory is
#: refused (its connection closed) instead of queued.
MAX_PENDING_LOOKUPS = 10000
#: Shortest id accepted by RegisterPk (§4.3 step 2).
MIN_ID_LENGTH = 6

Result = RegisterPkResponse.Result
Failure = PunchHoleResponse.Failure


class Link(Protocol):
    """The reply path of one TCP or WebSocket rendezvous connection.

    @ivar peer: the remote C{(host, port)}, IPv4 unmapped (spec §2.3).
    @ivar ws: whether this is a WebSocket connection.
    @ivar natPort: whether it arrived on the NAT-test port (PORT-1).
    @ivar registeredId: the peer id registered over this link, if any.
    """

    peer: tuple[str, int]
    ws: bool
    natPort: bool
    registeredId: str | None

    def send(self, message: RendezvousMessage) -> None:
        """Frame (and encrypt, once keyed) one message."""

    def close(self) -> None:
        """Flush and close the connection."""

    def becomeRegistered(self, keepAlive: float) -> None:
        """Switch to the long-lived registration mode with heartbeats every C{keepAlive}/2."""


class UDPSender(Protocol):
    """What the service needs of a UDP socket's protocol."""

    def sendMessage(self, message: RendezvousMessage, addr: tuple[str, int]) -> None:
        """Send one message as one datagram."""


class OnlinePeer:
    """The in-memory state of one peer (small: one per registered peer)."""

    __slots__ = ("id", "uuid", "pk", "addr", "ip", "lastRegTime", "regPkCount", "regPkTime",
                 "link")

    def __init__(self, peerId: str, uuid: bytes = b"", pk: bytes = b"", ip: str = "") -> None:
        self.id = peerId
        self.uuid = uuid
        self.pk = pk
        self.ip = ip
        self.addr: tuple[str, int] = ("", 0)
        self.lastRegTime = float("-inf")
        self.regPkCount = 0
        self.regPkTime = float("-inf")
        self.link: Link | None = None

    def online(self, now: float) -> bool:
        """Registered within L{REG_TIMEOUT}, or holding an open registration link."""
        return self.link is not None or now - self.lastRegTime < REG_TIMEOUT


class _IpEntry:
    """hbbs's C{((count, t_last), (ids, t_ids))} for one source IP (§4.7), compactly.

    C{ids} is C{None}, one id, or a set once a second id appears.
    """

    __slots__ = ("count", "last", "ids", "idsTime")

    def __init__(self, now: float) -> None:
        # The first sighting is not counted (hbbs inserts zeros and allows).
        self.count = 0
        self.last = now
        self.ids: str | set[str] | None = None
        self.idsTime = now

    def allow(self, peerId: str, now: float) -> bool:
        if now - self.last > IP_BLOCK_DUR:
            self.count = 0
        elif self.count > IP_BLOCK_COUNT:
            return False
        self.count += 1
        self.last = now
        ids = self.ids
        if now - self.idsTime > IP_IDS_DUR:
            ids = None
        elif isinstance(ids, set) and len(ids) > IP_IDS_MAX and peerId not in ids:
            return False
        if ids is None:
            ids = peerId
        elif isinstance(ids, str):
            if ids != peerId:
                ids = {ids, peerId}
        elif len(ids) <= IP_IDS_MAX:
            ids.add(peerId)
        self.ids = ids
        self.idsTime = now
        return True


def _isLoopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _splitHostPort(entry: str, defaultPort: int) -> tuple[str, int]:
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else defaultPort
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port)
    return entry, defaultPort


class _Probe(TwistedProtocol):
    def connectionMade(self) -> None:
        self.transport.loseConnection()


class RelaySelector:
    """Round-robin choice among relay servers, keeping only reachable ones (§4.9).

    With more than one configured, every L{CHECK_RELAY_INTERVAL} seconds each is probed
    with a TCP connect (port 21117 unless given); the reachable ones are chosen from,
    all of them until the first round of probes finished.
    """

    def __init__(self, reactor: Any, servers: Sequence[str]) -> None:
        self._reactor = reactor
        self.configured = tuple(servers)
        self.active: tuple[str, ...] = self.configured
        self._counter = itertools.count()
        self._loop: LoopingCall | None = None

    def choose(self) -> str:
        """The next relay server, or empty when none is configured."""
        servers = self.active or self.configured
        if not servers:
            return ""
        if len(servers) == 1:
            return servers[0]
        return servers[next(self._counter) % len(servers)]

    def start(self) -> None:
        """Begin the reachability checks (only with more than one server)."""
        if len(self.configured) > 1:
            self._loop = LoopingCall(self.check)
            self._loop.clock = self._reactor
            self._loop.start(CHECK_RELAY_INTERVAL, now=True)

    def stop(self) -> None:
        """End the checks."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check(self) -> Deferred[None]:
        """Probe every configured server once and update L{active}."""
        from twisted.internet.endpoints import HostnameEndpoint

        def probe(entry: str) -> Deferred[bool]:
            host, port = _splitHostPort(entry, 21117)
            endpoint = HostnameEndpoint(self._reactor, host, port, timeout=CHECK_RELAY_INTERVAL)
            d = endpoint.connect(Factory.forProtocol(_Probe))
            d.addCallbacks(lambda _: True, lambda _: False)
            return d

        def update(results: list[tuple[bool, bool]]) -> None:
            reachable = tuple(e for e, (_, ok) in zip(self.configured, results, strict=True) if ok)
            if reachable != self.active:
                log.info("reachable relay servers: {servers}", servers=", ".join(reachable))
            self.active = reachable

        d = defer.DeferredList([probe(e) for e in self.configured])
        d.addCallback(update)
        return d


class RendezvousService(ListeningService):
    """hbbs: the peer table, punch-hole routing and the listeners that feed it.

    @param reactor: provides time (C{seconds}, C{callLater}) and, when the service is
        started, the sockets.
    @param store: the durable peer registry.
    @param key: the resolved C{--key} (licence check and signing).
    @param relayServers: C{host[:port]} entries handed to peers (§4.9).
    @param alwaysUseRelay: force relay on every PunchHole (§4.15).
    @param mask: the LAN network for same-intranet detection (§4.6), or C{None}.
    @param localIp: this server's LAN address, used as relay for LAN peers when
        C{mask} is set.
    @param relayPort: the local relay's port, appended to C{localIp} unless 21117.
    @param keepAlive: seconds announced to TCP/WS-registered peers (§4.17).
    @param listen: addresses to bind; C{port} the rendezvous port (0: the kernel picks
        each kind's port, the same number on every address; see C{boundPorts}).
    """

    name = "rendezvous"
    listeningName = "rendezvous server"

    def __init__(
        self,
        reactor: Any,
        store: PeerStore,
        key: ServerKey,
        *,
        relayServers: Sequence[str] = (),
        alwaysUseRelay: bool = False,
        mask: ipaddress.IPv4Network | None = None,
        localIp: str = "",
        relayPort: int = 21117,
        keepAlive: int = 30,
        listen: Sequence[str] = (),
        port: int = 21116,
        maxConnections: int = 10000,
        maxConnectionsPerIp: int = 64,
        udpRatePerIp: int = 0,
        softwareUrl: str = "",
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.store = store
        self.key = key
        self.relays = RelaySelector(reactor, relayServers)
        self.alwaysUseRelay = alwaysUseRelay
        self.mask = mask
        self.localIp = localIp
        self.relayPort = relayPort
        self.keepAlive = keepAlive
        self.listenAddresses = tuple(listen)
        self.port = port
        self.maxConnections = maxConnections
        self.maxConnectionsPerIp = maxConnectionsPerIp
        self.udpRatePerIp = udpRatePerIp
        self.softwareUrl = softwareUrl
        self.softwareVersion = versionFromUrl(softwareUrl)
        self._udpBudget: dict[str, list[float]] = {}
        self.serial = 0
        self.rendezvousServers: tuple[str, ...] = ()
        self.peers: dict[str, OnlinePeer] = {}
        self._loading: dict[str, Deferred[OnlinePeer | None]] = {}
        self.tcpPunch: dict[tuple[str, int], Link] = {}
        self._ipBlocker: dict[str, _IpEntry] = {}
        self._udp: dict[int, UDPSender] = {}
        self._connections: dict[str, int] = {}
        self._connectionCount = 0
        self.badInput = RateLimitedLog(log, reactor)
        self.stats = Stats()
        self.stats.gauge("peers_in_memory", lambda: len(self.peers))
        self.stats.gauge("peers_online", self._countOnline)
        self.stats.gauge("punch_pending", lambda: len(self.tcpPunch))
        self.stats.gauge("connections", lambda: self._connectionCount)

    # -- construction and listeners ---------------------------------------------------------

    @classmethod
    def fromConfig(cls, context: Any) -> RendezvousService:
        """The service configured by an L{p2pnet.app.AppContext}."""
        import os

        from p2pnet.services.rendezvous_keys import loadServerKey

        config = context.config
        store = PeerStore(os.path.join(context.dataDir, PEERS_FILE))
        key = loadServerKey(config.key, context.dataDir)
        localIp = config.local_ip
        if config.mask is not None and not localIp:
            localIp = detectLocalIp()
        return cls(
            context.reactor,
            store,
            key,
            relayServers=config.relay_servers,
            alwaysUseRelay=config.always_use_relay,
            mask=config.mask,
            localIp=localIp,
            relayPort=config.relay_port,
            keepAlive=config.rendezvous_keep_alive,
            listen=config.listen,
            port=config.rendezvous_port,
            maxConnections=config.max_connections,
            maxConnectionsPerIp=config.max_connections_per_ip,
            udpRatePerIp=config.rendezvous_udp_rate,
            softwareUrl=config.software_url,
        )

    def listen(self) -> None:
        """UDP and TCP (C{udp}, C{tcp}) on the rendezvous port, TCP on port - 1 (C{nat},
        the NAT test) and WebSocket on port + 2 (C{ws}), on every listen address."""
        from p2pnet.protocols.rendezvous import (
            RendezvousDatagramProtocol,
            RendezvousStreamFactory,
            webSocketSite,
        )

        hosts = bindAddresses(self.listenAddresses)
        derived = (lambda d: self.port + d) if self.port else (lambda d: 0)
        key = "rendezvous-port"

        def udp(host: str, port: int) -> IListeningPort:
            protocol = RendezvousDatagramProtocol(self)
            self.registerUDP(6 if ":" in host else 4, protocol)
            return listenUDP(self.reactor, protocol, host, port, key)

        def stream(factory: Callable[[], Factory], what: str
                   ) -> Callable[[str, int], IListeningPort]:
            # A factory of its own for each listener, as each has its own box key.
            return lambda host, port: listenTCP(self.reactor, factory(), host, port, key, what)

        self.listenEverywhere("udp", hosts, self.port, udp)
        self.listenEverywhere("tcp", hosts, self.port, stream(
            lambda: RendezvousStreamFactory(self, False), "TCP"))
        self.listenEverywhere("nat", hosts, derived(-1), stream(
            lambda: RendezvousStreamFactory(self, True), "TCP (NAT test, rendezvous-port - 1)"))
        self.listenEverywhere("ws", hosts, derived(2), stream(
            lambda: webSocketSite(self), "WebSocket (rendezvous-port + 2)"))

    def startService(self) -> None:
        super().startService()
        self.relays.start()

    def listeningNote(self) -> str:
        """Which key clients need, for the log line."""
        key = self.key
        if key.enforced and key.publicKey:
            return f"; clients need key {key.publicKey}"
        if key.enforced:
            return "; clients need the configured licence key; pk fields unsigned"
        return f"; no key check; signing with {key.publicKey}"

    def closePorts(self) -> Deferred[None]:
        self._udp.clear()
        return super().closePorts()

    def stopService(self) -> Deferred[None]:
        closed = super().stopService()
        self.relays.stop()
        return closed.addBoth(lambda _: self.store.close())

    def registerUDP(self, family: int, sender: UDPSender) -> None:
        """Use C{sender} for datagrams to IPv4 (C{4}) or IPv6 (C{6}) peers."""
        self._udp[family] = sender

    # -- small helpers ----------------------------------------------------------------------

    def now(self) -> float:
        """The current time of the service's clock."""
        return self.clock.seconds()

    def _countOnline(self) -> int:
        now = self.now()
        return sum(1 for p in self.peers.values() if p.online(now))

    def mangle(self, addr: tuple[str, int]) -> bytes:
        """C{AddrMangle} of C{addr} with the current time mixed in."""
        return addrmangle.encode(addr[0], addr[1], addrmangle.timestampFor(self.now()))

    def isLan(self, host: str) -> bool:
        """In C{--mask} (§4.6); never without a mask."""
        if self.mask is None:
            return False
        try:
            return ipaddress.ip_address(addrmangle.unmapV4(host)) in self.mask
        except ValueError:
            return False

    def localRelay(self) -> str:
        """The relay address handed to LAN peers: C{local_ip}, with our relay port."""
        if self.relayPort in (0, 21117):
            return self.localIp
        return f"{self.localIp}:{self.relayPort}"

    def sendUDP(self, message: RendezvousMessage, addr: tuple[str, int]) -> None:
        """Send C{message} to C{addr} from the rendezvous UDP socket of its family."""
        sender = self._udp.get(6 if ":" in addr[0] else 4)
        if sender is None or not addr[1]:
            self.stats.add("undeliverable")
            return
        sender.sendMessage(message, addr)

    def deliver(self, peer: OnlinePeer, message: RendezvousMessage) -> None:
        """Send to a registered peer: over its registration link, else by UDP."""
        if peer.link is not None:
            peer.link.send(message)
        else:
            self.sendUDP(message, peer.addr)

    def getPeer(self, peerId: str) -> Deferred[OnlinePeer | None]:
        """The peer from memory, else from the store (then kept in memory), else C{None}."""
        peer = self.peers.get(peerId)
        if peer is not None:
            return defer.succeed(peer)
        pending = self._loading.get(peerId)
        if pending is None:
            pending = self.store.get(peerId)
            # Registered before the callbacks: a store that answers at once must still
            # find (and remove) its own entry.
            self._loading[peerId] = pending

            def loaded(record: PeerRecord | None) -> OnlinePeer | None:
                self._loading.pop(peerId, None)
                existing = self.peers.get(peerId)
                if existing is not None or record is None:
                    return existing
                peer = OnlinePeer(peerId, record.uuid, record.pk, record.ip)
                self.peers[peerId] = peer
                return peer

            def failed(f: Any) -> None:
                self._loading.pop(peerId, None)
                log.failure("peer registry read failed", f)
                return None

            pending.addCallbacks(loaded, failed)
        result: Deferred[OnlinePeer | None] = Deferred()
        pending.addCallback(lambda p: (result.callback(p), p)[1])
        return result

    # -- connections ------------------------------------------------------------------------

    def connectionOpened(self, link: Link) -> bool:
        """Count a new connection; C{False} if it is over the total or per-IP bound."""
        host = link.peer[0]
        count = self._connections.get(host, 0)
        if count >= self.maxConnectionsPerIp or self._connectionCount >= self.maxConnections:
            self.stats.add("connections_refused")
            self.badInput.warn("conn-limit", "rendezvous connection from {host} refused: "
                               "too many connections", host=host)
            return False
        self._connections[host] = count + 1
        self._connectionCount += 1
        return True

    def connectionClosed(self, link: Link, counted: bool = True) -> None:
        """Forget everything that refers to C{link}."""
        if counted:
            self._connectionCount -= 1
            host = link.peer[0]
            left = self._connections.get(host, 1) - 1
            if left > 0:
                self._connections[host] = left
            else:
                self._connections.pop(host, None)
        if self.tcpPunch.get(link.peer) is link:
            del self.tcpPunch[link.peer]
        if link.registeredId is not None:
            peer = self.peers.get(link.registeredId)
            if peer is not None and peer.link is link:
                peer.link = None
                peer.lastRegTime = float("-inf")
                log.info("peer {id} disconnected", id=link.registeredId)

    # -- UDP 21116 --------------------------------------------------------------------------

    def admitDatagram(self, host: str) -> bool:
        """The per-IP datagram budget: C{udpRatePerIp} a second, bursts of twice that.

        The table holds at most L{IP_BLOCKER_ENTRIES} addresses, least recent dropped.
        """
        rate = self.udpRatePerIp
        if not rate:
            return True
        now = self.now()
        table = self._udpBudget
        entry = table.pop(host, None)
        if entry is None:
            entry = [2.0 * rate, now]
            if len(table) >= IP_BLOCKER_ENTRIES:
                del table[next(iter(table))]
        table[host] = entry
        entry[0] = min(2.0 * rate, entry[0] + (now - entry[1]) * rate)
        entry[1] = now
        if entry[0] < 1:
            self.stats.add("udp_flood_dropped")
            self.badInput.warn("udp-flood", "dropping datagrams from {host}: over "
                               "{rate}/s", host=host, rate=rate)
            return False
        entry[0] -= 1
        return True

    def datagramReceived(self, message: RendezvousMessage, addr: tuple[str, int],
                         sender: UDPSender) -> None:
        """Handle one datagram's message (§4.1, §4.3, §4.8)."""
        kind = message.WhichOneof("union")
        host = addrmangle.unmapV4(addr[0])
        if not self.admitDatagram(host):
            return
        source = (host, addr[1])
        if kind == "register_peer":
            self.stats.add("register_peer")
            reply = self.registerPeer(message.register_peer.id, message.register_peer.serial,
                                      source)
            for m in reply:
                sender.sendMessage(m, addr)
        elif kind == "register_pk":
            self.stats.add("register_pk")
            d = self.registerPk(message.register_pk, source, None)
            d.addCallback(self._replyPkUdp, sender, addr)
        elif kind == "configure_update":
            self._configUpdate(message.configure_update, host)
        elif kind == "software_update":
            # Legacy (§4.8): the download URL when the asker's version is not the newest.
            self.stats.add("software_update")
            if self.softwareVersion and message.software_update.url != self.softwareVersion:
                sender.sendMessage(RendezvousMessage(software_update=SoftwareUpdate(
                    url=self.softwareUrl)), addr)
        elif kind in ("punch_hole_request", "punch_hole_sent", "local_addr"):
            # Not answered over UDP since hbbs 1.1.16/1.1.17: a reflection vector (§4.1).
            self.stats.add("udp_ignored")
            self.badInput.warn("udp-reflect", "ignored {kind} over UDP from {host}",
                               kind=kind, host=host)
        else:
            self.stats.add("unknown_message")
            self.badInput.warn("udp-unknown", "unexpected {kind} over UDP from {host}",
                               kind=kind or "empty message", host=host)

    def _replyPkUdp(self, result: int | None, sender: UDPSender, addr: tuple[str, int]) -> None:
        if result is not None:
            msg = RendezvousMessage(register_pk_response=RegisterPkResponse(result=result))
            sender.sendMessage(msg, addr)

    def registerPeer(self, peerId: str, serial: int,
                     source: tuple[str, int]) -> list[RendezvousMessage]:
        """RegisterPeer (§4.3): refresh a known peer, or ask for its key; return replies."""
        if not peerId:
            return []
        peer = self.peers.get(peerId)
        requestPk = True
        if peer is not None:
            stored = peer.addr[0] if peer.addr[1] else peer.ip
            ipChange = source[0] != stored and not _isLoopback(source[0])
            requestPk = not peer.pk or ipChange
            if not requestPk:
                peer.addr = source
                peer.lastRegTime = self.now()
        replies = [RendezvousMessage(
            register_peer_response=RegisterPeerResponse(request_pk=requestPk))]
        if self.serial > serial:
            replies.append(RendezvousMessage(configure_update=ConfigUpdate(
                serial=self.serial, rendezvous_servers=self.rendezvousServers)))
        return replies

    def _configUpdate(self, cu: ConfigUpdate, host: str) -> None:
        if not _isLoopback(host):
            self.stats.add("config_update_refused")
            self.badInput.warn("config-update", "ConfigUpdate from non-loopback {host} ignored",
                               host=host)
            return
        if cu.serial > self.serial:
            self.serial = cu.serial
            self.rendezvousServers = tuple(cu.rendezvous_servers)
            log.info("configuration serial {serial}: rendezvous servers {servers}",
                     serial=self.serial, servers=", ".join(self.rendezvousServers))

    def allowedByIpBlocker(self, ip: str, peerId: str) -> bool:
        """The per-IP RegisterPk limits (§4.7), with a bounded table.

        The table keeps insertion order as recency: a seen IP is moved to the end, and
        beyond L{IP_BLOCKER_ENTRIES} the least recently seen is forgotten.
        """
        now = self.now()
        table = self._ipBlocker
        entry = table.pop(ip, None)
        if entry is None:
            table[ip] = _IpEntry(now)
            if len(table) > IP_BLOCKER_ENTRIES:
                del table[next(iter(table))]
            return True
        table[ip] = entry
        return entry.allow(peerId, now)

    def registerPk(self, rk: Any, source: tuple[str, int],
                   link: Link | None) -> Deferred[int | None]:
        """RegisterPk (§4.3): the result to answer, or C{None} to stay silent.

        The Deferred fires after a changed registration is durable, so an acknowledged
        registration survives a crash. Over a link (§4.17) the link becomes the peer's
        delivery path.
        """
        if not rk.uuid or not rk.pk:
            if link is not None:
                return defer.succeed(Result.NOT_SUPPORT)  # change-ID requests (old_id)
            return defer.succeed(None)
        peerId = rk.id
        if len(peerId) < MIN_ID_LENGTH:
            return defer.succeed(Result.UUID_MISMATCH)
        if not self.allowedByIpBlocker(source[0], peerId):
            self.stats.add("register_pk_too_frequent_ip")
            return defer.succeed(Result.TOO_FREQUENT)
        d = self.getPeer(peerId)
        d.addCallback(self._registerPkFound, peerId, bytes(rk.uuid), bytes(rk.pk), source, link)
        return d

    def _registerPkFound(self, peer: OnlinePeer | None, peerId: str, uuid: bytes, pk: bytes,
                         source: tuple[str, int], link: Link | None) -> Any:
        if peer is None:
            peer = self.peers.setdefault(peerId, OnlinePeer(peerId))
        ip = source[0]
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
            log.info("peer {id} changed IP from {old} to {new}", id=peerId, old=peer.ip, new=ip)
        peer.addr = source
        peer.lastRegTime = now
        if link is not None:
            if peer.link is not None and peer.link is not link:
                peer.link.registeredId = None
                peer.link.close()
            peer.link = link
            link.registeredId = peerId
            link.becomeRegistered(self.keepAlive)
        if not changed:
            return Result.OK
        previous = (peer.uuid, peer.pk, peer.ip)
        peer.uuid, peer.pk, peer.ip = uuid, pk, ip
        d = self.store.put(PeerRecord(peerId, uuid, pk, ip))

        def stored(_: None) -> int:
            log.info("peer {id} registered its key from {ip}", id=peerId, ip=ip)
            return Result.OK

        def failed(f: Any) -> int:
            log.failure("peer registry write failed for {id}", f, id=peerId)
            # Forget the unsaved change, so the client's retry is written again.
            if (peer.uuid, peer.pk, peer.ip) == (uuid, pk, ip):
                peer.uuid, peer.pk, peer.ip = previous
            return Result.SERVER_ERROR

        d.addCallbacks(stored, failed)
        return d

    # -- TCP / WebSocket ----------------------------------------------------------------------

    def streamMessage(self, message: RendezvousMessage, link: Link) -> bool:
        """Handle one message from a TCP/WS link; return whether to keep the link open.

        NAT-port links (§4.1, PORT-1) answer TestNatRequest and OnlineRequest once.
        Links to PORT and WS follow §4.5, plus registration (§4.17).
        """
        kind = message.WhichOneof("union")
        self.stats.add("stream_" + (kind or "empty"))
        registered = link.registeredId is not None
        if link.natPort:
            if kind == "test_nat_request":
                link.send(RendezvousMessage(test_nat_response=TestNatResponse(
                    port=link.peer[1])))
            elif kind == "online_request":
                link.send(self.onlineResponse(message.online_request.peers))
            else:
                self._unexpected(kind, link)
            return False
        if kind == "punch_hole_request":
            self._keepForReply(link)
            self.punchHoleRequest(message.punch_hole_request, link)
            return True
        if kind == "request_relay":
            self._keepForReply(link)
            self.requestRelay(message.request_relay, link)
            return True
        if kind == "punch_hole_sent":
            self.punchHoleSent(message.punch_hole_sent, link)
            return registered
        if kind == "local_addr":
            self.localAddr(message.local_addr, link)
            return registered
        if kind == "relay_response":
            self.relayResponse(message.relay_response, link)
            return registered
        if kind == "test_nat_request":
            cu = None
            if self.serial > message.test_nat_request.serial:
                cu = ConfigUpdate(serial=self.serial, rendezvous_servers=self.rendezvousServers)
            link.send(RendezvousMessage(test_nat_response=TestNatResponse(
                port=link.peer[1], cu=cu)))
            return registered
        if kind == "online_request":
            link.send(self.onlineResponse(message.online_request.peers))
            return registered
        if kind == "register_pk":
            self.stats.add("register_pk")
            d = self.registerPk(message.register_pk, link.peer, link)
            d.addCallback(self._replyPkStream, link)
            return True
        if kind == "hc" and registered:
            return True
        self._unexpected(kind, link)
        return False

    def _unexpected(self, kind: str | None, link: Link) -> None:
        self.stats.add("unknown_message")
        self.badInput.warn("stream-unknown", "unexpected {kind} from {host}; closing",
                           kind=kind or "empty message", host=link.peer[0])

    def _replyPkStream(self, result: int | None, link: Link) -> None:
        if result is None:
            return
        keepAlive = self.keepAlive if result == Result.OK else 0
        link.send(RendezvousMessage(register_pk_response=RegisterPkResponse(
            result=result, keep_alive=keepAlive)))
        if result != Result.OK and link.registeredId is None:
            link.close()

    def _keepForReply(self, link: Link) -> None:
        if not getattr(link, "punchStored", False):
            link.punchStored = True  # type: ignore[attr-defined]
            self.tcpPunch[link.peer] = link

    def onlineResponse(self, ids: Sequence[str]) -> RendezvousMessage:
        """The online bitmap (§4.11): bit 7 - i%8 of byte i/8 for peer i."""
        now = self.now()
        states = bytearray((len(ids) + 7) // 8)
        for i, peerId in enumerate(ids):
            peer = self.peers.get(peerId)
            if peer is not None and peer.online(now):
                states[i // 8] |= 0x80 >> (i % 8)
        return RendezvousMessage(online_response=OnlineResponse(states=bytes(states)))

    def _failure(self, link: Link, failure: int) -> None:
        link.send(RendezvousMessage(punch_hole_response=PunchHoleResponse(failure=failure)))

    def punchHoleRequest(self, ph: Any, link: Link) -> Deferred[None]:
        """Route a controller's PunchHoleRequest to the target peer (§4.5 step 2)."""
        if not self.key.accepts(ph.licence_key):
            self.stats.add("licence_mismatch")
            self.badInput.warn("licence", "licence key mismatch from {host}", host=link.peer[0])
            self._failure(link, Failure.LICENSE_MISMATCH)
            return defer.succeed(None)
        if ph.id not in self.peers and len(self._loading) >= MAX_PENDING_LOOKUPS:
            # The registry is that far behind: refuse rather than queue without bound.
            self.stats.add("lookups_refused")
            self.badInput.warn("lookups", "registry busy; closing {host}", host=link.peer[0])
            link.close()
            return defer.succeed(None)
        d = self.getPeer(ph.id)
        d.addCallback(self._punchPeerFound, ph, link)
        return d

    def _punchPeerFound(self, peer: OnlinePeer | None, ph: Any, link: Link) -> None:
        if peer is None:
            self._failure(link, Failure.ID_NOT_EXIST)
            return
        if not peer.online(self.now()):
            self._failure(link, Failure.OFFLINE)
            return
        relay = self.relays.choose()
        natType = ph.nat_type
        aLan, bLan = self.isLan(link.peer[0]), self.isLan(peer.addr[0])
        if self.alwaysUseRelay or aLan != bLan:
            natType = NatType.SYMMETRIC
            if bLan:
                relay = self.localRelay()
        # hbbs skips always-use-relay on the LAN path (rustdesk-server#677); we honour it.
        sameIntranet = not link.ws and not self.alwaysUseRelay and (
            (aLan and bLan) or link.peer[0] == peer.addr[0])
        mangled = self.mangle(link.peer)
        if sameIntranet:
            self.stats.add("fetch_local_addr")
            msg = RendezvousMessage(fetch_local_addr=FetchLocalAddr(
                socket_addr=mangled, relay_server=relay))
        else:
            self.stats.add("punch_hole")
            msg = RendezvousMessage(punch_hole=PunchHole(
                socket_addr=mangled, nat_type=natType, relay_server=relay))
        self.deliver(peer, msg)

    def requestRelay(self, rr: Any, link: Link) -> None:
        """Forward a controller's RequestRelay to the target peer (§4.5 step 5)."""
        peer = self.peers.get(rr.id)
        if peer is None:
            self.stats.add("relay_unknown_peer")
            return
        forward = RendezvousMessage()
        forward.request_relay.CopyFrom(rr)
        forward.request_relay.socket_addr = self.mangle(link.peer)
        self.deliver(peer, forward)

    def _takeRequester(self, mangled: bytes) -> Link | None:
        addr = addrmangle.decode(mangled)
        link = self.tcpPunch.pop(addr, None)
        if link is None:
            self.stats.add("reply_without_requester")
        return link

    def signedPk(self, version: str, peerId: str) -> Deferred[bytes]:
        """C{pk} for a reply about C{peerId} (§4.10): its signed IdPk, or empty."""
        signing = self.key.signingKey
        if not version or signing is None or not peerId:
            return defer.succeed(b"")
        d = self.getPeer(peerId)
        d.addCallback(lambda p: signIdPk(signing, peerId, p.pk) if p and p.pk else b"")
        return d

    def punchHoleSent(self, phs: Any, link: Link) -> None:
        """The target punched: tell the controller where it is (§4.5 step 3)."""
        requester = self._takeRequester(phs.socket_addr)
        if requester is None:
            return
        where = self.mangle(link.peer)

        def send(pk: bytes) -> None:
            requester.send(RendezvousMessage(punch_hole_response=PunchHoleResponse(
                socket_addr=where, pk=pk, relay_server=phs.relay_server,
                nat_type=phs.nat_type)))

        self.signedPk(phs.version, phs.id).addCallback(send)

    def localAddr(self, la: Any, link: Link) -> None:
        """The target is on the controller's LAN: pass its local address (§4.5 step 3)."""
        requester = self._takeRequester(la.socket_addr)
        if requester is None:
            return

        def send(pk: bytes) -> None:
            requester.send(RendezvousMessage(punch_hole_response=PunchHoleResponse(
                socket_addr=la.local_addr, pk=pk, relay_server=la.relay_server,
                is_local=True)))

        self.signedPk(la.version, la.id).addCallback(send)

    def relayResponse(self, rr: Any, link: Link) -> None:
        """The target goes to the relay: forward its RelayResponse (§4.5 step 3)."""
        requester = self._takeRequester(rr.socket_addr)
        if requester is None:
            return
        forward = RendezvousMessage()
        forward.relay_response.CopyFrom(rr)
        out = forward.relay_response
        out.ClearField("socket_addr")
        if self.isLan(link.peer[0]):
            out.relay_server = self.localRelay()
        elif self.localIp and out.relay_server == self.localIp:
            out.relay_server = self.relays.choose()

        def send(pk: bytes) -> None:
            if pk:
                out.pk = pk
            requester.send(forward)

        peerId = rr.id if rr.WhichOneof("union") == "id" else ""
        self.signedPk(rr.version, peerId).addCallback(send)


def versionFromUrl(url: str) -> str:
    """The client version named in a download URL, as hbb_common reads it; "" if none.

    The version follows the last C{-}; when a C{.} comes after that C{-}, a non-numeric
    tail after the last C{.} (an extension) is dropped: C{.../rustdesk-1.2.3.exe} gives
    C{1.2.3}, C{.../rustdesk-1.2.3} too. Without both a C{-} and a C{.}, there is none.
    """
    dash, dot = url.rfind("-"), url.rfind(".")
    if dash < 0 or dot < 0:
        return ""
    after = url[dash + 1 :]
    if dot < dash:
        return after
    tail = url[dot + 1 :]
    try:
        int(tail)
    except ValueError:
        return url[dash + 1 : dot]
    return after


def detectLocalIp() -> str:
    """This host's primary IPv4 address (the source of its default route)."""
    import socket

    from p2pnet.errors import ConfigError

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent
        return str(sock.getsockname()[0])
    except OSError:
        raise ConfigError("local-ip", "cannot detect this host's LAN address; set it") from None
    finally:
        sock.close()

