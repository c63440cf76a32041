# -*- test-case-name: test.unit.test_services_stun,test.interop.test_stun_limits -*-
"""The STUN service: Binding over UDP, TCP and TLS (RFC 8489/5389), RFC 3489 classic
clients, and RFC 5780 NAT behaviour discovery with a second address and port.

It owns the sockets (which TURN will share, demultiplexed by method through
L{StunService.registerMethod}), the connection limits, the credentials check and the
counters. Requests are answered by L{StunService.binding}, whose steps quote the RFCs.

RFC 5780 socket matrix, per address family with an alternate address configured::

                      primary port P1     alternate port P2
    primary  A1       (0, 0)              (0, 1)
    alternate A2      (1, 0)              (1, 1)

A request on C{(a, p)} names C{(1-a, 1-p)} in OTHER-ADDRESS; CHANGE-REQUEST picks the
socket the response leaves from by flipping C{a} (change IP) and/or C{p} (change port).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.python.failure import Failure

from p2pnet.addresses import ExternalAddresses, sourceKey, unmapped
from p2pnet.addresses import family as addressFamily
from p2pnet.codecs.stun import (
    CHANNEL_MAX,
    KNOWN_ATTRIBUTES,
    Attr,
    Message,
    Method,
    StunClass,
    StunDecodeError,
    checkRequest,
    encodeAddress,
)
from p2pnet.listen import bindAddresses, listenTCP, listenUDP
from p2pnet.protocols.stun import (
    AdmittingTLSFactory,
    Reply,
    StunDatagramProtocol,
    StunLink,
    StunResponder,
    StunStreamFactory,
)
from p2pnet.ratelimit import SourceBudgets
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.auth import Credentials, LongTermAuth, StaticUsers
from p2pnet.services.listening import ListeningService
from p2pnet.stats import Stats

__all__ = ["KNOWN_ATTRIBUTES", "KernelSockets", "MethodHandler", "Sockets", "StunService"]

_RFC5780 = frozenset((Attr.CHANGE_REQUEST, Attr.RESPONSE_PORT, Attr.PADDING))

class Sockets(TypingProtocol):
    """Where the service's sockets come from: the kernel (L{KernelSockets}, the
    default), or a test's fake that binds nothing."""

    def udp(self, protocol: StunDatagramProtocol, host: str, port: int, key: str
            ) -> IListeningPort:
        """A UDP socket on C{host:port} (0: any free port) served by C{protocol}; a
        failure raises L{p2pnet.errors.ConfigError} naming C{key}."""

    def tcp(self, factory: Any, host: str, port: int, key: str, proto: str
            ) -> IListeningPort:
        """A listening TCP socket on C{host:port} served by C{factory}."""


class KernelSockets:
    """L{Sockets} bound by L{p2pnet.listen} (TCP listeners behind its connection guard)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def udp(self, protocol: StunDatagramProtocol, host: str, port: int, key: str
            ) -> IListeningPort:
        return listenUDP(self.reactor, protocol, host, port, key)

    def tcp(self, factory: Any, host: str, port: int, key: str, proto: str
            ) -> IListeningPort:
        return listenTCP(self.reactor, factory, host, port, key, proto)


#: A method handler (the Binding method, TURN's methods): the L{Reply} to send, or
#: C{None} when there is none or the handler sent its own.
MethodHandler = Callable[[Message, StunLink, tuple[str, int]], Reply | None]
ChannelDataHandler = Callable[[bytes, StunLink, tuple[str, int]], None]
#: Told when a TCP/TLS connection closes (TURN ends the allocation it carried).
StreamClosedHandler = Callable[[StunLink], None]


#: Default per-source budgets (see docs/security.md "STUN and TURN"): requests without
#: MESSAGE-INTEGRITY per second from one IPv4 address or IPv6 /64, and error answers to
#: such requests per second. Bursts hold two seconds' worth.
DEFAULT_REQUEST_RATE = 1000.0
DEFAULT_ERROR_RATE = 200.0
#: Sources tracked at once by each budget table (least recently active forgotten).
BUDGET_SOURCES = 65536


def _sourceKey(host: str) -> str:
    """The key a source is limited by: an IPv4 address as the kernel gives it (the hot
    path: no parsing), an IPv6 address's /64 (L{sourceKey})."""
    return host if ":" not in host else sourceKey(host)


