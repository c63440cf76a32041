# -*- test-case-name: test.unit.test_protocols_websocket -*-
"""The WebSocket server side shared by the gateway and the RustDesk WS listeners.

The HTTP side is twisted.web's: a L{Site}, the C{GET} request, and the upgrade of its
HTTP channel (C{HTTPChannel._protocolUpgradeForWebsockets}, the hook
C{twisted.web.websocket} itself uses). L{WebSocketUpgrade} is a
C{twisted.web.websocket.WebSocketResource} and its factories and protocols keep that
module's C{WebSocketServerFactory} / C{WebSocketProtocol} / C{WebSocketTransport}
interfaces. After the upgrade, bytes go to a L{WebSocketConnection}, which frames with
L{p2pnet.codecs.websocket_frame} instead of Twisted's wsproto wire protocol, because
Twisted 26.10's C{twisted.web.websocket} has these gaps:

1. No message size limit: wsproto and Twisted's reassembly buffer grow without bound.
   Here L{WebSocketConnection.maxMessage} is checked on each frame header, before the
   payload is buffered; an oversized message is reported to the protocol's
   C{badInput} (like every other framing error) and closes with 1009.
2. The upgraded connection keeps the HTTP channel registered as the transport's
   producer, so C{attachProducer} raises until someone calls C{detachProducer}, and
   the channel's pause logic is what runs when the send buffer fills. Here the
   connection replaces the channel as the transport's streaming producer at the
   upgrade; it pauses its own reading while the send buffer is full (as the channel
   did, Twisted ticket 8868) unless a producer was attached, which is paused instead;
   and it tells the protocol L{WebSocketConnection.paused} and how many bytes were
   written while paused (L{WebSocketConnection.unflushed}).
3. The close status does not reach the protocol: C{connectionLost} sees a bare
   C{ConnectionDone}, and C{loseConnection} (whose typed signature has no reason)
   raises wsproto's C{LocalProtocolError} once the peer's close handshake finished.
   Here C{connectionLost} receives a L{WebSocketClosed} carrying the status and reason
   of the Close frame that began the closing handshake, and C{loseConnection(code,
   reason)} may be called at any time, any number of times.
4. Every message costs several wsproto calls, event objects and a C{singledispatch},
   and every answer waits for the next reactor turn (two C{epoll_ctl} and a C{send}).
   Here a message is a slice and an XOR; what the protocol sends while it handles the
   bytes of one read goes out in one write, straight to the socket when nothing is
   queued before it (L{writeThrough}).

Also L{WebSocketSite}: a twisted.web C{Site} that refuses request bodies (see
L{BoundedHTTPChannel}), writes no access-log line and offers ALPN C{http/1.1}, because Twisted 26.10's TLS wrapper (C{TLSMemoryBIOFactory}) always
installs an ALPN callback and fails the TLS handshake of a client that offers ALPN when
the wrapped factory names no protocol.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IProtocolNegotiationFactory, IPushProducer
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.websocket import WebSocketResource, WebSocketServerFactory
from wsproto import ConnectionType
from wsproto.events import AcceptConnection
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError
from zope.interface import implementer

from p2pnet.codecs.websocket_frame import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    MessageDecoder,
    WebSocketFrameError,
    decodeClose,
    encodeClose,
    encodeFrame,
    encodeText,
)
from p2pnet.listen import markEstablished

__all__ = [
    "BoundedHTTPChannel",
    "BoundedWebSocketProtocol",
    "WebSocketClosed",
    "WebSocketConnection",
    "WebSocketSite",
    "WebSocketUpgrade",
    "writeThrough",
]


class BoundedWebSocketProtocol(Protocol):
    """A C{twisted.web.websocket.WebSocketProtocol} that is told of oversized messages."""

    def negotiationStarted(self, transport: WebSocketConnection) -> None:
        """The connection is upgraded; C{transport} sends."""

    def negotiationFinished(self) -> None:
        """The 101 response is written."""

    def textMessageReceived(self, message: str) -> None:
        """A whole text message."""

    def bytesMessageReceived(self, data: bytes) -> None:
        """A whole binary message."""

    def pongReceived(self, payload: bytes) -> None:
        """A Pong frame."""

    def badInput(self, error: WebSocketFrameError) -> None:
        """The peer broke RFC 6455 (C{websocket_frame.MessageTooBig}: a message above
        C{maxMessage}); the connection closes with C{error.code} after this unless the
        protocol closed it already (with its own status and reason)."""

    def connectionLost(self, reason: Failure) -> None:
        """The TCP connection is gone (a L{WebSocketClosed} after a close handshake)."""


class WebSocketClosed(ConnectionDone):
    """The connection ended with a WebSocket close handshake.

    @ivar code: the status of the Close frame that began it (1005: it had none).
    @ivar reason: that frame's reason.
    @ivar byPeer: the peer sent that frame (else this side did).
    """

    def __init__(self, code: int, reason: str, byPeer: bool) -> None:
        super().__init__(f"WebSocket closed with {code} {reason!r}")
        self.code = code
        self.reason = reason
        self.byPeer = byPeer


def writeThrough(transport: Any, data: bytes) -> None:
    """Write C{data}, straight to the socket when nothing is queued before it.

    Saves Twisted's buffer copy and the reactor turn (and its two C{epoll_ctl}) that a
    queued write costs; what the kernel does not take is queued as usual, which engages
    producer back-pressure. Other transports (TLS, test fakes) just C{write}.
    """
    if (
        isinstance(transport, tcp.Connection)
        and not transport._tempDataLen
        and not transport.dataBuffer
        and transport.connected
        and not transport.disconnecting
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int) and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


@implementer(IProtocol, IPushProducer)
class WebSocketConnection:
    """One upgraded connection: RFC 6455 framing between a transport and a protocol.

    It is the C{WebSocketTransport} its protocol sends through, and the streaming
    producer registered with the TCP (or TLS) transport.

    @ivar transport: the byte transport, once upgraded.
    @ivar paused: the transport's send buffer is full.
    @ivar unflushed: bytes written since it filled (0 while not paused).
    @ivar closed: a Close frame was sent or the connection was lost; nothing more is
        sent or delivered.
    """

    transport: Any = None
    paused = False
    unflushed = 0
    closed = False

    def __init__(self, protocol: BoundedWebSocketProtocol, maxMessage: int) -> None:
        self.protocol = protocol
        self._decoder = MessageDecoder(maxMessage)
        self._producer: IPushProducer | None = None
        self._batch: list[bytes] | None = None
        self._closing: WebSocketClosed | None = None

    @property
    def maxMessage(self) -> int:
        """Most bytes of one incoming message (may be raised after authentication)."""
        return self._decoder.maxMessage

    @maxMessage.setter
    def maxMessage(self, value: int) -> None:
        self._decoder.maxMessage = value

    # IProtocol (bytes from the transport)

    def makeConnection(self, transport: Any) -> None:
        """Take over C{transport} from the HTTP channel (gap 2 of the module)."""
        self.transport = transport
        transport.unregisterProducer()
        transport.registerProducer(self, True)
        self.protocol.negotiationStarted(self)

    def connectionMade(self) -> None:
        """Nothing: L{makeConnection} does the set-up."""

    def dataReceived(self, data: bytes) -> None:
        """Decode frames; what the protocol sends meanwhile is written once at the end."""
        if self.closed:
            return
        self._batch = []
        try:
            try:
                messages = self._decoder.feed(data)
            except WebSocketFrameError as e:
                self.protocol.badInput(e)
                self.loseConnection(e.code, str(e))
                return
            protocol = self.protocol
            for opcode, payload in messages:
                if self.closed:
                    return
                if opcode == OP_TEXT:
                    protocol.textMessageReceived(payload)  # type: ignore[arg-type]
                elif opcode == OP_BINARY:
                    protocol.bytesMessageReceived(payload)  # type: ignore[arg-type]
                elif opcode == OP_PING:
                    self._write(encodeFrame(OP_PONG, payload))  # type: ignore[arg-type]
                elif opcode == OP_PONG:
                    protocol.pongReceived(payload)  # type: ignore[arg-type]
                else:
                    self._peerClosed(payload)  # type: ignore[arg-type]
        finally:
            batch, self._batch = self._batch, None
            if batch:
                self._flush(batch[0] if len(batch) == 1 else b"".join(batch))

    def _peerClosed(self, payload: bytes) -> None:
        code, reason = decodeClose(payload)
        self._closing = WebSocketClosed(code, reason, byPeer=True)
        # RFC 6455 §5.5.1: answer with a Close frame (echoing the status), then the
        # server closes the TCP connection first (RFC 6455 §7.1.1).
        self._write(encodeFrame(OP_CLOSE, payload[:2]))
        self._shutDown()

    def connectionLost(self, reason: Failure) -> None:
        """Tell the protocol, with the close status if there was a close handshake."""
        self.closed = True
        self._producer = None
        if self._closing is not None and reason.check(ConnectionDone):
            reason = Failure(self._closing)
        self.protocol.connectionLost(reason)

    # WebSocketTransport (messages from the protocol)

    def sendTextMessage(self, text: str) -> None:
        """One text frame."""
        if not self.closed:
            self._write(encodeText(text))

    def sendBytesMessage(self, data: bytes) -> None:
        """One binary frame."""
        if not self.closed:
            self._write(encodeFrame(OP_BINARY, data))

    def sendBytesFragment(self, data: bytes, first: bool, last: bool) -> None:
        """One piece of a binary message sent in several frames (RFC 6455 §5.4), for a
        message relayed as it arrives instead of held whole: C{first} opens it with a
        Binary frame, later pieces are continuations, C{last} ends it. Only control
        frames may come between the pieces."""
        if not self.closed:
            self._write(encodeFrame(OP_BINARY if first else OP_CONTINUATION, data, fin=last))

    def ping(self, payload: bytes = b"") -> None:
        """One Ping frame (at most 125 bytes of payload)."""
        if not self.closed:
            self._write(encodeFrame(OP_PING, payload[:125]))

    def loseConnection(self, code: int = 1000, reason: str = "") -> None:
        """Send a Close frame with C{code} and C{reason}, then close after flushing.

        Harmless when already closing or closed.
        """
        if self.closed:
            return
        self._closing = WebSocketClosed(code, reason, byPeer=False)
        self._write(encodeFrame(OP_CLOSE, encodeClose(code, reason)))
        self._shutDown()

    def attachProducer(self, producer: IPushProducer) -> None:
        """Pause C{producer}, instead of this connection's reading, while the send buffer
        is full."""
        self._producer = producer
        if self.paused:
            producer.pauseProducing()

    def detachProducer(self) -> None:
        """Forget the attached producer; back-pressure pauses reading again."""
        producer, self._producer = self._producer, None
        if producer is not None and self.paused and self.transport is not None:
            self.transport.pauseProducing()

    # IPushProducer (called by the transport)

    def pauseProducing(self) -> None:
        """The send buffer is full."""
        self.paused = True
        if self._producer is not None:
            self._producer.pauseProducing()
        else:
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """The send buffer drained."""
        self.paused = False
        self.unflushed = 0
        if self._producer is not None:
            self._producer.resumeProducing()
        else:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """The transport is going away."""
        if self._producer is not None:
            self._producer.stopProducing()

    # writing

    def _write(self, data: bytes) -> None:
        if self._batch is not None:
            self._batch.append(data)
        else:
            self._flush(data)

    def _flush(self, data: bytes) -> None:
        if self.paused:
            self.unflushed += len(data)
        writeThrough(self.transport, data)

    def _shutDown(self) -> None:
        self.closed = True
        batch, self._batch = self._batch, None
        if batch:
            self._flush(b"".join(batch))
        self.transport.loseConnection()


class WebSocketUpgrade(WebSocketResource):
    """C{GET}: the RFC 6455 opening handshake (wsproto's), then a L{WebSocketConnection}.

    @param factory: builds the protocol from the L{Request}
        (C{twisted.web.websocket.WebSocketServerFactory}).
    @param maxMessage: the connection's initial L{WebSocketConnection.maxMessage}.

    A leaf: it answers on every path below where it is put (RustDesk clients use C{/},
    C{/ws/id} and C{/ws/relay}).
    """

    isLeaf = True

    def __init__(self, factory: WebSocketServerFactory[Any], maxMessage: int) -> None:
        super().__init__(factory)
        self.maxMessage = maxMessage

    def render_GET(self, request: Request) -> bytes | int:
        """Answer 400 to a bad upgrade request, else 101 and hand the socket over.

        The HTTP channel's idle timer needs no care: twisted.web stops it while a
        request is handled, and an upgraded request never finishes.
        """
        handshake = H11Handshake(ConnectionType.SERVER)
        headers = [
            (name, value)
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        ]
        try:
            handshake.initiate_upgrade_connection(headers, request.path)
        except RemoteProtocolError:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain")
            return b"WebSocket upgrade expected\n"
        protocol = self.factory.buildProtocol(request)
        accept = handshake.send(AcceptConnection())
        connection = WebSocketConnection(protocol, self.maxMessage)  # type: ignore[arg-type]
        request.channel._protocolUpgradeForWebsockets(connection)
        markEstablished(connection.transport)  # no longer pending at the listener
        connection.transport.write(accept)
        protocol.negotiationFinished()
        return NOT_DONE_YET


#: The answer to a request whose body is refused (RFC 9110 §15.5.14).
TOO_LARGE = (
    b"HTTP/1.1 413 Content Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
)


class BoundedHTTPChannel(HTTPChannel):
    """An C{HTTPChannel} that never buffers a request body above L{maxBody} bytes.

    twisted.web reads any body a client announces and spools one above 100 kB (or of
    unknown length: chunked) to a temporary file before a resource sees the request, so
    a C{POST /} of 200 MB, or a C{GET} carrying a body, fills the disk at the sender's
    speed (issue 14 item 12). Here the decision is taken once the headers are in, before
    a byte of body is stored: a body longer than L{maxBody}, or chunked, gets C{413} and
    the connection is closed; whatever the client still sends is dropped unread.

    @ivar maxBody: most bytes of request body accepted (0: none, the default of every
        p2pnet port, which serves only C{GET}); at most 65,536, so what is accepted is
        held in memory, never in a file.
    @ivar refused: a request was refused; the channel reads nothing more.
    """

    maxBody = 0
    refused = False

    def allHeadersReceived(self) -> None:
        """Refuse a body that is too long or of unknown length; else go on as usual."""
        length = self.length  # None: chunked, so unbounded
        if length is None or length > min(self.maxBody, 65536):
            self.refused = True
            self.transport.write(TOO_LARGE)  # type: ignore[union-attr]
            self.loseConnection()
            return
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        """The body (or the next request); dropped once a request was refused."""
        if not self.refused:
            super().rawDataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        """A request or header line; dropped once a request was refused."""
        if not self.refused:
            super().lineReceived(line)

    def allContentReceived(self) -> None:
        """Hand the request to the site, unless it was refused."""
        if not self.refused:
            super().allContentReceived()


@implementer(IProtocolNegotiationFactory)
class WebSocketSite(Site):
    """A C{Site} for a WebSocket port: request bodies refused (L{BoundedHTTPChannel}),
    no access-log line per request, ALPN C{http/1.1}.

    Connections are counted and logged by the services, per event.

    @ivar maxBody: the L{BoundedHTTPChannel.maxBody} of its connections (0: no body).
    """

    noisy = False
    maxBody = 0

    def __init__(
        self, resource: Resource, timeout: float = 60 * 60 * 12, reactor: Any = None
    ) -> None:
        super().__init__(resource, timeout=timeout, reactor=reactor)
        self.displayTracebacks = False

    def protocol(self) -> _GenericHTTPChannelProtocol:
        """A connection's protocol: twisted.web's, around a L{BoundedHTTPChannel}."""
        channel = BoundedHTTPChannel()
        channel.maxBody = self.maxBody
        return _GenericHTTPChannelProtocol(channel)

    def log(self, request: Any) -> None:
        """Not logged (scrapes of C{/metrics} would fill the log)."""

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN: HTTP/1.1 (see the module docstring: Twisted's TLS wrapper needs one)."""
        return [b"http/1.1"]
