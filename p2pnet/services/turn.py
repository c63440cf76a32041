# -*- test-case-name: test.test_services_turn -*-
"""The TURN service (RFC 8656, RFC 5766, RFC 6156 dual stack): allocations, permissions,
channels and the relayed data paths.

It has no sockets of its own towards clients: it registers the TURN methods and the
ChannelData handler with the L{StunService}, so STUN and TURN share the port as coturn
does, and uses the same L{LongTermAuth} (its credentials become a chain of the
configured users, the durable user table and the REST secret). The relayed sockets are
its own (L{p2pnet.protocols.turn}); timers come from the injected reactor.

Each request handler quotes the RFC 8656 steps right above the code doing each one.
"""

from __future__ import annotations

import base64
import os
import random
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet import error as netError
from twisted.internet import task
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pnet.codecs.stun import (
    CHANNEL_MAX,
    CHANNEL_MAX_RFC5766,
    CHANNEL_MIN,
    FAMILY_IPV4,
    FAMILY_IPV6,
    PROTOCOL_TCP,
    PROTOCOL_UDP,
    Attr,
    Message,
    Method,
    StunClass,
    StunDecodeError,
    decodeAddressFamily,
    decodeChannelNumber,
    decodeEvenPort,
    decodeRequestedTransport,
    decodeReservationToken,
    decodeUInt32,
    decodeXorAddress,
    encodeAddressErrorCode,
    encodeChannelData,
    encodeReservationToken,
    encodeUInt32,
    encodeUnknownAttributes,
    isComprehensionRequired,
    splitChannelData,
)
from p2pnet.protocols.stun import Reply, StunLink
from p2pnet.protocols.turn import (
    DONT_FRAGMENT_SUPPORTED,
    ConnectFactory,
    PeerConnection,
    PeerListenerFactory,
    RelayDatagramProtocol,
    adoptRelaySocket,
    bindRelaySocket,
    connectFromRelay,
    listenRelayTCP,
    portInUse,
    setDontFragment,
)
from p2pnet.ratelimit import TokenBucket
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.auth import AuthResult, Credentials, StaticUsers
from p2pnet.services.stun import KNOWN_ATTRIBUTES, StunService
from p2pnet.services.turn_allocation import Allocation, FiveTuple, TableBudget
from p2pnet.services.turn_credentials import ChainedCredentials, RestCredentials, StoredUsers
from p2pnet.services.turn_policy import PeerPolicy
from p2pnet.stats import Stats
from p2pnet.store.users import FILENAME as USERS_FILENAME
from p2pnet.store.users import UserStore

__all__ = ["TurnService"]

#: RFC 8656 section 7.2: "the default lifetime ... 10 minutes".
DEFAULT_LIFETIME = 600.0
#: RFC 8656 section 7.2 step 5 / 14.9: a reserved port is held this long for its token.
RESERVATION_LIFETIME = 30.0
#: Random ports tried before an Allocate gets 508 Insufficient Capacity.
PORT_ATTEMPTS = 40

_TURN_METHODS = (
    Method.ALLOCATE, Method.REFRESH, Method.SEND, Method.CREATE_PERMISSION,
    Method.CHANNEL_BIND, Method.CONNECT, Method.CONNECTION_BIND,
)
#: RFC 6062 5.2/5.3: a peer data connection waits this long for its ConnectionBind, and
#: an outgoing connection attempt "MUST be at least 30 seconds".
CONNECTION_BIND_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30
#: Peer data connections (connecting, pending or spliced) per TCP allocation.
MAX_TCP_CONNECTIONS = 64
#: Peer data connections (connecting, pending or spliced) of all allocations together:
#: each holds a descriptor and up to PENDING_LIMIT buffered bytes before its bind.
MAX_TCP_CONNECTIONS_TOTAL = 4096
#: Peer data connections waiting for their ConnectionBind, all allocations together.
MAX_PENDING_CONNECTIONS = 1024
#: Seconds between sweeps that forget expired permissions and channels everywhere.
SWEEP_INTERVAL = 60.0
_FAMILIES = {FAMILY_IPV4: 4, FAMILY_IPV6: 6}


def _family(host: str) -> int:
    return 6 if ":" in host else 4


def _familyCode(family: int) -> int:
    return FAMILY_IPV6 if family == 6 else FAMILY_IPV4


def _unmapped(host: str) -> str:
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def defaultRouteAddress(family: int) -> str | None:
    """This host's source address towards the Internet, for a wildcard listener's relay
    address. A connected UDP socket sends nothing; C{None} without such a route."""
    target = ("2001:db8::1", 9) if family == 6 else ("192.0.2.1", 9)
    try:
        with socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                           socket.SOCK_DGRAM) as sock:
            sock.connect(target)
            return str(sock.getsockname()[0])
    except OSError:
        return None


#: Where the generated TURN user of a server started without users is written.
GENERATED_USER_FILE = "turn-user.txt"


def ensureGeneratedUser(dataDir: str) -> tuple[str, str] | None:
    """The generated TURN user of a server with no configured users (DESIGN section 3).

    Made on first start and kept in C{DATA_DIR/turn-user.txt} (mode 0600, one line
    C{NAME:PASSWORD}); the log names the file, never the password. C{None} when the file
    cannot be read or made (the server then relies on the durable user table).
    """
    path = os.path.join(dataDir, GENERATED_USER_FILE)
    try:
        with open(path) as f:
            name, sep, password = f.read().strip().partition(":")
        if sep and name:
            return name, password
    except FileNotFoundError:
        pass
    except OSError:
        return None
    name, password = "p2pnet", base64.urlsafe_b64encode(os.urandom(18)).decode()
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{name}:{password}\n")
    except OSError:
        return None
    TurnService.log.info("generated TURN user {name}; its password is in {path}",
                         name=name, path=path)
    return name, password


class _Reservation:
    """A relayed port held for a RESERVATION-TOKEN (EVEN-PORT with the R bit), counted
    against the quota of the user who asked for it."""

    __slots__ = ("token", "sock", "host", "port", "timer", "username")

    def __init__(self, token: bytes, sock: socket.socket, host: str, port: int,
                 timer: Any, username: str) -> None:
        self.token = token
        self.sock = sock
        self.host = host
        self.port = port
        self.timer = timer
        self.username = username


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