def _budgets(rate: float) -> SourceBudgets | None:
    return SourceBudgets(rate, 2 * rate, BUDGET_SOURCES) if rate > 0 else None


class StunService(ListeningService):
    """STUN server over UDP, TCP and TLS on every listen address.

    @param reactor: provides time, UDP/TCP socket adoption; tests pass a fake.
    @param listen: addresses to bind (empty: every IPv4 and IPv6 address).
    @param port: the STUN port (UDP and TCP); 0 picks a free one.
    @param tlsPort: the TLS port, or C{None} for no TLS listener.
    @param tcp: open the TCP listeners (C{no-tcp} turns them off).
    @param tlsOptions: a zero-argument callable giving the server TLS context factory.
    @param altListen: RFC 5780 second address per family (needs a specific primary).
    @param altPort: RFC 5780 second port.
    @param software: SOFTWARE value; empty to omit it.
    @param credentials: long-term users; with none, requests are not authenticated.
    @param secureStun: refuse unauthenticated Binding requests with 401.
    @param alternateServers: C{(host, port)} per family to answer 300 Try Alternate with.
    @param maxConnections: TCP/TLS connections open at once, all listeners.
    @param maxConnectionsPerIp: TCP/TLS connections from one address that have not
        authenticated (a request with valid long-term credentials frees its place).
    @param requestRate: requests without MESSAGE-INTEGRITY accepted per second from one
        source (an IPv4 address or an IPv6 /64), burst twice that; more are dropped
        unanswered and counted (C{stun.dropped.request_rate}). 0: no limit.
    @param errorRate: error answers per second to one source's unauthenticated requests
        (401, 400, 420, 300...), burst twice that: the most a spoofed source can be sent.
        Beyond it requests that can only get an error are dropped and counted
        (C{stun.dropped.error_rate}). 0: no limit.
    @param sockets: where sockets come from (default: the kernel, L{KernelSockets}).
    @param external: this host's public addresses behind 1:1 NAT (C{external-ip}): the
        RFC 5780 and RFC 3489 attributes that name one of the server's own addresses
        (RESPONSE-ORIGIN, OTHER-ADDRESS, SOURCE-ADDRESS, CHANGED-ADDRESS) give the
        public address of the private one bound.
    """

    listeningName = "STUN"

    def __init__(
        self,
        reactor: Any,
        *,
        listen: Iterable[str] = (),
        port: int = 3478,
        tlsPort: int | None = None,
        tlsOptions: Callable[[], Any] | None = None,
        tcp: bool = True,
        altListen: Iterable[str] = (),
        altPort: int = 3479,
        software: str = "p2pnet",
        realm: str = "p2pnet",
        credentials: Credentials | None = None,
        secureStun: bool = False,
        nonceLifetime: float = 3600.0,
        alternateServers: Iterable[tuple[str, int]] = (),
        maxConnections: int = 10000,
        maxConnectionsPerIp: int = 64,
        idleTimeout: float = 300.0,
        requestRate: float = DEFAULT_REQUEST_RATE,
        errorRate: float = DEFAULT_ERROR_RATE,
        sockets: Sockets | None = None,
        external: ExternalAddresses | None = None,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.external = external or ExternalAddresses()
        self.clock: IReactorTime = reactor
        self.sockets: Sockets = sockets if sockets is not None else KernelSockets(reactor)
        self.listenAddresses = bindAddresses(listen)
        self.port = port
        self.tlsPort = tlsPort
        self._tlsOptions = tlsOptions
        self.tcp = tcp
        self.alternates = {addressFamily(a): a for a in altListen}
        self.altPort = altPort
        self.software = software.encode()
        #: The one place answers are finished and sent (TURN sends through it too).
        self.responder = StunResponder(self.software)
        self.credentials = credentials
        self.secureStun = secureStun
        self.auth = LongTermAuth(realm, credentials or StaticUsers({}), reactor,
                                 nonceLifetime, software)
        self.alternateServers = {addressFamily(h): (h, p) for h, p in alternateServers}
        self.maxConnections = maxConnections
        self.maxConnectionsPerIp = maxConnectionsPerIp
        self.idleTimeout = idleTimeout
        self.stats = Stats()
        self.badInputLog = RateLimitedLog(self.log, reactor)
        self.requestBudgets = _budgets(requestRate)
        self.errorBudgets = _budgets(errorRate)
        self.methods: dict[int, MethodHandler] = {Method.BINDING: self.binding}
        self.channelDataHandler: ChannelDataHandler | None = None
        #: Highest ChannelData channel recognised on the sockets (TURN raises it).
        self.channelMax = CHANNEL_MAX
        self.streamClosedHandlers: list[StreamClosedHandler] = []
        self.streamFactories: list[StunStreamFactory] = []
        #: RFC 5780 matrix: family -> {(addressIndex, portIndex): UDP protocol}
        self.matrix: dict[int, dict[tuple[int, int], StunDatagramProtocol]] = {}
        #: family -> ((A1, A2), (P1, P2)) once bound; P1, P2 are the UDP ports
        self.rfc5780: dict[int, tuple[tuple[str, str], tuple[int, int]]] = {}
        #: family -> (P1, P2) of the TCP listeners of the RFC 5780 matrix
        self.rfc5780Tcp: dict[int, tuple[int, int]] = {}
        self._connections = 0
        #: Connections per client address that have not authenticated.
        self._perHost: dict[str, int] = {}
        #: TCP/TLS connections that have authenticated (at most max-connections).
        self._authenticated: set[StunLink] = set()
        self.stats.gauge("stun.connections", lambda: self._connections)
        self.stats.gauge("stun.auth.failures", lambda: self.auth.failures)
        self.stats.gauge("stun.auth.throttled", lambda: self.auth.throttled)

    @classmethod
    def fromConfig(cls, context: Any) -> StunService:
        """The service as the appliance's settings describe it."""
        config = context.config
        # made or checked now, before any socket is bound (not at all with no-tls)
        tls = None if config.no_tls else context.tlsOptions
        return cls(
            context.reactor,
            listen=config.listen,
            port=config.stun_port,
            tlsPort=None if config.no_tls else config.tls_port,
            tlsOptions=(lambda: tls) if tls is not None else None,
            tcp=not config.no_tcp,
            altListen=config.alt_listen,
            altPort=config.alt_port,
            software=config.software,
            realm=config.realm,
            credentials=StaticUsers(dict(config.user)) if config.user else None,
            secureStun=config.secure_stun,
            nonceLifetime=config.nonce_lifetime,
            alternateServers=config.alternate_server,
            maxConnections=config.max_connections,
            maxConnectionsPerIp=config.max_connections_per_ip,
            idleTimeout=config.idle_timeout,
            requestRate=float(config.stun_request_rate),
            errorRate=float(config.stun_error_rate),
            external=ExternalAddresses(config.external_ip),
        )

    # -- extension points for services sharing the sockets (TURN) --------------------------

    def registerMethod(self, method: int, handler: MethodHandler) -> None:
        """Hand every message of C{method} (any class) to C{handler}."""
        self.methods[method] = handler

    # -- listeners ------------------------------------------------------------------------

    def _bindUDP(self, host: str, port: int, key: str, a: int = 0, p: int = 0) -> int:
        protocol = StunDatagramProtocol(self, a, p)
        listening = self.sockets.udp(protocol, host, port, key)
        self.ports.append(listening)
        self.matrix.setdefault(addressFamily(host), {})[(a, p)] = protocol
        bound: Any = listening.getHost()
        return int(bound.port)

    def _bindStream(self, host: str, port: int, key: str, kind: str, a: int, p: int) -> int:
        factory = StunStreamFactory(self, kind, self.clock, self.idleTimeout, a, p)
        self.streamFactories.append(factory)
        wrapped: Any = factory
        if kind == "tls":
            assert self._tlsOptions is not None
            # Refused connections are closed at once, not wrapped around nothing.
            wrapped = AdmittingTLSFactory(self._tlsOptions(), False, factory)
        listening = self.sockets.tcp(wrapped, host, port, key, kind.upper())
        self.ports.append(listening)
        bound: Any = listening.getHost()
        return int(bound.port)

    def listen(self) -> None:
        udpPort = self.port
        tcpPort = self.port
        tlsPort = self.tlsPort
        for host in self.listenAddresses:
            family = addressFamily(host)
            alt = self.alternates.get(family)
            udpPort = self._bindUDP(host, udpPort, "stun-port")
            # Port 0 means a free port for each protocol; after the first address the
            # same numbers are used on the others.
            if self.tcp:
                tcpPort = self._bindStream(host, tcpPort, "stun-port", "tcp", 0, 0)
            if tlsPort is not None and self._tlsOptions is not None:
                tlsPort = self._bindStream(host, tlsPort, "tls-port", "tls", 0, 0)
            if alt is None:
                continue
            # RFC 5780 §6: "the server ... two IP addresses and two ports", so
            # the second port on both addresses and the primary port on the alternate.
            altPort = self._bindUDP(host, self.altPort, "alt-port", 0, 1)
            self._bindUDP(alt, udpPort, "alt-listen", 1, 0)
            self._bindUDP(alt, altPort, "alt-listen", 1, 1)
            self.rfc5780[family] = ((host, alt), (udpPort, altPort))
            self.boundPorts["alt"] = altPort
            if not self.tcp:
                continue
            # ... and TCP the same way, so OTHER-ADDRESS over TCP names a listener too.
            tcpAlt = self._bindStream(host, self.altPort, "alt-port", "tcp", 0, 1)
            self._bindStream(alt, tcpPort, "alt-listen", "tcp", 1, 0)
            self._bindStream(alt, tcpAlt, "alt-listen", "tcp", 1, 1)
            self.rfc5780Tcp[family] = (tcpPort, tcpAlt)
            self.boundPorts["tcp-alt"] = tcpAlt
        self.boundPorts["udp"] = udpPort
        if self.tcp:
            self.boundPorts["tcp"] = tcpPort
        if tlsPort is not None and self._tlsOptions is not None:
            self.boundPorts["tls"] = tlsPort

    def closePorts(self) -> defer.Deferred[None]:
        self.matrix.clear()
        self.rfc5780.clear()
        self.rfc5780Tcp.clear()
        return super().closePorts()

    def stopService(self) -> defer.Deferred[None]:
        closed = super().stopService()
        for factory in self.streamFactories:
            for connection in list(factory.connections):
                transport: Any = connection.transport
                if transport is not None:  # built, not yet connected: nothing to abort
                    transport.abortConnection()
        self.streamFactories.clear()
        return closed

    # -- admission (StunStreamHandler) ----------------------------------------------------

    def admit(self, host: str) -> bool:
        """Admit a new TCP/TLS connection from C{host} within the connection limits."""
        count = self._perHost.get(host, 0)
        if self._connections >= self.maxConnections or count >= self.maxConnectionsPerIp:
            self.stats.add("stun.connections.refused")
            self.badInputLog.warn(
                "connections", "STUN connection from {host} refused: limit reached", host=host
            )
            return False
        self._connections += 1
        self._perHost[host] = count + 1
        self.stats.add("stun.connections.accepted")
        return True

    def release(self, host: str) -> None:
        """A TCP/TLS connection from C{host} closed (L{streamClosed} follows)."""
        self._connections -= 1

    def _forgetPending(self, host: str) -> None:
        left = self._perHost.get(host, 1) - 1
        if left > 0:
            self._perHost[host] = left
        else:
            self._perHost.pop(host, None)

    def _trust(self, link: StunLink, request: Message, host: str) -> None:
        """A TCP/TLS connection whose request carries valid long-term credentials no
        longer counts against C{max-connections-per-ip}: that cap bounds connections
        that have not authenticated (issue 14 item 3), so 150 TURN control connections
        from one NAT fit while an anonymous flood from one address does not."""
        if self.credentials is None or link in self._authenticated:
            return
        if self.auth.verify(request, host):
            self._authenticated.add(link)
            self._forgetPending(getattr(link, "host", host))
            self.stats.add("stun.connections.authenticated")

    def streamClosed(self, link: StunLink) -> None:
        """A TCP/TLS connection closed: give back its per-address place (if it never
        authenticated) and tell the L{streamClosedHandlers}."""
        if link in self._authenticated:
            self._authenticated.discard(link)
        else:
            self._forgetPending(getattr(link, "host", ""))
        for handler in list(self.streamClosedHandlers):
            handler(link)

    # -- input (StunHandler) --------------------------------------------------------------

    def messageReceived(self, message: Message, link: StunLink, source: tuple[str, int]) -> None:
        """Dispatch a decoded message by method and send the L{Reply} its handler returns.

        A request without MESSAGE-INTEGRITY first spends from its source's request
        budget; over UDP, one of a method that cannot be answered without authentication
        (every TURN method) also from the error budget, since its answer can only be an
        error.
        Over budget it is dropped, unanswered, and counted. Then L{checkRequest} judges
        every request's attributes (420, 400) in one place; requests of unknown methods
        get 400.
        """
        handler = self.methods.get(message.method)
        charged = False
        if message.cls == StunClass.REQUEST:
            attributes = message.attributes
            if not attributes or not message.hasIntegrity():
                # The error budget bounds reflection, which needs a forged source: only
                # UDP's. A TCP/TLS client's source is its connection, and an answer it
                # does not get would leave it waiting with no retransmission to help.
                charged = message.method != Method.BINDING and handler is not None and (
                    link.kind == "udp")
                if not self._withinBudget(charged, source):
                    return
            if attributes:
                refusal = checkRequest(message)
                if refusal is not None:
                    self.respond(Reply(refusal), message, link, source, charged)
                    return
                if link.kind != "udp" and link not in self._authenticated and (
                        message.hasIntegrity()):
                    self._trust(link, message, unmapped(source[0]))
        if handler is None:
            if message.cls == StunClass.REQUEST:
                self.respond(Reply(message.errorReply(400, "Unknown method")), message,
                             link, source, charged)
            else:
                self.stats.add("stun.dropped.unknown_method")
            return
        reply = handler(message, link, source)
        if reply is not None:
            self.respond(reply, message, link, source, charged)

    def respond(self, reply: Reply, request: Message, link: StunLink,
                source: tuple[str, int], charged: bool = False) -> bytes | None:
        """Send C{reply} to C{request} through the one L{StunResponder}; an error answer to
        an unauthenticated request first spends from the source's error budget (unless
        C{charged} already) and is dropped past it. Return the bytes sent, or C{None}."""
        message = reply.message
        if message.cls == StunClass.ERROR:
            code = message.errorCode
            if reply.key is None and code != 300 and not charged and link.kind == "udp":
                # 300 Try Alternate is a redirecting server's normal answer, not what
                # the error budget is for.
                if not self._errorWithinBudget(_sourceKey(source[0]), self.clock.seconds()):
                    return None
            self.stats.add(f"stun.errors.{code}")
        return self.responder.send(reply.link or link, reply.destination or source, message,
                                   request, reply.key, reply.sha256)

    def _withinBudget(self, errorOnly: bool, source: tuple[str, int]) -> bool:
        """Spend one unauthenticated request (and one error answer when C{errorOnly})
        from C{source}'s budgets; C{False}, counted and logged (bounded), when spent."""
        if self.requestBudgets is None and (not errorOnly or self.errorBudgets is None):
            return True
        key = _sourceKey(source[0])
        now = self.clock.seconds()
        if self.requestBudgets is not None and not self.requestBudgets.allow(key, now):
            self.stats.add("stun.dropped.request_rate")
            self.badInputLog.warn(
                "request-rate", "unauthenticated STUN requests from {source} over "
                "{rate}/s: dropping", source=key, rate=self.requestBudgets.rate)
            return False
        if errorOnly and not self._errorWithinBudget(key, now):
            return False
        return True

    def _errorWithinBudget(self, key: str, now: float) -> bool:
        if self.errorBudgets is None or self.errorBudgets.allow(key, now):
            return True
        self.stats.add("stun.dropped.error_rate")
        self.badInputLog.warn(
            "error-rate", "error answers to {source} over {rate}/s: dropping",
            source=key, rate=self.errorBudgets.rate)
        return False

    def channelDataReceived(self, data: bytes, link: StunLink, source: tuple[str, int]) -> None:
        """ChannelData goes to TURN when it runs; otherwise it is dropped and counted."""
        if self.channelDataHandler is not None:
            self.channelDataHandler(data, link, source)
        else:
            self.stats.add("stun.dropped.channeldata")

    def malformed(self, data: bytes, error: StunDecodeError, link: StunLink,
                  source: tuple[str, int]) -> None:
        """A request whose header the codec could salvage gets 400 (within the error
        budget); anything else is dropped. Both counted."""
        self.stats.add("stun.malformed")
        self.badInputLog.warn(
            "malformed", "malformed STUN message from {source}: {error}",
            source=source, error=str(error),
        )
        if error.request is not None:
            self.respond(Reply(error.request.errorReply(400)), error.request, link, source)

    def garbage(self, data: bytes, link: StunLink, source: tuple[str, int]) -> None:
        """Bytes that are not STUN: never answered, counted and logged at a bounded rate."""
        self.stats.add("stun.garbage")
        self.badInputLog.warn(
            "garbage", "non-STUN {kind} input from {source} ({size} bytes) ignored",
            kind=link.kind, source=source, size=len(data),
        )

    def sendFailed(self, error: OSError, link: StunLink, destination: tuple[str, int]) -> None:
        """The kernel refused a datagram (full buffer, unreachable): dropped and counted,
        as UDP would lose it anyway."""
        self.stats.add("stun.send_errors")
        self.badInputLog.warn("send", "cannot send to {destination}: {error}",
                              destination=destination, error=error.strerror or str(error))

    def internalError(self, failure: Failure, link: StunLink) -> None:
        """A bug met while handling input: logged (bounded), counted, the service goes on."""
        self.stats.add("stun.internal_errors")
        if self.badInputLog.warn("internal", "error handling {kind} input", kind=link.kind):
            self.log.failure("STUN handler error", failure)

    # -- the Binding method ---------------------------------------------------------------

    def _otherLink(self, link: StunLink, family: int, changeIp: bool,
                   changePort: bool) -> StunLink | None:
        if link.kind != "udp" or family not in self.rfc5780:
            return link if not (changeIp or changePort) else None
        a = link.addressIndex ^ int(changeIp)
        p = link.portIndex ^ int(changePort)
        return self.matrix[family].get((a, p))

    def _other(self, family: int, link: StunLink) -> tuple[str, int]:
        """The matrix address differing in both address and port from C{link}'s, as
        clients must be told it (L{_announced})."""
        addresses, ports = self.rfc5780[family]
        if link.kind == "tcp":
            ports = self.rfc5780Tcp[family]
        return self._announced((addresses[1 - link.addressIndex], ports[1 - link.portIndex]))

    def _announced(self, local: tuple[str, int]) -> tuple[str, int]:
        """C{local}, one of our bound addresses, as a client must be told it: its public
        address behind 1:1 NAT (C{external-ip}), the port kept."""
        return self.external.public(local[0]), local[1]

    def binding(self, request: Message, link: StunLink, source: tuple[str, int]
                ) -> Reply | None:
        """Answer a Binding request (RFC 8489 §6.3, RFC 5780 §6.1, RFC 3489 §9.2) whose
        attributes L{checkRequest} has passed. Binding indications are keep-alives:
        counted, never answered."""
        if request.cls == StunClass.INDICATION:
            self.stats.add("stun.indications")
            return None
        if request.cls != StunClass.REQUEST:
            self.stats.add("stun.dropped.responses")
            return None
        self.stats.add("stun.binding.requests")
        host = unmapped(source[0])
        family = addressFamily(host)
        attributes = request.attributes

        # RFC 8489 §9.2.4: long-term credentials, when the server has users. Requests
        # that carry no integrity are answered plainly unless secure-stun is on.
        key: bytes | None = None
        sha256 = False
        if self.credentials is not None and not request.classic and (
                self.secureStun or request.hasIntegrity()):
            auth = self.auth.check(request, host)
            if auth.error is not None:
                return Reply(auth.error)
            key, sha256 = auth.key, auth.sha256

        # RFC 8489 §10: ALTERNATE-SERVER. "the server ... responds with an error
        # response with an error code of 300 (Try Alternate) ... [with] an
        # ALTERNATE-SERVER".
        alternate = self.alternateServers.get(family)
        if alternate is not None and not request.classic:
            return Reply(request.errorReply(300).set(Attr.ALTERNATE_SERVER, alternate),
                         key, sha256)

        # RFC 5780 §6.1: CHANGE-REQUEST, RESPONSE-PORT and PADDING are UDP-only; a server
        # without a second address cannot honour a change and says 420.
        out: StunLink | None = link
        responsePort: int | None = None
        padding: bytes | None = None
        if attributes and any(t in _RFC5780 for t, _ in attributes):
            changeIp, changePort = request.value(Attr.CHANGE_REQUEST, (False, False))
            responsePort = request.value(Attr.RESPONSE_PORT)
            padding = request.value(Attr.PADDING)
            if link.kind != "udp" and (changeIp or changePort or responsePort is not None
                                       or padding is not None):
                return Reply(request.errorReply(400), key, sha256)
            out = self._otherLink(link, family, changeIp, changePort)
            if out is None:
                reply = request.errorReply(420).set(Attr.UNKNOWN_ATTRIBUTES,
                                                    [Attr.CHANGE_REQUEST])
                return Reply(reply, key, sha256)
        assert out is not None

        reply = request.reply()
        if request.classic:
            # RFC 3489 §11.2: MAPPED-ADDRESS, SOURCE-ADDRESS and CHANGED-ADDRESS.
            reply.add(Attr.MAPPED_ADDRESS, encodeAddress(host, source[1]))
            if family in self.rfc5780 and link.kind == "udp":
                reply.add(Attr.SOURCE_ADDRESS, encodeAddress(*self._announced(out.local)))
                reply.add(Attr.CHANGED_ADDRESS, encodeAddress(*self._other(family, link)))
        else:
            reply.add(Attr.XOR_MAPPED_ADDRESS, request.xorMapped(host, source[1]))
            if family in self.rfc5780:
                # RFC 5780 §4.2 compares MAPPED-ADDRESS with XOR-MAPPED-ADDRESS to detect
                # an ALG; RFC 5780 §7.3, §7.4: where the response comes from, and the address and
                # port that differ in both from where the request arrived.
                reply.add(Attr.MAPPED_ADDRESS, encodeAddress(host, source[1]))
                reply.add(Attr.RESPONSE_ORIGIN, encodeAddress(*self._announced(out.local)))
                if link.kind != "tls":  # there is no second TLS port to name
                    reply.add(Attr.OTHER_ADDRESS, encodeAddress(*self._other(family, link)))
            if padding is not None:
                # RFC 5780 §7.6: the response is padded like the request was.
                reply.add(Attr.PADDING, bytes(len(padding)))
        self.stats.add("stun.binding.success")
        return Reply(reply, key, sha256, out,
                     (source[0], responsePort) if responsePort else None)
