# -*- test-case-name: test.unit.test_services_turn -*-
"""The TURN data path over UDP relays: Send indications and ChannelData from clients,
datagrams from peers to clients as Data indications or ChannelData (RFC 8656 §11,
§12.5-§12.7), and the bandwidth limits.

This is the hot path: one dictionary lookup for the allocation, one for the permission
or channel, a token bucket when limits are set, one C{sendto}.
"""

from __future__ import annotations

from twisted.internet import error as netError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pnet.addresses import family, unmapped
from p2pnet.codecs.stun import (
    CHANNEL_MAX_RFC5766,
    PROTOCOL_UDP,
    Attr,
    Message,
    Method,
    StunClass,
    StunDecodeError,
    encodeChannelData,
    splitChannelData,
)
from p2pnet.protocols.stun import StunLink
from p2pnet.protocols.turn import DONT_FRAGMENT_SUPPORTED, RelayDatagramProtocol
from p2pnet.ratelimit import TokenBucket
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.turn_allocation import Allocation
from p2pnet.services.turn_relays import RelayAllocator
from p2pnet.services.turn_table import AllocationTable
from p2pnet.stats import Stats

__all__ = ["DataPath"]


class DataPath:
    """Relays data between clients and peers for UDP allocations.

    @param bpsCapacity: bytes per second for all allocations, per direction (0: none).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, table: AllocationTable, relays: RelayAllocator,
                 stats: Stats, badInputLog: RateLimitedLog, bpsCapacity: float = 0.0) -> None:
        self.clock = clock
        self.table = table
        self.relays = relays
        self.stats = stats
        self.badInputLog = badInputLog
        self.totalBuckets: tuple[TokenBucket, TokenBucket] | None = None
        if bpsCapacity:
            now = clock.seconds()
            self.totalBuckets = (TokenBucket(bpsCapacity, now), TokenBucket(bpsCapacity, now))

    def allowed(self, allocation: Allocation, size: int, outbound: bool, now: float) -> bool:
        """The bandwidth limits, per allocation and in total, for C{size} bytes."""
        bucket = allocation.outBucket if outbound else allocation.inBucket
        if bucket is not None and not bucket.take(size, now):
            return False
        if self.totalBuckets is not None:
            return self.totalBuckets[0 if outbound else 1].take(size, now)
        return True

    # -- from the client (RFC 8656 §11.2, §12.5) ---------------------------------------------

    def sendIndication(self, message: Message, link: StunLink, source: tuple[str, int]) -> None:
        """Relay the DATA of a Send indication to its XOR-PEER-ADDRESS."""
        # RFC 8656 §5: "If the message is an indication or a ChannelData message, the
        # server MUST silently discard the message" when no allocation matches the 5-tuple.
        allocation = self.table.allocations.get((link, source))
        if allocation is None:
            self.stats.add("turn.dropped.no_allocation")
            return
        # RFC 8656 §11.2: "The Send indication MUST contain both an XOR-PEER-ADDRESS
        # attribute and a DATA attribute. If one of these attributes is missing or
        # invalid, then the message is discarded."
        # (Indications do not pass the dispatcher's check: a bad value is read here.)
        data = message.get(Attr.DATA)
        try:
            peer = message.value(Attr.XOR_PEER_ADDRESS)
        except StunDecodeError:
            peer = None
        if peer is None or data is None:
            self.stats.add("turn.dropped.bad_send")
            return
        host = unmapped(peer[0])
        now = self.clock.seconds()
        # RFC 8656 §11.2: "The server also checks that there is a permission installed
        # for the IP address contained in the XOR-PEER-ADDRESS attribute. If no such
        # permission exists, the message is discarded. Note that a Send indication never
        # causes the server to refresh the permission."
        if not allocation.hasPermission(host, now):
            self.stats.add("turn.dropped.no_permission")
            return
        relay = allocation.relays.get(family(host))
        if relay is None or allocation.transport != PROTOCOL_UDP:
            self.stats.add("turn.dropped.no_permission")
            return
        # RFC 8656 §11.2: "The Send indication may also contain the DONT-FRAGMENT
        # attribute." The relayed socket sends with DF from then on.
        if Attr.DONT_FRAGMENT in message and not allocation.dontFragment:
            if not DONT_FRAGMENT_SUPPORTED:
                self.stats.add("turn.dropped.dont_fragment")
                return
            self.relays.setDontFragment(allocation, family(host))
            allocation.dontFragment = True
        self.toPeer(allocation, relay, data, (host, peer[1]), now)

    def channelDataReceived(self, data: bytes, link: StunLink, source: tuple[str, int]) -> None:
        """Relay a ChannelData message to the peer its channel is bound to."""
        allocation = self.table.allocations.get((link, source))
        if allocation is None:
            self.stats.add("turn.dropped.no_allocation")
            return
        # RFC 8656 §12.5: "If the ChannelData message is received in a UDP datagram, and
        # if the UDP datagram is too short to contain the claimed length of the
        # ChannelData message ..., then the message is silently discarded."
        try:
            channel, payload = splitChannelData(data, CHANNEL_MAX_RFC5766)
        except StunDecodeError:
            self.stats.add("turn.dropped.bad_channeldata")
            return
        now = self.clock.seconds()
        # RFC 8656 §12.5: "If the ChannelData message is received on a channel that is
        # not bound to any peer, then the message is silently discarded."
        binding = allocation.channels.get(channel)
        if binding is None or now >= binding.expiresAt:
            self.stats.add("turn.dropped.no_channel")
            return
        # The client uses the channel, so it has the ChannelBind success response: the
        # peer's data may go back to it as ChannelData from now on.
        if now < binding.confirmedAt:
            binding.confirmedAt = now
        peer = binding.peer
        # RFC 8656 §12.5: "the server verifies that a permission has been installed for
        # the IP address ... If no such permission exists, the message is silently
        # discarded".
        permission = allocation.permissions.get(peer[0])
        if permission is None or now >= permission.expiresAt:
            self.stats.add("turn.dropped.no_permission")
            return
        self.toPeer(allocation, allocation.relays[family(peer[0])], payload, peer, now)

    def toPeer(self, allocation: Allocation, relay: RelayDatagramProtocol, data: bytes,
               peer: tuple[str, int], now: float) -> None:
        """Send C{data} from the relayed address to C{peer}, counted."""
        size = len(data)
        if (allocation.outBucket is not None or self.totalBuckets is not None) and (
                not self.allowed(allocation, size, True, now)):
            self.stats.add("turn.dropped.bandwidth")
            return
        try:
            relay.sendto(data, peer)
        except (OSError, netError.MessageLengthError):
            self.stats.add("turn.dropped.send_failed")
            return
        allocation.bytesOut += size
        allocation.packetsOut += 1
        counters = self.stats.counters
        counters["turn.bytes.to_peer"] += size
        counters["turn.packets.to_peer"] += 1

    # -- from peers (RFC 8656 §11.3, §12.6, §12.7); a RelayHandler ----------------------------

    def peerDatagramReceived(self, allocation: Allocation, data: bytes,
                             peer: tuple[str, int]) -> None:
        """A datagram at a relayed address: to the client as ChannelData or a Data
        indication, if a permission lets it in."""
        host = peer[0]
        now = self.clock.seconds()
        # RFC 8656 §11.3: "The server then checks to see whether the set of permissions
        # for the allocation allow the relaying of the UDP datagram as described in
        # RFC 8656 §9."
        permission = allocation.permissions.get(host)
        if permission is None or now >= permission.expiresAt:
            self.stats.add("turn.dropped.no_permission")
            return
        size = len(data)
        if (allocation.inBucket is not None or self.totalBuckets is not None) and (
                not self.allowed(allocation, size, False, now)):
            self.stats.add("turn.dropped.bandwidth")
            return
        # RFC 8656 §11.3: "If relaying is permitted, then the server checks if there is a
        # channel bound to the peer that sent the UDP datagram (see RFC 8656 §12). If a
        # channel is bound, then processing proceeds as described in RFC 8656 §12.7."
        # A binding the client may not know yet (its success response is still on the
        # way, RFC 8656 §12) gets Data indications until it is confirmed.
        binding = allocation.peerChannels.get(peer)
        if binding is not None and binding.confirmedAt <= now < binding.expiresAt:
            # RFC 8656 §12.7: ChannelData, padded to a multiple of 4 on a stream (§12.5).
            out = encodeChannelData(binding.number, data, allocation.link.kind != "udp")
        else:
            # RFC 8656 §11.3: "If relaying is permitted but no channel is bound to the
            # peer, then the server forms and sends a Data indication. The Data
            # indication MUST contain both an XOR-PEER-ADDRESS and a DATA attribute."
            indication = Message(Method.DATA, StunClass.INDICATION)
            out = indication.set(Attr.XOR_PEER_ADDRESS, peer).set(Attr.DATA, data).encode()
        # RFC 8656 §11.3: "The Data indication is then sent on the 5-tuple associated
        # with the allocation."
        try:
            allocation.sendToClient(out, allocation.client)
        except OSError:
            self.stats.add("turn.dropped.send_failed")
            return
        allocation.bytesIn += size
        allocation.packetsIn += 1
        counters = self.stats.counters
        counters["turn.bytes.from_peer"] += size
        counters["turn.packets.from_peer"] += 1

    def relayError(self, failure: Failure) -> None:
        """A bug met on a relayed socket: logged (bounded), counted, the service goes on."""
        self.stats.add("turn.internal_errors")
        if self.badInputLog.warn("internal", "error relaying a peer datagram"):
            self.log.failure("TURN relay error", failure)
