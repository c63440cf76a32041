# -*- test-case-name: test.test_gateway_server -*-
"""The gateway's HTTP+WebSocket listener on C{twisted.web} and C{twisted.web.websocket}.

C{GET /} upgrades to the WebSocket control plane, C{GET /healthz} answers liveness and
C{GET /metrics} every service's counters in the Prometheus text format. The WebSocket
protocol is thin: it enforces frame size caps and the slow-consumer rule, decodes JSON
text into frames and hands them to the session of L{p2pnet.services.gateway}.

C{twisted.web.websocket} has no message size limit and no send-buffer accounting, so a
L{MeteredProtocol} sits between the TCP (or TLS) transport and the HTTP channel: it
counts bytes received since the last complete message and bytes written while the
transport has asked its producer to pause.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolNegotiationFactory,
    IPushProducer,
    IReactorSocket,
)
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.websocket import WebSocketResource, WebSocketTransport
from zope.interface import implementer

from p2pnet.codecs.gateway_frames import CloseCode, Frame, FrameError, decodeFrame, encodeFrame
from p2pnet.listen import bindAddresses, listenTCP
from p2pnet.ratelog import RateLimitedLog
from p2pnet.services.gateway import (
    MAX_BUFFERED_BYTES,
    MAX_PAYLOAD,
    MAX_PREAUTH_PAYLOAD,
    ConnectionInfo,
    GatewayService,
    GatewaySession,
)
from p2pnet.services.gateway_policy import FORWARDING_HEADERS
from p2pnet.stats import Stats

__all__ = ["GatewayWebSocket", "MeteredProtocol", "gatewaySite", "listenGateway", "renderMetrics"]

#: Room for WebSocket frame headers on top of a payload cap (bytes on the wire).
FRAME_SLACK = 1024

_log = Logger()


@implementer(IPushProducer)
class _PauseTracker:
    """The producer registered with the real transport: notes when writes back up."""

    def __init__(self, meter: MeteredProtocol, upstream: IPushProducer) -> None:
        self.meter = meter
        self.upstream = upstream

    def pauseProducing(self) -> None:
        self.meter.paused = True
        self.upstream.pauseProducing()

    def resumeProducing(self) -> None:
        self.meter.paused = False
        self.meter.unflushed = 0
        self.upstream.resumeProducing()

    def stopProducing(self) -> None:
        self.upstream.stopProducing()


class MeteredProtocol(ProtocolWrapper):
    """Counts inbound bytes against a cap and outbound bytes while paused.

    @ivar limit: most bytes received before L{GatewayWebSocket} sees a complete message;
        C{None} before the upgrade (the HTTP parser has its own limits).
    @ivar paused: the transport's send buffer is full.
    @ivar unflushed: bytes written since it filled.
    """

    limit: int | None = None
    pending = 0
    paused = False
    unflushed = 0
    socket: GatewayWebSocket | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.limit is not None:
            self.pending += len(data)
            if self.pending > self.limit and self.socket is not None:
                self.socket.oversize()
                return
        try:
            self.wrappedProtocol.dataReceived(data)
        except Exception:
            self.factory.badInput.warn(
                "gateway-wire",
                "Gateway connection from {peer} dropped on its input: {error}",
                peer=self.getPeer(),
                error=Failure().getErrorMessage(),
            )
            self.transport.abortConnection()

    def write(self, data: bytes) -> None:
        if self.paused:
            self.unflushed += len(data)
        self.transport.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        if self.paused:
            self.unflushed += sum(map(len, data))
        self.transport.writeSequence(data)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.transport.registerProducer(_PauseTracker(self, producer), True)


@implementer(IProtocolNegotiationFactory)
class _MeteredFactory(WrappingFactory):
    protocol = MeteredProtocol
    noisy = False

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN: HTTP/1.1 (Twisted fails the TLS handshake when a client offers ALPN and
        the server names no protocol)."""
        return [b"http/1.1"]

    def __init__(self, wrapped: Site, badInput: RateLimitedLog) -> None:
        super().__init__(wrapped)
        self.badInput = badInput


