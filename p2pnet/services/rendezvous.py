# -*- test-case-name: test.unit.test_rendezvous_service -*-
"""The RustDesk rendezvous server (hbbs): listeners, dispatch, limits.

L{p2pnet.protocols.rendezvous} frames bytes and hands each decoded
C{RendezvousMessage} to L{RendezvousService} together with its reply path (a
L{Link} for TCP and WebSocket connections). The service dispatches by message kind to
three rooms:

- L{p2pnet.services.rendezvous_registry}: the peer table and registration (rustdesk.md §4.3);
- L{p2pnet.services.rendezvous_routing}: punch hole, relay and LAN routing (rustdesk.md §4.5);
- L{p2pnet.services.rendezvous_relays}: which relay server is handed out (rustdesk.md §4.9).

Section numbers (§) refer to C{docs/protocols/rustdesk.md}.

Beyond hbbs (rustdesk.md §4.17): a peer may register over its TCP or WebSocket
connection (C{RegisterPk} answered with C{keep_alive}); that connection is then its
delivery path for C{PunchHole}, C{FetchLocalAddr} and C{RequestRelay}, and it counts as
online while the connection is open.

Every source (an IPv4 address, an IPv6 /64) has a budget of messages per second on
each transport, so one flooding client cannot starve the others (issue 14 item 14):
over UDP the excess is dropped and counted; over TCP and WebSocket the connection's
reading pauses until the budget refills, so the flood slows itself down.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from p2pnet.addresses import defaultRouteAddress, isLoopback, sourceKey, unmapped
from p2pnet.codecs.proto.rendezvous_pb2 import (
    ConfigUpdate,
    OnlineResponse,
    RegisterPeerResponse,
    RegisterPkResponse,
    RendezvousMessage,
    SoftwareUpdate,
    TestNatResponse,
)
from p2pnet.config import nodeName
from p2pnet.errors import ConfigError
from p2pnet.listen import bindAddresses, listenTCP, listenUDP
from p2pnet.protocols.rendezvous import (
    RendezvousDatagramProtocol,
    RendezvousStreamFactory,
    webSocketSite,
)
from p2pnet.ratelimit import SourceBudgets
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.inbox import Inbox
from p2pnet.services.listening import ListeningService
from p2pnet.services.rendezvous_cluster import ClusterRoutes
from p2pnet.services.rendezvous_keys import ServerKey, loadServerKey
from p2pnet.services.rendezvous_registry import (
    MAX_SOURCES,
    REG_TIMEOUT,
    OnlinePeer,
    PeerInfo,
    PeerRegistry,
)
from p2pnet.services.rendezvous_relays import RelaySelector
from p2pnet.services.rendezvous_routing import Router
from p2pnet.stats import Stats
from p2pnet.store.choice import peerStore
from p2pnet.store.peers import IPeerStore
from p2pnet.store.redis import RedisInbox, RedisPeerStore

__all__ = [
    "Link",
    "OnlinePeer",
    "PRUNE_INTERVAL",
    "PeerInfo",
    "REG_TIMEOUT",
    "RelaySelector",
    "RendezvousService",
    "detectLocalIp",
    "versionFromUrl",
]

log = Logger()

#: Seconds between sweeps of the peer table (peers out of contact leave memory).
PRUNE_INTERVAL = 60.0
#: Most ids of one OnlineRequest looked up in a cluster's presence table.
MAX_ONLINE_IDS = 1024

Result = RegisterPkResponse.Result


class Link(Protocol):
    """The reply path of one TCP or WebSocket rendezvous connection.

    @ivar peer: the remote C{(host, port)}, IPv4 unmapped (rustdesk.md §2.3).
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

    def abort(self) -> None:
        """Drop the connection unflushed; L{RendezvousService.connectionClosed} is called
        before this returns."""

    def becomeRegistered(self, keepAlive: float) -> None:
        """Switch to the long-lived registration mode with heartbeats every C{keepAlive}/2."""


class UDPSender(Protocol):
    """What the service needs of a UDP socket's protocol."""

    def sendMessage(self, message: RendezvousMessage, addr: tuple[str, int]) -> None:
        """Send one message as one datagram."""


