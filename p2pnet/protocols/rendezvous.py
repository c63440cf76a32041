# -*- test-case-name: test.unit.test_rendezvous_protocol -*-
"""Twisted protocols of the rendezvous server: UDP 21116, TCP 21116/21115, WS 21118.

Thin: frame, decrypt, parse, hand the message to the service, and send what it asks for.
The service is seen through L{RendezvousHandler}, declared here with L{MessageLink} (what
the TCP and WebSocket links share), so this module imports nothing from
L{p2pnet.services}.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import KeyExchange, RendezvousMessage
from p2pnet.codecs.rustdesk_crypto import (
    CryptoError,
    SecretStream,
    openKeyExchangeReply,
    signedBoxKey,
)
from p2pnet.codecs.rustdesk_frame import FrameDecoder, FrameError, encodeFrame
from p2pnet.codecs.websocket_frame import WebSocketFrameError
from p2pnet.protocols.transport import StreamTransport
from p2pnet.protocols.websocket import WebSocketConnection, WebSocketSite, WebSocketUpgrade
from p2pnet.ratelog import RateLimitedLog
from p2pnet.stats import Stats

__all__ = [
    "KEY_EXCHANGE_DELAY",
    "MAX_DATAGRAM",
    "MAX_MESSAGE",
    "MessageLink",
    "RendezvousDatagramProtocol",
    "RendezvousHandler",
    "RendezvousStreamFactory",
    "RendezvousStreamProtocol",
    "RendezvousWebSocket",
    "STREAM_TIMEOUT",
    "webSocketSite",
]

#: Largest datagram parsed; a RendezvousMessage is far smaller.
MAX_DATAGRAM = 4096
#: Largest framed or WebSocket message accepted on a rendezvous connection.
MAX_MESSAGE = 64 * 1024
#: Seconds a connection may wait for its next message (rustdesk.md §4.4).
STREAM_TIMEOUT = 30.0
#: Seconds of client silence after which the server offers its KeyExchange (rustdesk.md §4.17).
KEY_EXCHANGE_DELAY = 0.3
#: Seconds a link over its source's message budget waits before asking again.
STREAM_RETRY = 0.1
#: Messages a paused link may hold; a WebSocket whose reading resumes early (its send
#: buffer drained) past this is closed.
MAX_HELD = 4096


class SigningKeyHolder(Protocol):
    """The part of the server's key the TCP listeners need."""

    @property
    def signingKey(self) -> SigningKey | None:
        """The key that signs the KeyExchange offer, or C{None}: no offer."""


class RendezvousHandler(Protocol):
    """What the rendezvous protocols need of their service."""

    clock: IReactorTime
    reactor: Any
    stats: Stats
    badInput: RateLimitedLog

    @property
    def key(self) -> SigningKeyHolder:
        """The server's key (its signing key starts the TCP KeyExchange)."""

    def datagramReceived(self, message: RendezvousMessage, addr: tuple[str, int],
                         sender: RendezvousDatagramProtocol) -> None:
        """One decoded datagram; replies go through C{sender}."""

    def connectionOpened(self, link: MessageLink) -> bool:
        """A TCP/WS link opened: C{False} refuses it (over a connection bound)."""

    def connectionClosed(self, link: MessageLink, counted: bool = True) -> None:
        """A link closed; C{counted} if L{connectionOpened} accepted it."""

    def admitMessage(self, link: MessageLink) -> bool:
        """Whether C{link}'s source may have one more message handled now."""

    def streamMessage(self, message: RendezvousMessage, link: MessageLink) -> bool:
        """One message from a link; C{False} closes the link."""


def _parse(data: bytes) -> RendezvousMessage | None:
    try:
        return RendezvousMessage.FromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return None


class RendezvousDatagramProtocol(DatagramProtocol):
    """UDP 21116: one RendezvousMessage per datagram, no framing (rustdesk.md §2.3)."""

    noisy = False

    def __init__(self, service: RendezvousHandler) -> None:
        self.service = service

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) > MAX_DATAGRAM:
            message = None
        else:
            message = _parse(data)
        if message is None:
            self.service.stats.add("bad_datagram")
            self.service.badInput.warn("udp-garbage", "undecodable datagram from {host}",
                                       host=addr[0])
            return
        self.service.datagramReceived(message, (addr[0], addr[1]), self)

    def sendMessage(self, message: RendezvousMessage, addr: tuple[str, int]) -> None:
        """Send C{message} as one datagram to C{addr}."""
        if self.transport is None:  # the port is closed: the service is stopping
            return
        try:
            self.transport.write(message.SerializeToString(), addr)
        except OSError as e:
            self.service.stats.add("udp_send_error")
            self.service.badInput.warn("udp-send", "cannot send to {host}: {error}",
                                       host=addr[0], error=e)


