"""Tests for L{p2pnet.node.video}: the feed on a Clock with fake encoder processes."""

from __future__ import annotations

from typing import Any

from twisted.internet import error
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.annexb import joinNalUnits
from p2pnet.errors import ConfigError
from p2pnet.node.video import (
    RESTART_FIRST,
    STOP_TIMEOUT,
    EncodedFrame,
    VideoFeed,
    VideoUnavailable,
    encoderArgs,
    parseSource,
)
from test.unit.test_annexb import h264Stream


class FakeProcess:
    """The transport a fake spawnProcess hands its protocol."""

    def __init__(self, proto: Any, argv: list[str]) -> None:
        self.proto = proto
        self.argv = argv
        self.signals: list[str] = []
        self.written = b""
        self.stdinClosed = False
        self.ended = False
        proto.makeConnection(self)

    def signalProcess(self, signal: str) -> None:
        if self.ended:
            raise error.ProcessExitedAlready()
        self.signals.append(signal)

    def write(self, data: bytes) -> None:
        self.written += data

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def out(self, data: bytes) -> None:
        self.proto.outReceived(data)

    def end(self, code: int = 0) -> None:
        self.ended = True
        reason = error.ProcessDone(0) if code == 0 else error.ProcessTerminated(code)
        self.proto.processEnded(Failure(reason))


