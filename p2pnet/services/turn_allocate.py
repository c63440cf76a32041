# -*- test-case-name: test.unit.test_services_turn -*-
"""Allocate and Refresh requests (RFC 8656 §7.2, §7.3; RFC 6062 §5.1; RFC 6156).

Each step of the RFC is quoted right above the code doing it, as pion/turn does, so the
handler can be read against the RFC line by line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from p2pnet.addresses import family
from p2pnet.codecs.stun import FAMILY_IPV4, FAMILY_IPV6, PROTOCOL_TCP, PROTOCOL_UDP, Attr, Message
from p2pnet.protocols.turn import PeerConnectionHandler, PeerListenerFactory, RelayHandler
from p2pnet.services.turn_allocation import Allocation, FiveTuple, TableBudget
from p2pnet.services.turn_context import TurnRequest, TurnResponder
from p2pnet.services.turn_relays import RelayAllocator
from p2pnet.services.turn_table import AllocationTable

__all__ = ["DEFAULT_LIFETIME", "AllocateHandler", "AllocationLimits"]

#: RFC 8656 §7.2: "the default lifetime ... 10 minutes".
DEFAULT_LIFETIME = 600.0
_FAMILIES = {FAMILY_IPV4: 4, FAMILY_IPV6: 6}


@dataclass(frozen=True, slots=True)
class AllocationLimits:
    """What each new allocation is given.

    @ivar maxLifetime: the longest LIFETIME granted (at least the default).
    @ivar maxPermissions: permissions per allocation.
    @ivar maxChannels: channel bindings per allocation.
    @ivar maxBps: bytes per second each direction (0: none).
    @ivar tcpRelays: whether RFC 6062 TCP allocations are offered (C{no-tcp-relay}).
    """

    maxLifetime: float = 3600.0
    maxPermissions: int = 100
    maxChannels: int = 100
    maxBps: float = 0.0
    tcpRelays: bool = True


class AllocateHandler:
    """Answers Allocate (RFC 8656 §7.2) and Refresh (§7.3).

    @param data: the data path, which relayed UDP sockets report to.
    @param tcp: the RFC 6062 relays, which relayed TCP listeners report to.
    @ivar draining: new allocations are refused with 508 (the server is being drained);
        Refresh, permissions and channels of existing ones are served.
    @ivar redirectAbove: with L{redirect}, from this many allocations on, a new Allocate
        is answered 300 Try Alternate naming a less loaded node (0: never).
    @ivar redirect: gives the TURN address (of the request's address family) of a node
        holding fewer allocations than this one, or C{None} (L{p2pnet.cluster}).
    """

    draining = False
    redirectAbove = 0
    redirect: Callable[[int, int], tuple[str, int] | None] | None = None

    def __init__(self, clock: IReactorTime, table: AllocationTable, relays: RelayAllocator,
                 respond: TurnResponder, limits: AllocationLimits, budget: TableBudget,
                 data: RelayHandler, tcp: PeerConnectionHandler) -> None:
        self.clock = clock
        self.table = table
        self.relays = relays
        self.respond = respond
        self.limits = limits
        self.budget = budget
        self.data = data
        self.tcp = tcp

    def lifetime(self, request: Message) -> float:
        """RFC 8656 §7.2 step 7 and §7.3: "If the request contains a LIFETIME attribute,
        the server computes the minimum of the client's requested lifetime and the
        server's maximum allowed lifetime. If this computed value is greater than the
        default lifetime, then the server uses the computed lifetime ... Otherwise, the
        server uses the default lifetime." 0 stays 0 (a Refresh deleting). (A malformed
        LIFETIME was answered 400 by the STUN dispatcher's one check.)"""
        asked = request.value(Attr.LIFETIME)
        if asked is None:
            return DEFAULT_LIFETIME
        if asked == 0:
            return 0.0
        return max(min(float(asked), self.limits.maxLifetime), DEFAULT_LIFETIME)

    # -- Allocate ---------------------------------------------------------------------------

    def allocate(self, request: TurnRequest) -> None:
        """Answer an authenticated Allocate request."""
        message, link, respond = request.message, request.link, self.respond
        # RFC 8656 §7.2 step 2: "The server checks if the 5-tuple is currently in use by
        # an existing allocation. If yes, the server rejects the request with a 437
        # (Allocation Mismatch) error." A retransmission of the request that made the
        # allocation gets the same success response again (RFC 8656 §7.2, "stateless stack").
        existing = self.table.get(request.key)
        if existing is not None:
            if existing.transactionId == message.transactionId:
                link.send(existing.response, request.source)
                return
            respond.error(request, 437)
            return
        if self.draining:
            # Draining: refused with 508 (Insufficient Capacity), the code RFC 8656 §7.2
            # gives for an allocation the server cannot take; the client tries another.
            self.table.stats.add("turn.allocations.refused_draining")
            respond.error(request, 508)
            return
        if self.redirect is not None and 0 < self.redirectAbove <= len(self.table):
            # RFC 8656 §7.2 lets a server send the client elsewhere with 300 (Try
            # Alternate) and an ALTERNATE-SERVER of the request's address family
            # (RFC 8489 §14.15): the least loaded node of the cluster.
            alternate = self.redirect(family(request.host), len(self.table))
            if alternate is not None:
                self.table.stats.add("turn.allocations.redirected")
                respond.error(request, 300, [(Attr.ALTERNATE_SERVER, alternate)])
                return
        # RFC 8656 §7.2 step 3: "The server checks if the request contains a
        # REQUESTED-TRANSPORT attribute. If the REQUESTED-TRANSPORT attribute is not
        # included or is malformed, the server rejects the request with a 400 (Bad
        # Request) error. Otherwise, if the attribute indicates an unsupported transport
        # protocol, the server rejects the request with a 442 (Unsupported Transport
        # Protocol) error."
        # (A malformed one was answered 400 by the STUN dispatcher's one check.)
        protocol = message.value(Attr.REQUESTED_TRANSPORT)
        if protocol is None:
            respond.error(request, 400)
            return
        if protocol not in (PROTOCOL_UDP, PROTOCOL_TCP) or (
                protocol == PROTOCOL_TCP and not self.limits.tcpRelays):
            respond.error(request, 442)
            return
        if protocol == PROTOCOL_TCP:
            # RFC 6062 §5.1: "If the client connection transport is not TCP or TLS, the
            # server MUST reject the request with a 400 (Bad Request) error. If the
            # request contains the DONT-FRAGMENT, EVEN-PORT, or RESERVATION-TOKEN
            # attribute, the server MUST reject the request with a 400 (Bad Request)".
            if link.kind == "udp" or any(a in message for a in (
                    Attr.DONT_FRAGMENT, Attr.EVEN_PORT, Attr.RESERVATION_TOKEN)):
                respond.error(request, 400)
                return
        # RFC 8656 §7.2 step 4: "The request may contain a DONT-FRAGMENT attribute."
        # (Supported: the relayed socket sends with DF; unsupported platforms got 420.)
        dontFragment = Attr.DONT_FRAGMENT in message
        lifetime = self.lifetime(message) or DEFAULT_LIFETIME
        token = message.value(Attr.RESERVATION_TOKEN)
        evenPort = message.value(Attr.EVEN_PORT)
        requestedFamily = message.value(Attr.REQUESTED_ADDRESS_FAMILY)
        additionalFamily = message.value(Attr.ADDITIONAL_ADDRESS_FAMILY)
        # RFC 8656 §7.2 step 5: "The server checks if the request contains a
        # RESERVATION-TOKEN attribute. If yes, and the request also contains an EVEN-PORT
        # or REQUESTED-ADDRESS-FAMILY or ADDITIONAL-ADDRESS-FAMILY attribute, the server
        # rejects the request with a 400 (Bad Request) error. Otherwise, it checks to see
        # if the token is valid ... If the token is not valid for some reason, the server
        # rejects the request with a 508 (Insufficient Capacity) error."
        if token is not None:
            if evenPort is not None or requestedFamily is not None or (
                    additionalFamily is not None):
                respond.error(request, 400)
                return
            if token not in self.table.reservations:
                respond.error(request, 508)
                return
        # RFC 8656 §7.2 step 6: "The server checks if the request contains both
        # REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY attributes. If yes, then
        # the server rejects the request with a 400 (Bad Request) error."
        if requestedFamily is not None and additionalFamily is not None:
            respond.error(request, 400)
            return
        # RFC 8656 §7.2 step 7: "If the server does not support the address family
        # requested by the client in REQUESTED-ADDRESS-FAMILY, or if the allocation of
        # the requested address family is disabled by local policy, it MUST generate an
        # Allocate error response ... with the 440 (Address Family not Supported)
        # response code. ... If the REQUESTED-ADDRESS-FAMILY attribute is absent and the
        # server supports the IPv4 address family, the server MUST allocate an IPv4
        # relayed transport address".
        families = [4]
        if token is not None:
            families = [family(self.table.reservations[token].host)]
        elif requestedFamily is not None:
            if requestedFamily not in _FAMILIES:
                respond.error(request, 440)
                return
            families = [_FAMILIES[requestedFamily]]
        hosts = {families[0]: self.relays.relayHost(link, families[0])}
        if hosts[families[0]] is None:
            respond.error(request, 440)
            return
        reserve = bool(evenPort)
        if evenPort is not None:
            # RFC 8656 §7.2 step 8: "The server checks if the request contains an
            # EVEN-PORT attribute with the R bit set to 1. If yes, and the request also
            # contains an ADDITIONAL-ADDRESS-FAMILY attribute, the server rejects the
            # request with a 400 (Bad Request) error."
            if reserve and additionalFamily is not None:
                respond.error(request, 400)
                return
        # RFC 8656 §7.2 step 9: "The server checks if the request contains an
        # ADDITIONAL-ADDRESS-FAMILY attribute. If yes, and the attribute value is 0x01
        # (IPv4 address family), then the server rejects the request with a 400 (Bad
        # Request) error. ... If the server can partially meet the request, ... it
        # includes ADDRESS-ERROR-CODE attribute in the success response".
        addressError: tuple[int, int] | None = None
        if additionalFamily is not None:
            if additionalFamily != FAMILY_IPV6:
                respond.error(request, 400)
                return
            hosts[6] = self.relays.relayHost(link, 6)
            if hosts[6] is None or protocol == PROTOCOL_TCP:
                addressError = (FAMILY_IPV6, 440)
            else:
                families.append(6)
        # RFC 8656 §7.2 step 10: "At any point, the server MAY choose to reject the
        # request with a 486 (Allocation Quota Reached) error if it feels the client is
        # trying to exceed some locally defined allocation quota." A reservation holds a
        # port too, so it counts against the user's quota.
        if not self.table.withinQuota(request.username, request.host, 2 if reserve else 1):
            respond.error(request, 486)
            return
        # RFC 8656 §7.2 steps 8/9 (capacity): "If the server cannot satisfy the request,
        # then the server rejects the request with a 508 (Insufficient Capacity) error."
        # Reservations outlive their allocations, so they are bounded like them.
        if self.table.full() or (reserve and len(self.table.reservations) >= (
                self.table.maxAllocations)):
            respond.error(request, 508)
            return
        now = self.clock.seconds()
        allocation = Allocation(
            FiveTuple(link.kind, request.source, link.local), request.username,
            link, now, lifetime, transport=protocol,
            maxPermissions=self.limits.maxPermissions, maxChannels=self.limits.maxChannels,
            maxBps=self.limits.maxBps, budget=self.budget,
        )
        allocation.dontFragment = dontFragment
        allocation.sendToClient = link.send
        newToken: bytes | None = None
        if token is not None:
            reservation = self.table.takeReservation(token)
            assert reservation is not None
            self.relays.adoptUdp(allocation, reservation.handle, reservation.host,
                                 reservation.port, self.data)
        elif protocol == PROTOCOL_TCP:
            # RFC 6062 §5.1: one TCP relayed address, on which the server listens for
            # peers connecting in.
            host = hosts[families[0]]
            assert host is not None
            if not self.relays.listenTcp(allocation, host,
                                         PeerListenerFactory(self.tcp, allocation)):
                respond.error(request, 508)
                return
        else:
            for index, relayFamily in enumerate(families):
                host = hosts[relayFamily]
                assert host is not None
                held = (self.table.addReservation if reserve and index == 0 else None)
                opened = self.relays.openUdp(allocation, host, self.data, evenPort is not None,
                                             held)
                if opened is None:
                    if index == 0:
                        self.relays.close(allocation)
                        respond.error(request, 508)
                        return
                    addressError = (FAMILY_IPV6, 508)
                elif opened:
                    newToken = opened
        self.table.add(allocation, lifetime)
        # RFC 8656 §7.2: "the server ... sends a success response ... containing: An
        # XOR-RELAYED-ADDRESS attribute containing the relayed transport address ...
        # A LIFETIME attribute containing the current value of the time-to-expiry timer.
        # A RESERVATION-TOKEN attribute (if a second relayed transport address was
        # reserved). An XOR-MAPPED-ADDRESS attribute containing the client's IP address
        # and port (from the 5-tuple)."
        reply = message.reply()
        for relayFamily in (4, 6):
            announced = allocation.announced.get(relayFamily)
            if announced is not None:
                reply.set(Attr.XOR_RELAYED_ADDRESS, announced)
        if addressError is not None:
            reply.set(Attr.ADDRESS_ERROR_CODE, addressError)
        reply.set(Attr.LIFETIME, int(lifetime))
        if newToken is not None:
            reply.set(Attr.RESERVATION_TOKEN, newToken)
        reply.set(Attr.XOR_MAPPED_ADDRESS, (request.host, request.source[1]))
        allocation.transactionId = message.transactionId
        allocation.response = respond.send(request, reply) or b""

    # -- Refresh ----------------------------------------------------------------------------

    def refresh(self, request: TurnRequest) -> None:
        """Answer a Refresh request for an existing allocation."""
        allocation = request.allocation
        assert allocation is not None
        message = request.message
        # RFC 8656 §7.3: "If the server receives a Refresh Request with a
        # REQUESTED-ADDRESS-FAMILY attribute and the attribute value does not match the
        # address family of the allocation, the server MUST reply with a 443 (Peer
        # Address Family Mismatch) Refresh error response."
        requested = message.value(Attr.REQUESTED_ADDRESS_FAMILY)
        if requested is not None:
            if _FAMILIES.get(requested) not in allocation.relayed:
                self.respond.error(request, 443)
                return
        # RFC 8656 §7.3: "The server computes a value called the 'desired lifetime' as
        # follows: if the request contains a LIFETIME attribute and the attribute value is
        # zero, then the 'desired lifetime' is zero. Otherwise, if the request contains a
        # LIFETIME attribute, then the server computes the minimum of the client's
        # requested lifetime and the server's maximum allowed lifetime. If this computed
        # value is greater than the default lifetime, then the 'desired lifetime' is the
        # computed value. Otherwise, the 'desired lifetime' is the default lifetime."
        desired = self.lifetime(message)
        if desired == 0:
            # RFC 8656 §7.3: "If the 'desired lifetime' is zero, then the request
            # succeeds and the allocation is deleted."
            self.table.delete(allocation, "deleted")
        else:
            # RFC 8656 §7.3: "If the 'desired lifetime' is non-zero, then the request
            # succeeds and the allocation's time-to-expiry is set to the 'desired
            # lifetime'."
            self.table.refresh(allocation, desired)
        # RFC 8656 §7.3: "If the request succeeds, then the server sends a success
        # response containing: A LIFETIME attribute containing the current value of the
        # time-to-expiry timer."
        self.respond.success(request, (Attr.LIFETIME, int(desired)))