class MessageLink:
    """What TCP and WebSocket links share: idle timer, registration mode, per-source
    budget, dispatch. Subclasses move the bytes.

    @ivar peer: the remote C{(host, port)}, IPv4 unmapped (rustdesk.md §2.3).
    @ivar registeredId: the peer id registered over this link, if any.
    """

    ws = False
    natPort = False

    def send(self, message: RendezvousMessage) -> None:
        """Frame (and encrypt, once keyed) one message."""
        raise NotImplementedError

    def sendHeartbeat(self) -> None:
        """Send an empty message (rustdesk.md §4.17)."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush and close the connection."""
        raise NotImplementedError

    def _setup(self, service: RendezvousHandler, peer: tuple[str, int]) -> None:
        self.service = service
        self.peer = (addrmangle.unmapV4(peer[0]), peer[1])
        self.registeredId: str | None = None
        self.punchStored = False
        self._timeout = STREAM_TIMEOUT
        self._idle: IDelayedCall | None = None
        self._heartbeat: IDelayedCall | None = None
        self._counted = False
        self._closed = False
        self._beatOutstanding = False
        self._held: deque[bytes] = deque()
        self._retry: IDelayedCall | None = None
        self._forgotten = False

    def _opened(self) -> bool:
        self._counted = self.service.connectionOpened(self)
        if not self._counted:
            self.close()
            return False
        self._idle = self.service.clock.callLater(self._timeout, self._timedOut)
        return True

    def _timedOut(self) -> None:
        self._idle = None
        self.service.stats.add("stream_timeout")
        self.close()

    def _activity(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._timeout)

    def becomeRegistered(self, keepAlive: float) -> None:
        """Long-lived registration link: idle limit 1.5 x keep-alive, heartbeats at half."""
        self._timeout = keepAlive * 1.5
        self._activity()
        if self._heartbeat is None and not self._closed:
            self._heartbeat = self.service.clock.callLater(keepAlive / 2, self._beat, keepAlive)

    def _beat(self, keepAlive: float) -> None:
        self._heartbeat = None
        if self._closed:
            return
        self.sendHeartbeat()
        self._beatOutstanding = True
        self._heartbeat = self.service.clock.callLater(keepAlive / 2, self._beat, keepAlive)

    def _pauseReading(self) -> None:
        """Stop reading from the transport."""

    def _resumeReading(self) -> None:
        """Read from the transport again."""

    def _received(self, payloads: list[bytes]) -> None:
        """Handle C{payloads} in order, as far as the source's budget allows; the rest
        wait (reading paused) for L{STREAM_RETRY} seconds at a time."""
        held = self._held
        if held or self._retry is not None:
            held.extend(payloads)
            if len(held) > MAX_HELD:
                self.service.stats.add("stream_overflow")
                self.close()
            return
        for i, payload in enumerate(payloads):
            if self._closed:
                return
            if not self.service.admitMessage(self):
                held.extend(payloads[i:])
                self._hold()
                return
            self._dispatch(payload)

    def _hold(self) -> None:
        self._pauseReading()
        self._retry = self.service.clock.callLater(STREAM_RETRY, self._release)

    def _release(self) -> None:
        self._retry = None
        held = self._held
        while held and not self._closed:
            if not self.service.admitMessage(self):
                self._hold()
                return
            self._dispatch(held.popleft())
        if not self._closed:
            self._resumeReading()

    def _dispatch(self, payload: bytes) -> None:
        if self._closed:
            return
        self._activity()
        if not payload:
            # A heartbeat: the answer to ours, or the peer's own, which we answer. Never
            # both, so two sides that answer heartbeats do not ping-pong forever.
            if self._beatOutstanding:
                self._beatOutstanding = False
            elif self.registeredId is not None:
                self.sendHeartbeat()
            return
        message = _parse(payload)
        if message is None:
            self.service.stats.add("bad_message")
            self.service.badInput.warn("stream-garbage", "undecodable message from {host}",
                                       host=self.peer[0])
            self.close()
            return
        if message.WhichOneof("union") == "key_exchange":
            self._keyExchange(message.key_exchange)
            return
        if not self.service.streamMessage(message, self):
            self.close()

    def _keyExchange(self, kx: KeyExchange) -> None:
        self.service.stats.add("bad_key_exchange")
        self.close()

    def _abortTransport(self) -> None:
        """Drop the connection without flushing."""

    def abort(self) -> None:
        """Drop the connection now, unflushed, and let the service forget it at once:
        the service is stopping. A link whose reading is paused (a throttled flood) would
        otherwise only notice its peer leave once the budget lets it read again."""
        self._closed = True
        self._abortTransport()
        self._stopped()

    def _stopped(self) -> None:
        self._closed = True
        if self._forgotten:
            return
        self._forgotten = True
        self._held.clear()
        for call in (self._idle, self._heartbeat, self._retry):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._heartbeat = self._retry = None
        self.service.connectionClosed(self, self._counted)


