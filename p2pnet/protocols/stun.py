# -*- test-case-name: test.unit.test_protocols_stun -*-
"""STUN server transports: one UDP socket, and one TCP/TLS connection.

Thin by design: they frame, decode with L{p2pnet.codecs.stun}, and hand the message to
a L{StunHandler} (the service) together with themselves as the way back. They hold no
policy. No exception escapes: a handler failure is reported to the handler's
C{internalError} and the transport carries on.

Services answer with L{Reply} objects; L{StunResponder} is the one place an answer is
finished (SOFTWARE, MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 with the key the
request was checked with, FINGERPRINT) and sent through its link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.protocols.policies import TimeoutMixin
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from p2pnet.codecs.channeldata import CHANNEL_DATA, STUN, classify
from p2pnet.codecs.stun import (
    Attr,
    Message,
    StreamDecoder,
    StunClass,
    StunDecodeError,
    decode,
)

__all__ = [
    "StunDatagramProtocol",
    "AdmittingTLSFactory",
    "StunHandler",
    "StunStreamFactory",
    "StunStreamProtocol",
]


class StunHandler(TypingProtocol):
    """What a STUN transport hands its input to (implemented by the STUN service).

    @ivar channelMax: the highest ChannelData channel number passed on as ChannelData
        (0x4FFF; 0x7FFE while TURN accepts RFC 5766 channels).
    """

    channelMax: int

    def messageReceived(self, message: Message, link: StunLink, source: tuple[str, int]) -> None:
        """A well-formed STUN message arrived on C{link} from C{source}."""

    def channelDataReceived(self, data: bytes, link: StunLink, source: tuple[str, int]) -> None:
        """A frame starting with 0b01 (TURN ChannelData) arrived."""

    def malformed(self, data: bytes, error: StunDecodeError, link: StunLink,
                  source: tuple[str, int]) -> None:
        """Bytes that look like STUN but do not decode."""

    def garbage(self, data: bytes, link: StunLink, source: tuple[str, int]) -> None:
        """Bytes that are neither STUN nor ChannelData."""

    def sendFailed(self, error: OSError, link: StunLink, destination: tuple[str, int]) -> None:
        """The kernel refused to send a datagram from C{link}."""

    def internalError(self, failure: Failure, link: StunLink) -> None:
        """The handler itself raised while handling input from C{link}."""


class StunLink(TypingProtocol):
    """A way back to a client: a UDP socket or a TCP/TLS connection."""

    kind: str
    addressIndex: int
    portIndex: int
    local: tuple[str, int]

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        """Send C{data}; a stream ignores C{destination} (it has one peer)."""


def _dispatch(handler: StunHandler, link: StunLink, data: bytes,
              source: tuple[str, int]) -> None:
    kind = classify(data, handler.channelMax)
    if kind == STUN:
        try:
            message = decode(data)
        except StunDecodeError as e:
            handler.malformed(data, e, link, source)
            return
        handler.messageReceived(message, link, source)
    elif kind == CHANNEL_DATA:
        handler.channelDataReceived(data, link, source)
    else:
        handler.garbage(data, link, source)


class Reply:
    """An answer a service hands back: the message and how to sign and route it.

    @ivar message: the response (built with C{request.reply()}/C{errorReply()}).
    @ivar key: the long-term key the request was authenticated with, or C{None}.
    @ivar sha256: sign with MESSAGE-INTEGRITY-SHA256 (the request used it).
    @ivar link: the link to send from (RFC 5780 CHANGE-REQUEST), or C{None}: the one
        the request came on.
    @ivar destination: where to send (RFC 5780 RESPONSE-PORT), or C{None}: the source.
    """

    __slots__ = ("message", "key", "sha256", "link", "destination")

    def __init__(self, message: Message, key: bytes | None = None, sha256: bool = False,
                 link: StunLink | None = None,
                 destination: tuple[str, int] | None = None) -> None:
        self.message = message
        self.key = key
        self.sha256 = sha256
        self.link = link
        self.destination = destination


class StunResponder:
    """Finishes and sends every STUN/TURN answer; nothing else encodes one.

    - RFC 3489 classic answers: as built (no attribute of RFC 5389 added).
    - Error answers without a key (to unauthenticated requests): as small as the RFCs
      allow: no SOFTWARE, FINGERPRINT only when the request had one (RFC 8489 §14.7).
    - Everything else: SOFTWARE when configured, MESSAGE-INTEGRITY (or -SHA256) with
      the key (RFC 8489 §9.2.4: "the server MUST ... include a MESSAGE-INTEGRITY ...
      using the same password"), FINGERPRINT last.

    @ivar software: the SOFTWARE value, or empty.
    """

    def __init__(self, software: bytes = b"") -> None:
        self.software = software

    def encode(self, reply: Message, request: Message, key: bytes | None = None,
               sha256: bool = False) -> bytes:
        """The bytes of C{reply} to C{request}, finished as the class says."""
        if reply.classic:
            return reply.encode()
        if key is None and reply.cls == StunClass.ERROR:
            return reply.encode(fingerprint=request.get(Attr.FINGERPRINT) is not None)
        if self.software:
            reply.add(Attr.SOFTWARE, self.software)
        return reply.encode(key, sha256=sha256, fingerprint=True)

    def send(self, link: StunLink, destination: tuple[str, int], reply: Message,
             request: Message, key: bytes | None = None, sha256: bool = False) -> bytes:
        """Finish C{reply} (L{encode}) and send it on C{link}; return the bytes sent
        (TURN keeps an Allocate's answer to repeat it to a retransmission)."""
        data = self.encode(reply, request, key, sha256)
        link.send(data, destination)
        return data


#: Bytes one UDP socket reads per reactor turn (Twisted's default is 256 KiB, which for
#: a flood of 20-byte requests is 13,000 datagrams, tens of milliseconds during which no
#: other connection is served). 32 KiB is about 1,600 such datagrams, or 27 full-size
#: TURN data datagrams.
UDP_READ_PER_TURN = 32 * 1024


class StunDatagramProtocol(DatagramProtocol):
    """One UDP socket of the STUN service.

    @ivar kind: C{"udp"}.
    @ivar addressIndex: 0 on a primary address, 1 on the RFC 5780 alternate address.
    @ivar portIndex: 0 on the primary port, 1 on the RFC 5780 alternate port.
    @ivar local: the C{(host, port)} the socket is bound to.
    """

    kind = "udp"
    noisy = False

    def __init__(self, handler: StunHandler, addressIndex: int = 0, portIndex: int = 0) -> None:
        self.handler = handler
        self.addressIndex = addressIndex
        self.portIndex = portIndex

    def startProtocol(self) -> None:
        host = self.transport.getHost()  # type: ignore[union-attr]
        self.local = (host.host, host.port)
        if hasattr(self.transport, "maxThroughput"):
            self.transport.maxThroughput = UDP_READ_PER_TURN  # type: ignore[union-attr]
        # Straight to the socket: the destination always comes from the kernel (a
        # source address), so the per-write address parsing of Twisted's UDP port is
        # wasted work; it was a tenth of the server's CPU per Binding.
        sock = getattr(self.transport, "socket", None)
        self._sendto = sock.sendto if sock is not None else self.transport.write  # type: ignore[union-attr]

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        source = (addr[0], addr[1])
        try:
            _dispatch(self.handler, self, data, source)
        except Exception:
            self.handler.internalError(Failure(), self)

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        """Send one datagram from this socket; a refusal is reported, not raised."""
        try:
            self._sendto(data, destination)
        except OSError as e:
            self.handler.sendFailed(e, self, destination)


class StunStreamProtocol(Protocol, TimeoutMixin):
    """One STUN connection over TCP or TLS: RFC 8489 §6.2.2 framing.

    Closed when the stream holds something that is neither STUN nor ChannelData (a
    stream cannot be resynchronised), and when it stays silent for C{idleTimeout}.
    """

    def __init__(self, factory: StunStreamFactory, host: str) -> None:
        self.factory = factory
        self.host = host
        self.handler = factory.handler
        self.kind = factory.kind
        self.addressIndex = factory.addressIndex
        self.portIndex = factory.portIndex
        self._decoder = StreamDecoder(self.handler.channelMax)
        #: Set by L{startRaw}: where bytes go once this is an RFC 6062 data connection.
        self.rawReceiver: Callable[[bytes], None] | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """TimeoutMixin's timer source: the factory's (injected) clock."""
        return self.factory.clock.callLater(period, func)

    def connectionMade(self) -> None:
        transport: Any = self.transport
        peer, host = transport.getPeer(), transport.getHost()
        self.peer = (peer.host, peer.port)
        self.local = (host.host, host.port)
        self.setTimeout(self.factory.idleTimeout)

    def dataReceived(self, data: bytes) -> None:
        if self.rawReceiver is not None:
            self.rawReceiver(data)
            return
        self.resetTimeout()
        try:
            frames = self._decoder.feed(data)
        except StunDecodeError:
            self.handler.garbage(data, self, self.peer)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        for index, frame in enumerate(frames):
            try:
                _dispatch(self.handler, self, frame, self.peer)
            except Exception:
                self.handler.internalError(Failure(), self)
            if self.rawReceiver is not None:
                # A ConnectionBind made this a data connection: the rest is payload.
                rest = b"".join(frames[index + 1 :]) + self._decoder.takeBuffered()
                if rest:
                    self.rawReceiver(rest)
                return

    def startRaw(self, receiver: Callable[[bytes], None]) -> None:
        """Stop STUN framing (RFC 6062 §5.4 ConnectionBind): every later byte
        goes to C{receiver} as it is, and the STUN idle timeout no longer applies."""
        self.rawReceiver = receiver
        self.setTimeout(None)

    def send(self, data: bytes, destination: tuple[str, int] | None = None) -> None:
        """Write C{data} to this connection."""
        self.transport.write(data)  # type: ignore[union-attr]

    def timeoutConnection(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)
        self.factory.connectionClosed(self)


@implementer(IProtocolNegotiationFactory)
class StunStreamFactory(Factory):
    """Makes L{StunStreamProtocol}s for one TCP or TLS listener.

    Admission (total and per-address connection limits) is the handler's decision,
    through its C{admit(host)} and C{release(host)} methods.

    Over TLS it names the RFC 7443 ALPN protocols, C{stun.turn} and
    C{stun.nat-discovery}: a client offering them (coturn's clients do) gets one chosen
    (Twisted's ALPN callback would otherwise fail such a handshake with an alert).
    """

    noisy = False

    def __init__(self, handler: StunStreamHandler, kind: str, clock: IReactorTime,
                 idleTimeout: float, addressIndex: int = 0, portIndex: int = 0) -> None:
        self.handler = handler
        self.kind = kind
        self.clock = clock
        self.idleTimeout = idleTimeout
        self.addressIndex = addressIndex
        self.portIndex = portIndex
        self.connections: set[StunStreamProtocol] = set()

    def buildProtocol(self, addr: IAddress | None) -> StunStreamProtocol | None:
        host = getattr(addr, "host", "")
        if not self.handler.admit(host):
            return None
        protocol = StunStreamProtocol(self, host)
        self.connections.add(protocol)
        return protocol

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN protocol IDs for STUN and TURN over TLS (RFC 7443 §4.3)."""
        return [b"stun.turn", b"stun.nat-discovery"]

    def connectionClosed(self, protocol: StunStreamProtocol) -> None:
        """Forget a connection, give its admission back and tell the handler."""
        if protocol in self.connections:
            self.connections.discard(protocol)
            self.handler.release(protocol.host)
            self.handler.streamClosed(protocol)


class AdmittingTLSFactory(TLSMemoryBIOFactory):
    """TLS around a factory that may refuse a connection by returning C{None}.

    Twisted's L{TLSMemoryBIOFactory} wraps whatever the inner factory returns, even
    C{None}: a connection refused at the connection limits then stayed open around a
    missing protocol and logged a traceback at open and close. Here a refusal reaches
    the listening port as C{None}, and the port closes the socket at once.
    """

    noisy = False

    def buildProtocol(self, addr: IAddress | None) -> TLSMemoryBIOProtocol | None:  # type: ignore[override]
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return self.protocol(self, inner)


class StunStreamHandler(StunHandler, TypingProtocol):
    """A L{StunHandler} that also decides which connections are admitted."""

    def admit(self, host: str) -> bool:
        """Whether a new connection from C{host} may open (and count it if so)."""

    def release(self, host: str) -> None:
        """A connection from C{host} closed."""

    def streamClosed(self, link: StunLink) -> None:
        """The connection C{link} closed (after L{release})."""
