# -*- test-case-name: test.unit.test_gateway_server,test.unit.test_gateway_preauth,test.interop.test_gateway_server -*-
"""The gateway's HTTP+WebSocket listener on C{twisted.web} and C{twisted.web.websocket}.

C{GET /} upgrades to the WebSocket control plane (a request without an upgrade gets the
status page, L{p2pnet.protocols.gateway_console}), C{GET /healthz} answers liveness and
C{GET /metrics} every service's metrics (L{p2pnet.metrics}). The WebSocket
protocol is thin: it applies the frame size caps and the slow-consumer rule, decodes JSON
text into frames and hands them to a session. Framing, size limits and send-buffer
accounting are L{p2pnet.protocols.websocket}'s.

This module declares what it needs from the gateway and what it offers it, as
C{typing.Protocol}s, and imports no service: L{GatewayBackend} (the listener's view of
the gateway service), L{SessionHandler} (one connection's session) and
L{GatewayConnection} (the wire end a session writes to, which L{GatewayWebSocket}
implements). L{p2pnet.services.gateway} implements the first two and hands itself to
L{listenGateway}.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IListeningPort, IReactorSocket
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from p2pnet.codecs.gateway_frames import (
    MAX_BUFFERED_BYTES,
    MAX_PAYLOAD,
    MAX_PREAUTH_PAYLOAD,
    CloseCode,
    Frame,
    FrameError,
    decodeFrame,
    encodeFrame,
    truncateReason,
)
from p2pnet.codecs.websocket_frame import MessageTooBig, WebSocketFrameError
from p2pnet.listen import bindAddresses, listenTCP
from p2pnet.metrics import metricsResource
from p2pnet.protocols.gateway_console import MAX_FORM, ConsoleBackend, ConsolePages
from p2pnet.protocols.websocket import WebSocketConnection, WebSocketSite, WebSocketUpgrade
from p2pnet.ratelog import RateLimitedLog
from p2pnet.stats import Stats

__all__ = [
    "ConnectionInfo",
    "GatewayBackend",
    "GatewayConnection",
    "GatewayWebSocket",
    "SessionHandler",
    "gatewaySite",
    "listenGateway",
]


@dataclass(frozen=True)
class ConnectionInfo:
    """What the HTTP upgrade said about a connection (made by
    L{GatewayBackend.connectionInfo}, which knows the trusted proxies).

    @ivar remote: the socket peer's address.
    @ivar headers: the request headers the gateway asked for, lowercase names, every
        line of one name joined with C{", "}.
    @ivar clientIp: the resolved client address (C{None}: unknown, fail closed).
    @ivar localDirect: a loopback socket with no forwarding header.
    """

    remote: str
    headers: Mapping[str, str]
    clientIp: str | None
    localDirect: bool = False

    @property
    def origin(self) -> str | None:
        """The Origin header, if the client sent one."""
        return self.headers.get("origin")


class GatewayConnection(Protocol):
    """The wire end of a session: what a session writes to (L{GatewayWebSocket})."""

    def sendFrame(self, frame: Frame, dropIfSlow: bool = False, text: str | None = None) -> None:
        """Send one frame (skipped when C{dropIfSlow} and the peer is not reading).

        C{text} is C{frame} already encoded (a broadcast encodes once for everyone).
        """

    def close(self, code: int, reason: str = "") -> None:
        """Close the WebSocket with C{code} and C{reason}."""


class SessionHandler(Protocol):
    """One connection's session, as the wire sees it."""

    @property
    def authenticated(self) -> bool:
        """Whether hello-ok was sent (the size cap goes up then)."""

    def opened(self) -> None:
        """The WebSocket is up."""

    def badFrame(self, error: FrameError) -> None:
        """The peer sent text that is not a frame."""

    def frameReceived(self, frame: Frame) -> None:
        """One decoded frame from the peer."""

    def connectionLost(self) -> None:
        """The socket is gone."""

    def close(self, code: int, reason: str = "") -> None:
        """Close the connection with C{code} and C{reason}."""