class RendezvousService(ListeningService):
    """hbbs: the listeners, the per-source limits, and dispatch to registry and routing.

    @param reactor: provides time (C{seconds}, C{callLater}) and, when the service is
        started, the sockets.
    @param store: the durable peer registry.
    @param key: the resolved C{--key} (licence check and signing).
    @param relayServers: C{host[:port]} entries handed to peers (rustdesk.md §4.9).
    @param alwaysUseRelay: force relay on every PunchHole (rustdesk.md §4.15).
    @param mask: the LAN network for same-intranet detection (rustdesk.md §4.6), or C{None}.
    @param localIp: this server's LAN address, used as relay for LAN peers when
        C{mask} is set.
    @param relayPort: the local relay's port, appended to C{localIp} unless 21117.
    @param keepAlive: seconds announced to TCP/WS-registered peers (rustdesk.md §4.17).
    @param listen: addresses to bind; C{port} the rendezvous port (0: the kernel picks
        each kind's port, the same number on every address; see C{boundPorts}).
    @param maxConnections: TCP/WS connections open at once; C{maxConnectionsPerIp} from
        one source.
    @param udpRatePerIp: datagrams per second one source may send (bursts of twice
        that; 0: no limit); C{streamRatePerIp} the same for TCP/WS messages.
    @param maxPeers: peers held in memory; C{registerRate}, C{registerBurst} and
        C{newIdsPerSource} bound RegisterPk per source (see L{PeerRegistry}).
    """

    name = "rendezvous"
    listeningName = "rendezvous server"

    def __init__(
        self,
        reactor: Any,
        store: IPeerStore,
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
        maxConnectionsPerIp: int = 1000,
        udpRatePerIp: int = 0,
        streamRatePerIp: int = 0,
        maxPeers: int = 200_000,
        registerRate: float = 20.0,
        registerBurst: float = 200.0,
        newIdsPerSource: int = 1000,
        softwareUrl: str = "",
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.store = store
        self.keepAlive = keepAlive
        self.listenAddresses = tuple(listen)
        self.port = port
        self.maxConnections = maxConnections
        self.maxConnectionsPerIp = maxConnectionsPerIp
        self.udpRatePerIp = udpRatePerIp
        self.streamRatePerIp = streamRatePerIp
        self.softwareUrl = softwareUrl
        self.softwareVersion = versionFromUrl(softwareUrl)
        self.serial = 0
        self.rendezvousServers: tuple[str, ...] = ()
        self._udp: dict[int, UDPSender] = {}
        self._connections: dict[str, int] = {}
        self._connectionCount = 0
        self._links: set[Link] = set()
        self._udpBudgets = SourceBudgets(udpRatePerIp, 2.0 * udpRatePerIp, MAX_SOURCES) \
            if udpRatePerIp else None
        self._streamBudgets = SourceBudgets(streamRatePerIp, 2.0 * streamRatePerIp,
                                            MAX_SOURCES) if streamRatePerIp else None
        self.badInput = RateLimitedLog(log, reactor)
        self.stats = Stats()
        self.registry = PeerRegistry(
            reactor, store, self.stats, maxPeers=maxPeers, registerRate=registerRate,
            registerBurst=registerBurst, newIdsPerSource=newIdsPerSource,
            keepAlive=keepAlive)
        self.router = Router(
            reactor, self.registry, key, RelaySelector(reactor, relayServers), self.sendUDP,
            self.stats,
            self.badInput, mask=mask, localIp=localIp, relayPort=relayPort,
            alwaysUseRelay=alwaysUseRelay)
        self._prune = LoopingCall(self.registry.prune)
        self._prune.clock = reactor
        self.stats.gauge("punch_pending", lambda: len(self.router.tcpPunch))
        self.stats.gauge("connections", lambda: self._connectionCount)

    # -- construction and listeners ---------------------------------------------------------

    @classmethod
    def fromConfig(cls, context: Any) -> RendezvousService:
        """The service configured by an L{p2pnet.app.AppContext}."""
        config = context.config
        store = peerStore(config.store, context.dataDir)
        key = loadServerKey(config.key, context.dataDir)
        localIp = config.local_ip
        if config.mask is not None and not localIp:
            localIp = detectLocalIp()
        service = cls(
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
            maxConnectionsPerIp=config.rendezvous_connections_per_ip,
            udpRatePerIp=config.rendezvous_udp_rate,
            streamRatePerIp=config.rendezvous_tcp_rate,
            maxPeers=config.rendezvous_max_peers,
            registerRate=config.rendezvous_register_rate,
            registerBurst=config.rendezvous_register_burst,
            newIdsPerSource=config.rendezvous_ids_per_ip,
            softwareUrl=config.software_url,
        )
        if isinstance(store, RedisPeerStore):  # shared: tell the other nodes who is here
            service.joinCluster(store, RedisInbox(config.store, nodeName(config)))
        return service

    def joinCluster(self, store: RedisPeerStore, inbox: Inbox) -> None:
        """Work with the other nodes of a shared store: announce who registers here in
        its presence table, and route requests for peers held elsewhere through
        C{inbox} (L{p2pnet.services.rendezvous_cluster})."""
        self.registry.presence = store
        self.registry.nodeName = inbox.node
        router = self.router
        router.cluster = ClusterRoutes(self.clock, inbox, store, self.stats,
                                       router.deliverHere, router.remoteAnswer)

    def listen(self) -> None:
        """UDP and TCP (C{udp}, C{tcp}) on the rendezvous port, TCP on port - 1 (C{nat},
        the NAT test) and WebSocket on port + 2 (C{ws}), on every listen address."""
        hosts = bindAddresses(self.listenAddresses)
        derived = (lambda d: self.port + d) if self.port else (lambda d: 0)
        key = "rendezvous-port"

        def udp(host: str, port: int) -> IListeningPort:
            protocol = RendezvousDatagramProtocol(self)
            self.registerUDP(6 if ":" in host else 4, protocol)
            return listenUDP(self.reactor, protocol, host, port, key)

        def stream(factory: Callable[[], Factory[Any]], what: str
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
        if self.router.cluster is not None:
            self.router.cluster.start()
        self._prune.start(PRUNE_INTERVAL, now=False)

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
        """Stop listening, drop every open connection, close the store."""
        closed = super().stopService()
        for link in list(self._links):
            link.abort()
        self.relays.stop()
        if self.router.cluster is not None:
            self.router.cluster.stop()
        if self._prune.running:
            self._prune.stop()
        return closed.addBoth(lambda _: self.store.close())

    def registerUDP(self, family: int, sender: UDPSender) -> None:
        """Use C{sender} for datagrams to IPv4 (C{4}) or IPv6 (C{6}) peers."""
        self._udp[family] = sender

    # -- what the rooms hold, for tests, the bench and operators ------------------------------

    @property
    def key(self) -> ServerKey:
        """The resolved C{--key} (licence check and signing)."""
        return self.router.key

    @key.setter
    def key(self, value: ServerKey) -> None:
        self.router.key = value

    @property
    def relays(self) -> RelaySelector:
        """The relay servers handed out (rustdesk.md §4.9)."""
        return self.router.relays

    @relays.setter
    def relays(self, value: RelaySelector) -> None:
        self.router.relays = value

    @property
    def alwaysUseRelay(self) -> bool:
        """Force relay on every PunchHole (rustdesk.md §4.15)."""
        return self.router.alwaysUseRelay

    @alwaysUseRelay.setter
    def alwaysUseRelay(self, value: bool) -> None:
        self.router.alwaysUseRelay = value

    @property
    def mask(self) -> ipaddress.IPv4Network | None:
        """The LAN network for same-intranet detection (rustdesk.md §4.6)."""
        return self.router.mask

    @mask.setter
    def mask(self, value: ipaddress.IPv4Network | None) -> None:
        self.router.mask = value

    @property
    def localIp(self) -> str:
        """This server's LAN address, handed as relay to LAN peers."""
        return self.router.localIp

    @localIp.setter
    def localIp(self, value: str) -> None:
        self.router.localIp = value

    @property
    def relayPort(self) -> int:
        """The local relay's port."""
        return self.router.relayPort

    @relayPort.setter
    def relayPort(self, value: int) -> None:
        self.router.relayPort = value

    @property
    def peers(self) -> Mapping[str, OnlinePeer]:
        """The peers in memory, by id."""
        return self.registry.peers

    @property
    def tcpPunch(self) -> Mapping[tuple[str, int], Any]:
        """Controllers waiting for their target's answer, by address."""
        return self.router.tcpPunch

    def onlinePeers(self, offset: int = 0, limit: int = 100) -> list[PeerInfo]:
        """The online peers ordered by id: C{limit} of them from C{offset} (for the
        operator method C{rendezvous.peers.list})."""
        return self.registry.onlinePeers(offset, limit)

    def now(self) -> float:
        """The current time of the service's clock."""
        return self.clock.seconds()

    def sendUDP(self, message: RendezvousMessage, addr: tuple[str, int]) -> None:
        """Send C{message} to C{addr} from the rendezvous UDP socket of its family."""
        sender = self._udp.get(6 if ":" in addr[0] else 4)
        if sender is None or not addr[1]:
            self.stats.add("undeliverable")
            return
        sender.sendMessage(message, addr)

    # -- connections ------------------------------------------------------------------------

    def connectionOpened(self, link: Link) -> bool:
        """Count a new connection; C{False} if it is over the total or per-source bound."""
        host = sourceKey(link.peer[0])
        count = self._connections.get(host, 0)
        if count >= self.maxConnectionsPerIp or self._connectionCount >= self.maxConnections:
            self.stats.add("connections_refused")
            self.badInput.warn("conn-limit", "rendezvous connection from {host} refused: "
                               "too many connections", host=link.peer[0])
            return False
        self._connections[host] = count + 1
        self._connectionCount += 1
        self._links.add(link)
        return True

    def connectionClosed(self, link: Link, counted: bool = True) -> None:
        """Forget everything that refers to C{link}."""
        if counted:
            self._links.discard(link)
            self._connectionCount -= 1
            host = sourceKey(link.peer[0])
            left = self._connections.get(host, 1) - 1
            if left > 0:
                self._connections[host] = left
            else:
                self._connections.pop(host, None)
        self.router.linkClosed(link)
        self.registry.linkClosed(link)

    def admitMessage(self, link: Link) -> bool:
        """Whether C{link}'s source may have one more TCP/WS message handled now; if not,
        the link pauses reading and asks again after L{STREAM_RETRY} seconds."""
        budgets = self._streamBudgets
        if budgets is None or budgets.allow(sourceKey(link.peer[0]), self.now()):
            return True
        self.stats.add("stream_throttled")
        self.badInput.warn("tcp-flood", "slowing down {host}: over {rate} messages/s",
                           host=link.peer[0], rate=self.streamRatePerIp)
        return False

    # -- UDP 21116 --------------------------------------------------------------------------

    def admitDatagram(self, host: str) -> bool:
        """The per-source datagram budget: C{udpRatePerIp} a second, bursts of twice that."""
        budgets = self._udpBudgets
        if budgets is None or budgets.allow(sourceKey(host), self.now()):
            return True
        self.stats.add("udp_flood_dropped")
        self.badInput.warn("udp-flood", "dropping datagrams from {host}: over {rate}/s",
                           host=host, rate=self.udpRatePerIp)
        return False

    def datagramReceived(self, message: RendezvousMessage, addr: tuple[str, int],
                         sender: UDPSender) -> None:
        """Handle one datagram's message (rustdesk.md §4.1, §4.3, §4.8)."""
        kind = message.WhichOneof("union")
        host = unmapped(addr[0])
        if not self.admitDatagram(host):
            return
        source = (host, addr[1])
        if kind == "register_peer":
            self.stats.add("register_peer")
            rp = message.register_peer
            for m in self.registerPeer(rp.id, rp.serial, source):
                sender.sendMessage(m, addr)
        elif kind == "register_pk":
            self.stats.add("register_pk")
            d = self.registry.registerPk(message.register_pk, source, None)
            d.addCallback(self._replyPkUdp, sender, addr)
        elif kind == "configure_update":
            self._configUpdate(message.configure_update, host)
        elif kind == "software_update":
            # Legacy (rustdesk.md §4.8): the download URL when the asker's version is not the newest.
            self.stats.add("software_update")
            if self.softwareVersion and message.software_update.url != self.softwareVersion:
                sender.sendMessage(RendezvousMessage(software_update=SoftwareUpdate(
                    url=self.softwareUrl)), addr)
        elif kind in ("punch_hole_request", "punch_hole_sent", "local_addr"):
            # Not answered over UDP since hbbs 1.1.16/1.1.17: a reflection vector (rustdesk.md §4.1).
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
        """RegisterPeer (rustdesk.md §4.3): refresh a known peer, or ask for its key; return replies."""
        if not peerId:
            return []
        requestPk = self.registry.registerPeer(peerId, source)
        replies = [RendezvousMessage(
            register_peer_response=RegisterPeerResponse(request_pk=requestPk))]
        if self.serial > serial:
            replies.append(RendezvousMessage(configure_update=ConfigUpdate(
                serial=self.serial, rendezvous_servers=self.rendezvousServers)))
        return replies

    def _configUpdate(self, cu: ConfigUpdate, host: str) -> None:
        if not isLoopback(host):
            self.stats.add("config_update_refused")
            self.badInput.warn("config-update", "ConfigUpdate from non-loopback {host} ignored",
                               host=host)
            return
        if cu.serial > self.serial:
            self.serial = cu.serial
            self.rendezvousServers = tuple(cu.rendezvous_servers)
            log.info("configuration serial {serial}: rendezvous servers {servers}",
                     serial=self.serial, servers=", ".join(self.rendezvousServers))

    # -- TCP / WebSocket ----------------------------------------------------------------------

    def streamMessage(self, message: RendezvousMessage, link: Link) -> bool:
        """Handle one message from a TCP/WS link; return whether to keep the link open.

        NAT-port links (rustdesk.md §4.1, PORT-1) answer TestNatRequest and OnlineRequest once.
        Links to PORT and WS follow rustdesk.md §4.5, plus registration (§4.17).
        """
        kind = message.WhichOneof("union")
        self.stats.add("stream_" + (kind or "empty"))
        registered = link.registeredId is not None
        router = self.router
        if link.natPort:
            if kind == "test_nat_request":
                link.send(RendezvousMessage(test_nat_response=TestNatResponse(
                    port=link.peer[1])))
            elif kind == "online_request":
                self._answerOnline(message.online_request.peers, link, close=True)
                return True  # closed once answered
            else:
                self._unexpected(kind, link)
            return False
        if kind == "punch_hole_request":
            router.punchHoleRequest(message.punch_hole_request, link)
            return True
        if kind == "request_relay":
            router.requestRelay(message.request_relay, link)
            return True
        if kind == "punch_hole_sent":
            router.punchHoleSent(message.punch_hole_sent, link)
            return registered
        if kind == "local_addr":
            router.localAddr(message.local_addr, link)
            return registered
        if kind == "relay_response":
            router.relayResponse(message.relay_response, link)
            return registered
        if kind == "test_nat_request":
            cu = None
            if self.serial > message.test_nat_request.serial:
                cu = ConfigUpdate(serial=self.serial, rendezvous_servers=self.rendezvousServers)
            link.send(RendezvousMessage(test_nat_response=TestNatResponse(
                port=link.peer[1], cu=cu)))
            return registered
        if kind == "online_request":
            self._answerOnline(message.online_request.peers, link, close=not registered)
            return True
        if kind == "register_pk":
            self.stats.add("register_pk")
            d = self.registry.registerPk(message.register_pk, link.peer, link)
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

    def onlineResponse(self, ids: Sequence[str],
                       elsewhere: Set[str] = frozenset()) -> RendezvousMessage:
        """The online bitmap (rustdesk.md §4.11): bit 7 - i%8 of byte i/8 for peer i;
        online here, or (in a cluster) held by another node (C{elsewhere})."""
        now = self.now()
        states = bytearray((len(ids) + 7) // 8)
        for i, peerId in enumerate(ids):
            peer = self.registry.get(peerId)
            if (peer is not None and peer.online(now)) or peerId in elsewhere:
                states[i // 8] |= 0x80 >> (i % 8)
        return RendezvousMessage(online_response=OnlineResponse(states=bytes(states)))

    def _answerOnline(self, ids: Sequence[str], link: Link, close: bool) -> None:
        """Answer an OnlineRequest on C{link}; in a cluster, peers not online here are
        looked up in the shared presence table first (a store that does not answer: the
        local answer). Then close C{link} when C{close}."""
        now = self.now()
        presence = self.registry.presence
        missing = [i for i in ids[:MAX_ONLINE_IDS]
                   if not ((p := self.registry.get(i)) is not None and p.online(now))]

        def answer(elsewhere: Set[str]) -> None:
            link.send(self.onlineResponse(ids, elsewhere))
            if close:
                link.close()

        if presence is None or not missing:
            answer(frozenset())
            return
        def unknown(failure: Any) -> Set[str]:
            self.stats.add("presence_errors")
            self.badInput.warn("presence", "cannot read presence from the store: {error}",
                               error=failure.getErrorMessage())
            return frozenset()

        presence.online(missing).addErrback(unknown).addCallback(answer)


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
    """This host's primary IPv4 address (the source of its default route).

    @raise ConfigError: there is no IPv4 default route.
    """
    address = defaultRouteAddress(4)
    if address is None:
        raise ConfigError("local-ip", "cannot detect this host's LAN address; set it")
    return address
