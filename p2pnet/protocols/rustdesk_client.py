# -*- test-case-name: test.interop.test_rustdesk_e2e -*-
"""A RustDesk-like client for the rendezvous and relay servers (conformance testing).

It behaves as RustDesk clients do on the wire (rustdesk.md §4.5, §4.11, §4.12, §6.1-6.4):

- L{ControlledPeer}: registers over UDP (C{RegisterPk}, C{RegisterPeer}) or over a kept
  TCP/WS link (rustdesk.md §4.17), and answers C{PunchHole} with C{PunchHoleSent}, C{FetchLocalAddr}
  with C{LocalAddr} and C{RequestRelay} with C{RelayResponse} plus a relay leg, each on a
  fresh TCP connection as RustDesk does;
- L{Controller}: C{PunchHoleRequest} and C{RequestRelay} on a kept connection, the
  online query and the NAT test, and verification of the signed C{pk} it is given.

The building blocks (L{MessageStream}, L{MessageDatagram}, L{MessageWebSocket},
L{RelayLegClient}) deliver every decoded message to a queue read with C{receive()}.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from nacl.signing import SigningKey
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.web.websocket import WebSocketClientEndpoint, WebSocketTransport

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import (
    KeyExchange,
    LocalAddr,
    NatType,
    OnlineRequest,
    PunchHoleRequest,
    PunchHoleSent,
    RegisterPeer,
    RegisterPk,
    RelayResponse,
    RendezvousMessage,
    RequestRelay,
    TestNatRequest,
)
from p2pnet.codecs.rustdesk_crypto import (
    CryptoError,
    SecretStream,
    openServerKeyExchange,
    sealKeyExchangeReply,
    verifySignedIdPk,
)
from p2pnet.codecs.rustdesk_frame import FrameDecoder, FrameError, encodeFrame
from p2pnet.codecs.rustdesk_register import (
    REG_INTERVAL,
    REG_TIMEOUT,
    TIMER,
    RegistrationState,
)
from p2pnet.protocols.transport import StreamTransport

__all__ = [
    "CLIENT_VERSION",
    "Controller",
    "ControlledPeer",
    "MessageDatagram",
    "MessageStream",
    "MessageWebSocket",
    "RelayLegClient",
    "UDPRegistration",
    "connectReusingPort",
    "connectStream",
    "connectWebSocket",
    "decodeOnline",
    "natTestPorts",
    "splitHostPort",
]

#: The version string the client puts in requests (a non-empty one asks for signed pk).
CLIENT_VERSION = "1.4.5"


class MessageDatagram(DatagramProtocol):
    """UDP to the rendezvous port: one message per datagram, replies queued."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.queue: DeferredQueue[RendezvousMessage] = DeferredQueue()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.queue.put(RendezvousMessage.FromString(data))

    def send(self, message: RendezvousMessage) -> None:
        """Send one message to the server."""
        if self.transport is not None:
            self.transport.write(message.SerializeToString(), self.server)

    def receive(self) -> Deferred[RendezvousMessage]:
        """The next message from the server."""
        return self.queue.get()


class _MessageLink:
    """What the TCP and WebSocket links to the rendezvous server share: the queue of
    messages received, the heartbeat count, the C{closed} Deferred.

    @ivar heartbeats: empty messages received (rustdesk.md §4.17).
    @ivar closed: fires when the connection is lost.
    """

    def __init__(self) -> None:
        self.queue: DeferredQueue[RendezvousMessage] = DeferredQueue()
        self.heartbeats = 0
        self.closed: Deferred[None] = Deferred()

    def receive(self) -> Deferred[RendezvousMessage]:
        """The next message (heartbeats and a dropped first KeyExchange not counted)."""
        return self.queue.get()


