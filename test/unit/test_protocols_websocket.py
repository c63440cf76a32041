"""Tests for L{p2pnet.protocols.websocket}: the upgrade, the message size limit, the
close status reaching the protocol, the producer taken over from the HTTP channel, and
one write per read."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.websocket_frame import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    MessageDecoder,
    MessageTooBig,
    WebSocketFrameError,
    encodeClose,
    encodeFrame,
)
from p2pnet.protocols.websocket import (
    WebSocketClosed,
    WebSocketConnection,
    WebSocketSite,
    WebSocketUpgrade,
)

MASK = b"\x01\x02\x03\x04"
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Recorder:
    """A protocol that keeps what it is told; answers C{echo} text messages."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.transport: WebSocketConnection
        self.lost: Failure | None = None
        self.closeOnBadInput: tuple[int, str] | None = None

    def negotiationStarted(self, transport: WebSocketConnection) -> None:
        self.transport = transport
        self.events.append("started")

    def negotiationFinished(self) -> None:
        self.events.append("finished")

    def textMessageReceived(self, message: str) -> None:
        self.events.append(("text", message))
        if message.startswith("echo"):
            self.transport.sendTextMessage(message)

    def bytesMessageReceived(self, data: bytes) -> None:
        self.events.append(("bytes", data))

    def pongReceived(self, payload: bytes) -> None:
        self.events.append(("pong", payload))

    def badInput(self, error: WebSocketFrameError) -> None:
        self.events.append(("bad", type(error), error.code))
        if self.closeOnBadInput is not None:
            self.transport.loseConnection(*self.closeOnBadInput)

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason


class Factory:
    def __init__(self) -> None:
        self.built: list[Recorder] = []

    def buildProtocol(self, request: Any) -> Recorder:
        self.built.append(Recorder())
        return self.built[-1]


class CountingTransport(StringTransport):
    """Keeps each C{write} separately."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


class Upgraded:
    """A L{WebSocketSite} connection driven in memory through the upgrade."""

    def __init__(self, maxMessage: int = 100) -> None:
        self.clock = Clock()
        self.factory = Factory()
        self.site = WebSocketSite(WebSocketUpgrade(self.factory, maxMessage), 30, self.clock)
        self.channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.transport = CountingTransport()
        self.channel.makeConnection(self.transport)
        self.channel.dataReceived(UPGRADE)
        self.response = self.transport.value()
        self.transport.clear()
        self.transport.writes.clear()

    @property
    def protocol(self) -> Recorder:
        return self.factory.built[0]

    def send(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.channel.dataReceived(encodeFrame(opcode, payload, fin, MASK))

    def received(self) -> list[tuple[int, Any]]:
        return MessageDecoder(1 << 20, masked=False).feed(self.transport.value())


class UpgradeTests(SynchronousTestCase):
    def test_switchingProtocols(self) -> None:
        """RFC 6455 §1.3's key gives RFC 6455 §1.3's accept value."""
        c = Upgraded()
        self.assertTrue(c.response.startswith(b"HTTP/1.1 101 "), c.response)
        self.assertIn(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", c.response)
        self.assertEqual(c.protocol.events, ["started", "finished"])

    def test_notAnUpgrade(self) -> None:
        factory = Factory()
        site = WebSocketSite(WebSocketUpgrade(factory, 100), 30, Clock())
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), transport.value())
        self.assertEqual(factory.built, [])

    def test_httpIdleTimerStopped(self) -> None:
        """The site's 30 s idle timer does not close an upgraded connection."""
        c = Upgraded()
        c.clock.advance(3600)
        self.assertFalse(c.transport.disconnecting)

    def test_alpn(self) -> None:
        site = WebSocketSite(WebSocketUpgrade(Factory(), 100))
        self.assertTrue(IProtocolNegotiationFactory.providedBy(site))
        self.assertEqual(site.acceptableProtocols(), [b"http/1.1"])


