"""End to end with real video: a node whose VideoFeed loops an H.264 file made by
Debian's ffmpeg, viewers through p2pnet's rendezvous and relay on loopback. What the
viewer receives decodes with ffmpeg to exactly the source's pictures, and a viewer that
stops reading costs the node a bounded buffer, not memory without end."""

from __future__ import annotations

import os
import shutil
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from p2pnet.node.identity import loadIdentity
from p2pnet.node.service import NodeService
from p2pnet.node.video import VideoFeed
from test.interop.test_node_e2e import PUBLIC, SERVER_PK, startServers, until
from test.unit.nodefakes import FakeInputs


async def ffmpeg(*args: str) -> bytes:
    out, err, code = await getProcessOutputAndValue(
        "ffmpeg", ["-v", "error", "-nostdin", *args], env=dict(os.environ))
    if code != 0:
        raise AssertionError(f"ffmpeg {args}: {err.decode()[-400:]}")
    return out


async def framemd5(path: str) -> list[str]:
    """One MD5 per decoded picture."""
    out = await ffmpeg("-f", "h264", "-i", path, "-f", "framemd5", "-")
    return [line.rsplit(",", 1)[1].strip() for line in out.decode().splitlines()
            if line and not line.startswith("#")]


class NodeVideoTests(TestCase):
    timeout = 120

    async def makeSource(self, name: str, size: str, extra: list[str],
                         filters: str = "") -> str:
        if shutil.which("ffmpeg") is None:
            raise SkipTest("Debian's ffmpeg is not installed (make test installs it)")
        path = os.path.join(self.dir, name)
        graph = f"testsrc=size={size}:rate=30" + ("," + filters if filters else "")
        await ffmpeg("-f", "lavfi", "-i", graph, "-frames:v", "60",
                     "-c:v", "libx264", "-g", "15", "-bf", "0", *extra, "-f", "h264", path)
        return path

    async def startNode(self, source: str, maxPendingBytes: int = 1024 * 1024) -> NodeService:
        self.rendezvous, _ = startServers(self, self.dir)
        ports = self.ports = self.rendezvous.boundPorts
        self.feed = VideoFeed(reactor, "file:" + source, "h264", 30, 4_000_000,
                              maxPendingBytes=maxPendingBytes)
        node = NodeService(reactor, loadIdentity(self.dir, "123456789", "pw"), self.feed,
                           FakeInputs(), server=("127.0.0.1", ports["udp"]),
                           licenceKey=PUBLIC, tcpPort=ports["tcp"], natPort=ports["nat"])
        node.startService()
        self.addCleanup(node.stopService)
        await until(lambda: node.registration.status == "registered")
        await until(lambda: self.rendezvous.peers.get("123456789") is not None)
        return node

    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    async def receive(self, forceRelay: bool) -> None:
        source = await self.makeSource("src.h264", "320x240", [])
        await self.startNode(source)
        received = bytearray()
        started = [False]

        def onFrame(frame: Any, codec: str) -> None:
            started[0] = started[0] or frame.key
            if started[0]:
                received.extend(frame.data)

        from p2pnet.node.viewer import findAndConnect

        path, session = await findAndConnect(
            reactor, ("127.0.0.1", self.ports["tcp"]), "123456789", "pw",
            serverPk=SERVER_PK, licenceKey=PUBLIC, bindAddress="127.0.0.2",
            forceRelay=forceRelay, onFrame=onFrame)
        self.addCleanup(session.close)
        self.assertEqual(path, "relay" if forceRelay else "direct")
        display = session.peerInfo.displays[0]
        self.assertEqual((display.width, display.height), (320, 240))  # from the SPS
        self.assertTrue(session.peerInfo.encoding.h264)
        await until(lambda: session.frames >= 45, timeout=20)
        session.close()
        got = os.path.join(self.dir, "received.h264")
        with open(got, "wb") as f:
            f.write(received)
        want, have = await framemd5(source), await framemd5(got)
        self.assertGreaterEqual(len(have), 40)
        # The file loops: the received pictures are a run of the source's, cyclically.
        start = want.index(have[0])
        cycle = want * (len(have) // len(want) + 2)
        self.assertEqual(have, cycle[start:start + len(have)])

    async def test_framesDecodeAndMatchSourceDirect(self) -> None:
        await self.receive(forceRelay=False)

    async def test_framesDecodeAndMatchSourceRelay(self) -> None:
        await self.receive(forceRelay=True)

    async def test_stalledViewerBoundsNodeBuffer(self) -> None:
        """A viewer that logs in and stops reading: the node's buffer for it stays under
        the feed's budget plus one group of pictures; frames are dropped instead."""
        source = await self.makeSource("big.h264", "640x360", ["-qp", "0"], "noise=alls=100:allf=t")
        budget = 512 * 1024
        node = await self.startNode(source, maxPendingBytes=budget)
        from p2pnet.node.viewer import findAndConnect

        path, session = await findAndConnect(
            reactor, ("127.0.0.1", self.ports["tcp"]), "123456789", "pw",
            serverPk=SERVER_PK, licenceKey=PUBLIC, bindAddress="127.0.0.2")
        self.addCleanup(session.close)
        session.stream.transport.pauseProducing()  # stop reading: the kernel fills up
        (nodeSession,) = node.viewers.values()
        peak = 0
        framesBefore = self.feed.framesOut
        for _ in range(40):
            await deferLater(reactor, 0.1, lambda: None)
            peak = max(peak, nodeSession.pendingBytes())
        self.assertGreater(self.feed.framesOut - framesBefore, 60)
        self.assertGreater(nodeSession._subscription.dropped, 0)  # frames lost, not queued
        gop = self.feed.maxGopBytes
        self.assertLess(peak, budget + gop)
        late = []
        for _ in range(10):
            await deferLater(reactor, 0.1, lambda: None)
            late.append(nodeSession.pendingBytes())
        self.assertLessEqual(max(late), peak)
        session.stream.transport.resumeProducing()

    async def test_connectSnapshotAndRecord(self) -> None:
        """The real C{p2pnet connect --snapshot --record}: a PNG of the source's size and
        a recording ffmpeg decodes."""
        import sys

        from test.interop.test_node_e2e import ROOT

        source = await self.makeSource("src.h264", "320x240", [])
        await self.startNode(source)
        png = os.path.abspath(os.path.join(self.dir, "shot.png"))
        rec = os.path.abspath(os.path.join(self.dir, "rec.h264"))
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "p2pnet.cli", "connect", "123456789", "--password", "pw", "--server",
             f"127.0.0.1:{self.ports['tcp']}", "--server-key", PUBLIC, "--relay",
             "--duration", "1", "--snapshot", png, "--record", rec],
            env=dict(os.environ, PYTHONPATH=ROOT), path=ROOT)
        self.assertEqual(code, 0, err.decode())
        self.assertIn("via relay (encrypted), 320x240 h264", out.decode())
        await ffmpeg("-i", png, "-f", "null", "-")
        with open(png, "rb") as f:
            header = f.read(24)
        self.assertEqual(header[:8], b"\x89PNG\r\n\x1a\n")
        self.assertEqual((int.from_bytes(header[16:20], "big"),
                          int.from_bytes(header[20:24], "big")), (320, 240))
        self.assertGreaterEqual(len(await framemd5(rec)), 20)

    async def test_gatewaySnapshotDecodesTheScreen(self) -> None:
        """C{kvm.snapshot} on the real feed: a PNG (and a JPEG) of the stream's size."""
        import base64

        from p2pnet.node.gateway import KvmCommands

        source = await self.makeSource("src.h264", "320x240", [])
        node = await self.startNode(source)
        await self.feed.whenReady()
        commands = KvmCommands(node)
        png = await commands.run("kvm.snapshot", {"format": "png"})
        data = base64.b64decode(png["data"])
        self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
        self.assertEqual((int.from_bytes(data[16:20], "big"),
                          int.from_bytes(data[20:24], "big")), (320, 240))
        self.assertEqual((png["width"], png["height"]), (320, 240))
        jpeg = await commands.run("kvm.snapshot", {"format": "jpeg"})
        self.assertEqual(base64.b64decode(jpeg["data"])[:2], b"\xff\xd8")