class GatewayBackend(Protocol):
    """What the listener needs from the gateway service."""

    @property
    def stats(self) -> Stats:
        """The gateway's counters."""

    @property
    def badInput(self) -> RateLimitedLog:
        """Where bad input is logged, at a bounded rate."""

    @property
    def wantedHeaders(self) -> frozenset[str]:
        """The request headers (lowercase) L{connectionInfo} reads."""

    def canOpen(self, clientIp: str | None) -> bool:
        """Whether C{clientIp} may open one more unauthenticated socket."""

    def connectionInfo(self, remote: str, headers: Mapping[str, str]) -> ConnectionInfo:
        """Resolve the client address of an upgrade request."""

    def openSession(self, connection: GatewayConnection, info: ConnectionInfo) -> SessionHandler:
        """A new WebSocket: its session."""

    def health(self) -> dict[str, Any]:
        """The C{/healthz} body."""

    def siblings(self) -> Mapping[str, Any]:
        """Every service of the appliance by name, for C{/metrics}."""

    @property
    def console(self) -> ConsoleBackend:
        """What the status page and the TURN tester read and change."""


def _headers(request: Request, wanted: frozenset[str]) -> dict[str, str]:
    """The C{wanted} headers by lowercase name, every line of each joined with C{", "}.

    RFC 9110 §5.3: a recipient may combine the field lines of one name, in order, into
    one comma-separated value. Reading only the first line of X-Forwarded-For would let
    a client choose its address behind a proxy that appends its own line (HAProxy
    C{option forwardfor}); a singleton header sent twice becomes a value no check
    accepts, which fails closed.
    """
    found: dict[str, str] = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        key = name.decode("latin-1").lower()
        if key in wanted and values:
            joined = ", ".join(v.decode("latin-1") for v in values)
            found[key] = f"{found[key]}, {joined}" if key in found else joined
    return found