class ProcessReactor(MemoryReactorClock):
    """A Clock and memory reactor that records spawned processes."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.spawnError: OSError | None = None

    def spawnProcess(self, proto: Any, executable: str, args: list[str], **kw: Any) -> Any:
        if self.spawnError is not None:
            raise self.spawnError
        process = FakeProcess(proto, list(args))
        self.processes.append(process)
        return process


class Viewer:
    def __init__(self) -> None:
        self.frames: list[EncodedFrame] = []
        self.pending = 0

    def sendFrame(self, frame: EncodedFrame) -> None:
        self.frames.append(frame)

    def pendingBytes(self) -> int:
        return self.pending


def stream(gops: int = 3, perGop: int = 4) -> list[bytes]:
    """Annex-B access units of a 1280x720 H.264 stream, keyframe first in each group."""
    return [joinNalUnits(au) for au in h264Stream(gops, perGop)]


class SourceTests(SynchronousTestCase):
    def test_parseSource(self) -> None:
        self.assertEqual(parseSource("testsrc"), ("testsrc", ""))
        self.assertEqual(parseSource("testsrc:640x480"), ("testsrc", "640x480"))
        self.assertEqual(parseSource("pipe:cat x | y"), ("pipe", "cat x | y"))
        self.assertEqual(parseSource("v4l2:/dev/video0"), ("v4l2", "/dev/video0"))
        for bad in ("", "camera", "file:", "testsrc:big", "testsrc:1x1", "pipe:"):
            e = self.assertRaises(ConfigError, parseSource, bad)
            self.assertEqual(e.key, "node-video")

    def test_badSettings(self) -> None:
        r = ProcessReactor()
        self.assertEqual(self.assertRaises(ConfigError, VideoFeed, r, "testsrc", "vp9").key,
                         "node-codec")  # fmt: skip
        self.assertEqual(self.assertRaises(ConfigError, VideoFeed, r, "testsrc", fps=0).key,
                         "node-fps")  # fmt: skip
        self.assertEqual(
            self.assertRaises(ConfigError, VideoFeed, r, "testsrc", bitrate=5).key, "node-bitrate"
        )
        e = self.assertRaises(ConfigError, VideoFeed, r, "file:/nonexistent/clip.h264")
        self.assertIn("no such file", str(e))

    def test_commands(self) -> None:
        r = ProcessReactor()
        feed = VideoFeed(r, "testsrc", fps=30, bitrate=2_000_000)
        feed.startService()
        argv = r.processes[0].argv
        self.assertEqual(argv[0], "ffmpeg")
        self.assertIn("testsrc=size=1280x720:rate=30", argv)
        self.assertEqual(argv[argv.index("-g") + 1], "60")  # a keyframe every 2 s
        self.assertEqual(argv[-3:], ["-flush_packets", "1", "pipe:1"])
        feed = VideoFeed(r, "v4l2:/dev/video3", codec="h265", fps=60)
        feed.startService()
        argv = r.processes[1].argv
        self.assertIn("/dev/video3", argv)
        self.assertIn("libx265", argv)
        self.assertIn("keyint=120", argv[argv.index("-x265-params") + 1])
        feed = VideoFeed(r, "pipe:my-encoder --annexb")
        feed.startService()
        self.assertEqual(r.processes[2].argv, ["/bin/sh", "-c", "my-encoder --annexb"])
        self.assertIn("hevc", encoderArgs("h265", 30, 10**6, 60))


class FeedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        # Access units complete when the next begins (the pause rule has its own tests).
        self.feed = VideoFeed(self.reactor, "testsrc", fps=25, maxPendingBytes=1000,
                              maxGopBytes=10_000, idleFlush=None)  # fmt: skip
        self.feed.startService()
        self.units = stream()

    @property
    def process(self) -> FakeProcess:
        return self.reactor.processes[-1]

    def push(self, *indexes: int) -> None:
        """Write access units; a unit is complete once the next one starts."""
        for i in indexes:
            self.process.out(self.units[i])
            self.reactor.advance(0.04)

    def test_framesAndSize(self) -> None:
        ready = self.feed.whenReady()
        self.assertNoResult(ready)
        self.assertEqual((self.feed.width, self.feed.height), (0, 0))
        viewer = Viewer()
        self.feed.subscribe(viewer)
        self.push(0, 1, 2)
        self.successResultOf(ready)
        self.successResultOf(self.feed.whenReady())
        self.assertEqual((self.feed.width, self.feed.height), (1280, 720))
        self.assertEqual([f.data for f in viewer.frames], self.units[:2])
        self.assertEqual([f.key for f in viewer.frames], [True, False])
        self.assertEqual([f.ptsMs for f in viewer.frames], [0, 40])
        self.assertEqual({(f.codec, f.width, f.height) for f in viewer.frames},
                         {("h264", 1280, 720)})  # fmt: skip
        self.assertEqual(self.feed.framesOut, 2)

    def test_newViewerGetsGroupOfPictures(self) -> None:
        first = Viewer()
        self.feed.subscribe(first)
        self.push(0, 1, 2, 3, 4, 5, 6)  # second group started: 4, 5 out
        late = Viewer()
        self.feed.subscribe(late)
        self.assertEqual([f.data for f in late.frames], self.units[4:6])
        self.push(7)
        self.assertEqual([f.data for f in late.frames], self.units[4:7])
        self.assertEqual(self.feed.viewers, 2)

    def test_waitsWhenGroupTooLong(self) -> None:
        self.feed.maxGopBytes = len(self.units[0]) + 10
        self.push(0, 1, 2, 3)
        late = Viewer()
        sub = self.feed.subscribe(late)
        self.assertEqual(late.frames, [])
        self.assertTrue(sub.waiting)
        self.push(4, 5, 6)
        self.assertEqual([f.data for f in late.frames], self.units[4:6])

    def test_slowViewer(self) -> None:
        viewer = Viewer()
        sub = self.feed.subscribe(viewer)
        self.push(0, 1, 2)
        viewer.pending = 5000  # over the 1000-byte budget
        self.push(3, 4, 5, 6)  # 2, 3 and the keyframe 4 are lost; 5 too (waiting)
        self.assertEqual(len(viewer.frames), 2)
        self.assertEqual(sub.dropped, 4)
        viewer.pending = 0
        self.push(7, 8)  # 6 is not a keyframe: still waiting; 7 neither
        self.assertEqual(len(viewer.frames), 2)
        self.push(9, 10)  # keyframe 8 resumes
        self.assertEqual([f.data for f in viewer.frames[2:]], self.units[8:10])
        self.assertEqual(sub.delivered, 4)

    def test_cancel(self) -> None:
        viewer = Viewer()
        sub = self.feed.subscribe(viewer)
        self.push(0, 1)
        sub.cancel()
        sub.cancel()
        self.push(2, 3)
        self.assertEqual(len(viewer.frames), 1)
        self.assertEqual(self.feed.viewers, 0)

    def test_failingViewerDropped(self) -> None:
        class Broken(Viewer):
            def sendFrame(self, frame: EncodedFrame) -> None:
                raise RuntimeError("session bug")

        good, broken = Viewer(), Broken()
        self.feed.subscribe(broken)
        self.feed.subscribe(good)
        self.push(0, 1, 2)
        self.assertEqual(len(good.frames), 2)
        self.assertEqual(self.feed.viewerErrors, 1)
        self.assertEqual(self.feed.viewers, 1)
        self.feed.subscribe(Broken())  # fails in the replay
        self.assertEqual((self.feed.viewerErrors, self.feed.viewers), (2, 1))
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_garbageDroppedAndCounted(self) -> None:
        viewer = Viewer()
        self.feed.subscribe(viewer)
        for _ in range(100):
            self.process.out(b"\x12" * 10_000)
        self.assertEqual(viewer.frames, [])
        self.assertEqual(self.feed.dropped["bytes"], 1_000_000 - 2)
        self.assertLess(self.feed._parser.buffered, 10)

    def test_restartWithBackOff(self) -> None:
        self.push(0, 1)
        self.process.end(1)
        self.assertEqual(len(self.reactor.processes), 1)
        self.reactor.advance(RESTART_FIRST)
        self.assertEqual(len(self.reactor.processes), 2)
        self.process.end(1)
        self.reactor.advance(RESTART_FIRST)
        self.assertEqual(len(self.reactor.processes), 2)  # the second wait is longer
        self.reactor.advance(RESTART_FIRST)
        self.assertEqual(len(self.reactor.processes), 3)
        self.assertEqual(self.feed.restarts, 2)
        # A keyframe from the new process resets the back-off.
        self.push(0, 1)
        self.process.end(0)
        self.reactor.advance(RESTART_FIRST)
        self.assertEqual(len(self.reactor.processes), 4)

    def test_failingSourceFailsWaiters(self) -> None:
        ready = self.feed.whenReady()
        for _ in range(3):
            self.process.end(1)
            self.reactor.advance(60)
        self.failureResultOf(ready, VideoUnavailable)
        self.failureResultOf(self.feed.whenReady(), VideoUnavailable)
        self.push(0, 1)  # it comes back
        self.successResultOf(self.feed.whenReady())

    def test_spawnErrorRetried(self) -> None:
        self.feed.stopService()
        self.reactor.spawnError = OSError(2, "No such file or directory")
        self.feed.startService()
        ready = self.feed.whenReady()
        for _ in range(3):
            self.reactor.advance(60)
        self.failureResultOf(ready, VideoUnavailable)
        self.reactor.spawnError = None
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.processes), 2)

    def test_requestKeyframeRestartsEncoder(self) -> None:
        self.push(0, 1)
        self.feed.requestKeyframe()
        self.assertEqual(self.process.signals, ["TERM"])
        self.feed.requestKeyframe()  # within the keyframe interval: not again
        self.assertEqual(self.process.signals, ["TERM"])
        self.process.end(-15)
        self.assertEqual(len(self.reactor.processes), 2)  # at once, no back-off
        self.assertEqual(self.feed.keyframeRequests, 2)
        self.reactor.advance(2.0)
        self.feed.requestKeyframe()
        self.assertEqual(self.process.signals, ["TERM"])

    def test_pipeCannotBeAsked(self) -> None:
        feed = VideoFeed(self.reactor, "pipe:encoder")
        feed.startService()
        feed.requestKeyframe()
        self.assertEqual(self.process.signals, [])

    def test_stop(self) -> None:
        waiting = self.feed.whenReady()
        process = self.process
        stopped = self.feed.stopService()
        self.failureResultOf(waiting, VideoUnavailable)
        self.assertEqual(process.signals, ["TERM"])
        self.assertNoResult(stopped)
        self.reactor.advance(STOP_TIMEOUT)
        self.assertEqual(process.signals, ["TERM", "KILL"])
        process.end(-9)
        self.successResultOf(stopped)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.processes), 1)  # not restarted
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class IdleFlushTests(SynchronousTestCase):
    """An encoder pause ends an access unit: no wait for the next to begin."""

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.feed = VideoFeed(self.reactor, "testsrc", fps=60)
        self.feed.startService()
        self.process = self.reactor.processes[0]
        self.viewer = Viewer()
        self.feed.subscribe(self.viewer)
        self.units = stream()

    def test_defaults(self) -> None:
        self.assertEqual(self.feed.idleFlush, 0.25 / 60)
        self.assertEqual(VideoFeed(self.reactor, "testsrc", fps=25).idleFlush, 0.005)
        self.assertIsNone(VideoFeed(self.reactor, "pipe:x").idleFlush)

    def test_pauseEndsUnit(self) -> None:
        self.process.out(self.units[0])
        self.reactor.advance(0.004)
        self.assertEqual(self.viewer.frames, [])
        self.reactor.advance(0.001)
        self.assertEqual([f.data for f in self.viewer.frames], self.units[:1])
        # A unit in pieces, each well inside the pause: one frame, when it has all come.
        half = len(self.units[1]) // 2
        self.process.out(self.units[1][:half])
        self.reactor.advance(0.003)
        self.process.out(self.units[1][half:])
        self.reactor.advance(0.003)
        self.assertEqual(len(self.viewer.frames), 1)
        self.reactor.advance(0.002)
        self.assertEqual([f.data for f in self.viewer.frames], self.units[:2])
        self.assertEqual(self.feed.dropped["cuts"], 0)

    def test_wrongGuess(self) -> None:
        # The encoder stalled inside a unit: the picture went out cut short; the rest is
        # dropped and counted, and the viewers get nothing until the next keyframe.
        self.process.out(self.units[0])
        self.reactor.advance(0.01)
        self.process.out(self.units[1][:-3])
        self.reactor.advance(0.01)
        self.process.out(self.units[1][-3:])
        for unit in self.units[2:5]:
            self.process.out(unit)
            self.reactor.advance(0.01)
        self.assertEqual(self.feed.dropped["cuts"], 1)
        self.assertEqual([f.key for f in self.viewer.frames], [True, False, True])
        self.assertEqual(self.viewer.frames[2].data, self.units[4])


class SnapshotTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.feed = VideoFeed(self.reactor, "testsrc")
        self.feed.startService()
        self.encoder = self.reactor.processes[0]
        for unit in stream(1, 4):
            self.encoder.out(unit)

    def test_png(self) -> None:
        d = self.feed.snapshot()
        ffmpeg = self.reactor.processes[-1]
        self.assertIn("select=eq(n\\,2)", ffmpeg.argv)  # the third picture of the group
        self.assertEqual(ffmpeg.argv[ffmpeg.argv.index("-c:v") + 1], "png")
        self.assertEqual(ffmpeg.written, b"".join(stream(1, 4)[:3]))
        self.assertTrue(ffmpeg.stdinClosed)
        ffmpeg.out(b"\x89PNG...")
        ffmpeg.out(b"rest")
        ffmpeg.end(0)
        self.assertEqual(self.successResultOf(d), b"\x89PNG...rest")

    def test_failure(self) -> None:
        d = self.feed.snapshot("jpeg")
        ffmpeg = self.reactor.processes[-1]
        self.assertIn("mjpeg", ffmpeg.argv)
        ffmpeg.proto.errReceived(b"Invalid data found when processing input\n")
        ffmpeg.end(1)
        f = self.failureResultOf(d, VideoUnavailable)
        self.assertIn("Invalid data", str(f.value))

    def test_timeout(self) -> None:
        d = self.feed.snapshot()
        ffmpeg = self.reactor.processes[-1]
        self.reactor.advance(15)
        self.assertEqual(ffmpeg.signals, ["KILL"])
        ffmpeg.end(-9)
        self.failureResultOf(d, VideoUnavailable)

    def test_badFormat(self) -> None:
        self.failureResultOf(self.feed.snapshot("gif"), ValueError)

    def test_waitsForPicture(self) -> None:
        feed = VideoFeed(self.reactor, "testsrc")
        feed.startService()
        d = feed.snapshot()
        count = len(self.reactor.processes)
        self.assertNoResult(d)
        feed.stopService()
        self.failureResultOf(d, VideoUnavailable)
        self.assertEqual(len(self.reactor.processes), count)


class FileSourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.units = stream(2, 3)
        self.path = self.mktemp()
        with open(self.path, "wb") as f:
            f.write(b"".join(self.units))

    def test_loopsAtFrameRate(self) -> None:
        feed = VideoFeed(self.reactor, f"file:{self.path}", fps=10)
        feed.startService()
        self.successResultOf(feed.whenReady())
        self.assertEqual((feed.width, feed.height), (1280, 720))
        viewer = Viewer()
        feed.subscribe(viewer)  # the first keyframe, replayed
        for _ in range(13):
            self.reactor.advance(0.1)
        self.assertEqual([f.data for f in viewer.frames], (self.units * 3)[:14])
        self.assertEqual([f.ptsMs for f in viewer.frames], [100 * i for i in range(14)])
        self.assertEqual(self.reactor.processes, [])

    def test_lateReactorCatchesUp(self) -> None:
        feed = VideoFeed(self.reactor, f"file:{self.path}", fps=10)
        feed.startService()
        viewer = Viewer()
        feed.subscribe(viewer)
        self.reactor.advance(0.35)  # three ticks due at once
        self.assertEqual([f.ptsMs for f in viewer.frames], [0, 100, 200, 300])
        self.reactor.advance(5.0)  # 50 due: 10 sent (one second), 40 skipped
        self.assertEqual(len(viewer.frames), 14)
        self.assertEqual(feed.skippedTicks, 40)
        self.assertEqual(viewer.frames[-1].ptsMs, 5300)
        # After the gap, play went on at the next keyframe (units 4 and 5 are not).
        self.assertEqual([f.data for f in viewer.frames[4:8]], self.units[:4])

    def test_requestKeyframeSkipsAhead(self) -> None:
        feed = VideoFeed(self.reactor, f"file:{self.path}", fps=10)
        feed.startService()
        viewer = Viewer()
        feed.subscribe(viewer)
        feed.requestKeyframe()
        self.reactor.advance(0.1)
        self.assertEqual([f.data for f in viewer.frames], [self.units[0], self.units[3]])
        feed.stopService()
        self.reactor.advance(10)
        self.assertEqual(len(viewer.frames), 2)

    def test_restartGoesOnCounting(self) -> None:
        feed = VideoFeed(self.reactor, f"file:{self.path}", fps=10)
        feed.startService()
        viewer = Viewer()
        feed.subscribe(viewer)
        self.reactor.advance(0.1)
        feed.stopService()
        self.reactor.advance(60)
        feed.startService()  # no burst for the minute it was stopped
        self.reactor.advance(0.1)
        self.assertEqual([f.ptsMs for f in viewer.frames], [0, 100, 200, 300])

    def test_noKeyframe(self) -> None:
        with open(self.path, "wb") as f:
            f.write(b"".join(self.units[1:3]) + b"not video" * 100)
        feed = VideoFeed(self.reactor, f"file:{self.path}")
        feed.startService()
        f = self.failureResultOf(feed.whenReady(), VideoUnavailable)
        self.assertIn("no h264 keyframe", str(f.value))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
