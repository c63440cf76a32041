# -*- test-case-name: test.unit.test_relay_service -*-
"""Twisted protocols of the relay server: TCP 21117 and WebSocket 21119 legs.

A leg reads one C{RequestRelay} (a BytesCodec frame on TCP, a Binary message on WS, at
most L{FIRST_FRAME_MAX} bytes either way), then stops reading until its service pairs
it (rustdesk.md §5). Two TCP legs splice raw bytes; a TCP leg paired with a WS leg
passes each frame on as it arrives, as the pieces of one WebSocket message, so no
frame is held whole. Reading is paused through L{_ReadGate} for independent reasons:
the partner's transport is full (it is registered as that transport's streaming
producer) and the bandwidth budget is spent.

The service is seen through L{RelayHandler} and the pair through L{Splice}; the
service sees legs as L{RelayLeg}. All three are declared here, so this module imports
nothing from L{p2pnet.services}.
"""

from __future__ import annotations

from typing import Any, Protocol

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pnet.addresses import unmapped
from p2pnet.codecs.proto.rendezvous_pb2 import RendezvousMessage, RequestRelay
from p2pnet.codecs.rustdesk_frame import FrameDecoder, FrameError, FramePieces, encodeFrame
from p2pnet.codecs.websocket_frame import WebSocketFrameError
from p2pnet.protocols.rendezvous import STREAM_TIMEOUT
from p2pnet.protocols.transport import StreamTransport
from p2pnet.protocols.websocket import (
    WebSocketConnection,
    WebSocketSite,
    WebSocketUpgrade,
    writeThrough,
)
from p2pnet.ratelog import RateLimitedLog
from p2pnet.stats import Stats

__all__ = [
    "FIRST_FRAME_MAX",
    "FIRST_MESSAGE_TIMEOUT",
    "RELAY_FRAME_MAX",
    "SPLICE_BUFFER",
    "RelayHandler",
    "RelayLeg",
    "RelayStreamFactory",
    "RelayStreamProtocol",
    "RelayWebSocket",
    "Splice",
    "relayWebSocketSite",
]

#: Largest first frame (a RequestRelay) accepted, on TCP and on WebSocket.
FIRST_FRAME_MAX = 4096
#: Largest frame re-framed between a TCP and a WebSocket leg.
RELAY_FRAME_MAX = 16 * 1024 * 1024
#: Bytes read per system call on a spliced TCP leg, and the partner's write buffer above
#: which reading pauses: larger than Twisted's 64 KiB to cut per-call overhead at GB/s.
SPLICE_BUFFER = 256 * 1024
#: Seconds a new connection has to send its RequestRelay (rustdesk.md §5 step 2).
FIRST_MESSAGE_TIMEOUT = 30.0


class Splice(Protocol):
    """A paired relay as its legs see it."""

    def forward(self, source: RelayLeg, data: bytes, first: bool = True,
                last: bool = True) -> None:
        """Pass C{data} from C{source} to the other leg (a piece of a message unless
        C{first} and C{last})."""

    def close(self) -> None:
        """Close both legs."""


class RelayLeg(Protocol):
    """One relay connection as the service sees it.

    @ivar host: the remote IP address.
    @ivar ws: whether the leg is a WebSocket (message-wise) or TCP (byte stream).
    @ivar uuid: the uuid of its RequestRelay (empty before it arrived).
    """

    host: str
    ws: bool
    uuid: str

    def startSplicing(self, partner: RelayLeg, pair: Splice) -> None:
        """Paired: from now on forward what arrives to C{partner} through C{pair}."""

    def flushPending(self) -> None:
        """Both legs are splicing: forward what arrived before pairing."""

    def deliver(self, data: bytes, first: bool = True, last: bool = True) -> None:
        """Write C{data} (raw bytes, a message, or a piece of one) to this leg's peer."""

    def registerProducer(self, producer: IPushProducer) -> None:
        """Let C{producer} be paused while this leg's send buffer is full."""

    def pauseReading(self, reason: str) -> None:
        """Stop reading for C{reason} until L{resumeReading} with the same reason."""

    def resumeReading(self, reason: str) -> None:
        """Lift one reason to pause reading."""

    def close(self) -> None:
        """Close the connection."""


class RelayHandler(Protocol):
    """What legs need of the relay service."""

    clock: IReactorTime
    stats: Stats
    badInput: RateLimitedLog

    def legConnected(self, host: str) -> bool:
        """A new connection from C{host}: C{False} to refuse it."""

    def requestRelay(self, leg: RelayLeg, uuid: str, licenceKey: str) -> bool:
        """A leg's first RequestRelay: C{False} refuses it."""

    def legLost(self, leg: RelayLeg, pair: Splice | None, pending: bool) -> None:
        """A counted connection closed."""