class GatewayWebSocket:
    """One WebSocket of the control plane; its L{SessionHandler} does the thinking."""

    transport: WebSocketConnection
    session: SessionHandler

    def __init__(self, service: GatewayBackend, info: ConnectionInfo) -> None:
        self.service = service
        self.info = info
        self.closing = False
        self.raised = False  # the size cap went up to MAX_PAYLOAD after hello-ok

    # WebSocketProtocol

    def negotiationStarted(self, transport: WebSocketConnection) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        self.session = self.service.openSession(self, self.info)
        self.session.opened()

    def pongReceived(self, payload: bytes) -> None:
        """Pongs carry nothing the gateway needs."""

    def textMessageReceived(self, message: str) -> None:
        if self.closing:
            return
        session = self.session
        try:
            try:
                frame = decodeFrame(message)
            except FrameError as e:
                session.badFrame(e)
            else:
                session.frameReceived(frame)
        except Exception as e:
            # Nothing a peer sends may raise out of here (a traceback per connection is
            # a log flood): one rate-limited line, then the close frame 1011.
            self._failed(e)
            return
        if session.authenticated and not self.raised:
            self.raised = True
            self.transport.maxMessage = MAX_PAYLOAD

    def _failed(self, error: Exception) -> None:
        self.service.stats.add("handler_errors")
        self.service.badInput.warn(
            "gateway-internal",
            "Gateway connection from {peer} closed: handling its frame failed: {error}",
            peer=self.info.remote,
            error=f"{type(error).__name__}: {error!r}"[:200],
        )
        self.close(CloseCode.INTERNAL_ERROR, "internal error")

    def bytesMessageReceived(self, data: bytes) -> None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            if not self.closing:
                self.session.badFrame(FrameError("binary frame is not UTF-8", badJson=True))
            return
        self.textMessageReceived(text)

    def badInput(self, error: WebSocketFrameError) -> None:
        """A message over the cap: 1009 (before hello-ok: "preauth payload too large");
        other framing errors are logged (rate-limited) and closed by the connection."""
        if not isinstance(error, MessageTooBig):
            self.service.badInput.warn(
                "gateway-wire",
                "Gateway connection from {peer} dropped on its input: {error}",
                peer=self.info.remote,
                error=str(error),
            )
        elif self.session.authenticated:
            self.session.close(CloseCode.TOO_BIG, "payload too large")
        else:
            self.service.stats.add('auth_failures{reason="preauth-payload-too-large"}')
            self.session.close(CloseCode.TOO_BIG, "preauth payload too large")

    def connectionLost(self, reason: Failure) -> None:
        self.closing = True
        session = getattr(self, "session", None)
        if session is not None:
            session.connectionLost()

    # GatewayConnection

    def sendFrame(self, frame: Frame, dropIfSlow: bool = False, text: str | None = None) -> None:
        """Write one frame (C{text}: already encoded); drop a peer that stopped reading."""
        if self.closing:
            return
        transport = self.transport
        if transport.paused:
            if dropIfSlow:
                return
            if transport.unflushed > MAX_BUFFERED_BYTES:
                self.session.close(CloseCode.POLICY, "slow consumer")
                return
        transport.sendTextMessage(encodeFrame(frame) if text is None else text)

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame (the reason cut to 120 UTF-8 bytes, gateway.md §1.5) and
        drop the connection."""
        if not self.closing:
            self.closing = True
            self.transport.loseConnection(code, truncateReason(reason))


class _WebSocketEntry(WebSocketUpgrade):
    """C{GET /}: the upgrade, after the pre-auth socket budget."""

    def __init__(self, service: GatewayBackend, pages: ConsolePages) -> None:
        super().__init__(self, MAX_PREAUTH_PAYLOAD)
        self.service = service
        self.pages = pages

    def render_GET(self, request: Request) -> bytes | int:
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if b"websocket" not in upgrade:  # a browser: the status page
            return self.pages.status(request)
        if not self.service.canOpen(self._info(request).clientIp):
            self.service.stats.add("preauth_rejected")
            request.setResponseCode(503)
            request.setHeader("content-type", "text/plain")
            return b"Too many unauthenticated sockets\n"
        return super().render_GET(request)

    def _info(self, request: Request) -> ConnectionInfo:
        remote = getattr(request.getClientAddress(), "host", "")
        return self.service.connectionInfo(
            remote, _headers(request, self.service.wantedHeaders)
        )

    def buildProtocol(self, request: Request) -> GatewayWebSocket:
        """The WebSocketServerFactory side: one L{GatewayWebSocket} per upgrade."""
        return GatewayWebSocket(self.service, self._info(request))


class _Text(Resource):
    isLeaf = True

    def __init__(self, render: Any, contentType: bytes) -> None:
        super().__init__()
        self._render = render
        self._type = contentType

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self._type)
        request.setHeader(b"cache-control", b"no-store")
        return self._render()


class _Root(Resource):
    def __init__(self, service: GatewayBackend) -> None:
        super().__init__()
        pages = ConsolePages(service.console)
        self.entry = _WebSocketEntry(service, pages)
        for name, child in pages.children().items():
            self.putChild(name, child)
        self.putChild(
            b"healthz",
            _Text(lambda: json.dumps(service.health()).encode() + b"\n", b"application/json"),
        )
        self.putChild(b"metrics", metricsResource(service.siblings))

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self.entry
        return super().getChild(path, request)


def gatewaySite(service: GatewayBackend) -> WebSocketSite:
    """The factory serving the gateway (before any TLS wrapping); request bodies up to
    the console's form size are read (the login and kill forms), none larger."""
    site = WebSocketSite(_Root(service))
    site.maxBody = MAX_FORM
    return site


def listenGateway(
    reactor: IReactorSocket,
    service: GatewayBackend,
    listen: tuple[str, ...],
    port: int,
    tls: CertificateOptions | None,
) -> list[IListeningPort]:
    """Bind the gateway on every listen address (port 0: one kernel-chosen port for all)."""
    factory: Any = gatewaySite(service)
    if tls is not None:
        factory = TLSMemoryBIOFactory(tls, False, factory)
    ports: list[IListeningPort] = []
    try:
        for host in bindAddresses(listen):
            chosen = _portOf(ports[0]) if ports and port == 0 else port
            ports.append(listenTCP(reactor, factory, host, chosen, "gateway-port"))
    except BaseException:
        for bound in ports:
            bound.stopListening()
        raise
    return ports


def _portOf(listening: IListeningPort) -> int:
    address = listening.getHost()
    assert isinstance(address, IPv4Address | IPv6Address)
    return address.port
