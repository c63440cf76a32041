# -*- test-case-name: test.unit.test_rendezvous_service -*-
"""Routing between a controller and a registered peer: punch hole, relay, LAN.

A controller's C{PunchHoleRequest} or C{RequestRelay} (rustdesk.md §4.5) is forwarded
to the target peer over its registration link or by UDP; the target's answer
(C{PunchHoleSent}, C{LocalAddr}, C{RelayResponse}) finds the controller's connection
again by the address mangled into it. With a shared store, a target held by another
node is reached through it (L{p2pnet.services.rendezvous_cluster}): the request goes to
that node, the answer comes back here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from p2pnet.addresses import unmapped
from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import (
    FetchLocalAddr,
    LocalAddr,
    NatType,
    PunchHole,
    PunchHoleRequest,
    PunchHoleResponse,
    PunchHoleSent,
    RelayResponse,
    RendezvousMessage,
    RequestRelay,
)
from p2pnet.codecs.rustdesk_crypto import signIdPk
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.rendezvous_cluster import ClusterRoutes
from p2pnet.services.rendezvous_keys import ServerKey
from p2pnet.services.rendezvous_registry import OnlinePeer, PeerRegistry
from p2pnet.services.rendezvous_relays import RelaySelector
from p2pnet.stats import Stats

__all__ = ["MAX_PENDING_LOOKUPS", "Router", "RouteLink"]

#: Registry reads in flight above which a PunchHoleRequest for a peer not in memory is
#: refused (its connection closed) instead of queued.
MAX_PENDING_LOOKUPS = 10000

Failure = PunchHoleResponse.Failure


class RouteLink(Protocol):
    """A controller's or target's TCP/WebSocket connection, as routing sees it."""

    peer: tuple[str, int]
    ws: bool

    def send(self, message: RendezvousMessage) -> None:
        """Frame (and encrypt, once keyed) one message."""

    def close(self) -> None:
        """Flush and close the connection."""


class Router:
    """Punch-hole, relay and same-LAN routing (rustdesk.md §4.5, §4.6).

    @param sendUDP: sends a message to a peer's registered UDP address.
    @param mask: the LAN network for same-intranet detection (rustdesk.md §4.6), or C{None}.
    @param localIp: this server's LAN address, handed as relay to LAN peers.
    @param relayPort: the local relay's port, appended to C{localIp} unless 21117.
    @param alwaysUseRelay: force relay on every PunchHole (rustdesk.md §4.15).
    """

    def __init__(
        self,
        clock: IReactorTime,
        registry: PeerRegistry,
        key: ServerKey,
        relays: RelaySelector,
        sendUDP: Callable[[RendezvousMessage, tuple[str, int]], None],
        stats: Stats,
        badInput: RateLimitedLog,
        *,
        mask: ipaddress.IPv4Network | None = None,
        localIp: str = "",
        relayPort: int = 21117,
        alwaysUseRelay: bool = False,
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.key = key
        self.relays = relays
        self.sendUDP = sendUDP
        self.stats = stats
        self.badInput = badInput
        self.mask = mask
        self.localIp = localIp
        self.relayPort = relayPort
        self.alwaysUseRelay = alwaysUseRelay
        #: Controllers waiting for their target's answer, by their address (rustdesk.md §4.5 step 1).
        self.tcpPunch: dict[tuple[str, int], RouteLink] = {}
        self._stored: set[int] = set()
        #: Routing through the other nodes of a cluster, or C{None} alone.
        self.cluster: ClusterRoutes | None = None

    # -- helpers --------------------------------------------------------------------------------

    def mangle(self, addr: tuple[str, int]) -> bytes:
        """C{AddrMangle} of C{addr} with the current time mixed in (rustdesk.md §3)."""
        return addrmangle.encode(addr[0], addr[1],
                                 addrmangle.timestampFor(self.clock.seconds()))

    def isLan(self, host: str) -> bool:
        """In C{--mask} (rustdesk.md §4.6); never without a mask."""
        if self.mask is None:
            return False
        try:
            return ipaddress.ip_address(unmapped(host)) in self.mask
        except ValueError:
            return False

    def localRelay(self) -> str:
        """The relay address handed to LAN peers: C{local_ip}, with our relay port."""
        if self.relayPort in (0, 21117):
            return self.localIp
        return f"{self.localIp}:{self.relayPort}"

    def deliver(self, peer: OnlinePeer, message: RendezvousMessage) -> None:
        """Send to a registered peer: over its registration link, else by UDP."""
        link = peer.link
        if link is not None:
            link.send(message)
        else:
            self.sendUDP(message, peer.addr)

    def keepForReply(self, link: RouteLink) -> None:
        """Remember C{link} as a controller waiting for an answer (only its first request
        is stored, rustdesk.md §4.5 step 1)."""
        if id(link) not in self._stored:
            self._stored.add(id(link))
            self.tcpPunch[link.peer] = link

    def linkClosed(self, link: RouteLink) -> None:
        """Forget C{link}."""
        self._stored.discard(id(link))
        if self.tcpPunch.get(link.peer) is link:
            del self.tcpPunch[link.peer]

    def _forwarded(self, mangled: bytes, answer: RendezvousMessage, link: RouteLink) -> bool:
        """Send a target's answer back to the node whose controller asked, if another."""
        return self.cluster is not None and self.cluster.forwardAnswer(
            bytes(mangled), answer, link.peer)

    def _takeRequester(self, mangled: bytes) -> RouteLink | None:
        addr = addrmangle.decode(mangled)
        link = self.tcpPunch.pop(addr, None)
        if link is None:
            self.stats.add("reply_without_requester")
        return link

    def signedPk(self, version: str, peerId: str) -> Deferred[bytes]:
        """C{pk} for a reply about C{peerId} (rustdesk.md §4.10): its signed IdPk, or empty."""
        signing = self.key.signingKey
        if not version or signing is None or not peerId:
            return defer.succeed(b"")
        return self.registry.getPeer(peerId).addCallback(
            lambda p: signIdPk(signing, peerId, p.pk) if p and p.pk else b"")

    def _failure(self, link: RouteLink, failure: int) -> None:
        link.send(RendezvousMessage(punch_hole_response=PunchHoleResponse(failure=failure)))

    # -- the controller's requests ------------------------------------------------------------

    def punchHoleRequest(self, ph: PunchHoleRequest, link: RouteLink) -> Deferred[None]:
        """Route a controller's PunchHoleRequest to the target peer (rustdesk.md §4.5 step 2)."""
        self.keepForReply(link)
        if not self.key.accepts(ph.licence_key):
            self.stats.add("licence_mismatch")
            self.badInput.warn("licence", "licence key mismatch from {host}", host=link.peer[0])
            self._failure(link, Failure.LICENSE_MISMATCH)
            return defer.succeed(None)
        if self.registry.get(ph.id) is None and \
                self.registry.pendingLookups >= MAX_PENDING_LOOKUPS:
            # The registry is that far behind: refuse rather than queue without bound.
            self.stats.add("lookups_refused")
            self.badInput.warn("lookups", "registry busy; closing {host}", host=link.peer[0])
            link.close()
            return defer.succeed(None)
        return self.registry.getPeer(ph.id).addCallback(self._punchPeerFound, ph, link)

    def _punchPeerFound(self, peer: OnlinePeer | None, ph: PunchHoleRequest,
                        link: RouteLink) -> None:
        if peer is None:
            self._failure(link, Failure.ID_NOT_EXIST)
            return
        if not peer.online(self.clock.seconds()):
            if self.cluster is None:
                self._failure(link, Failure.OFFLINE)
                return
            self.cluster.holder(ph.id).addCallback(self._punchRemote, ph, link)
            return
        self.deliver(peer, self._punchMessage(ph, link, peer.addr))

    def _punchRemote(self, found: tuple[str, tuple[str, int]] | None, ph: PunchHoleRequest,
                     link: RouteLink) -> None:
        if found is None or self.cluster is None:
            self._failure(link, Failure.OFFLINE)
            return
        node, addr = found
        self.cluster.forwardRequest(node, ph.id, self._punchMessage(ph, link, addr))

    def _punchMessage(self, ph: PunchHoleRequest, link: RouteLink,
                      peerAddr: tuple[str, int]) -> RendezvousMessage:
        """What the target at C{peerAddr} gets for C{ph} from the controller on C{link}."""
        relay = self.relays.choose()
        natType = ph.nat_type
        aLan, bLan = self.isLan(link.peer[0]), self.isLan(peerAddr[0])
        if self.alwaysUseRelay or aLan != bLan:
            natType = NatType.SYMMETRIC
            if bLan:
                relay = self.localRelay()
        # hbbs skips always-use-relay on the LAN path (rustdesk-server#677); we honour it.
        sameIntranet = not link.ws and not self.alwaysUseRelay and (
            (aLan and bLan) or link.peer[0] == peerAddr[0])
        mangled = self.mangle(link.peer)
        if sameIntranet:
            self.stats.add("fetch_local_addr")
            return RendezvousMessage(fetch_local_addr=FetchLocalAddr(
                socket_addr=mangled, relay_server=relay))
        self.stats.add("punch_hole")
        return RendezvousMessage(punch_hole=PunchHole(
            socket_addr=mangled, nat_type=natType, relay_server=relay))

    def requestRelay(self, rr: RequestRelay, link: RouteLink) -> None:
        """Forward a controller's RequestRelay to the target peer (rustdesk.md §4.5 step 5)."""
        self.keepForReply(link)
        peer = self.registry.get(rr.id)
        forward = RendezvousMessage()
        forward.request_relay.CopyFrom(rr)
        forward.request_relay.socket_addr = self.mangle(link.peer)
        if self.cluster is not None and (
                peer is None or not peer.online(self.clock.seconds())):
            cluster = self.cluster

            def remote(found: tuple[str, tuple[str, int]] | None) -> None:
                if found is not None:
                    cluster.forwardRequest(found[0], rr.id, forward)
                elif peer is not None:
                    self.deliver(peer, forward)
                else:
                    self.stats.add("relay_unknown_peer")

            cluster.holder(rr.id).addCallback(remote)
            return
        if peer is None:
            self.stats.add("relay_unknown_peer")
            return
        self.deliver(peer, forward)

    # -- across nodes -------------------------------------------------------------------------

    def deliverHere(self, peerId: str, message: RendezvousMessage) -> bool:
        """Deliver a request another node routed here; C{False} if the peer is not
        online here (any more)."""
        peer = self.registry.get(peerId)
        if peer is None or not peer.online(self.clock.seconds()):
            return False
        self.deliver(peer, message)
        return True

    def remoteAnswer(self, message: RendezvousMessage, link: RouteLink) -> None:
        """A target's answer another node forwarded back to this, the controller's node."""
        kind = message.WhichOneof("union")
        if kind == "punch_hole_sent":
            self.punchHoleSent(message.punch_hole_sent, link)
        elif kind == "local_addr":
            self.localAddr(message.local_addr, link)
        elif kind == "relay_response":
            self.relayResponse(message.relay_response, link)

    # -- the target's answers -----------------------------------------------------------------

    def punchHoleSent(self, phs: PunchHoleSent, link: RouteLink) -> None:
        """The target punched: tell the controller where it is (rustdesk.md §4.5 step 3)."""
        if self._forwarded(phs.socket_addr, RendezvousMessage(punch_hole_sent=phs), link):
            return
        requester = self._takeRequester(phs.socket_addr)
        if requester is None:
            return
        where = self.mangle(link.peer)

        def send(pk: bytes) -> None:
            requester.send(RendezvousMessage(punch_hole_response=PunchHoleResponse(
                socket_addr=where, pk=pk, relay_server=phs.relay_server,
                nat_type=phs.nat_type)))

        self.signedPk(phs.version, phs.id).addCallback(send)

    def localAddr(self, la: LocalAddr, link: RouteLink) -> None:
        """The target is on the controller's LAN: pass its local address (rustdesk.md §4.5 step 3)."""
        if self._forwarded(la.socket_addr, RendezvousMessage(local_addr=la), link):
            return
        requester = self._takeRequester(la.socket_addr)
        if requester is None:
            return

        def send(pk: bytes) -> None:
            requester.send(RendezvousMessage(punch_hole_response=PunchHoleResponse(
                socket_addr=la.local_addr, pk=pk, relay_server=la.relay_server,
                is_local=True)))

        self.signedPk(la.version, la.id).addCallback(send)

    def relayResponse(self, rr: RelayResponse, link: RouteLink) -> None:
        """The target goes to the relay: forward its RelayResponse (rustdesk.md §4.5 step 3)."""
        if self._forwarded(rr.socket_addr, RendezvousMessage(relay_response=rr), link):
            return
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