class RendezvousStreamProtocol(MessageLink, TwistedProtocol):
    """TCP 21116 or 21115: BytesCodec frames, optionally encrypted after KeyExchange.

    On 21116, with a signing key, the server offers its signed box key (rustdesk.md §4.17) to a
    client that stays silent for L{KEY_EXCHANGE_DELAY} seconds: RustDesk's C{secure_tcp}
    waits for it before sending anything. A client that answers with C{KeyExchange}
    switches the connection to encrypted frames. Clients that speak first (punch
    requests and their one-shot answers, the NAT test) get no offer: they would leave it
    unread, and closing a socket with unread data resets the connection, which can
    destroy their message in flight.
    """

    transport: StreamTransport  # type: ignore[assignment]

    def __init__(self, service: RendezvousHandler, natPort: bool, boxKey: PrivateKey | None,
                 signedKey: bytes) -> None:
        self._service = service
        self.natPort = natPort
        self._boxKey = boxKey
        self._signedKey = signedKey
        self._decoder = FrameDecoder(MAX_MESSAGE)
        self._stream: SecretStream | None = None
        self._offered = False
        self._offer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self._setup(self._service, (peer.host, peer.port))
        if not self._opened():
            return
        if self._boxKey is not None and not self.natPort:
            self._offer = self.service.clock.callLater(KEY_EXCHANGE_DELAY, self._sendOffer)

    def _sendOffer(self) -> None:
        self._offer = None
        if not self._closed:
            self._offered = True
            self._write(RendezvousMessage(
                key_exchange=KeyExchange(keys=[self._signedKey])).SerializeToString())

    def _cancelOffer(self) -> None:
        if self._offer is not None and self._offer.active():
            self._offer.cancel()
        self._offer = None

    def _write(self, payload: bytes) -> None:
        if self._stream is not None and payload:
            payload = self._stream.seal(payload)
        self.transport.write(encodeFrame(payload))

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        if self._offer is not None:
            self._cancelOffer()
        try:
            payloads = self._decoder.feed(data)
        except FrameError as e:
            self.service.stats.add("bad_frame")
            self.service.badInput.warn("stream-frame", "bad frame from {host}: {error}",
                                       host=self.peer[0], error=str(e))
            self.transport.abortConnection()
            return
        if payloads:
            self._received(payloads)

    def _dispatch(self, payload: bytes) -> None:
        # Decrypted here, in order: a KeyExchange reply switches on decryption for the
        # frames after it, even those that came in the same read.
        if self._stream is not None and not self._closed:
            try:
                payload = self._stream.open(payload)
            except CryptoError:
                self.service.stats.add("decrypt_error")
                self.close()
                return
        super()._dispatch(payload)

    def _pauseReading(self) -> None:
        self.transport.pauseProducing()

    def _abortTransport(self) -> None:
        self._cancelOffer()
        self.transport.abortConnection()

    def _resumeReading(self) -> None:
        self.transport.resumeProducing()

    def _keyExchange(self, kx: KeyExchange) -> None:
        if not self._offered or self._stream is not None or len(kx.keys) != 2 or \
                self._boxKey is None:
            super()._keyExchange(kx)
            return
        try:
            key = openKeyExchangeReply(self._boxKey, bytes(kx.keys[0]), bytes(kx.keys[1]))
        except CryptoError:
            super()._keyExchange(kx)
            return
        self._stream = SecretStream(key)
        self.service.stats.add("secure_links")

    def send(self, message: RendezvousMessage) -> None:
        """Frame (and encrypt) one message."""
        if not self._closed:
            self._write(message.SerializeToString())

    def sendHeartbeat(self) -> None:
        """A zero-length frame, never encrypted (rustdesk.md §2.2)."""
        if not self._closed:
            self.transport.write(encodeFrame(b""))

    def close(self) -> None:
        """Flush and close."""
        if not self._closed:
            self._closed = True
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closed = True
        self._cancelOffer()
        if hasattr(self, "service"):
            self._stopped()


