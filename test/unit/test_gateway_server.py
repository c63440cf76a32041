"""Tests for L{p2pnet.protocols.gateway_server} in memory: the slow-consumer rule
(its C{/metrics} is L{p2pnet.metrics}, tested in test.unit.test_metrics)."""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.gateway_frames import Event
from p2pnet.protocols.gateway_server import GatewayWebSocket
from p2pnet.protocols.websocket import WebSocketConnection
from p2pnet.services.gateway import MAX_BUFFERED_BYTES


class FakeSession:
    authenticated = True

    def __init__(self) -> None:
        self.closed: tuple[int, str] | None = None

    def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)


class SlowConsumerTests(SynchronousTestCase):
    """The slow-consumer rule on the send-buffer state of L{WebSocketConnection}."""

    def setUp(self) -> None:
        self.socket = GatewayWebSocket(None, None)  # type: ignore[arg-type]
        self.wire = WebSocketConnection(self.socket, 1024)
        self.transport = StringTransport()
        self.transport.registerProducer(object(), True)  # what the HTTP channel leaves
        self.wire.makeConnection(self.transport)
        self.socket.session = FakeSession()  # type: ignore[assignment]

    def test_dropIfSlow(self) -> None:
        self.wire.pauseProducing()
        self.socket.sendFrame(Event("tick", {"ts": 1}), dropIfSlow=True)
        self.assertEqual(self.transport.value(), b"")
        self.socket.sendFrame(Event("presence", {}))
        text = b'{"type":"event","event":"presence","payload":{}}'
        self.assertEqual(self.transport.value(), bytes((0x81, len(text))) + text)

    def test_slowConsumerClosed(self) -> None:
        self.wire.pauseProducing()
        self.wire.unflushed = MAX_BUFFERED_BYTES + 1
        self.socket.sendFrame(Event("presence", {}))
        self.assertEqual(self.socket.session.closed, (1008, "slow consumer"))
        self.assertEqual(self.transport.value(), b"")

    def test_writesWhilePausedCounted(self) -> None:
        self.wire.pauseProducing()
        self.socket.sendFrame(Event("presence", {}))
        self.assertEqual(self.wire.unflushed, len(self.transport.value()))
        self.wire.resumeProducing()
        self.assertEqual((self.wire.paused, self.wire.unflushed), (False, 0))