class TurnService(Service):
    """TURN relays on the sockets of a L{StunService}.

    @param reactor: time and UDP socket adoption; tests pass a fake.
    @param stun: the STUN service whose sockets, auth and software value are shared.
    @param credentials: who may allocate (installed as the STUN service's credentials).
    @param relayAddresses: relayed address per family (4, 6); default: the address the
        client reached, else this host's address of that family.
    @param relayPorts: the inclusive range relayed ports are chosen from.
    @param policy: which peers may be relayed to.
    @param maxLifetime: the longest LIFETIME granted, in seconds.
    @param maxAllocations: allocations open at once (then 508).
    @param userQuota: allocations and reservations per user (then 486); 0 for
        automatic (L{autoQuotas}), so one user cannot take every relayed port.
    @param ipQuota: allocations per client IP address (then 486); 0 for automatic.
    @param maxPermissionsTotal: permissions in all allocations together (then 508).
    @param maxChannelsTotal: channel bindings in all allocations together (then 508).
    @param maxBps: bytes per second per allocation and direction; 0 for no limit.
    @param bpsCapacity: bytes per second for all allocations, per direction; 0 no limit.
    @param maxPermissions: permissions per allocation (then 508).
    @param maxChannels: channel bindings per allocation (then 508).
    @param userTable: the durable user table among C{credentials}, started and stopped
        with this service.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        stun: StunService,
        *,
        credentials: Credentials,
        relayAddresses: Mapping[int, str] | None = None,
        relayPorts: tuple[int, int] = (49152, 65535),
        policy: PeerPolicy | None = None,
        maxLifetime: float = 3600.0,
        maxAllocations: int = 10000,
        userQuota: int = 0,
        ipQuota: int = 0,
        maxBps: float = 0.0,
        bpsCapacity: float = 0.0,
        maxPermissions: int = 100,
        maxChannels: int = 100,
        maxPermissionsTotal: int = 100_000,
        maxChannelsTotal: int = 100_000,
        userTable: StoredUsers | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.reactor = reactor
        self.clock = reactor
        self.stun = stun
        self.credentials = credentials
        self.relayAddresses = dict(relayAddresses or {})
        self.relayPorts = relayPorts
        self.policy = policy or PeerPolicy()
        self.maxLifetime = max(maxLifetime, DEFAULT_LIFETIME)
        self.maxAllocations = maxAllocations
        self.userQuota, self.ipQuota = autoQuotas(relayPorts, maxAllocations, userQuota,
                                                  ipQuota)
        self.budget = TableBudget(maxPermissionsTotal, maxChannelsTotal)
        self.maxBps = maxBps
        self.maxPermissions = maxPermissions
        self.maxChannels = maxChannels
        self.userTable = userTable
        self._random = rng or random.SystemRandom()
        self.stats = Stats()
        self.badInputLog = RateLimitedLog(self.log, reactor)
        #: (link, client address) -> allocation: the 5-tuple as the service sees it.
        self.allocations: dict[tuple[Any, tuple[str, int]], Allocation] = {}
        self._usedPorts: set[tuple[str, int]] = set()
        self._perUser: dict[str, int] = {}
        self._perIp: dict[str, int] = {}
        self._reservations: dict[bytes, _Reservation] = {}
        self._relayPorts: dict[Any, IListeningPort] = {}
        #: RFC 6062 peer data connections awaiting ConnectionBind, by CONNECTION-ID.
        self._pendingConnections: dict[int, PeerConnection] = {}
        #: Client data connections (STUN stream links) to their peer data connection.
        self._dataLinks: dict[Any, PeerConnection] = {}
        #: RFC 6062 peer data connections (connecting, pending or spliced), all together.
        self.tcpConnections = 0
        #: Bytes unbound peer data connections hold (kept by L{PeerConnection}).
        self.pendingBytes = 0
        self._sweeper: task.LoopingCall | None = None
        self._routeAddresses: dict[int, str | None] = {}
        self._totalBucket: tuple[Any, Any] | None = None
        if bpsCapacity:
            now = reactor.seconds()
            self._totalBucket = (TokenBucket(bpsCapacity, now), TokenBucket(bpsCapacity, now))
        self.stats.gauge("turn.allocations", lambda: len(self.allocations))
        self.stats.gauge("turn.permissions", self._countPermissions)
        self.stats.gauge("turn.channels", self._countChannels)

    @classmethod
    def fromConfig(cls, context: Any) -> TurnService:
        """The service as the appliance's settings describe it, on the STUN service
        already built in C{context}."""
        config = context.config
        stun = context.built["stun"]
        table = StoredUsers(UserStore(os.path.join(context.dataDir, USERS_FILENAME)),
                            context.reactor)
        sources: list[Credentials] = []
        if config.user:
            sources.append(StaticUsers(dict(config.user)))
        sources.append(table)
        if config.auth_secret:
            sources.append(RestCredentials(config.auth_secret, context.reactor))
        if not config.user and not config.auth_secret:
            generated = ensureGeneratedUser(context.dataDir)
            if generated is not None:
                sources.insert(0, StaticUsers(dict([generated])))
        return cls(
            context.reactor,
            stun,
            credentials=ChainedCredentials(sources),
            relayAddresses={_family(a): a for a in config.relay_ip},
            relayPorts=config.relay_ports,
            policy=PeerPolicy(config.allow_peer, config.deny_peer,
                              config.allow_loopback_peers),
            maxLifetime=float(config.max_lifetime),
            maxAllocations=config.max_allocations,
            userQuota=config.user_quota,
            ipQuota=config.ip_quota,
            maxBps=float(config.max_bps),
            bpsCapacity=float(config.bps_capacity),
            maxPermissions=config.max_permissions,
            maxChannels=config.max_channels,
            userTable=table,
        )

    # -- wiring ----------------------------------------------------------------------------

    def startService(self) -> None:
        """Take the TURN methods and ChannelData from the STUN service."""
        super().startService()
        if self.userTable is not None:
            self.userTable.start()
        for method in _TURN_METHODS:
            self.stun.registerMethod(method, self.messageReceived)
        self.stun.channelDataHandler = self.channelDataReceived
        self.stun.channelMax = CHANNEL_MAX_RFC5766
        self.stun.streamClosedHandlers.append(self.streamClosed)
        self.stun.credentials = self.credentials
        self.stun.auth.credentials = self.credentials
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = self.clock
        self._sweeper.start(SWEEP_INTERVAL, now=False)
        low, high = self.relayPorts
        self.log.info(
            "TURN on the STUN sockets, relayed ports {low}-{high}, loopback peers "
            "{loopback}", low=low, high=high,
            loopback="allowed" if self.policy.allowLoopback else "refused")

    def stopService(self) -> None:
        """Delete every allocation and give the STUN service its methods back."""
        super().stopService()
        for method in _TURN_METHODS:
            self.stun.methods.pop(method, None)
        self.stun.channelDataHandler = None
        self.stun.channelMax = CHANNEL_MAX
        if self.streamClosed in self.stun.streamClosedHandlers:
            self.stun.streamClosedHandlers.remove(self.streamClosed)
        for allocation in list(self.allocations.values()):
            self._delete(allocation, "stopped")
        for token in list(self._reservations):
            self._dropReservation(token)
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        if self.userTable is not None:
            self.userTable.stop()

    # -- counters --------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Forget expired permissions and channels of every allocation, so the
        L{TableBudget} counts what is live."""
        now = self.clock.seconds()
        for allocation in self.allocations.values():
            allocation.purge(now)

    def _countPermissions(self) -> int:
        now = self.clock.seconds()
        return sum(a.livePermissions(now) for a in self.allocations.values())

    def _countChannels(self) -> int:
        now = self.clock.seconds()
        return sum(a.liveChannels(now) for a in self.allocations.values())

    def _count(self, reply: Message) -> None:
        code = reply.get(Attr.ERROR_CODE)
        if code is not None:
            self.stats.add(f"turn.errors.{(code[2] & 7) * 100 + code[3]}")

    # -- replies ---------------------------------------------------------------------------

    def _send(self, link: StunLink, source: tuple[str, int], reply: Message,
              auth: AuthResult | None) -> bytes:
        """Sign, fingerprint and send C{reply}; return the bytes sent."""
        if self.stun.software:
            reply.add(Attr.SOFTWARE, self.stun.software)
        key = auth.key if auth is not None else None
        sha256 = auth.sha256 if auth is not None else False
        data = reply.encode(key, sha256=sha256, fingerprint=True)
        link.send(data, source)
        return data

    def _error(self, link: StunLink, source: tuple[str, int], request: Message, code: int,
               auth: AuthResult | None, extra: Iterable[tuple[int, bytes]] = ()) -> None:
        reply = request.errorReply(code)
        for attrType, value in extra:
            reply.add(attrType, value)
        self._count(reply)
        self._send(link, source, reply, auth)

    # -- dispatch --------------------------------------------------------------------------

    def messageReceived(self, message: Message, link: StunLink, source: tuple[str, int]) -> None:
        """A TURN method from the STUN sockets: requests are authenticated and handled,
        Send indications relayed, anything else dropped and counted."""
        if message.cls == StunClass.INDICATION and message.method == Method.SEND:
            self.sendIndication(message, link, source)
            return
        if message.cls != StunClass.REQUEST or message.classic:
            self.stats.add("turn.dropped.not_request")
            return
        self.stats.add(f"turn.requests.{Method(message.method).name.lower()}")
        # RFC 8489 6.3.1: unknown comprehension-required attributes get 420.
        unknown = [t for t, _ in message.attributes
                   if t not in KNOWN_ATTRIBUTES and isComprehensionRequired(t)]
        if message.method == Method.ALLOCATE and not DONT_FRAGMENT_SUPPORTED and (
                message.get(Attr.DONT_FRAGMENT) is not None):
            # RFC 8656 7.2 step 4: "If it does, but the server does not support sending
            # UDP datagrams with the DF bit set to 1, then the server treats the
            # DONT-FRAGMENT attribute ... as an unknown comprehension-required attribute."
            unknown.append(Attr.DONT_FRAGMENT)
        if unknown:
            self._error(link, source, message, 420, None, (
                (Attr.UNKNOWN_ATTRIBUTES, encodeUnknownAttributes(unknown)),))
            return
        # RFC 8656 7.2 step 1 and section 5: "The server MUST require that the request
        # be authenticated. This authentication MUST be done using the long-term
        # credential mechanism of [RFC8489]".
        host = _unmapped(source[0])
        auth = self.stun.auth.check(message, host)
        if auth.error is not None:
            self._count(auth.error)
            # Through the STUN responder: within the source's error budget (requests
            # without integrity were charged when dispatched), and no larger than needed.
            self.stun.respond(Reply(auth.error), message, link, source,
                              charged=not message.hasIntegrity())
            return
        if message.method == Method.ALLOCATE:
            self.allocate(message, link, source, auth)
            return
        if message.method == Method.CONNECTION_BIND:
            self.connectionBind(message, link, source, auth)
            return
        allocation = self.allocations.get((link, source))
        # RFC 8656 section 5: "if the 5-tuple does not identify an existing allocation,
        # then ... If the message is a request, the server MUST reject the request with a
        # 437 (Allocation Mismatch) error."
        if allocation is None:
            self._error(link, source, message, 437, auth)
            return
        # RFC 8656 section 5: "the server MUST check that the request ... uses the same
        # username as the one used to create the allocation. If not, the server MUST
        # reject the request with a 441 (Wrong Credentials) error."
        if auth.username != allocation.username:
            self._error(link, source, message, 441, auth)
            return
        if message.method == Method.REFRESH:
            self.refresh(message, link, source, auth, allocation)
        elif message.method == Method.CREATE_PERMISSION:
            self.createPermission(message, link, source, auth, allocation)
        elif message.method == Method.CHANNEL_BIND:
            self.channelBind(message, link, source, auth, allocation)
        elif message.method == Method.CONNECT:
            self.connect(message, link, source, auth, allocation)

    # -- Allocate (RFC 8656 section 7.2) -----------------------------------------------------

    def _lifetime(self, request: Message) -> float | None:
        """RFC 8656 7.2: "If the request contains a LIFETIME attribute, the server
        computes the minimum of the client's requested lifetime and the server's maximum
        allowed lifetime. If this computed value is greater than the default lifetime,
        then the server uses the computed lifetime ... Otherwise, the server uses the
        default lifetime." C{None} for a malformed LIFETIME; 0 stays 0 (Refresh)."""
        value = request.get(Attr.LIFETIME)
        if value is None:
            return DEFAULT_LIFETIME
        try:
            asked = decodeUInt32(value)
        except StunDecodeError:
            return None
        if asked == 0:
            return 0.0
        return max(min(float(asked), self.maxLifetime), DEFAULT_LIFETIME)

    def allocate(self, request: Message, link: StunLink, source: tuple[str, int],
                 auth: AuthResult) -> None:
        """Answer an authenticated Allocate request."""
        key = (link, source)
        # 2. "The server checks if the 5-tuple is currently in use by an existing
        # allocation. If yes, the server rejects the request with a 437 (Allocation
        # Mismatch) error." A retransmission of the request that made the allocation
        # gets the same success response again (section 7.2, "stateless stack approach").
        existing = self.allocations.get(key)
        if existing is not None:
            if existing.transactionId == request.transactionId:
                link.send(existing.response, source)
                return
            self._error(link, source, request, 437, auth)
            return
        # 3. "The server checks if the request contains a REQUESTED-TRANSPORT attribute.
        # If the REQUESTED-TRANSPORT attribute is not included or is malformed, the
        # server rejects the request with a 400 (Bad Request) error. Otherwise, if the
        # attribute indicates an unsupported transport protocol, the server rejects the
        # request with a 442 (Unsupported Transport Protocol) error."
        transport = request.get(Attr.REQUESTED_TRANSPORT)
        try:
            protocol = decodeRequestedTransport(transport) if transport is not None else None
        except StunDecodeError:
            protocol = None
        if protocol is None:
            self._error(link, source, request, 400, auth)
            return
        if protocol not in (PROTOCOL_UDP, PROTOCOL_TCP):
            self._error(link, source, request, 442, auth)
            return
        if protocol == PROTOCOL_TCP:
            # RFC 6062 5.1: "If the client connection transport is not TCP or TLS, the
            # server MUST reject the request with a 400 (Bad Request) error. If the
            # request contains the DONT-FRAGMENT, EVEN-PORT, or RESERVATION-TOKEN
            # attribute, the server MUST reject the request with a 400 (Bad Request)".
            if link.kind == "udp" or any(request.get(a) is not None for a in (
                    Attr.DONT_FRAGMENT, Attr.EVEN_PORT, Attr.RESERVATION_TOKEN)):
                self._error(link, source, request, 400, auth)
                return
        # 4. "The request may contain a DONT-FRAGMENT attribute." (Supported here: the
        # relayed socket is set to send with DF; unsupported platforms answered 420.)
        dontFragment = request.get(Attr.DONT_FRAGMENT) is not None
        lifetime = self._lifetime(request)
        if lifetime is None:
            self._error(link, source, request, 400, auth)
            return
        lifetime = lifetime or DEFAULT_LIFETIME
        tokenValue = request.get(Attr.RESERVATION_TOKEN)
        evenPort = request.get(Attr.EVEN_PORT)
        requestedFamily = request.get(Attr.REQUESTED_ADDRESS_FAMILY)
        additionalFamily = request.get(Attr.ADDITIONAL_ADDRESS_FAMILY)
        # 5. "The server checks if the request contains a RESERVATION-TOKEN attribute. If
        # yes, and the request also contains an EVEN-PORT or REQUESTED-ADDRESS-FAMILY or
        # ADDITIONAL-ADDRESS-FAMILY attribute, the server rejects the request with a 400
        # (Bad Request) error. Otherwise, it checks to see if the token is valid ... If
        # the token is not valid for some reason, the server rejects the request with a
        # 508 (Insufficient Capacity) error."
        reservation: _Reservation | None = None
        if tokenValue is not None:
            if evenPort is not None or requestedFamily is not None or (
                    additionalFamily is not None):
                self._error(link, source, request, 400, auth)
                return
            try:
                token = decodeReservationToken(tokenValue)
            except StunDecodeError:
                self._error(link, source, request, 400, auth)
                return
            reservation = self._reservations.get(token)
            if reservation is None:
                self._error(link, source, request, 508, auth)
                return
        # 6. "The server checks if the request contains both REQUESTED-ADDRESS-FAMILY and
        # ADDITIONAL-ADDRESS-FAMILY attributes. If yes, then the server rejects the
        # request with a 400 (Bad Request) error."
        if requestedFamily is not None and additionalFamily is not None:
            self._error(link, source, request, 400, auth)
            return
        # 7. "If the server does not support the address family requested by the client
        # in REQUESTED-ADDRESS-FAMILY, or if the allocation of the requested address
        # family is disabled by local policy, it MUST generate an Allocate error response
        # ... with the 440 (Address Family not Supported) response code. ... If the
        # REQUESTED-ADDRESS-FAMILY attribute is absent and the server supports the IPv4
        # address family, the server MUST allocate an IPv4 relayed transport address".
        families = [4]
        if reservation is not None:
            families = [_family(reservation.host)]
        elif requestedFamily is not None:
            try:
                code = decodeAddressFamily(requestedFamily)
            except StunDecodeError:
                self._error(link, source, request, 400, auth)
                return
            if code not in _FAMILIES:
                self._error(link, source, request, 440, auth)
                return
            families = [_FAMILIES[code]]
        if self._relayHost(link, families[0]) is None:
            self._error(link, source, request, 440, auth)
            return
        reserve = False
        if evenPort is not None:
            try:
                reserve = decodeEvenPort(evenPort)
            except StunDecodeError:
                self._error(link, source, request, 400, auth)
                return
            # 8. "The server checks if the request contains an EVEN-PORT attribute with
            # the R bit set to 1. If yes, and the request also contains an
            # ADDITIONAL-ADDRESS-FAMILY attribute, the server rejects the request with a
            # 400 (Bad Request) error."
            if reserve and additionalFamily is not None:
                self._error(link, source, request, 400, auth)
                return
        # 9. "The server checks if the request contains an ADDITIONAL-ADDRESS-FAMILY
        # attribute. If yes, and the attribute value is 0x01 (IPv4 address family), then
        # the server rejects the request with a 400 (Bad Request) error. ... If the server
        # can partially meet the request, ... it includes ADDRESS-ERROR-CODE attribute in
        # the success response".
        addressError: bytes | None = None
        if additionalFamily is not None:
            try:
                code = decodeAddressFamily(additionalFamily)
            except StunDecodeError:
                code = FAMILY_IPV4
            if code != FAMILY_IPV6:
                self._error(link, source, request, 400, auth)
                return
            if self._relayHost(link, 6) is None:
                addressError = encodeAddressErrorCode(FAMILY_IPV6, 440)
            else:
                families.append(6)
        # 10. "At any point, the server MAY choose to reject the request with a 486
        # (Allocation Quota Reached) error if it feels the client is trying to exceed
        # some locally defined allocation quota."
        host = _unmapped(source[0])
        # A reservation holds a port too, so it counts against the user's quota.
        needed = 2 if reserve else 1
        if self._perUser.get(auth.username, 0) + needed > self.userQuota or (
                self._perIp.get(host, 0) >= self.ipQuota):
            self._error(link, source, request, 486, auth)
            return
        # 8/9 (capacity): "If the server cannot satisfy the request, then the server
        # rejects the request with a 508 (Insufficient Capacity) error."
        if len(self.allocations) >= self.maxAllocations:
            self._error(link, source, request, 508, auth)
            return
        now = self.clock.seconds()
        fiveTuple = FiveTuple(link.kind, source, self._serverAddress(link))
        allocation = Allocation(
            fiveTuple, auth.username, link, now, lifetime, transport=protocol,
            maxPermissions=self.maxPermissions, maxChannels=self.maxChannels,
            maxBps=self.maxBps, budget=self.budget,
        )
        allocation.dontFragment = dontFragment
        # UDP clients are written to with the socket's own sendto (see
        # RelayDatagramProtocol.startProtocol); streams through the link.
        sock = getattr(getattr(link, "transport", None), "socket", None)
        allocation.sendToClient = sock.sendto if link.kind == "udp" and sock else link.send
        token: bytes | None = None
        if reservation is not None:
            del self._reservations[reservation.token]
            reservation.timer.cancel()
            self._uncount(self._perUser, reservation.username)
            self._openRelay(allocation, reservation.sock, reservation.host, reservation.port)
        elif protocol == PROTOCOL_TCP:
            # RFC 6062 5.1: one TCP relayed address, on which the server listens for
            # peers connecting in.
            if additionalFamily is not None and len(families) > 1:
                families.pop()
                addressError = encodeAddressErrorCode(FAMILY_IPV6, 440)
            if not self._listenTcp(allocation, link, families[0]):
                self._error(link, source, request, 508, auth)
                return
        else:
            for family in families:
                opened = self._allocatePort(allocation, link, family, evenPort is not None,
                                            reserve and family == families[0])
                if opened is None:
                    if family == families[0]:
                        self._closeRelays(allocation)
                        self._error(link, source, request, 508, auth)
                        return
                    addressError = encodeAddressErrorCode(FAMILY_IPV6, 508)
                elif opened:
                    token = opened
        self._install(allocation, key, host, lifetime)
        reply = request.reply()
        for family in (4, 6):
            relayed = allocation.relayed.get(family)
            if relayed is not None:
                reply.add(Attr.XOR_RELAYED_ADDRESS, request.xorMapped(*relayed))
        if addressError is not None:
            reply.add(Attr.ADDRESS_ERROR_CODE, addressError)
        reply.add(Attr.LIFETIME, encodeUInt32(int(lifetime)))
        if token is not None:
            reply.add(Attr.RESERVATION_TOKEN, encodeReservationToken(token))
        reply.add(Attr.XOR_MAPPED_ADDRESS, request.xorMapped(host, source[1]))
        allocation.transactionId = request.transactionId
        allocation.response = self._send(link, source, reply, auth)

    def _install(self, allocation: Allocation, key: tuple[Any, tuple[str, int]], host: str,
                 lifetime: float) -> None:
        self.allocations[key] = allocation
        self._perUser[allocation.username] = self._perUser.get(allocation.username, 0) + 1
        self._perIp[host] = self._perIp.get(host, 0) + 1
        allocation.timer = self.clock.callLater(lifetime, self._expire, allocation)
        self.stats.add("turn.allocations.created")
        self.log.info(
            "TURN allocation created for {user} on {fiveTuple}, relayed {relayed}, "
            "lifetime {lifetime:.0f}s",
            user=allocation.username, fiveTuple=str(allocation.fiveTuple),
            relayed=" ".join(f"{h}:{p}" for h, p in allocation.relayed.values()),
            lifetime=lifetime, event="turn.allocation.created",
        )

    # -- relayed addresses -------------------------------------------------------------------

    def _serverAddress(self, link: StunLink) -> tuple[str, int]:
        address = link.transport.getHost()  # type: ignore[attr-defined]
        return (address.host, address.port)

    def _relayHost(self, link: StunLink, family: int) -> str | None:
        """The address to relay from for a client on C{link}, or C{None} if there is none
        of that family: configured, else the address the client reached, else this
        host's address of that family (for a wildcard listener)."""
        configured = self.relayAddresses.get(family)
        if configured is not None:
            return configured
        local = _unmapped(self._serverAddress(link)[0])
        if _family(local) == family and local not in ("0.0.0.0", "::"):
            return local
        specific = [a for a in self.stun.listenAddresses
                    if _family(a) == family and a not in ("0.0.0.0", "::")]
        if specific:
            return specific[0]
        if not any(_family(a) == family for a in self.stun.listenAddresses):
            return None
        if family not in self._routeAddresses:
            self._routeAddresses[family] = defaultRouteAddress(family)
        return self._routeAddresses[family]

    def _allocatePort(self, allocation: Allocation, link: StunLink, family: int,
                      even: bool, reserve: bool) -> bytes | None:
        """Bind a relayed socket of C{family} for C{allocation}.

        @return: C{None} when no port could be had; a reservation token when C{reserve}
            held the next port too; else C{b""}.
        """
        host = self._relayHost(link, family)
        assert host is not None
        low, high = self.relayPorts
        if reserve and len(self._reservations) >= self.maxAllocations:
            return None  # reservations outlive allocations: they get the same bound
        for _ in range(PORT_ATTEMPTS):
            port = self._random.randint(low, high)
            if even:
                port &= ~1
                if port < low or (reserve and port + 1 > high):
                    continue
            if (host, port) in self._usedPorts or (reserve and (host, port + 1) in
                                                    self._usedPorts):
                continue
            try:
                sock = bindRelaySocket(host, port)
            except OSError as e:
                if portInUse(e):
                    continue
                self.badInputLog.warn("relay", "cannot bind relay {host}: {error}",
                                      host=host, error=str(e))
                return None
            token = b""
            if reserve:
                try:
                    held = bindRelaySocket(host, port + 1)
                except OSError:
                    sock.close()
                    continue
                token = self._reserve(held, host, port + 1, allocation.username)
            self._openRelay(allocation, sock, host, port)
            return token
        return None

    def _openRelay(self, allocation: Allocation, sock: socket.socket, host: str,
                   port: int) -> None:
        protocol = RelayDatagramProtocol(self, allocation)
        listening = adoptRelaySocket(self.reactor, sock, protocol, allocation.dontFragment)
        family = _family(host)
        allocation.relays[family] = protocol
        allocation.relayed[family] = (host, port)
        self._relayPorts[protocol] = listening
        self._usedPorts.add((host, port))

    def _listenTcp(self, allocation: Allocation, link: StunLink, family: int) -> bool:
        """Listen on a random port of the range for peers of a TCP allocation."""
        host = self._relayHost(link, family)
        assert host is not None
        low, high = self.relayPorts
        factory = PeerListenerFactory(self, allocation)
        for _ in range(PORT_ATTEMPTS):
            port = self._random.randint(low, high)
            if (host, port) in self._usedPorts:
                continue
            try:
                listening = listenRelayTCP(self.reactor, factory, host, port)
            except netError.CannotListenError:
                continue
            allocation.relays[family] = factory
            allocation.relayed[family] = (host, port)
            self._relayPorts[factory] = listening
            self._usedPorts.add((host, port))
            return True
        return False

    def _closeRelays(self, allocation: Allocation) -> None:
        for family, protocol in list(allocation.relays.items()):
            listening = self._relayPorts.pop(protocol, None)
            if listening is not None:
                listening.stopListening()
            self._usedPorts.discard(allocation.relayed[family])
        allocation.relays.clear()

    def _reserve(self, sock: socket.socket, host: str, port: int, username: str) -> bytes:
        token = os.urandom(8)
        timer = self.clock.callLater(RESERVATION_LIFETIME, self._dropReservation, token)
        self._reservations[token] = _Reservation(token, sock, host, port, timer, username)
        self._usedPorts.add((host, port))
        self._perUser[username] = self._perUser.get(username, 0) + 1
        return token

    @staticmethod
    def _uncount(counts: dict[str, int], name: str) -> None:
        left = counts.get(name, 1) - 1
        if left > 0:
            counts[name] = left
        else:
            counts.pop(name, None)

    def _dropReservation(self, token: bytes) -> None:
        reservation = self._reservations.pop(token, None)
        if reservation is None:
            return
        if reservation.timer.active():
            reservation.timer.cancel()
        reservation.sock.close()
        self._usedPorts.discard((reservation.host, reservation.port))
        self._uncount(self._perUser, reservation.username)

    # -- lifetime end --------------------------------------------------------------------------

    def _expire(self, allocation: Allocation) -> None:
        allocation.timer = None
        self._delete(allocation, "expired")

    def _delete(self, allocation: Allocation, why: str) -> None:
        key = (allocation.link, allocation.client)
        if self.allocations.get(key) is not allocation:
            return
        del self.allocations[key]
        if allocation.timer is not None and allocation.timer.active():
            allocation.timer.cancel()
        allocation.timer = None
        self._closeRelays(allocation)
        # RFC 6062 5.5: "If the allocation associated with a data connection expires,
        # the data connection MUST be closed."
        for peer, connection in list(allocation.connections.items()):
            if connection is not None:
                connection.close()
            else:
                self._dropConnection(allocation, peer)
        allocation.release()
        self._uncount(self._perUser, allocation.username)
        self._uncount(self._perIp, _unmapped(allocation.client[0]))
        self.stats.add(f"turn.allocations.{why}")
        self.log.info(
            "TURN allocation {why} for {user} on {fiveTuple}: {bytesOut} bytes in "
            "{packetsOut} packets to peers, {bytesIn} bytes in {packetsIn} from peers",
            why=why, user=allocation.username, fiveTuple=str(allocation.fiveTuple),
            bytesOut=allocation.bytesOut, packetsOut=allocation.packetsOut,
            bytesIn=allocation.bytesIn, packetsIn=allocation.packetsIn,
            event=f"turn.allocation.{why}",
        )

    def streamClosed(self, link: StunLink) -> None:
        """A TCP/TLS connection closed: a control connection's allocation ends (RFC 8656
        section 3.1); a client data connection's peer connection closes (RFC 6062 5.5:
        "When a client data connection is closed or times out, the server MUST close
        the corresponding peer data connection")."""
        connection = self._dataLinks.pop(link, None)
        if connection is not None:
            connection.close()
            return
        peer = getattr(link, "peer", None)
        allocation = self.allocations.get((link, peer))  # type: ignore[arg-type]
        if allocation is not None:
            self._delete(allocation, "deleted")

    # -- Refresh (RFC 8656 section 7.3) ----------------------------------------------------------

    def refresh(self, request: Message, link: StunLink, source: tuple[str, int],
                auth: AuthResult, allocation: Allocation) -> None:
        """Answer a Refresh request for an existing allocation."""
        # "If the server receives a Refresh Request with a REQUESTED-ADDRESS-FAMILY
        # attribute and the attribute value does not match the address family of the
        # allocation, the server MUST reply with a 443 (Peer Address Family Mismatch)".
        requested = request.get(Attr.REQUESTED_ADDRESS_FAMILY)
        if requested is not None:
            try:
                family = _FAMILIES.get(decodeAddressFamily(requested))
            except StunDecodeError:
                family = None
            if family not in allocation.relayed:
                self._error(link, source, request, 443, auth)
                return
        # "The server computes a value called the 'desired lifetime' as follows: if the
        # request contains a LIFETIME attribute and the attribute value is zero, then the
        # 'desired lifetime' is zero. Otherwise, if the request contains a LIFETIME
        # attribute, then the server computes the minimum of the client's requested
        # lifetime and the server's maximum allowed lifetime. If this computed value is
        # greater than the default lifetime, then the 'desired lifetime' is the computed
        # value. Otherwise, the 'desired lifetime' is the default lifetime."
        desired = self._lifetime(request)
        if desired is None:
            self._error(link, source, request, 400, auth)
            return
        reply = request.reply()
        if desired == 0:
            # "If the 'desired lifetime' is zero, then the request succeeds and the
            # allocation is deleted."
            self._delete(allocation, "deleted")
        else:
            # "If the 'desired lifetime' is non-zero, then the request succeeds and the
            # allocation's time-to-expiry is set to the 'desired lifetime'."
            allocation.refresh(self.clock.seconds(), desired)
            allocation.timer.reset(desired)
            self.stats.add("turn.allocations.refreshed")
            self.log.info("TURN allocation refreshed for {user} on {fiveTuple}",
                           user=allocation.username, fiveTuple=str(allocation.fiveTuple),
                           lifetime=desired, event="turn.allocation.refreshed")
        # "If the request succeeds, then the server sends a success response containing:
        # A LIFETIME attribute containing the current value of the time-to-expiry timer."
        reply.add(Attr.LIFETIME, encodeUInt32(int(desired)))
        self._send(link, source, reply, auth)

    # -- CreatePermission (RFC 8656 section 10.2) ------------------------------------------------

    def _peers(self, request: Message) -> list[tuple[str, int]] | None:
        peers = []
        for attrType, value in request.attributes:
            if attrType == Attr.XOR_PEER_ADDRESS:
                try:
                    peers.append(decodeXorAddress(value, request.transactionId))
                except StunDecodeError:
                    return None
        return peers

    def createPermission(self, request: Message, link: StunLink, source: tuple[str, int],
                         auth: AuthResult, allocation: Allocation) -> None:
        """Install or refresh permissions for every XOR-PEER-ADDRESS, all or none."""
        # "The CreatePermission request MUST contain at least one XOR-PEER-ADDRESS
        # attribute and MAY contain multiple such attributes. If no such attribute
        # exists, or if any of these attributes are invalid, then a 400 (Bad Request)
        # error is returned."
        peers = self._peers(request)
        if not peers:
            self._error(link, source, request, 400, auth)
            return
        hosts = [_unmapped(host) for host, _ in peers]
        # "If an XOR-PEER-ADDRESS attribute contains an address of an address family that
        # is not the same as that of a relayed transport address for the allocation, the
        # server MUST generate an error response with the 443 (Peer Address Family
        # Mismatch) response code."
        if any(_family(h) not in allocation.relayed for h in hosts):
            self._error(link, source, request, 443, auth)
            return
        # "The server MAY impose restrictions on the IP address allowed in the
        # XOR-PEER-ADDRESS attribute; if a value is not allowed, the server rejects the
        # request with a 403 (Forbidden) error."
        if not all(self.policy.permitted(h) for h in hosts):
            self._forbidden(link, source, request, auth, allocation)
            return
        now = self.clock.seconds()
        # "If the request is valid, but the server is unable to satisfy the request due to
        # some capacity limit or similar, then a 508 (Insufficient Capacity) error is
        # returned."
        if not allocation.canInstallPermissions(hosts, now):
            self._error(link, source, request, 508, auth)
            return
        # "the server installs or refreshes a permission for the IP address contained in
        # each XOR-PEER-ADDRESS attribute ... The port portion of each attribute is
        # ignored".
        for h in hosts:
            allocation.installPermission(h, now)
        self.stats.add("turn.permissions.installed", len(hosts))
        # "The server then responds with a CreatePermission success response."
        self._send(link, source, request.reply(), auth)

    def _forbidden(self, link: StunLink, source: tuple[str, int], request: Message,
                   auth: AuthResult, allocation: Allocation) -> None:
        self.badInputLog.warn(
            "forbidden", "TURN peer refused by policy for {user} on {fiveTuple}",
            user=allocation.username, fiveTuple=str(allocation.fiveTuple))
        self._error(link, source, request, 403, auth)

    # -- ChannelBind (RFC 8656 section 12.2) -----------------------------------------------------

    def channelBind(self, request: Message, link: StunLink, source: tuple[str, int],
                    auth: AuthResult, allocation: Allocation) -> None:
        """Bind (or refresh) a channel to a peer and install its permission."""
        # "The server MUST check that the request contains a CHANNEL-NUMBER attribute and
        # an XOR-PEER-ADDRESS attribute; if not, 400 (Bad Request)" ... "The channel
        # number is in the range 0x4000 through 0x4FFF (inclusive)." RFC 5766 allowed
        # "0x4000 through 0x7FFE" and its clients (coturn's uclient) use the whole range,
        # so it is accepted as coturn does.
        number = request.get(Attr.CHANNEL_NUMBER)
        peers = self._peers(request)
        try:
            channel = decodeChannelNumber(number) if number is not None else 0
        except StunDecodeError:
            channel = 0
        if not peers or len(peers) != 1 or not CHANNEL_MIN <= channel <= CHANNEL_MAX_RFC5766:
            self._error(link, source, request, 400, auth)
            return
        peer = (_unmapped(peers[0][0]), peers[0][1])
        if allocation.transport != PROTOCOL_UDP:
            self._error(link, source, request, 400, auth)  # RFC 6062: no channels
            return
        if _family(peer[0]) not in allocation.relayed:
            self._error(link, source, request, 443, auth)
            return
        # "The server MAY impose restrictions on the IP address and port values allowed
        # in the XOR-PEER-ADDRESS attribute; if a value is not allowed, the server rejects
        # the request with a 403 (Forbidden) error."
        if not self.policy.permitted(peer[0]):
            self._forbidden(link, source, request, auth, allocation)
            return
        now = self.clock.seconds()
        # "The channel number is not currently bound to a different transport address
        # (same transport address is OK). The transport address is not currently bound
        # to a different channel number. If any of these tests fail, the server replies
        # with a 400 (Bad Request) error." ... "If the request is valid, but the server is
        # unable to fulfill the request due to some capacity limit or similar, the server
        # replies with a 508 (Insufficient Capacity) error."
        if not allocation.hasPermission(peer[0], now) and not (
                allocation.canInstallPermissions([peer[0]], now)):
            self._error(link, source, request, 508, auth)
            return
        code = allocation.bindChannel(channel, peer, now)
        if code is not None:
            self._error(link, source, request, code, auth)
            return
        # "The server also installs or refreshes a permission for the IP address in the
        # XOR-PEER-ADDRESS attribute as described in Section 9."
        allocation.installPermission(peer[0], now)
        self.stats.add("turn.channels.bound")
        self._send(link, source, request.reply(), auth)

    # -- data from the client (RFC 8656 sections 11.2, 12.5) --------------------------------------

    def _allowed(self, allocation: Allocation, size: int, outbound: bool, now: float) -> bool:
        """The bandwidth limits, per allocation and in total, for C{size} bytes."""
        bucket = allocation.outBucket if outbound else allocation.inBucket
        if bucket is not None and not bucket.take(size, now):
            return False
        if self._totalBucket is not None:
            return self._totalBucket[0 if outbound else 1].take(size, now)
        return True

    def sendIndication(self, message: Message, link: StunLink, source: tuple[str, int]) -> None:
        """Relay the DATA of a Send indication to its XOR-PEER-ADDRESS."""
        # Section 5: "If the message is an indication or a ChannelData message, the server
        # MUST silently discard the message" when no allocation matches the 5-tuple.
        allocation = self.allocations.get((link, source))
        if allocation is None:
            self.stats.add("turn.dropped.no_allocation")
            return
        # "The Send indication MUST contain both an XOR-PEER-ADDRESS attribute and a DATA
        # attribute. If one of these attributes is missing or invalid, then the message
        # is discarded."
        value = message.get(Attr.XOR_PEER_ADDRESS)
        data = message.get(Attr.DATA)
        try:
            peer = decodeXorAddress(value, message.transactionId) if value else None
        except StunDecodeError:
            peer = None
        if peer is None or data is None:
            self.stats.add("turn.dropped.bad_send")
            return
        host = _unmapped(peer[0])
        now = self.clock.seconds()
        # "The server also checks that there is a permission installed for the IP address
        # contained in the XOR-PEER-ADDRESS attribute. If no such permission exists, the
        # message is discarded. Note that a Send indication never causes the server to
        # refresh the permission."
        if not allocation.hasPermission(host, now):
            self.stats.add("turn.dropped.no_permission")
            return
        relay = allocation.relays.get(_family(host))
        if relay is None or allocation.transport != PROTOCOL_UDP:
            self.stats.add("turn.dropped.no_permission")
            return
        # "The Send indication may also contain the DONT-FRAGMENT attribute." The relayed
        # socket sends with DF from then on.
        if message.get(Attr.DONT_FRAGMENT) is not None and not allocation.dontFragment:
            if not DONT_FRAGMENT_SUPPORTED:
                self.stats.add("turn.dropped.dont_fragment")
                return
            setDontFragment(relay.transport.socket)  # type: ignore[union-attr]
            allocation.dontFragment = True
        self._toPeer(allocation, relay, data, (host, peer[1]), now)

    def channelDataReceived(self, data: bytes, link: StunLink, source: tuple[str, int]) -> None:
        """Relay a ChannelData message to the peer its channel is bound to."""
        allocation = self.allocations.get((link, source))
        if allocation is None:
            self.stats.add("turn.dropped.no_allocation")
            return
        # 12.5: "If the ChannelData message is received in a UDP datagram, and if the UDP
        # datagram is too short to contain the claimed length of the ChannelData message
        # ..., then the message is silently discarded."
        try:
            channel, payload = splitChannelData(data, CHANNEL_MAX_RFC5766)
        except StunDecodeError:
            self.stats.add("turn.dropped.bad_channeldata")
            return
        now = self.clock.seconds()
        # "If the ChannelData message is received on a channel that is not bound to any
        # peer, then the message is silently discarded."
        binding = allocation.channels.get(channel)
        if binding is None or now >= binding.expiresAt:
            self.stats.add("turn.dropped.no_channel")
            return
        peer = binding.peer
        # "the server verifies that a permission has been installed for the IP address
        # ... If no such permission exists, the message is silently discarded".
        permission = allocation.permissions.get(peer[0])
        if permission is None or now >= permission.expiresAt:
            self.stats.add("turn.dropped.no_permission")
            return
        self._toPeer(allocation, allocation.relays[_family(peer[0])], payload, peer, now)

    def _toPeer(self, allocation: Allocation, relay: RelayDatagramProtocol, data: bytes,
                peer: tuple[str, int], now: float) -> None:
        size = len(data)
        if (allocation.outBucket is not None or self._totalBucket is not None) and (
                not self._allowed(allocation, size, True, now)):
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

    # -- data from peers (RFC 8656 sections 11.3, 12.6) ------------------------------------------

    def peerDatagramReceived(self, allocation: Allocation, data: bytes,
                             peer: tuple[str, int]) -> None:
        """A datagram at a relayed address: to the client as ChannelData or a Data
        indication, if a permission lets it in."""
        host = peer[0]
        now = self.clock.seconds()
        # 11.3: "The server then checks to see whether the set of permissions for the
        # allocation allow the relaying of the UDP datagram as described in Section 9."
        permission = allocation.permissions.get(host)
        if permission is None or now >= permission.expiresAt:
            self.stats.add("turn.dropped.no_permission")
            return
        size = len(data)
        if (allocation.inBucket is not None or self._totalBucket is not None) and (
                not self._allowed(allocation, size, False, now)):
            self.stats.add("turn.dropped.bandwidth")
            return
        link = allocation.link
        # "If relaying is permitted, then the server checks if there is a channel bound to
        # the peer that sent the UDP datagram (see Section 12). If a channel is bound,
        # then processing proceeds as described in Section 12.7."
        binding = allocation.peerChannels.get(peer)
        if binding is not None and now < binding.expiresAt:
            # 12.7: ChannelData, padded to a multiple of 4 on a stream (12.5).
            out = encodeChannelData(binding.number, data, link.kind != "udp")
        else:
            # "If relaying is permitted but no channel is bound to the peer, then the
            # server forms and sends a Data indication. The Data indication MUST contain
            # both an XOR-PEER-ADDRESS and a DATA attribute."
            indication = Message(Method.DATA, StunClass.INDICATION)
            indication.add(Attr.XOR_PEER_ADDRESS, indication.xorMapped(host, peer[1]))
            indication.add(Attr.DATA, data)
            out = indication.encode()
        # "The Data indication is then sent on the 5-tuple associated with the allocation."
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

    # -- RFC 6062 TCP relays ---------------------------------------------------------------------

    def connect(self, request: Message, link: StunLink, source: tuple[str, int],
                auth: AuthResult, allocation: Allocation) -> None:
        """RFC 6062 5.2: open a TCP connection from the relayed address to a peer."""
        if allocation.transport != PROTOCOL_TCP:
            self._error(link, source, request, 400, auth)
            return
        # "If the request does not contain an XOR-PEER-ADDRESS attribute, or if such
        # attribute is invalid, the server MUST return a 400 (Bad Request) error."
        peers = self._peers(request)
        if not peers or len(peers) != 1:
            self._error(link, source, request, 400, auth)
            return
        peer = (_unmapped(peers[0][0]), peers[0][1])
        family = _family(peer[0])
        if family not in allocation.relayed:
            self._error(link, source, request, 443, auth)
            return
        # "If the server is currently processing a Connect request for this allocation
        # with the same XOR-PEER-ADDRESS, it MUST return a 446 (Connection Already
        # Exists) error. If the server has already successfully processed a Connect
        # request for this allocation with the same XOR-PEER-ADDRESS, and the resulting
        # client and peer data connections are either pending or active, it MUST return
        # a 446 (Connection Already Exists) error."
        if peer in allocation.connections:
            self._error(link, source, request, 446, auth)
            return
        # "If the new connection is forbidden by local policy, the server MUST reject the
        # request with a 403 (Forbidden) error."
        if not self.policy.permitted(peer[0]):
            self._forbidden(link, source, request, auth, allocation)
            return
        if len(allocation.connections) >= MAX_TCP_CONNECTIONS or (
                self.tcpConnections >= MAX_TCP_CONNECTIONS_TOTAL):
            self._error(link, source, request, 508, auth)
            return
        # "Otherwise, the server MUST initiate an outgoing TCP connection. The local
        # endpoint is the relayed transport address associated with the allocation."
        # "The timeout value MUST be at least 30 seconds."
        self._addConnection(allocation, peer, None)
        context = (request, link, source, auth, peer)
        connectFromRelay(self.reactor, peer[0], peer[1], ConnectFactory(self, allocation, context),
                         CONNECT_TIMEOUT, allocation.relayed[family])

    def peerConnectFailed(self, context: Any) -> None:
        """'If the connection attempt fails or times out, the server MUST return a 447
        (Connection Timeout or Failure) error.'"""
        request, link, source, auth, peer = context
        allocation = self.allocations.get((link, source))
        if allocation is None:
            return
        if allocation.connections.get(peer, 0) is None:
            self._dropConnection(allocation, peer)
        self._error(link, source, request, 447, auth)

    def _addConnection(self, allocation: Allocation, peer: tuple[str, int],
                       connection: PeerConnection | None) -> None:
        if peer not in allocation.connections:
            self.tcpConnections += 1
        allocation.connections[peer] = connection

    def _dropConnection(self, allocation: Allocation, peer: tuple[str, int]) -> None:
        if allocation.connections.pop(peer, 0) != 0:
            self.tcpConnections -= 1

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

    def acceptPeer(self, allocation: Allocation, host: str) -> bool:
        """RFC 6062 5.3: a peer connecting in is accepted only with a permission (and
        within the connection limit); otherwise its connection is closed at once."""
        host = _unmapped(host)
        live = self.allocations.get((allocation.link, allocation.client)) is allocation
        return (live and allocation.hasPermission(host, self.clock.seconds())
                and len(allocation.connections) < MAX_TCP_CONNECTIONS
                and self.tcpConnections < MAX_TCP_CONNECTIONS_TOTAL
                and len(self._pendingConnections) < MAX_PENDING_CONNECTIONS)

    def peerConnectionMade(self, connection: PeerConnection) -> None:
        """A peer data connection is up: give it a CONNECTION-ID and tell the client."""
        allocation = connection.allocation
        if self.allocations.get((allocation.link, allocation.client)) is not allocation:
            connection.close()
            return
        connectionId = self._random.getrandbits(32)
        while connectionId in self._pendingConnections or not connectionId:
            connectionId = self._random.getrandbits(32)
        connection.connectionId = connectionId
        self._pendingConnections[connectionId] = connection
        # "If no ConnectionBind request associated with this peer data connection is
        # received after 30 seconds, the peer data connection MUST be closed."
        connection.timer = self.clock.callLater(CONNECTION_BIND_TIMEOUT, connection.close)
        self.stats.add("turn.tcp.connections")
        if connection.context is not None:
            request, link, source, auth, peer = connection.context
            self._addConnection(allocation, peer, connection)
            # "The server MUST include the CONNECTION-ID attribute in the Connect success
            # response."
            reply = request.reply().add(Attr.CONNECTION_ID, encodeUInt32(connectionId))
            self._send(link, source, reply, auth)
            return
        peer = (_unmapped(connection.peer[0]), connection.peer[1])
        self._addConnection(allocation, peer, connection)
        # 5.3: "the server sends a ConnectionAttempt indication to the client over the
        # control connection. The indication MUST include an XOR-PEER-ADDRESS attribute
        # containing the peer's transport address, as well as a CONNECTION-ID attribute".
        indication = Message(Method.CONNECTION_ATTEMPT, StunClass.INDICATION)
        indication.add(Attr.XOR_PEER_ADDRESS, indication.xorMapped(*peer))
        indication.add(Attr.CONNECTION_ID, encodeUInt32(connectionId))
        self._send(allocation.link, allocation.client, indication, None)

    def peerConnectionLost(self, connection: PeerConnection) -> None:
        """RFC 6062 5.5: 'When a peer data connection is closed or times out, the server
        MUST close the corresponding client data connection.'"""
        if connection.timer is not None and connection.timer.active():
            connection.timer.cancel()
        self._pendingConnections.pop(connection.connectionId, None)
        allocation = connection.allocation
        for peer, value in list(allocation.connections.items()):
            if value is connection:
                self._dropConnection(allocation, peer)
        if connection.context is not None and (
                allocation.connections.get(connection.context[4], 0) is None):
            self._dropConnection(allocation, connection.context[4])
        client = connection.client
        if client is not None:
            self._dataLinks.pop(client, None)
            client.transport.loseConnection()

    def connectionBind(self, request: Message, link: StunLink, source: tuple[str, int],
                       auth: AuthResult) -> None:
        """RFC 6062 5.4: make this new connection the client data connection of a peer
        data connection."""
        # "If the client connection transport is not TCP or TLS, the server MUST return
        # a 400 (Bad Request) error." (Nor may a control or data connection rebind.)
        if link.kind == "udp" or (link, source) in self.allocations or link in self._dataLinks:
            self._error(link, source, request, 400, auth)
            return
        # "If the request does not contain the CONNECTION-ID attribute, or if this
        # attribute does not refer to an existing pending connection, the server MUST
        # return a 400 (Bad Request) error."
        value = request.get(Attr.CONNECTION_ID)
        try:
            connectionId = decodeUInt32(value) if value is not None else 0
        except StunDecodeError:
            connectionId = 0
        connection = self._pendingConnections.get(connectionId)
        if connection is None:
            self._error(link, source, request, 400, auth)
            return
        if auth.username != connection.allocation.username:
            self._error(link, source, request, 441, auth)
            return
        del self._pendingConnections[connectionId]
        if connection.timer is not None and connection.timer.active():
            connection.timer.cancel()
        # "Otherwise, the client connection is now called a client data connection. Data
        # received on it MUST be sent as-is to the associated peer data connection. Data
        # received on the associated peer data connection MUST be sent as-is on this
        # client data connection. This includes data that was received on the associated
        # peer data connection before the ConnectionBind request was received."
        self._send(link, source, request.reply(), auth)
        self._dataLinks[link] = connection
        connection.splice(link)
        self.stats.add("turn.tcp.bound")