@implementer(IPushProducer)
class _ReadGate:
    """Pauses a transport's reading while any reason to pause remains."""

    def __init__(self, pause: Any, resume: Any, stop: Any) -> None:
        self._pause, self._resume, self._stop = pause, resume, stop
        self._reasons: set[str] = set()

    def pause(self, reason: str) -> None:
        if not self._reasons:
            self._pause()
        self._reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason in self._reasons:
            self._reasons.discard(reason)
            if not self._reasons:
                self._resume()

    # IPushProducer: called by the partner's transport when its buffer fills/drains.
    def pauseProducing(self) -> None:
        self.pause("consumer")

    def resumeProducing(self) -> None:
        self.resume("consumer")

    def stopProducing(self) -> None:
        self._stop()


def _requestRelay(payload: bytes) -> RequestRelay | None:
    try:
        message = RendezvousMessage.FromString(payload)
    except (DecodeError, RuntimeError, ValueError):
        return None
    if message.WhichOneof("union") != "request_relay":
        return None
    return message.request_relay


class _LegBase:
    """Timer, first-message handling and pairing shared by TCP and WS legs."""

    ws = False
    gate: _ReadGate

    def _begin(self, service: RelayHandler, host: str) -> bool:
        self.service = service
        self.host = unmapped(host)
        self.partner: RelayLeg | None = None
        self.pair: Splice | None = None
        self.uuid = ""
        self._pending = False
        self._asked = False
        self._counted = False
        self._done = False
        self._timer: IDelayedCall | None = None
        if not service.legConnected(self.host):
            self.close()
            return False
        self._counted = self._pending = True
        self._timer = service.clock.callLater(FIRST_MESSAGE_TIMEOUT, self._timedOut)
        return True

    def close(self) -> None:
        """Close the connection."""
        raise NotImplementedError

    def flushPending(self) -> None:
        """Both legs are splicing: forward what arrived before pairing."""
        raise NotImplementedError

    def deliver(self, data: bytes, first: bool = True, last: bool = True) -> None:
        """Write C{data} (raw bytes, a message, or a piece of one) to this leg's peer."""
        raise NotImplementedError

    def registerProducer(self, producer: IPushProducer) -> None:
        """Let C{producer} be paused while this leg's send buffer is full."""
        raise NotImplementedError

    def _timedOut(self) -> None:
        self._timer = None
        self.service.stats.add("first_message_timeout")
        self.close()

    def _firstMessage(self, payload: bytes) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        rr = _requestRelay(payload)
        if rr is None:
            self.service.stats.add("bad_first_message")
            self.service.badInput.warn("relay-first", "relay connection from {host} did not "
                                       "start with RequestRelay", host=self.host)
            self.close()
            return
        self._asked = True
        self.uuid = rr.uuid
        self.gate.pause("pairing")
        if not self.service.requestRelay(self, rr.uuid, rr.licence_key):
            self.close()

    def startSplicing(self, partner: RelayLeg, pair: Splice) -> None:
        """Paired with C{partner}: forward from now on, flow-controlled by its transport."""
        self.partner = partner
        self.pair = pair
        self._pending = False
        partner.registerProducer(self.gate)
        self.gate.resume("pairing")

    def pauseReading(self, reason: str) -> None:
        """Stop reading for C{reason}."""
        self.gate.pause(reason)

    def resumeReading(self, reason: str) -> None:
        """Lift one reason to pause reading."""
        self.gate.resume(reason)

    def _lost(self) -> None:
        self._done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._counted:
            self._counted = False
            self.service.legLost(self, self.pair, self._pending)


class RelayStreamProtocol(_LegBase, TwistedProtocol):
    """A TCP leg (rustdesk.md §5): one framed RequestRelay, then raw bytes or frames passed on in
    pieces (to a WebSocket partner)."""

    transport: StreamTransport  # type: ignore[assignment]

    def __init__(self, service: RelayHandler) -> None:
        self._service = service
        self._decoder = FrameDecoder(FIRST_FRAME_MAX)
        self._pieces: FramePieces | None = None
        self._raw = False
        self._started = False
        self._leftover = b""

    def connectionMade(self) -> None:
        self.gate = _ReadGate(self.transport.pauseProducing, self.transport.resumeProducing,
                              self.transport.loseConnection)
        self._begin(self._service, self.transport.getPeer().host)
        self._started = True

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        pair = self.pair
        if pair is not None and self._raw:
            pair.forward(self, data)
            return
        try:
            if pair is not None and self._pieces is not None:
                for piece, first, last in self._pieces.feed(data):
                    pair.forward(self, piece, first, last)
                return
            payloads = self._decoder.feed(data, maxFrames=0 if self._asked else 1)
        except FrameError as e:
            self.service.stats.add("bad_frame")
            self.service.badInput.warn("relay-frame", "bad frame from {host}: {error}",
                                       host=self.host, error=str(e))
            self.transport.abortConnection()
            return
        if payloads:
            self._firstMessage(payloads[0])

    def startSplicing(self, partner: RelayLeg, pair: Splice) -> None:
        self._leftover = self._decoder.takeBuffered()
        if partner.ws:
            self._pieces = FramePieces(RELAY_FRAME_MAX)
        else:
            self._raw = True
        tcp: Any = self.transport  # Twisted's TCP transport: its read size, write limit
        if hasattr(tcp, "bufferSize"):
            tcp.bufferSize = SPLICE_BUFFER
            tcp.SEND_LIMIT = SPLICE_BUFFER
        super().startSplicing(partner, pair)

    def flushPending(self) -> None:
        """Forward what arrived after the RequestRelay frame, before pairing."""
        leftover, self._leftover = self._leftover, b""
        if leftover:
            self.dataReceived(leftover)

    def deliver(self, data: bytes, first: bool = True, last: bool = True) -> None:
        """Raw to a TCP partner's bytes; one frame per message from a WS partner.

        Raw bytes go straight to the socket when nothing is queued before them (saving
        Twisted's buffer copy and a reactor turn per chunk); what the kernel does not
        take is queued as usual, which engages back-pressure.
        """
        if self._raw:
            writeThrough(self.transport, data)
        else:
            self.transport.write(encodeFrame(data))

    def registerProducer(self, producer: IPushProducer) -> None:
        """Let C{producer} (the partner's reading) be paused when our buffer is full."""
        self.transport.registerProducer(producer, True)

    def close(self) -> None:
        """Close the connection."""
        if not self._done:
            self._done = True
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._done = True
        if self._started:
            self._lost()