def _headers(request: Request, wanted: frozenset[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        key = name.decode("latin-1").lower()
        if key in wanted and values and key not in found:
            found[key] = values[0].decode("latin-1")
    return found


class GatewayWebSocket:
    """One WebSocket of the control plane; the L{GatewaySession} does the thinking."""

    transport: WebSocketTransport
    session: GatewaySession

    def __init__(
        self, service: GatewayService, meter: MeteredProtocol, info: ConnectionInfo
    ) -> None:
        self.service = service
        self.meter = meter
        self.info = info
        self.closing = False

    # WebSocketProtocol

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        self.meter.socket = self
        self.meter.limit = MAX_PREAUTH_PAYLOAD + FRAME_SLACK
        self.meter.pending = 0
        self.session = self.service.openSession(self, self.info)
        self.session.opened()

    def pongReceived(self, payload: bytes) -> None:
        """Pongs carry nothing the gateway needs."""

    def textMessageReceived(self, message: str) -> None:
        self.meter.pending = 0
        if self.closing:
            return
        cap = MAX_PAYLOAD if self.session.authenticated else MAX_PREAUTH_PAYLOAD
        if len(message) > cap // 4 and len(message.encode("utf-8")) > cap:
            self.oversize()
            return
        try:
            frame = decodeFrame(message)
        except FrameError as e:
            self.session.badFrame(e)
        else:
            self.session.frameReceived(frame)
        if self.session.authenticated:
            self.meter.limit = MAX_PAYLOAD + FRAME_SLACK

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            self.meter.pending = 0
            if not self.closing:
                self.session.badFrame(FrameError("binary frame is not UTF-8", badJson=True))
            return
        self.textMessageReceived(text)

    def connectionLost(self, reason: Failure) -> None:
        self.closing = True
        self.meter.socket = None
        session = getattr(self, "session", None)
        if session is not None:
            session.connectionLost()

    # FrameSink

    def sendFrame(self, frame: Frame, dropIfSlow: bool = False, text: str | None = None) -> None:
        """Write one frame (C{text}: already encoded); drop a peer that stopped reading."""
        if self.closing:
            return
        if self.meter.paused:
            if dropIfSlow:
                return
            if self.meter.unflushed > MAX_BUFFERED_BYTES:
                self.session.close(CloseCode.POLICY, "slow consumer")
                return
        self.transport.sendTextMessage(encodeFrame(frame) if text is None else text)

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame and drop the connection."""
        if not self.closing:
            self.closing = True
            self.transport.loseConnection(code, reason)  # type: ignore[call-arg]

    def oversize(self) -> None:
        """A message over the cap: 1009 (before hello-ok: "preauth payload too large")."""
        self.meter.limit = None
        if self.session.authenticated:
            self.session.close(CloseCode.TOO_BIG, "payload too large")
        else:
            self.service.stats.add('auth_failures{reason="preauth-payload-too-large"}')
            self.session.close(CloseCode.TOO_BIG, "preauth payload too large")


class _WebSocketEntry(WebSocketResource):
    """C{GET /}: the upgrade, after the pre-auth socket budget."""

    def __init__(self, service: GatewayService) -> None:
        super().__init__(self)
        self.service = service
        auth = service.auth
        self.wanted = frozenset(
            ("origin", "host", *FORWARDING_HEADERS, auth.userHeader.lower(),
             *(h.lower() for h in auth.requiredHeaders))
        ) - {""}

    def render_GET(self, request: Request) -> bytes | int:
        if not self.service.canOpen(self._info(request).clientIp):
            self.service.stats.add("preauth_rejected")
            request.setResponseCode(503)
            request.setHeader("content-type", "text/plain")
            return b"Too many unauthenticated sockets\n"
        return super().render_GET(request)

    def _info(self, request: Request) -> ConnectionInfo:
        remote = getattr(request.getClientAddress(), "host", "")
        return self.service.connectionInfo(remote, _headers(request, self.wanted))

    def buildProtocol(self, request: Request) -> GatewayWebSocket:
        """The WebSocketServerFactory side: one L{GatewayWebSocket} per upgrade."""
        return GatewayWebSocket(self.service, request.channel.transport, self._info(request))


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
    def __init__(self, service: GatewayService) -> None:
        super().__init__()
        self.entry = _WebSocketEntry(service)
        self.putChild(
            b"healthz",
            _Text(lambda: json.dumps(service.health()).encode() + b"\n", b"application/json"),
        )
        self.putChild(
            b"metrics",
            _Text(
                lambda: renderMetrics(service.siblings()).encode(),
                b"text/plain; version=0.0.4; charset=utf-8",
            ),
        )

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self.entry
        return super().getChild(path, request)


class _QuietSite(Site):
    """A Site that writes no access-log line per request (logs are per event)."""

    def log(self, request: Request) -> None:
        """Not logged: scrapes of /metrics would fill the log."""


def gatewaySite(service: GatewayService) -> _MeteredFactory:
    """The factory serving the gateway (before any TLS wrapping)."""
    site = _QuietSite(_Root(service))
    site.displayTracebacks = False
    site.noisy = False
    return _MeteredFactory(site, service.badInput)


def listenGateway(
    reactor: IReactorSocket,
    service: GatewayService,
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
            chosen = ports[0].getHost().port if ports and port == 0 else port
            ports.append(listenTCP(reactor, factory, host, chosen, "gateway-port"))
    except BaseException:
        for bound in ports:
            bound.stopListening()
        raise
    return ports


def _metricName(service: str, name: str) -> tuple[str, str]:
    base, brace, labels = name.partition("{")
    clean = "".join(c if c.isalnum() or c == "_" else "_" for c in f"p2pnet_{service}_{base}")
    return clean, (brace + labels if brace else "")


def renderMetrics(services: Mapping[str, Any]) -> str:
    """Every service's C{stats} in the Prometheus text exposition format.

    A counter named C{auth_failures{reason="x"}} keeps its labels; dots and other
    characters become underscores; names are prefixed C{p2pnet_<service>_}.
    """
    lines: list[str] = ["# TYPE p2pnet_service_up untyped"]
    lines += [
        f'p2pnet_service_up{{service="{name}"}} {int(bool(service.running))}'
        for name, service in services.items()
    ]
    for serviceName, service in services.items():
        stats = getattr(service, "stats", None)
        if not isinstance(stats, Stats):
            continue
        typed: set[str] = set()
        for name, value in sorted(stats.snapshot().items()):
            metric, labels = _metricName(serviceName, name)
            if metric not in typed:
                typed.add(metric)
                lines.append(f"# TYPE {metric} untyped")
            lines.append(f"{metric}{labels} {int(value)}")
    return "\n".join(lines) + "\n"