class MessageStream(_MessageLink, Protocol):
    """A framed TCP connection to the rendezvous server.

    With C{serverPk} (the server's Ed25519 public key) it answers the server's first
    C{KeyExchange} as RustDesk's C{secure_tcp} does and encrypts from then on; without,
    a first C{KeyExchange} is dropped, as the client's readers do. Zero-length frames are
    answered with zero-length frames (heartbeats, rustdesk.md §4.17) and counted in C{heartbeats}.
    """

    transport: StreamTransport  # type: ignore[assignment]

    def __init__(self, serverPk: bytes | None = None) -> None:
        super().__init__()
        self.serverPk = serverPk
        self._decoder = FrameDecoder()
        self._stream: SecretStream | None = None
        self._first = True
        self.badInput = 0
        self.secured: Deferred[bool] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        try:
            payloads = self._decoder.feed(data)
        except FrameError:
            self.badInput += 1
            self.transport.abortConnection()
            return
        for payload in payloads:
            if not payload:
                self.heartbeats += 1
                self.transport.write(encodeFrame(b""))
                continue
            try:
                if self._stream is not None:
                    payload = self._stream.open(payload)
                message = RendezvousMessage.FromString(payload)
            except (CryptoError, DecodeError, RuntimeError, ValueError):
                # The server broke the protocol: drop the link (its owner reconnects).
                self.badInput += 1
                self.transport.abortConnection()
                return
            first, self._first = self._first, False
            if first and message.WhichOneof("union") == "key_exchange":
                self._answerKeyExchange(message.key_exchange)
                continue
            if first and not self.secured.called:
                self.secured.callback(False)
            self.queue.put(message)

    def _answerKeyExchange(self, kx: KeyExchange) -> None:
        if self.serverPk is None or len(kx.keys) != 1:
            self.secured.callback(False)
            return
        boxPk = openServerKeyExchange(self.serverPk, bytes(kx.keys[0]))
        key = os.urandom(32)
        ours, sealed = sealKeyExchangeReply(boxPk, key)
        self.transport.write(encodeFrame(RendezvousMessage(
            key_exchange=KeyExchange(keys=[ours, sealed])).SerializeToString()))
        self._stream = SecretStream(key)
        self.secured.callback(True)

    def send(self, message: RendezvousMessage) -> None:
        """Frame (and encrypt, once secured) one message."""
        payload = message.SerializeToString()
        if self._stream is not None:
            payload = self._stream.seal(payload)
        self.transport.write(encodeFrame(payload))

    @property
    def localAddress(self) -> tuple[str, int]:
        """This end's C{(host, port)}."""
        host = self.transport.getHost()
        return host.host, host.port

    def connectionLost(self, reason: Any = None) -> None:
        if not self.secured.called:
            self.secured.callback(False)
        self.closed.callback(None)


def connectStream(reactor: Any, host: str, port: int, bindAddress: str | None = None,
                  serverPk: bytes | None = None) -> Deferred[MessageStream]:
    """Open a L{MessageStream} to C{host:port}, from C{bindAddress} if given."""
    endpoint = _endpoint(reactor, host, port, bindAddress)
    return connectProtocol(endpoint, MessageStream(serverPk))


def _endpoint(reactor: Any, host: str, port: int, bindAddress: str | None = None) -> Any:
    kind = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
    return kind(reactor, host, port, timeout=10,
                bindAddress=(bindAddress, 0) if bindAddress else None)


class MessageWebSocket(_MessageLink):
    """A WebSocket connection to the rendezvous server: one Binary message per message."""

    def __init__(self) -> None:
        super().__init__()
        self.transport: WebSocketTransport | None = None

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        """Ready to send."""

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        if not data:
            self.heartbeats += 1
            return
        self.queue.put(RendezvousMessage.FromString(bytes(data)))

    def textMessageReceived(self, message: str) -> None:
        self.bytesMessageReceived(message.encode())

    def pongReceived(self, payload: bytes) -> None:
        """Not used."""

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)

    def send(self, message: RendezvousMessage) -> None:
        """One Binary message."""
        assert self.transport is not None
        self.transport.sendBytesMessage(message.SerializeToString())

    def sendRaw(self, data: bytes) -> None:
        """One Binary message of arbitrary bytes (relay legs)."""
        assert self.transport is not None
        self.transport.sendBytesMessage(data)


class _Factory:
    def __init__(self, build: Any) -> None:
        self._build = build

    def buildProtocol(self, url: str) -> Any:
        return self._build()