class RendezvousStreamFactory(Factory):
    """Builds L{RendezvousStreamProtocol}s for one listener."""

    noisy = False

    def __init__(self, service: RendezvousHandler, natPort: bool) -> None:
        self.service = service
        self.natPort = natPort
        signing = service.key.signingKey
        self.boxKey = PrivateKey.generate() if signing is not None else None
        self.signedKey = signedBoxKey(signing, self.boxKey) \
            if signing is not None and self.boxKey is not None else b""

    def buildProtocol(self, addr: Any) -> RendezvousStreamProtocol:
        return RendezvousStreamProtocol(self.service, self.natPort, self.boxKey,
                                        self.signedKey)


class RendezvousWebSocket(MessageLink):
    """WS 21118: one Binary message per RendezvousMessage, no framing, no KeyExchange."""

    ws = True

    def __init__(self, service: RendezvousHandler, peer: tuple[str, int]) -> None:
        self._setup(service, peer)
        self.transport: WebSocketConnection | None = None

    def negotiationStarted(self, transport: WebSocketConnection) -> None:
        self.transport = transport

    def badInput(self, error: WebSocketFrameError) -> None:
        """Counted and logged; the connection closes itself (1009 for an oversized one)."""
        self.service.stats.add("bad_message")
        self.service.badInput.warn("ws-frame", "bad WebSocket input from {host}: {error}",
                                   host=self.peer[0], error=str(error))

    def negotiationFinished(self) -> None:
        self._opened()

    def bytesMessageReceived(self, data: bytes) -> None:
        self._received([data])

    def _pauseReading(self) -> None:
        if self.transport is not None and self.transport.transport is not None:
            self.transport.transport.pauseProducing()

    def _resumeReading(self) -> None:
        if self.transport is not None and self.transport.transport is not None:
            self.transport.transport.resumeProducing()

    def _abortTransport(self) -> None:
        if self.transport is not None and self.transport.transport is not None:
            self.transport.transport.abortConnection()

    def textMessageReceived(self, message: str) -> None:
        self.bytesMessageReceived(message.encode("utf-8", "surrogateescape"))

    def pongReceived(self, payload: bytes) -> None:
        self._activity()

    def send(self, message: RendezvousMessage) -> None:
        """One Binary message."""
        if not self._closed and self.transport is not None:
            self.transport.sendBytesMessage(message.SerializeToString())

    def sendHeartbeat(self) -> None:
        """A zero-length Binary message (rustdesk.md §4.17)."""
        if not self._closed and self.transport is not None:
            self.transport.sendBytesMessage(b"")

    def close(self) -> None:
        """Close the WebSocket."""
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self._closed = True
        self._stopped()


class _WebSocketFactory:
    def __init__(self, service: RendezvousHandler) -> None:
        self.service = service

    def buildProtocol(self, request: Any) -> RendezvousWebSocket:
        peer = request.getClientAddress()
        return RendezvousWebSocket(self.service, (peer.host, peer.port))


def webSocketSite(service: RendezvousHandler) -> WebSocketSite:
    """The WS 21118 listener's factory: 30 s to complete the upgrade request, after
    which the WebSocket protocol's own timers apply."""
    return WebSocketSite(WebSocketUpgrade(_WebSocketFactory(service), MAX_MESSAGE),
                         STREAM_TIMEOUT, service.reactor)