class RelayStreamFactory(Factory):
    """Builds TCP legs."""

    noisy = False

    def __init__(self, service: RelayHandler) -> None:
        self.service = service

    def buildProtocol(self, addr: Any) -> RelayStreamProtocol:
        return RelayStreamProtocol(self.service)


class RelayWebSocket(_LegBase):
    """A WebSocket leg (rustdesk.md §2.4, §5): one Binary message per RustDesk message.

    Until it is paired the connection accepts messages of at most L{FIRST_FRAME_MAX}
    bytes (checked on the frame header, before anything is buffered); then
    L{RELAY_FRAME_MAX}.
    """

    ws = True

    def __init__(self, service: RelayHandler, host: str) -> None:
        self._service = service
        self._host = host
        self.transport: WebSocketConnection | None = None
        self._started = False

    def negotiationStarted(self, transport: WebSocketConnection) -> None:
        self.transport = transport
        transport.maxMessage = FIRST_FRAME_MAX
        tcp = transport.transport
        self.gate = _ReadGate(tcp.pauseProducing, tcp.resumeProducing, tcp.loseConnection)

    def badInput(self, error: WebSocketFrameError) -> None:
        """Counted; the connection closes itself (1009 for an oversized message)."""
        self._service.stats.add("bad_message")
        if getattr(self, "pair", None) is None:
            self._service.stats.add("bad_first_message")

    def negotiationFinished(self) -> None:
        self._started = True
        self._begin(self._service, self._host)

    def bytesMessageReceived(self, data: bytes) -> None:
        if self._done or not self._started:
            return
        if self.pair is not None:
            self.pair.forward(self, data)
        elif len(data) > FIRST_FRAME_MAX:
            self.service.stats.add("bad_first_message")
            self.close()
        else:
            self._firstMessage(data)

    def textMessageReceived(self, message: str) -> None:
        self.bytesMessageReceived(message.encode("utf-8", "surrogateescape"))

    def startSplicing(self, partner: RelayLeg, pair: Splice) -> None:
        if self.transport is not None:
            self.transport.maxMessage = RELAY_FRAME_MAX
        super().startSplicing(partner, pair)

    def flushPending(self) -> None:
        """Nothing is held back: WS messages after the first wait in the paused socket."""

    def pongReceived(self, payload: bytes) -> None:
        """Pongs carry nothing to relay."""

    def deliver(self, data: bytes, first: bool = True, last: bool = True) -> None:
        """One Binary message (a TCP partner's frame, or a WS partner's message), or a
        piece of one as a TCP partner's frame arrives."""
        if self.transport is None:
            return
        if first and last:
            self.transport.sendBytesMessage(data)
        else:
            self.transport.sendBytesFragment(data, first, last)

    def registerProducer(self, producer: IPushProducer) -> None:
        """Let C{producer} be paused when the WebSocket's TCP buffer is full."""
        if self.transport is not None:
            self.transport.attachProducer(producer)

    def close(self) -> None:
        """Close the WebSocket."""
        if not self._done and self.transport is not None:
            self._done = True
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self._done = True
        if self._started:
            self._lost()


class _WebSocketFactory:
    def __init__(self, service: RelayHandler) -> None:
        self.service = service

    def buildProtocol(self, request: Any) -> RelayWebSocket:
        return RelayWebSocket(self.service, request.getClientAddress().host)


def relayWebSocketSite(service: RelayHandler, reactor: Any) -> WebSocketSite:
    """The WS 21119 listener's factory (30 s to complete the upgrade request); its
    connections start with the first-message limit (L{FIRST_FRAME_MAX})."""
    return WebSocketSite(WebSocketUpgrade(_WebSocketFactory(service), FIRST_FRAME_MAX),
                         STREAM_TIMEOUT, reactor)