def connectWebSocket(reactor: Any, url: str, build: Any = MessageWebSocket) -> Deferred[Any]:
    """Open a WebSocket to C{url} with a protocol made by C{build()}."""
    endpoint = WebSocketClientEndpoint.new(reactor, url)
    return Deferred.fromCoroutine(endpoint.connect(_Factory(build)))


@defer.inlineCallbacks
def natTestPorts(reactor: Any, host: str, tcpPort: int, natPort: int,
                 local: tuple[str, int] = ("", 0),
                 connect: Callable[..., Deferred[Any]] | None = None) -> Any:
    """RustDesk's NAT test (rustdesk.md §4.12): C{TestNatRequest} to the rendezvous port
    and then, from the same local address, to the NAT-test port (port - 1).

    Fires with C{(local address, port the first saw, port the second saw)}: the same
    port twice means the NAT keeps a mapping across destinations (ASYMMETRIC, punchable);
    two ports mean SYMMETRIC. Cancelling it closes the connection in progress.

    @param connect: opens a L{MessageStream} from a local address (default
        L{connectReusingPort}); tests pass a fake.
    """
    connect = connect or connectReusingPort
    seen = []
    for port in (tcpPort, natPort):
        stream = yield connect(reactor, host, port, local)
        try:
            local = stream.localAddress
            stream.send(RendezvousMessage(test_nat_request=TestNatRequest(serial=0)))
            reply = yield stream.receive()
        finally:
            stream.transport.loseConnection()
        # The server closes after answering; the next connect reuses the local port.
        yield stream.closed
        seen.append(reply.test_nat_response.port)
    return local, seen[0], seen[1]


