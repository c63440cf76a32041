"""One viewer session on the node (L{p2pnet.node.session}) over a StringTransport, with
the rustdesk.md §6.6-6.8 timers on a Clock."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from p2pnet.codecs.proto import message_pb2 as pb
from p2pnet.codecs.rustdesk_frame import FrameDecoder, encodeFrame
from p2pnet.node.identity import loadIdentity
from p2pnet.node.login import MAX_FAILURES, TOO_MANY, WRONG_PASSWORD
from p2pnet.node.service import NodeService
from p2pnet.node.session import IDLE_TIMEOUT
from p2pnet.node.viewer import ViewerSession
from p2pnet.protocols.rustdesk_peer import PeerStream
from test.unit.nodefakes import FakeFeed, FakeInputs, Frame


class Pipe:
    """Two PeerStreams joined by StringTransports; C{flush} moves bytes both ways."""

    def __init__(self, a: PeerStream, b: PeerStream) -> None:
        self.a, self.b = a, b
        self.ta, self.tb = StringTransport(), StringTransport()
        a.makeConnection(self.ta)
        b.makeConnection(self.tb)

    def flush(self) -> None:
        for _ in range(20):
            moved = False
            for src, dst in ((self.ta, self.b), (self.tb, self.a)):
                data = src.value()
                if data:
                    src.clear()
                    dst.dataReceived(data)
                    moved = True
            if not moved:
                return


class SessionTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.identity = loadIdentity(self.dir, "123456789", "secret")
        self.feed = FakeFeed()
        self.inputs = FakeInputs()
        self.node = NodeService(self.clock, self.identity, self.feed, self.inputs,
                                server=("127.0.0.1", 21116), maxViewers=2)

    def connect(self, password: str = "secret", secure: bool = True,
                source: tuple[str, int] = ("192.0.2.1", 5000)) -> tuple[ViewerSession, Pipe]:
        nodeStream = self.node.newSession(secure, source, "direct")
        assert nodeStream is not None
        viewer = ViewerSession(self.clock, "123456789", password,
                               self.identity.pk if secure else None)
        pipe = Pipe(nodeStream, PeerStream(viewer, 1 << 24))
        pipe.flush()
        return viewer, pipe

    def test_loginEncrypted(self) -> None:
        viewer, pipe = self.connect()
        info = self.successResultOf(viewer.loggedIn)
        self.assertTrue(viewer.encrypted)
        self.assertEqual((info.displays[0].width, info.displays[0].height), (1280, 720))
        self.assertTrue(info.encoding.h264)
        self.assertFalse(info.encoding.h265)
        self.assertEqual(info.platform, "Linux")
        self.assertEqual(list(self.node.viewers), ["v1"])
        self.assertEqual(len(self.feed.viewers), 1)

    def test_wireIsEncrypted(self) -> None:
        """After the handshake the node's frames do not parse as plaintext Hash."""
        nodeStream = self.node.newSession(True, ("192.0.2.1", 1), "direct")
        assert nodeStream is not None
        transport = StringTransport()
        nodeStream.makeConnection(transport)
        first = FrameDecoder().feed(transport.value())
        self.assertEqual(pb.Message.FromString(first[0]).WhichOneof("union"), "signed_id")

    def test_insecureDirectAccess(self) -> None:
        """rustdesk.md §6.5: no SignedId; Hash first; login works unencrypted."""
        viewer, pipe = self.connect(secure=False)
        self.successResultOf(viewer.loggedIn)
        self.assertFalse(viewer.encrypted)

    def test_wrongPassword(self) -> None:
        viewer, pipe = self.connect("nope")
        self.assertEqual(self.failureResultOf(viewer.loggedIn).value.args[0], WRONG_PASSWORD)
        self.assertEqual(self.node.viewers, {})
        self.assertEqual(self.node.stats.counters["login_failed"], 1)

    def test_attemptLimitPerSource(self) -> None:
        for _ in range(MAX_FAILURES):
            viewer, _ = self.connect("nope")
            self.failureResultOf(viewer.loggedIn)
        viewer, pipe = self.connect("secret")
        self.assertEqual(self.failureResultOf(viewer.loggedIn).value.args[0], TOO_MANY)
        other, _ = self.connect("secret", source=("192.0.2.2", 1))
        self.successResultOf(other.loggedIn)
        self.clock.advance(61)
        again, _ = self.connect("secret")
        self.successResultOf(again.loggedIn)

    def test_maxViewers(self) -> None:
        for _ in range(2):
            self.successResultOf(self.connect()[0].loggedIn)
        viewer, _ = self.connect()
        self.assertEqual(self.failureResultOf(viewer.loggedIn).value.args[0],
                         "Too many viewers")

    def test_waitsForFirstKeyframeSize(self) -> None:
        self.feed.width = 0
        viewer, pipe = self.connect()
        self.assertNoResult(viewer.loggedIn)
        self.feed.width = 1920
        self.feed.height = 1080
        self.feed.ready.callback(None)
        pipe.flush()
        info = self.successResultOf(viewer.loggedIn)
        self.assertEqual(info.displays[0].width, 1920)

    def test_videoFrames(self) -> None:
        got: list[Any] = []
        viewer, pipe = self.connect()
        viewer.onFrame = lambda frame, codec: got.append((frame.data, frame.key, frame.pts,
                                                          codec))
        self.feed.push(Frame(b"\x00\x00\x00\x01\x65abc", True, 40))
        self.feed.push(Frame(b"\x00\x00\x00\x01\x41d", False, 73))
        pipe.flush()
        self.assertEqual(got, [(b"\x00\x00\x00\x01\x65abc", True, 40, "h264"),
                               (b"\x00\x00\x00\x01\x41d", False, 73, "h264")])

    def test_inputRoutedAndReleased(self) -> None:
        viewer, pipe = self.connect()
        key = pb.KeyEvent(down=True, control_key=pb.Return)
        mouse = pb.MouseEvent(mask=9, x=10, y=20)
        viewer.send(pb.Message(key_event=key))
        viewer.send(pb.Message(mouse_event=mouse))
        pipe.flush()
        pipe.a.transport.loseConnection()
        pipe.a.connectionLost(None)
        self.assertEqual(self.inputs.events, [
            ("v1", "key", key.SerializeToString()),
            ("v1", "mouse", mouse.SerializeToString()),
            ("v1", "release", b"")])
        self.assertEqual(self.node.viewers, {})
        self.assertEqual(self.feed.viewers, [])

    def test_inputBeforeLoginIgnored(self) -> None:
        nodeStream = self.node.newSession(True, ("192.0.2.1", 1), "direct")
        assert nodeStream is not None
        nodeStream.makeConnection(StringTransport())
        nodeStream.dataReceived(encodeFrame(b""))  # empty Message: unencrypted
        nodeStream.dataReceived(encodeFrame(pb.Message(key_event=pb.KeyEvent(
            down=True, chr=65)).SerializeToString()))
        self.assertEqual(self.inputs.events, [])

    def test_refreshVideo(self) -> None:
        viewer, pipe = self.connect()
        viewer.send(pb.Message(misc=pb.Misc(refresh_video=True)))
        pipe.flush()
        self.assertEqual(self.feed.keyframeRequests, 1)

    def test_testDelayBothWays(self) -> None:
        viewer, pipe = self.connect()
        self.clock.advance(0)
        pipe.flush()
        self.assertEqual(viewer.delaysEchoed, 1)
        session = self.node.viewers["v1"]
        self.clock.advance(0.25)
        pipe.flush()
        self.clock.advance(1)
        pipe.flush()
        self.assertEqual(viewer.delaysEchoed, 2)
        echoes: list[pb.Message] = []
        viewer.messageReceived = lambda m: echoes.append(m)  # type: ignore[method-assign]
        viewer.send(pb.Message(test_delay=pb.TestDelay(time=77, from_client=True)))
        pipe.flush()
        self.assertIn(77, [m.test_delay.time for m in echoes if m.test_delay.from_client])
        self.assertEqual(session.lastDelay, 0)

    def test_idleCloses(self) -> None:
        viewer, pipe = self.connect()
        self.clock.advance(IDLE_TIMEOUT - 1)
        viewer.send(pb.Message(test_delay=pb.TestDelay(time=1, from_client=True)))
        pipe.flush()
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(pipe.ta.disconnecting)
        self.clock.advance(1)
        self.assertTrue(pipe.ta.disconnecting)

    def test_handshakeTimeout(self) -> None:
        nodeStream = self.node.newSession(True, ("192.0.2.1", 1), "direct")
        assert nodeStream is not None
        transport = StringTransport()
        nodeStream.makeConnection(transport)
        self.clock.advance(17.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_emptyPublicKeyReRegisters(self) -> None:
        self.node.registration.state.keyConfirmed = True
        nodeStream = self.node.newSession(True, ("192.0.2.1", 1), "direct")
        assert nodeStream is not None
        nodeStream.makeConnection(StringTransport())
        nodeStream.dataReceived(encodeFrame(pb.Message(
            public_key=pb.PublicKey()).SerializeToString()))
        self.assertFalse(self.node.registration.state.keyConfirmed)

    def test_garbageAborts(self) -> None:
        nodeStream = self.node.newSession(True, ("192.0.2.1", 1), "direct")
        assert nodeStream is not None
        transport = StringTransport()
        nodeStream.makeConnection(transport)
        nodeStream.dataReceived(encodeFrame(b"\xff\xff\xff"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.node.streams, set())

    def test_oversizedFrameAborts(self) -> None:
        nodeStream = self.node.newSession(True, ("192.0.2.1", 1), "direct")
        assert nodeStream is not None
        transport = StringTransport()
        nodeStream.makeConnection(transport)
        nodeStream.dataReceived(b"\xff\xff\xff\xff")
        self.assertTrue(transport.disconnecting)

    def test_kick(self) -> None:
        viewer, pipe = self.connect()
        self.node.viewers["v1"].kick()
        self.assertTrue(pipe.ta.disconnecting)