class RequestBodyTests(SynchronousTestCase):
    """No request body is read or stored: issue 14 item 12 (a 200 MB C{POST /} was
    spooled to a temporary file before any resource saw it)."""

    def setUp(self) -> None:
        import twisted.web.http as http

        self.spooled: list[object] = []
        real = http.tempfile.TemporaryFile

        def recording(*args: Any, **kwargs: Any) -> Any:
            self.spooled.append(args)
            return real(*args, **kwargs)

        self.patch(http.tempfile, "TemporaryFile", recording)
        self.factory = Factory()
        site = WebSocketSite(WebSocketUpgrade(self.factory, 100), 30, Clock())
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def assertRefused(self, head: bytes) -> None:
        self.channel.dataReceived(head)
        for _ in range(64):  # 4 MiB of body after the headers
            self.channel.dataReceived(b"\0" * 65536)
        self.assertTrue(
            self.transport.value().startswith(b"HTTP/1.1 413 "), self.transport.value()
        )
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.spooled, [])
        self.assertEqual(self.factory.built, [])

    def test_largePost(self) -> None:
        self.assertRefused(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\n\r\n")

    def test_getWithBody(self) -> None:
        self.assertRefused(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")

    def test_chunked(self) -> None:
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"10000\r\n"
        )

    def test_upgradeWithBody(self) -> None:
        """A body announced on the upgrade request itself is refused too."""
        self.assertRefused(UPGRADE[:-2] + b"Content-Length: 100000\r\n\r\n")

    def test_noBodyServed(self) -> None:
        """A request without a body goes on as before (here: 400, not an upgrade)."""
        self.channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 400 "))


class MessageTests(SynchronousTestCase):
    def test_messagesDelivered(self) -> None:
        c = Upgraded()
        c.send(OP_TEXT, "héllo".encode())
        c.send(OP_BINARY, b"\x00\x01")
        c.send(OP_PONG, b"p")
        self.assertEqual(c.protocol.events[2:],
                         [("text", "héllo"), ("bytes", b"\x00\x01"), ("pong", b"p")])

    def test_oneWritePerRead(self) -> None:
        """Answers to everything in one read, and the Pong, leave in one write."""
        c = Upgraded()
        c.channel.dataReceived(encodeFrame(OP_TEXT, b"echo 1", mask=MASK)
                               + encodeFrame(OP_PING, b"p", mask=MASK)
                               + encodeFrame(OP_TEXT, b"echo 2", mask=MASK))
        self.assertEqual(len(c.transport.writes), 1)
        self.assertEqual(c.received(), [(OP_TEXT, "echo 1"), (OP_PONG, b"p"),
                                        (OP_TEXT, "echo 2")])

    def test_sendOutsideARead(self) -> None:
        c = Upgraded()
        c.protocol.transport.sendTextMessage("a")
        c.protocol.transport.sendBytesMessage(b"b")
        c.protocol.transport.ping(b"c")
        self.assertEqual(len(c.transport.writes), 3)
        self.assertEqual(c.received(), [(OP_TEXT, "a"), (OP_BINARY, b"b"), (OP_PING, b"c")])


class SizeLimitTests(SynchronousTestCase):
    def test_atTheLimit(self) -> None:
        c = Upgraded(maxMessage=10)
        c.send(OP_BINARY, b"x" * 10)
        self.assertEqual(c.protocol.events[-1], ("bytes", b"x" * 10))
        self.assertFalse(c.transport.disconnecting)

    def test_aboveTheLimit(self) -> None:
        """The header alone triggers it; the protocol hears first, then 1009."""
        c = Upgraded(maxMessage=10)
        c.channel.dataReceived(encodeFrame(OP_BINARY, b"x" * 11, mask=MASK)[:6])
        self.assertEqual(c.protocol.events[-1], ("bad", MessageTooBig, 1009))
        [(opcode, payload)] = c.received()
        self.assertEqual((opcode, payload[:2]), (OP_CLOSE, (1009).to_bytes(2, "big")))
        self.assertTrue(c.transport.disconnecting)
        c.send(OP_TEXT, b"late")
        self.assertEqual(c.protocol.events[-1], ("bad", MessageTooBig, 1009))

    def test_protocolChoosesTheClose(self) -> None:
        c = Upgraded(maxMessage=10)
        c.protocol.closeOnBadInput = (1009, "preauth payload too large")
        c.send(OP_TEXT, b"x" * 11)
        self.assertEqual(c.received(), [(OP_CLOSE, encodeClose(1009, "preauth payload too large"))])

    def test_limitRaised(self) -> None:
        c = Upgraded(maxMessage=10)
        c.protocol.transport.maxMessage = 20
        c.send(OP_BINARY, b"x" * 20)
        self.assertEqual(c.protocol.events[-1], ("bytes", b"x" * 20))

    @given(st.binary(max_size=300))
    def test_garbage(self, data: bytes) -> None:
        """Random bytes after the upgrade end in messages or a close, never an exception."""
        c = Upgraded()
        c.channel.dataReceived(data)
        if c.transport.disconnecting:
            self.assertEqual(c.received()[-1][0], OP_CLOSE)

    def test_protocolError(self) -> None:
        """An unmasked client frame: reported, then closed with 1002."""
        c = Upgraded()
        c.channel.dataReceived(encodeFrame(OP_TEXT, b"x"))
        self.assertEqual(c.protocol.events[-1], ("bad", WebSocketFrameError, 1002))
        self.assertEqual(c.received()[0][1][:2], (1002).to_bytes(2, "big"))


class CloseTests(SynchronousTestCase):
    def test_peerCloseReachesProtocol(self) -> None:
        c = Upgraded()
        c.send(OP_CLOSE, encodeClose(4000, "tick timeout"))
        self.assertEqual(c.received(), [(OP_CLOSE, (4000).to_bytes(2, "big"))])
        self.assertTrue(c.transport.disconnecting)
        c.channel.connectionLost(Failure(ConnectionDone()))
        closed = c.protocol.lost.value  # type: ignore[union-attr]
        self.assertIsInstance(closed, WebSocketClosed)
        self.assertEqual((closed.code, closed.reason, closed.byPeer), (4000, "tick timeout", True))

    def test_peerCloseWithoutStatus(self) -> None:
        c = Upgraded()
        c.send(OP_CLOSE, b"")
        self.assertEqual(c.received(), [(OP_CLOSE, b"")])
        c.channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(c.protocol.lost.value.code, 1005)  # type: ignore[union-attr]

    def test_ownClose(self) -> None:
        """Once, with status and reason; calling again or sending afterwards is harmless."""
        c = Upgraded()
        ws = c.protocol.transport
        ws.loseConnection(1008, "invalid request frame")
        ws.loseConnection(1000)
        ws.sendTextMessage("late")
        self.assertEqual(c.received(), [(OP_CLOSE, encodeClose(1008, "invalid request frame"))])
        c.channel.connectionLost(Failure(ConnectionDone()))
        closed = c.protocol.lost.value  # type: ignore[union-attr]
        self.assertEqual((closed.code, closed.byPeer), (1008, False))

    def test_lostWithoutClose(self) -> None:
        c = Upgraded()
        reason = Failure(ConnectionLost())
        c.channel.connectionLost(reason)
        self.assertIs(c.protocol.lost, reason)


class Producer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class ProducerTests(SynchronousTestCase):
    def test_httpChannelDetached(self) -> None:
        """The connection, not the HTTP channel, is the transport's producer."""
        c = Upgraded()
        self.assertIs(c.transport.producer, c.protocol.transport)
        self.assertTrue(c.transport.streaming)

    def test_backPressurePausesReading(self) -> None:
        """With nothing attached, a full send buffer pauses reading (Twisted #8868)."""
        c = Upgraded()
        ws = c.protocol.transport
        ws.pauseProducing()
        self.assertEqual((ws.paused, c.transport.producerState), (True, "paused"))
        ws.sendTextMessage("abc")
        self.assertEqual(ws.unflushed, 5)
        ws.resumeProducing()
        self.assertEqual((ws.paused, ws.unflushed, c.transport.producerState),
                         (False, 0, "producing"))

    def test_attachedProducerPausedInstead(self) -> None:
        c = Upgraded()
        ws = c.protocol.transport
        producer = Producer()
        ws.attachProducer(producer)
        ws.pauseProducing()
        ws.resumeProducing()
        ws.stopProducing()
        self.assertEqual(producer.calls, ["pause", "resume", "stop"])
        self.assertEqual(c.transport.producerState, "producing")

    def test_attachWhilePausedAndDetach(self) -> None:
        c = Upgraded()
        ws = c.protocol.transport
        ws.pauseProducing()
        c.transport.resumeProducing()  # as if reading had been resumed by someone else
        producer = Producer()
        ws.attachProducer(producer)
        self.assertEqual(producer.calls, ["pause"])
        ws.detachProducer()
        self.assertEqual(c.transport.producerState, "paused")
        ws.resumeProducing()
        self.assertEqual(producer.calls, ["pause"])
