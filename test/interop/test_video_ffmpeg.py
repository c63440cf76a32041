"""Interop tests: L{p2pnet.node.video.VideoFeed} with Debian's ffmpeg as encoder and decoder.

Real processes on the real reactor: the testsrc source, a second viewer starting at a
keyframe, a slow viewer dropping frames and resuming at a keyframe, a file looping, a
C{pipe:} command restarted when it ends, and snapshots that decode. Every frame a viewer
got is decoded by ffprobe, so "starts at a keyframe" means "decodes from the first byte".
ffmpeg missing skips (fails under CI), as in L{test.interop.test_annexb_ffmpeg}.
"""

from __future__ import annotations

import json
import subprocess

from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2pnet.node.video import EncodedFrame, VideoFeed, VideoUnavailable
from test.gateway_helpers import until
from test.interop.test_annexb_ffmpeg import decodedFrames, encodeClip, requireTool


class Viewer:
    """Records frames; C{pending} stands for what its transport still holds."""

    def __init__(self) -> None:
        self.frames: list[EncodedFrame] = []
        self.pending = 0

    def sendFrame(self, frame: EncodedFrame) -> None:
        self.frames.append(frame)

    def pendingBytes(self) -> int:
        return self.pending


def imageSize(data: bytes, path: str) -> tuple[int, int, str]:
    with open(path, "wb") as f:
        f.write(data)
    out = subprocess.run(
        [requireTool("ffprobe"), "-v", "error", "-show_entries", "stream=width,height,codec_name",
         "-of", "json", path],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    s = json.loads(out.stdout)["streams"][0]
    return s["width"], s["height"], s["codec_name"]


class FeedTests(unittest.TestCase):
    timeout = 60

    def feed(self, source: str, **kw: object) -> VideoFeed:
        requireTool("ffmpeg")
        feed = VideoFeed(reactor, source, **kw)  # type: ignore[arg-type]
        feed.startService()
        self.addCleanup(feed.stopService)
        return feed

    def decodes(self, frames: list[EncodedFrame]) -> None:
        self.assertTrue(frames and frames[0].key)
        data = b"".join(f.data for f in frames)
        self.assertEqual(decodedFrames(data, self.mktemp()), len(frames))

    @defer.inlineCallbacks
    def test_testsrc(self) -> defer.Deferred[None]:
        feed = self.feed("testsrc:320x240", fps=25, bitrate=300_000, keyframeInterval=0.4)
        yield feed.whenReady()
        self.assertEqual((feed.width, feed.height), (320, 240))
        first = Viewer()
        feed.subscribe(first)
        yield until(lambda: len(first.frames) >= 12, 20)
        # A second viewer: the cached group of pictures, then live.
        second = Viewer()
        sub = feed.subscribe(second)
        self.assertTrue(second.frames[0].key)
        yield until(lambda: sum(f.key for f in second.frames) >= 2, 20)
        sub.cancel()
        self.decodes(first.frames)
        self.decodes(second.frames)
        self.assertEqual([f.ptsMs for f in first.frames], sorted(f.ptsMs for f in first.frames))
        self.assertEqual({(f.codec, f.width, f.height) for f in first.frames}, {("h264", 320, 240)})

    @defer.inlineCallbacks
    def test_slowViewer(self) -> defer.Deferred[None]:
        feed = self.feed("testsrc:320x240", fps=25, bitrate=300_000, keyframeInterval=0.4,
                         maxPendingBytes=10_000)  # fmt: skip
        yield feed.whenReady()
        viewer = Viewer()
        sub = feed.subscribe(viewer)
        yield until(lambda: len(viewer.frames) >= 3, 20)
        viewer.pending = 50_000  # the viewer stops reading
        stalled = len(viewer.frames)
        yield until(lambda: sub.dropped >= 10, 20)
        self.assertEqual(len(viewer.frames), stalled)
        viewer.pending = 0
        yield until(lambda: len(viewer.frames) >= stalled + 5, 20)
        self.assertTrue(viewer.frames[stalled].key)  # resumed at a keyframe
        self.decodes(viewer.frames[stalled:])

    @defer.inlineCallbacks
    def test_requestKeyframeRestartsEncoder(self) -> defer.Deferred[None]:
        feed = self.feed("testsrc:320x240", fps=25, bitrate=300_000, keyframeInterval=30)
        yield feed.whenReady()
        viewer = Viewer()
        feed.subscribe(viewer)
        yield until(lambda: len(viewer.frames) >= 3, 20)
        feed.requestKeyframe()
        yield until(lambda: sum(f.key for f in viewer.frames) >= 2, 20)
        self.assertEqual(feed.restarts, 1)
        self.decodes(viewer.frames)

    @defer.inlineCallbacks
    def test_h265(self) -> defer.Deferred[None]:
        feed = self.feed("testsrc:256x144", codec="h265", fps=25, bitrate=200_000)
        yield feed.whenReady()
        viewer = Viewer()
        feed.subscribe(viewer)
        yield until(lambda: len(viewer.frames) >= 5, 20)
        self.assertEqual((feed.width, feed.height), (256, 144))
        self.decodes(viewer.frames)

    @defer.inlineCallbacks
    def test_fileLoops(self) -> defer.Deferred[None]:
        path = encodeClip(self.mktemp(), "h264", 642, 362, 10, keyint=5)
        feed = self.feed(f"file:{path}", fps=50)
        yield feed.whenReady()
        viewer = Viewer()
        feed.subscribe(viewer)
        yield until(lambda: len(viewer.frames) >= 25, 20)
        frames = viewer.frames[:25]
        self.assertEqual([f.key for f in frames[:10]], [True] + [False] * 4 + [True] + [False] * 4)
        self.assertEqual(frames[10].data, frames[0].data)  # looped
        self.assertEqual(
            [f.ptsMs for f in frames[:3]], [frames[0].ptsMs + 20 * i for i in range(3)]
        )
        self.decodes(frames)

    @defer.inlineCallbacks
    def test_pipeRestarted(self) -> defer.Deferred[None]:
        path = encodeClip(self.mktemp(), "h264", 320, 240, 4, keyint=2)
        feed = self.feed(f"pipe:cat {path}", fps=30)
        yield feed.whenReady()
        viewer = Viewer()
        feed.subscribe(viewer)
        # cat ends after 4 pictures (the last stays in the parser: the stream ended
        # mid-unit); the feed starts it again after its back-off.
        yield until(lambda: feed.restarts >= 2, 20)
        self.decodes(viewer.frames)

    @defer.inlineCallbacks
    def test_snapshot(self) -> defer.Deferred[None]:
        feed = self.feed("testsrc:320x240", fps=25, bitrate=300_000)
        png = yield feed.snapshot("png")
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        self.assertEqual(imageSize(png, self.mktemp()), (320, 240, "png"))
        jpeg = yield feed.snapshot("jpeg")
        self.assertEqual(jpeg[:2], b"\xff\xd8")
        self.assertEqual(imageSize(jpeg, self.mktemp())[:2], (320, 240))

    @defer.inlineCallbacks
    def test_badCommand(self) -> defer.Deferred[None]:
        feed = self.feed("pipe:echo garbage; exit 3", fps=30)
        with self.assertRaises(VideoUnavailable):
            yield feed.whenReady()
        self.assertGreater(feed.dropped["bytes"], 0)
        yield feed.stopService()
