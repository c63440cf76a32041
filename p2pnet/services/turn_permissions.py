# -*- test-case-name: test.unit.test_services_turn -*-
"""CreatePermission and ChannelBind requests (RFC 8656 §10.2, §12.2).

Each step of the RFC is quoted right above the code doing it.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from p2pnet.addresses import family, unmapped
from p2pnet.codecs.stun import (
    CHANNEL_MAX_RFC5766,
    CHANNEL_MIN,
    PROTOCOL_UDP,
    Attr,
    Message,
    StunDecodeError,
    decodeValue,
)
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.turn_context import TurnRequest, TurnResponder
from p2pnet.services.turn_policy import PeerPolicy
from p2pnet.services.turn_table import AllocationTable
from p2pnet.stats import Stats

__all__ = ["PermissionHandler", "peerAddresses"]


def peerAddresses(message: Message) -> list[tuple[str, int]] | None:
    """Every XOR-PEER-ADDRESS of C{message} (IPv4-mapped as IPv4), through the codec's
    attribute table; C{None} when one is malformed (the dispatcher's check reads only
    the first of each type, and CreatePermission may carry several)."""
    try:
        return [(unmapped(host), port) for host, port in (
            decodeValue(t, v, message.transactionId) for t, v in message.attributes
            if t == Attr.XOR_PEER_ADDRESS)]
    except StunDecodeError:
        return None


class PermissionHandler:
    """Answers CreatePermission (RFC 8656 §10.2) and ChannelBind (§12.2)."""

    def __init__(self, clock: IReactorTime, table: AllocationTable, respond: TurnResponder,
                 policy: PeerPolicy, stats: Stats, badInputLog: RateLimitedLog) -> None:
        self.clock = clock
        self.table = table
        self.respond = respond
        self.policy = policy
        self.stats = stats
        self.badInputLog = badInputLog

    def forbidden(self, request: TurnRequest) -> None:
        """403, logged at a bounded rate with the user and the 5-tuple."""
        allocation = request.allocation
        assert allocation is not None
        self.badInputLog.warn(
            "forbidden", "TURN peer refused by policy for {user} on {fiveTuple}",
            user=allocation.username, fiveTuple=str(allocation.fiveTuple))
        self.respond.error(request, 403)

    def createPermission(self, request: TurnRequest) -> None:
        """Install or refresh permissions for every XOR-PEER-ADDRESS, all or none."""
        allocation = request.allocation
        assert allocation is not None
        # RFC 8656 §10.2: "The CreatePermission request MUST contain at least one
        # XOR-PEER-ADDRESS attribute and MAY contain multiple such attributes. If no such
        # attribute exists, or if any of these attributes are invalid, then a 400 (Bad
        # Request) error is returned."
        peers = peerAddresses(request.message)
        if not peers:
            self.respond.error(request, 400)
            return
        hosts = [host for host, _ in peers]
        # RFC 8656 §10.2: "If an XOR-PEER-ADDRESS attribute contains an address of an
        # address family that is not the same as that of a relayed transport address for
        # the allocation, the server MUST generate an error response with the 443 (Peer
        # Address Family Mismatch) response code."
        if any(family(h) not in allocation.relayed for h in hosts):
            self.respond.error(request, 443)
            return
        # RFC 8656 §10.2: "The server MAY impose restrictions on the IP address allowed
        # in the XOR-PEER-ADDRESS attribute; if a value is not allowed, the server
        # rejects the request with a 403 (Forbidden) error."
        if not all(self.policy.permitted(h) for h in hosts):
            self.forbidden(request)
            return
        # RFC 8656 §10.2: "If the request is valid, but the server is unable to satisfy
        # the request due to some capacity limit or similar, then a 508 (Insufficient
        # Capacity) error is returned."
        if not allocation.canInstallPermissions(hosts, self.clock.seconds()):
            self.respond.error(request, 508)
            return
        # RFC 8656 §10.2: "the server installs or refreshes a permission for the IP
        # address contained in each XOR-PEER-ADDRESS attribute ... The port portion of
        # each attribute is ignored".
        for host in hosts:
            self.table.installPermission(allocation, host)
        self.stats.add("turn.permissions.installed", len(hosts))
        # RFC 8656 §10.2: "The server then responds with a CreatePermission success
        # response."
        self.respond.success(request)

    def channelBind(self, request: TurnRequest) -> None:
        """Bind (or refresh) a channel to a peer and install its permission."""
        allocation = request.allocation
        assert allocation is not None
        message = request.message
        # RFC 8656 §12.2: "The server MUST check that the request contains a
        # CHANNEL-NUMBER attribute and an XOR-PEER-ADDRESS attribute; if not, 400 (Bad
        # Request)" ... "The channel number is in the range 0x4000 through 0x4FFF
        # (inclusive)." RFC 5766 allowed "0x4000 through 0x7FFE" and its clients
        # (coturn's uclient) use the whole range, so it is accepted as coturn does.
        channel = message.value(Attr.CHANNEL_NUMBER, 0)
        peers = peerAddresses(message)
        if not peers or len(peers) != 1 or not CHANNEL_MIN <= channel <= CHANNEL_MAX_RFC5766:
            self.respond.error(request, 400)
            return
        peer = peers[0]
        if allocation.transport != PROTOCOL_UDP:
            self.respond.error(request, 400)  # RFC 6062 §5.1: TCP allocations have none
            return
        if family(peer[0]) not in allocation.relayed:
            self.respond.error(request, 443)
            return
        # RFC 8656 §12.2: "The server MAY impose restrictions on the IP address and port
        # values allowed in the XOR-PEER-ADDRESS attribute; if a value is not allowed,
        # the server rejects the request with a 403 (Forbidden) error."
        if not self.policy.permitted(peer[0]):
            self.forbidden(request)
            return
        now = self.clock.seconds()
        # RFC 8656 §12.2: "The channel number is not currently bound to a different
        # transport address (same transport address is OK). The transport address is not
        # currently bound to a different channel number. If any of these tests fail, the
        # server replies with a 400 (Bad Request) error." ... "If the request is valid,
        # but the server is unable to fulfill the request due to some capacity limit or
        # similar, the server replies with a 508 (Insufficient Capacity) error."
        if not allocation.hasPermission(peer[0], now) and not (
                allocation.canInstallPermissions([peer[0]], now)):
            self.respond.error(request, 508)
            return
        code = self.table.bindChannel(allocation, channel, peer)
        if code is not None:
            self.respond.error(request, code)
            return
        # RFC 8656 §12.2: "The server also installs or refreshes a permission for the IP
        # address in the XOR-PEER-ADDRESS attribute as described in RFC 8656 §9."
        self.table.installPermission(allocation, peer[0])
        self.stats.add("turn.channels.bound")
        self.respond.success(request)