def connectReusingPort(reactor: Any, host: str, port: int,
                       local: tuple[str, int]) -> Deferred[MessageStream]:
    """A L{MessageStream} to C{host:port} from the local address C{local}, as RustDesk's
    NAT test does (with C{SO_REUSEADDR}, which Twisted's client sockets lack).

    The connect runs in the reactor's thread pool, then the socket is adopted.
    """
    import socket

    from twisted.internet.protocol import Factory
    from twisted.internet.threads import deferToThreadPool

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(local)
            sock.settimeout(10)
            sock.connect((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def adopt(sock: socket.socket) -> MessageStream:
        stream = MessageStream()
        try:
            reactor.adoptStreamConnection(sock.fileno(), sock.family,
                                          Factory.forProtocol(lambda: stream))
        finally:
            sock.close()  # the reactor holds its own duplicate
        return stream

    return deferToThreadPool(reactor, reactor.getThreadPool(), connect).addCallback(adopt)


class RelayLegClient(Protocol):
    """A relay leg over TCP: sends its C{RequestRelay} frame, then raw bytes.

    @ivar received: every byte received after pairing.
    """

    transport: StreamTransport  # type: ignore[assignment]

    def __init__(self, uuid: str, licenceKey: str = "", peerId: str = "") -> None:
        self.request = RendezvousMessage(request_relay=RequestRelay(
            uuid=uuid, licence_key=licenceKey, id=peerId))
        self.received = bytearray()
        self._waiters: list[tuple[int, Deferred[bytes]]] = []
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(encodeFrame(self.request.SerializeToString()))

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        ready = [(n, d) for n, d in self._waiters if len(self.received) >= n]
        self._waiters = [(n, d) for n, d in self._waiters if len(self.received) < n]
        for _, d in ready:
            d.callback(bytes(self.received))

    def waitFor(self, count: int) -> Deferred[bytes]:
        """Fires with everything received once at least C{count} bytes arrived."""
        if len(self.received) >= count:
            return defer.succeed(bytes(self.received))
        d: Deferred[bytes] = Deferred()
        self._waiters.append((count, d))
        return d

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


def decodeOnline(states: bytes, count: int) -> list[bool]:
    """The online bitmap (rustdesk.md §4.11) as one flag per asked peer."""
    return [bool(states[i // 8] & (0x80 >> (i % 8))) for i in range(count)]


def splitHostPort(server: str, defaultPort: int) -> tuple[str, int]:
    """C{host}, C{host:port}, C{[v6]} or C{[v6]:port}; a bare IPv6 address has no port."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else defaultPort
    if server.count(":") != 1:
        return server, defaultPort
    host, _, port = server.partition(":")
    return host, int(port)


class ControlledPeer:
    """The controlled side (RustDesk's rendezvous mediator, rustdesk.md §6.1-6.4).

    @param server: rendezvous host; C{udpPort}/C{tcpPort} its ports (the same number on
        a real server; tests use ephemeral ones).
    @param relayPort: the relay's port, used when the server hands out no relay server.
    @param bindAddress: local address for TCP connections (to appear as another host).
    """

    def __init__(self, reactor: Any, server: str, udpPort: int, tcpPort: int,
                 peerId: str, *, relayPort: int = 21117, licenceKey: str = "",
                 bindAddress: str | None = None, signingKey: SigningKey | None = None,
                 uuid: bytes | None = None) -> None:
        self.reactor = reactor
        self.server = server
        self.udpPort = udpPort
        self.tcpPort = tcpPort
        self.relayPort = relayPort
        self.id = peerId
        self.licenceKey = licenceKey
        self.bindAddress = bindAddress
        self.signingKey = signingKey or SigningKey.generate()
        self.uuid = uuid or uuidlib.uuid4().bytes
        self.udp: MessageDatagram | None = None
        self.link: Any = None
        self.relayLegs: list[RelayLegClient] = []
        self.answeredFrom: tuple[str, int] | None = None

    @property
    def pk(self) -> bytes:
        """The peer's Ed25519 public key (what it registers)."""
        return bytes(self.signingKey.verify_key)

    def registerPkMessage(self) -> RendezvousMessage:
        """C{RegisterPk{id, uuid, pk}}."""
        return RendezvousMessage(register_pk=RegisterPk(id=self.id, uuid=self.uuid,
                                                        pk=self.pk))

    def openUDP(self) -> MessageDatagram:
        """Bind the UDP socket used for registration."""
        self.udp = MessageDatagram((self.server, self.udpPort))
        default = "::1" if ":" in self.server else "127.0.0.1"
        self.reactor.listenUDP(0, self.udp, interface=self.bindAddress or default)
        return self.udp

    @defer.inlineCallbacks
    def registerUDP(self) -> Any:
        """RegisterPk then RegisterPeer over UDP (rustdesk.md §6.1); fires with the two replies."""
        udp = self.udp or self.openUDP()
        udp.send(self.registerPkMessage())
        pkReply = yield udp.receive()
        udp.send(RendezvousMessage(register_peer=RegisterPeer(id=self.id)))
        peerReply = yield udp.receive()
        return pkReply, peerReply

    @defer.inlineCallbacks
    def registerStream(self, link: Any) -> Any:
        """Register over a kept TCP/WS link (rustdesk.md §4.17); fires with the RegisterPkResponse."""
        self.link = link
        link.send(self.registerPkMessage())
        reply = yield link.receive()
        return reply

    @defer.inlineCallbacks
    def serveOnce(self, source: Any) -> Any:
        """Answer the next PunchHole / FetchLocalAddr / RequestRelay from C{source}.

        Fires with C{(kind, message)} after the answer was sent (and, for relay, the leg
        connected).
        """
        message = yield source.receive()
        kind = message.WhichOneof("union")
        if kind == "punch_hole":
            yield self._answer(RendezvousMessage(punch_hole_sent=PunchHoleSent(
                socket_addr=message.punch_hole.socket_addr, id=self.id,
                relay_server=message.punch_hole.relay_server, nat_type=NatType.ASYMMETRIC,
                version=CLIENT_VERSION)))
        elif kind == "fetch_local_addr":
            yield self._answerLocal(message.fetch_local_addr)
        elif kind == "request_relay":
            rr = message.request_relay
            yield self._answer(RendezvousMessage(relay_response=RelayResponse(
                socket_addr=rr.socket_addr, version=CLIENT_VERSION)))
            yield self.connectRelay(rr.relay_server, rr.uuid)
        return kind, message

    @defer.inlineCallbacks
    def _answer(self, message: RendezvousMessage) -> Any:
        stream = yield connectStream(self.reactor, self.server, self.tcpPort,
                                     self.bindAddress)
        self.answeredFrom = stream.localAddress
        stream.send(message)
        stream.transport.loseConnection()
        yield stream.closed

    @defer.inlineCallbacks
    def _answerLocal(self, fla: Any) -> Any:
        stream = yield connectStream(self.reactor, self.server, self.tcpPort,
                                     self.bindAddress)
        local = self.answeredFrom = stream.localAddress
        stream.send(RendezvousMessage(local_addr=LocalAddr(
            socket_addr=fla.socket_addr, local_addr=addrmangle.encode(
                local[0], local[1], addrmangle.timestampFor(self.reactor.seconds())),
            relay_server=fla.relay_server, id=self.id, version=CLIENT_VERSION)))
        stream.transport.loseConnection()
        yield stream.closed

    @defer.inlineCallbacks
    def connectRelay(self, relayServer: str, uuid: str) -> Any:
        """Open a relay leg for C{uuid} (rustdesk.md §6.4 step 2)."""
        host, port = splitHostPort(relayServer, self.relayPort) if relayServer else \
            (self.server, self.relayPort)
        leg = RelayLegClient(uuid, self.licenceKey)
        yield connectProtocol(_endpoint(self.reactor, host, port), leg)
        self.relayLegs.append(leg)
        return leg


class UDPRegistration:
    """RustDesk's UDP registration loop (rustdesk.md §6.1) for a L{ControlledPeer}.

    The rules are L{RegistrationState}'s; this class owns the timer (every C{TIMER}
    seconds on C{clock}) and the peer's UDP socket. Every message that is not a
    registration reply (PunchHole, FetchLocalAddr, RequestRelay, ConfigUpdate) is queued
    in C{requests}, which L{ControlledPeer.serveOnce} accepts as its source.

    @param clock: drives the timer (the UDP socket runs on the peer's reactor).
    """

    TIMER = TIMER
    REG_INTERVAL = REG_INTERVAL
    REG_TIMEOUT = REG_TIMEOUT

    def __init__(self, peer: ControlledPeer, clock: Any) -> None:
        self.peer = peer
        self.clock = clock
        self.udp = peer.udp or peer.openUDP()
        self.state = RegistrationState(peer.id, peer.uuid, peer.pk)
        self.requests: DeferredQueue[RendezvousMessage] = DeferredQueue()
        self.sent: list[str] = []
        self._confirmWaiters: list[Deferred[str]] = []
        self._loop: Any = None
        self._reading: Deferred[RendezvousMessage] | None = None

    @property
    def keyConfirmed(self) -> bool:
        """The server acknowledged our key."""
        return self.state.keyConfirmed

    def start(self) -> None:
        """Start the timer and the reader."""
        from twisted.internet.task import LoopingCall

        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.clock
        self._loop.start(self.TIMER, now=True)
        self._read()

    def stop(self) -> None:
        """Stop the timer and the reader."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.cancel()

    def receive(self) -> Deferred[RendezvousMessage]:
        """The next non-registration message (so this loop can be a C{serveOnce} source)."""
        return self.requests.get()

    def whenConfirmed(self) -> Deferred[str]:
        """Fires with the peer's id the next time the server confirms its key."""
        d: Deferred[str] = Deferred()
        self._confirmWaiters.append(d)
        return d

    def tick(self) -> None:
        """One timer tick (rustdesk.md §6.1 step 2)."""
        message = self.state.due(self.clock.seconds())
        if message is not None:
            self._send(message)

    def _send(self, message: RendezvousMessage) -> None:
        self.sent.append(message.WhichOneof("union") or "")
        self.udp.send(message)

    def _read(self) -> None:
        self._reading = self.udp.receive()
        self._reading.addCallbacks(self._received, lambda f: None)

    def _received(self, message: RendezvousMessage) -> None:
        self._reading = None
        outcome = self.state.received(message, self.clock.seconds())
        self.peer.id = self.state.peerId
        for reply in outcome.send:
            self._send(reply)
        if outcome.confirmed:
            waiters, self._confirmWaiters = self._confirmWaiters, []
            for d in waiters:
                d.callback(self.peer.id)
        kind = message.WhichOneof("union")
        if kind not in ("register_peer_response", "register_pk_response"):
            self.requests.put(message)
        if self._loop is not None and self._loop.running:
            self._read()


class Controller:
    """The controlling side: punch-hole and relay requests, online query, NAT test."""

    def __init__(self, reactor: Any, server: str, tcpPort: int, *, natPort: int | None = None,
                 relayPort: int = 21117, licenceKey: str = "", serverPk: bytes | None = None,
                 bindAddress: str | None = None) -> None:
        self.reactor = reactor
        self.server = server
        self.tcpPort = tcpPort
        self.natPort = natPort if natPort is not None else tcpPort - 1
        self.relayPort = relayPort
        self.licenceKey = licenceKey
        self.serverPk = serverPk
        self.bindAddress = bindAddress

    def connect(self) -> Deferred[MessageStream]:
        """A kept connection to the rendezvous port."""
        return connectStream(self.reactor, self.server, self.tcpPort, self.bindAddress)

    @defer.inlineCallbacks
    def punchHole(self, peerId: str, stream: MessageStream | None = None,
                  natType: int = NatType.ASYMMETRIC) -> Any:
        """Send C{PunchHoleRequest}; fires with C{(stream, PunchHoleResponse)}."""
        if stream is None:
            stream = yield self.connect()
        stream.send(RendezvousMessage(punch_hole_request=PunchHoleRequest(
            id=peerId, nat_type=natType, licence_key=self.licenceKey,
            version=CLIENT_VERSION)))
        reply = yield stream.receive()
        return stream, reply

    def verifyPk(self, peerId: str, signed: bytes) -> bytes:
        """The peer's pk from a signed IdPk, checked against the server key and C{peerId}.

        @raise ValueError: it does not verify or names another peer.
        """
        if self.serverPk is None:
            raise ValueError("no server key to verify with")
        signedId, pk = verifySignedIdPk(self.serverPk, signed)
        if signedId != peerId or len(pk) != 32:
            raise ValueError("signed pk names another peer")
        return pk

    @defer.inlineCallbacks
    def requestRelay(self, peerId: str, relayServer: str = "") -> Any:
        """C{RequestRelay} through the rendezvous server (rustdesk.md §4.5 step 4).

        Fires with C{(uuid, RelayResponse)} once the peer's answer came back.
        """
        stream = yield self.connect()
        uuid = str(uuidlib.uuid4())
        stream.send(RendezvousMessage(request_relay=RequestRelay(
            id=peerId, uuid=uuid, relay_server=relayServer, secure=True)))
        reply = yield stream.receive()
        stream.transport.loseConnection()
        return uuid, reply

    @defer.inlineCallbacks
    def connectRelay(self, relayServer: str, uuid: str, peerId: str) -> Any:
        """Open our relay leg (rustdesk.md §4.5 step 7)."""
        host, port = splitHostPort(relayServer, self.relayPort) if relayServer else \
            (self.server, self.relayPort)
        leg = RelayLegClient(uuid, self.licenceKey, peerId)
        yield connectProtocol(_endpoint(self.reactor, host, port), leg)
        return leg

    @defer.inlineCallbacks
    def online(self, peerIds: list[str]) -> Any:
        """The online flags of C{peerIds} from the NAT port (rustdesk.md §4.11)."""
        stream = yield connectStream(self.reactor, self.server, self.natPort,
                                     self.bindAddress)
        stream.send(RendezvousMessage(online_request=OnlineRequest(id="me", peers=peerIds)))
        reply = yield stream.receive()
        yield stream.closed
        return decodeOnline(reply.online_response.states, len(peerIds))

    def testNat(self) -> Deferred[tuple[tuple[str, int], int, int]]:
        """The NAT test (rustdesk.md §4.12): see L{natTestPorts}."""
        return natTestPorts(self.reactor, self.server, self.tcpPort, self.natPort,
                            (self.bindAddress or "", 0))
