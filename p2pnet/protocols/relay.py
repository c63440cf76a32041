# -*- test-case-name: test.test_relay_service -*-
"""Twisted protocols of the relay server: TCP 21117 and WebSocket 21119 legs.

A leg reads one C{RequestRelay} (a BytesCodec frame on TCP, a Binary message on WS),
then stops reading until L{p2pnet.services.relay.RelayService} pairs it. Two TCP legs
splice raw bytes; a TCP leg paired with a WS leg is re-framed message by message.
Reading is paused through L{_ReadGate} for two independent reasons: the partner's
transport is full (it is registered as that transport's streaming producer) and the
bandwidth budget is spent.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import RendezvousMessage
from p2pnet.codecs.rustdesk_frame import FrameDecoder, FrameError, encodeFrame
from p2pnet.codecs.websocket_frame import WebSocketFrameError
from p2pnet.protocols.rendezvous import STREAM_TIMEOUT
from p2pnet.protocols.websocket import (
    WebSocketConnection,
    WebSocketSite,
    WebSocketUpgrade,
    writeThrough,
)
from p2pnet.services.relay import FIRST_MESSAGE_TIMEOUT, Pair

__all__ = [
    "FIRST_FRAME_MAX",
    "RELAY_FRAME_MAX",
    "SPLICE_BUFFER",
    "RelayStreamFactory",
    "RelayStreamProtocol",
    "RelayWebSocket",
    "relayWebSocketSite",
]

#: Largest first frame (a RequestRelay) accepted.
FIRST_FRAME_MAX = 4096
#: Largest frame re-framed between a TCP and a WebSocket leg.
RELAY_FRAME_MAX = 16 * 1024 * 1024
#: Bytes read per system call on a spliced TCP leg, and the partner's write buffer above
#: which reading pauses: larger than Twisted's 64 KiB to cut per-call overhead at GB/s.
SPLICE_BUFFER = 256 * 1024


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


def _requestRelay(payload: bytes) -> Any:
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

    def _begin(self, service: Any, host: str) -> bool:
        self.service = service
        self.host = addrmangle.unmapV4(host)
        self.partner: Any = None
        self.pair: Pair | None = None
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

    def startSplicing(self, partner: Any, pair: Pair) -> None:
        """Paired with C{partner}: forward from now on, flow-controlled by its transport."""
        self.partner = partner
        self.pair = pair
        self._pending = False
        partner.registerProducer(self.gate)
        self.gate.resume("pairing")

    def pauseReading(self, reason: str) -> None:
        self.gate.pause(reason)

    def resumeReading(self, reason: str) -> None:
        self.gate.resume(reason)

    def _lost(self) -> None:
        self._done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._counted:
            self._counted = False
            self.service.legLost(self, self.pair, self._pending)


class RelayStreamProtocol(_LegBase, Protocol):
    """A TCP leg (§5): one framed RequestRelay, then raw bytes or re-framed messages."""

    def __init__(self, service: Any) -> None:
        self._service = service
        self._decoder = FrameDecoder(FIRST_FRAME_MAX)
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
        if self.pair is not None and self._raw:
            self.pair.forward(self, data)
            return
        try:
            if self.pair is None:
                payloads = self._decoder.feed(data, maxFrames=0 if self._asked else 1)
            else:
                payloads = self._decoder.feed(data)
        except FrameError as e:
            self.service.stats.add("bad_frame")
            self.service.badInput.warn("relay-frame", "bad frame from {host}: {error}",
                                       host=self.host, error=str(e))
            self.transport.abortConnection()
            return
        if self.pair is None:
            if payloads:
                self._firstMessage(payloads[0])
            return
        for payload in payloads:
            self.pair.forward(self, payload)

    def startSplicing(self, partner: Any, pair: Pair) -> None:
        self._leftover = self._decoder.takeBuffered()
        if partner.ws:
            self._decoder = FrameDecoder(RELAY_FRAME_MAX)
        else:
            self._raw = True
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = SPLICE_BUFFER
            self.transport.SEND_LIMIT = SPLICE_BUFFER
        super().startSplicing(partner, pair)

    def flushPending(self) -> None:
        """Forward what arrived after the RequestRelay frame, before pairing."""
        leftover, self._leftover = self._leftover, b""
        if leftover:
            self.dataReceived(leftover)

    def deliver(self, data: bytes) -> None:
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

    def __init__(self, service: Any) -> None:
        self.service = service

    def buildProtocol(self, addr: Any) -> RelayStreamProtocol:
        return RelayStreamProtocol(self.service)


class RelayWebSocket(_LegBase):
    """A WebSocket leg (§2.4, §5): one Binary message per RustDesk message."""

    ws = True

    def __init__(self, service: Any, host: str) -> None:
        self._service = service
        self._host = host
        self.transport: WebSocketConnection | None = None
        self._started = False

    def negotiationStarted(self, transport: WebSocketConnection) -> None:
        self.transport = transport
        tcp = transport.transport
        self.gate = _ReadGate(tcp.pauseProducing, tcp.resumeProducing, tcp.loseConnection)

    def badInput(self, error: WebSocketFrameError) -> None:
        """Counted; the connection closes itself (1009 for an oversized message)."""
        self._service.stats.add("bad_message")

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

    def flushPending(self) -> None:
        """Nothing is held back: WS messages after the first wait in the paused socket."""

    def pongReceived(self, payload: bytes) -> None:
        """Pongs carry nothing to relay."""

    def deliver(self, data: bytes) -> None:
        """One Binary message (a TCP partner's frame payload, or a WS partner's message)."""
        if self.transport is not None:
            self.transport.sendBytesMessage(data)

    def registerProducer(self, producer: IPushProducer) -> None:
        """Let C{producer} be paused when the WebSocket's TCP buffer is full."""
        if self.transport is not None:
            self.transport.attachProducer(producer)

    def close(self) -> None:
        if not self._done and self.transport is not None:
            self._done = True
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self._done = True
        if self._started:
            self._lost()


class _WebSocketFactory:
    def __init__(self, service: Any) -> None:
        self.service = service

    def buildProtocol(self, request: Any) -> RelayWebSocket:
        return RelayWebSocket(self.service, request.getClientAddress().host)


def relayWebSocketSite(service: Any) -> WebSocketSite:
    """The WS 21119 listener's factory (30 s to complete the upgrade request)."""
    return WebSocketSite(WebSocketUpgrade(_WebSocketFactory(service), RELAY_FRAME_MAX),
                         STREAM_TIMEOUT, service.reactor)
