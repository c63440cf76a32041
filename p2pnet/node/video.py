# -*- test-case-name: test.unit.test_video,test.interop.test_video_ffmpeg -*-
"""The KVM node's video: one encoder feeding every viewer (docs/kvm-node.md "Video").

L{VideoFeed} runs one source and cuts its Annex-B output into access units with
L{p2pnet.codecs.annexb.AccessUnitParser}; each becomes an L{EncodedFrame}, which the
session wraps in one C{EncodedVideoFrame} (rustdesk.md §10.1). Sources:

 - C{testsrc} (or C{testsrc:WxH}): ffmpeg's moving test pattern, with its running clock,
   encoded by ffmpeg at the feed's codec, frame rate and bitrate;
 - C{file:PATH}: an H.264/H.265 Annex-B file, read once, looped, paced at C{fps} by the
   reactor's clock;
 - C{pipe:COMMAND}: Annex-B on the standard output of C{/bin/sh -c COMMAND};
 - C{v4l2:/dev/videoN}: ffmpeg capturing the device and encoding it.

Viewers: a new viewer gets the current group of pictures (the last keyframe and the
frames since, when it is cached) at once and is live from there; without one it waits
for the next keyframe. A viewer whose transport holds more than C{maxPendingBytes} loses
frames until its next keyframe. Nothing grows without bound: the parser's NAL and access
unit limits, the cached group's limit, and the bounded stderr and snapshot buffers.
"""

from __future__ import annotations

import os
import shlex
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from p2pnet.codecs.annexb import CODECS, AccessUnit, AccessUnitParser
from p2pnet.errors import ConfigError
from p2pnet.ratelog import RateLimitedLog

__all__ = [
    "DEFAULT_BITRATE",
    "EncodedFrame",
    "IViewer",
    "Subscription",
    "VideoFeed",
    "VideoUnavailable",
    "encoderArgs",
    "parseSource",
]

log = Logger()

DEFAULT_BITRATE = 4_000_000
DEFAULT_TESTSRC_SIZE = (1280, 720)
#: How long a keyframe may be kept waiting for: the encoders' keyframe interval.
KEYFRAME_INTERVAL = 2.0
#: Restart back-off after an encoder exits on its own: first delay, cap.
RESTART_FIRST = 0.5
RESTART_MAX = 30.0
#: Bytes of an encoder's stderr kept for the log line when it exits.
STDERR_TAIL = 4096
#: Largest file a C{file:} source reads, and largest snapshot accepted from ffmpeg.
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
SNAPSHOT_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


class VideoUnavailable(Exception):
    """The feed has no picture to give: stopped, or its source failed."""


@dataclass(frozen=True)
class EncodedFrame:
    """One access unit for every viewer.

    @ivar data: Annex-B bytes; a keyframe carries its SPS/PPS (and VPS).
    @ivar key: whether a decoder can start here.
    @ivar ptsMs: presentation time, milliseconds since the feed's first frame.
    @ivar codec: C{"h264"} or C{"h265"}.
    @ivar width: picture width from the SPS.
    @ivar height: picture height from the SPS.
    """

    data: bytes
    key: bool
    ptsMs: int
    codec: str
    width: int
    height: int


class IViewer(Protocol):
    """What the feed needs from a viewer (the node's peer session)."""

    def sendFrame(self, frame: EncodedFrame) -> None:
        """Send one frame."""

    def pendingBytes(self) -> int:
        """Bytes written to the viewer's transport and not yet sent."""


def parseSource(source: str) -> tuple[str, str]:
    """(kind, argument) of a C{node-video} value; L{ConfigError} when it is not one."""
    kind, _, arg = source.partition(":")
    if kind == "testsrc":
        if arg:
            w, _, h = arg.partition("x")
            if not (w.isdigit() and h.isdigit() and 16 <= int(w) <= 8192 and 16 <= int(h) <= 8192):
                raise ConfigError("node-video", f"testsrc size must be WIDTHxHEIGHT, not {arg!r}")
        return kind, arg
    if kind in ("file", "pipe", "v4l2") and arg:
        return kind, arg
    raise ConfigError(
        "node-video", f"{source!r} is not testsrc, file:PATH, pipe:COMMAND or v4l2:DEVICE"
    )


def encoderArgs(codec: str, fps: int, bitrate: int, keyint: int) -> list[str]:
    """ffmpeg output options: low-latency libx264/libx265 to Annex-B on stdout."""
    rate = ["-b:v", str(bitrate), "-maxrate", str(bitrate), "-bufsize", str(bitrate)]
    if codec == "h264":
        enc = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"]
        enc += ["-g", str(keyint), "-bf", "0", *rate, "-f", "h264"]
    else:
        params = f"log-level=error:keyint={keyint}:min-keyint={keyint}:open-gop=0:bframes=0"
        enc = ["-c:v", "libx265", "-preset", "ultrafast", "-tune", "zerolatency"]
        enc += ["-x265-params", params, *rate, "-f", "hevc"]
    return ["-an", "-pix_fmt", "yuv420p", *enc, "-flush_packets", "1", "pipe:1"]


class Subscription:
    """One viewer of a L{VideoFeed}.

    @ivar delivered: frames sent to the viewer.
    @ivar dropped: frames the viewer lost (too much pending, or waiting for a keyframe
        after that).
    @ivar waiting: the viewer waits for a keyframe.
    """

    def __init__(self, feed: VideoFeed, viewer: IViewer) -> None:
        self._feed = feed
        self.viewer = viewer
        self.waiting = True
        self.delivered = 0
        self.dropped = 0
        self.active = True

    def cancel(self) -> None:
        """Stop sending frames to this viewer."""
        if self.active:
            self.active = False
            self._feed._subscriptions.pop(self, None)

    def _send(self, frame: EncodedFrame) -> None:
        self.viewer.sendFrame(frame)
        self.delivered += 1

    def _offer(self, frame: EncodedFrame, budget: int) -> None:
        if self.waiting and not frame.key:
            self.dropped += 1
            return
        if self.viewer.pendingBytes() > budget:
            self.dropped += 1
            self.waiting = True
            return
        self.waiting = False
        self._send(frame)


class _EncoderProtocol(protocol.ProcessProtocol):
    def __init__(self, feed: VideoFeed) -> None:
        self.feed = feed
        self.stderr: deque[bytes] = deque()
        self.stderrBytes = 0

    def outReceived(self, data: bytes) -> None:
        self.feed._sourceData(self, data)

    def errReceived(self, data: bytes) -> None:
        self.stderr.append(data)
        self.stderrBytes += len(data)
        while self.stderrBytes > STDERR_TAIL and len(self.stderr) > 1:
            self.stderrBytes -= len(self.stderr.popleft())

    def processEnded(self, reason: Failure) -> None:
        self.feed._processEnded(self, reason)


class _SnapshotProtocol(protocol.ProcessProtocol):
    def __init__(self, data: bytes, done: defer.Deferred[bytes]) -> None:
        self.data = data
        self.done = done
        self.out: list[bytes] = []
        self.size = 0
        self.err = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.data)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_SNAPSHOT_BYTES:
            self.out = []
            self._kill()
        else:
            self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err = (self.err + data)[-STDERR_TAIL:]

    def _kill(self) -> None:
        try:
            assert self.transport is not None
            self.transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    def processEnded(self, reason: Failure) -> None:
        if self.done.called:
            return
        image = b"".join(self.out)
        if reason.check(error.ProcessDone) and image:
            self.done.callback(image)
        else:
            detail = self.err.decode("utf-8", "replace").strip().splitlines()
            why = detail[-1] if detail else str(reason.value)
            self.done.errback(VideoUnavailable(f"snapshot failed: {why}"))


class VideoFeed(Service):
    """One video source and encoder, shared by every viewer.

    @param reactor: provides C{IReactorTime} and C{IReactorProcess}.
    @param source: C{testsrc[:WxH]}, C{file:PATH}, C{pipe:COMMAND}, C{v4l2:DEVICE}.
    @param codec: C{"h264"} or C{"h265"}: what the source produces.
    @param maxPendingBytes: a viewer whose transport holds more loses frames until its
        next keyframe.
    @param maxGopBytes: bound on the cached group of pictures replayed to new viewers.
    @param idleFlush: seconds of silence from an encoder process after which the bytes
        so far are taken as a whole access unit, instead of waiting for the next one to
        begin (a frame interval later): C{True} picks 5 ms (a quarter frame above 50 fps)
        for the ffmpeg the node runs and none for C{pipe:}; C{None} turns it off.
    @ivar framesOut: access units the source produced (sent to zero or more viewers).
    @ivar restarts: encoder processes started after the first.
    @ivar viewerErrors: viewers dropped because their C{sendFrame} raised.
    @ivar keyframeRequests: calls of L{requestKeyframe}.
    @ivar lastFrameAt: the reactor's time when the latest frame came out of the source.
    @ivar playStart: a file source's clock: frame n is due at C{playStart + n / fps}.
    @ivar skippedTicks: frames of a file source skipped because the reactor was more than
        a second late.
    """

    name = "video"

    def __init__(
        self,
        reactor: Any,
        source: str,
        codec: str = "h264",
        fps: int = 30,
        bitrate: int = DEFAULT_BITRATE,
        *,
        maxPendingBytes: int = 1024 * 1024,
        maxGopBytes: int = 8 * 1024 * 1024,
        ffmpeg: str = "ffmpeg",
        keyframeInterval: float = KEYFRAME_INTERVAL,
        idleFlush: float | None | bool = True,
    ) -> None:
        if codec not in CODECS:
            raise ConfigError("node-codec", f"must be one of {', '.join(CODECS)}, not {codec!r}")
        if not 1 <= fps <= 240:
            raise ConfigError("node-fps", f"must be 1..240, not {fps}")
        if not 10_000 <= bitrate <= 1_000_000_000:
            raise ConfigError("node-bitrate", f"must be 10000..1000000000 bit/s, not {bitrate}")
        self.kind, self.argument = parseSource(source)
        if self.kind == "file" and not os.path.isfile(self.argument):
            raise ConfigError("node-video", f"{self.argument}: no such file")
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.source = source
        self.codec = codec
        self.fps = fps
        self.bitrate = bitrate
        self.maxPendingBytes = maxPendingBytes
        self.maxGopBytes = maxGopBytes
        self.ffmpeg = ffmpeg
        self.keyframeInterval = keyframeInterval
        if idleFlush is True:
            # The ffmpeg the node starts writes each access unit at once (-flush_packets
            # 1); what a pipe: command does is not known.
            idleFlush = min(0.005, 0.25 / fps) if self.kind in ("testsrc", "v4l2") else None
        self.idleFlush: float | None = idleFlush or None
        self._idleCall: Any = None
        self._ratelog = RateLimitedLog(log, reactor)
        self._subscriptions: dict[Subscription, None] = {}
        self._waiters: list[defer.Deferred[None]] = []
        self._gop: list[EncodedFrame] | None = None
        self._gopBytes = 0
        self.lastKeyframe: EncodedFrame | None = None
        self._parser = AccessUnitParser(codec)
        self._sizes = (0, 0)
        self._start: float | None = None
        self.framesOut = 0
        self.viewerErrors = 0
        self.restarts = 0
        self.keyframeRequests = 0
        self.lastFrameAt = 0.0
        self.error: str | None = None
        # Process sources.
        self._process: _EncoderProtocol | None = None
        self._restartCall: Any = None
        self._failures = 0
        self._lastForcedRestart: float | None = None
        self._restartNow = False
        self._droppedBase = [0, 0, 0, 0]
        self._stopped: defer.Deferred[None] | None = None
        # File source.
        self._fileFrames: list[AccessUnit] = []
        self._fileIndex = 0
        self._fileCount = 0
        self._loop: LoopingCall | None = None
        self._skipToKey = False
        self.playStart = 0.0
        self.skippedTicks = 0

    # -- what the session reads --------------------------------------------------------

    @property
    def width(self) -> int:
        """Picture width from the source's SPS; 0 until known."""
        return self._sizes[0]

    @property
    def height(self) -> int:
        """Picture height from the source's SPS; 0 until known."""
        return self._sizes[1]

    @property
    def viewers(self) -> int:
        """Subscribed viewers."""
        return len(self._subscriptions)

    @property
    def dropped(self) -> dict[str, int]:
        """What the source sent that was dropped: garbage bytes, NAL units, access units,
        and access units ended early by L{idleFlush} (C{cuts})."""
        p = self._parser
        current = (p.droppedBytes, p.droppedNals, p.droppedAccessUnits, p.cutErrors)
        names = ("bytes", "nals", "accessUnits", "cuts")
        return {n: b + c for n, b, c in zip(names, self._droppedBase, current, strict=True)}

    def subscribe(self, viewer: IViewer) -> Subscription:
        """Send frames to C{viewer}, starting at a keyframe (the cached one when there is)."""
        sub = Subscription(self, viewer)
        self._subscriptions[sub] = None
        if self._gop:
            try:
                for frame in list(self._gop):
                    sub._send(frame)
            except Exception:
                self._viewerFailed(sub)
            sub.waiting = False
        return sub

    def _viewerFailed(self, sub: Subscription) -> None:
        """A viewer raised: it gets no more frames; the others are not disturbed."""
        sub.cancel()
        self.viewerErrors += 1
        self._ratelog.warn(
            "video-viewer", "Video viewer {viewer!r} failed and was dropped: {error}",
            viewer=sub.viewer, error=Failure().getErrorMessage(),
        )  # fmt: skip

    def requestKeyframe(self) -> None:
        """Ask the source for a keyframe soon (C{Misc.refresh_video}).

        A file source skips ahead to its next keyframe; an ffmpeg source the node runs is
        restarted (at most once per keyframe interval), which starts with one; a C{pipe:}
        command cannot be asked, and its next keyframe comes when it comes.
        """
        self.keyframeRequests += 1
        if not self.running:
            return
        if self.kind == "file":
            self._skipToKey = True
        elif self.kind in ("testsrc", "v4l2") and self._process is not None:
            now = self.clock.seconds()
            last = self._lastForcedRestart
            if last is None or now - last >= self.keyframeInterval:
                self._lastForcedRestart = now
                self._restartNow = True
                self._kill(self._process, "TERM")

    def whenReady(self) -> defer.Deferred[None]:
        """A Deferred that fires once the first keyframe is known (the size with it).

        It fails with L{VideoUnavailable} if the feed stops or its source is unusable first.
        """
        if self.lastKeyframe is not None:
            return defer.succeed(None)
        if self.error is not None:
            return defer.fail(VideoUnavailable(self.error))
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        return d

    def snapshot(self, fmt: str = "png") -> defer.Deferred[bytes]:
        """The current picture as PNG or JPEG bytes, decoded by ffmpeg in a child process.

        ffmpeg decodes the cached group of pictures (or the last keyframe) and keeps the
        last picture.
        """
        if fmt not in ("png", "jpeg"):
            return defer.fail(ValueError(f"format must be png or jpeg, not {fmt!r}"))
        return self.whenReady().addCallback(lambda _: self._snapshot(fmt))

    def _snapshot(self, fmt: str) -> defer.Deferred[bytes]:
        frames = list(self._gop) if self._gop else [self.lastKeyframe]
        data = b"".join(f.data for f in frames if f is not None)
        encode = ["-c:v", "png"] if fmt == "png" else ["-c:v", "mjpeg", "-q:v", "3"]
        argv = [
            self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
            "-f", "h264" if self.codec == "h264" else "hevc", "-i", "pipe:0",
            "-vf", f"select=eq(n\\,{len(frames) - 1})", "-vsync", "0", "-frames:v", "1",
            *encode, "-f", "image2pipe", "pipe:1",
        ]  # fmt: skip
        done: defer.Deferred[bytes] = defer.Deferred()
        proto = _SnapshotProtocol(data, done)
        try:
            self.reactor.spawnProcess(proto, self.ffmpeg, argv, env=dict(os.environ))
        except OSError as e:
            return defer.fail(VideoUnavailable(f"cannot run {self.ffmpeg}: {e}"))
        timer = self.clock.callLater(SNAPSHOT_TIMEOUT, proto._kill)

        def ended(result: bytes | Failure) -> bytes | Failure:
            if timer.active():
                timer.cancel()
            return result

        return done.addBoth(ended)

    # -- lifecycle ---------------------------------------------------------------------

    def startService(self) -> None:
        """Start the source."""
        super().startService()
        self._stopped = None
        if self.kind == "file":
            self._startFile()
        else:
            self._spawn()

    def stopService(self) -> defer.Deferred[None]:
        """Stop the source (the encoder process ends); pending L{whenReady}s fail."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for call in (self._restartCall, self._idleCall):
            if call is not None and call.active():
                call.cancel()
        self._failWaiters("video feed stopped")
        self.error = None
        if self._process is None:
            return defer.succeed(None)
        self._stopped = defer.Deferred()
        process = self._process
        self._kill(process, "TERM")
        kill = self.clock.callLater(STOP_TIMEOUT, self._kill, process, "KILL")
        d = self._stopped

        def ended(result: None) -> None:
            if kill.active():
                kill.cancel()
            return result

        d.addCallback(ended)
        return d

    def _failWaiters(self, why: str) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(VideoUnavailable(why))

    # -- frames out --------------------------------------------------------------------

    def _pts(self) -> int:
        now = self.clock.seconds()
        if self._start is None:
            self._start = now
        return int((now - self._start) * 1000)

    def _emit(self, au: AccessUnit, ptsMs: int) -> None:
        self.lastFrameAt = self.clock.seconds()
        frame = EncodedFrame(au.data, au.key, ptsMs, self.codec, *self._sizes)
        self.framesOut += 1
        if frame.key:
            self.lastKeyframe = frame
            self.error = None
            self._gopBytes = len(frame.data)
            self._gop = [frame] if self._gopBytes <= self.maxGopBytes else None
            self._failures = 0
        elif self._gop is not None:
            self._gopBytes += len(frame.data)
            if self._gopBytes > self.maxGopBytes:
                self._gop = None  # too long to replay: new viewers wait for a keyframe
            else:
                self._gop.append(frame)
        budget = self.maxPendingBytes
        for sub in list(self._subscriptions):
            try:
                sub._offer(frame, budget)
            except Exception:
                self._viewerFailed(sub)
        if frame.key and self._waiters:
            # After the frame went out: a waiter that subscribes gets it once, replayed.
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    def _parsed(self, aus: list[AccessUnit]) -> None:
        parser = self._parser
        if parser.width:
            self._sizes = (parser.width, parser.height)
        for au in aus:
            self._emit(au, self._pts())

    # -- process sources ---------------------------------------------------------------

    def _argv(self) -> list[str]:
        keyint = max(1, round(self.fps * self.keyframeInterval))
        head = [self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
        out = encoderArgs(self.codec, self.fps, self.bitrate, keyint)
        if self.kind == "testsrc":
            w, h = DEFAULT_TESTSRC_SIZE
            if self.argument:
                w, h = (int(v) for v in self.argument.split("x"))
            src = f"testsrc=size={w}x{h}:rate={self.fps}"
            return [*head, "-re", "-f", "lavfi", "-i", src, *out]
        if self.kind == "v4l2":
            cap = ["-f", "v4l2", "-framerate", str(self.fps), "-i", self.argument]
            return [*head, *cap, "-r", str(self.fps), *out]
        return ["/bin/sh", "-c", self.argument]

    def _spawn(self) -> None:
        self._restartCall = None
        if not self.running:
            return
        argv = self._argv()
        proto = _EncoderProtocol(self)
        old = self._parser
        counts = (old.droppedBytes, old.droppedNals, old.droppedAccessUnits, old.cutErrors)
        for i, n in enumerate(counts):
            self._droppedBase[i] += n
        self._parser = AccessUnitParser(self.codec)
        try:
            self.reactor.spawnProcess(proto, argv[0], argv, env=dict(os.environ), childFDs={
                0: "w", 1: "r", 2: "r"})  # fmt: skip
        except OSError as e:
            self._ratelog.warn("video-spawn", "Video source {cmd} cannot start: {e}",
                               cmd=shlex.join(argv[:1]), e=e)  # fmt: skip
            self._scheduleRestart(f"node-video: cannot run {argv[0]}: {e}")
            return
        self._process = proto
        if self.framesOut or self._failures:
            self.restarts += 1

    def _sourceData(self, proto: _EncoderProtocol, data: bytes) -> None:
        if proto is not self._process:
            return
        self._parsed(self._parser.feed(data))
        if self.idleFlush is not None and self._parser.buffered:
            call = self._idleCall
            if call is not None and call.active():
                call.reset(self.idleFlush)
            else:
                self._idleCall = self.clock.callLater(self.idleFlush, self._idle, proto)

    def _idle(self, proto: _EncoderProtocol) -> None:
        """The encoder paused: what it wrote is a whole access unit (see L{idleFlush})."""
        if proto is self._process:
            self._parsed(self._parser.endAccessUnit())

    def _kill(self, proto: _EncoderProtocol, signal: str) -> None:
        try:
            if proto.transport is not None:
                proto.transport.signalProcess(signal)
        except error.ProcessExitedAlready:
            pass

    def _processEnded(self, proto: _EncoderProtocol, reason: Failure) -> None:
        if proto is not self._process:
            return
        self._process = None
        if self._stopped is not None:
            stopped, self._stopped = self._stopped, None
            stopped.callback(None)
            return
        if not self.running:
            return
        if self._restartNow:
            self._restartNow = False
            self._spawn()
            return
        tail = b"".join(proto.stderr).decode("utf-8", "replace").strip().splitlines()
        detail = f": {tail[-1]}" if tail else ""
        self._ratelog.warn(
            "video-exit", "Video source {source} ended ({why}){detail}",
            source=self.source, why=reason.value.__class__.__name__, detail=detail,
        )  # fmt: skip
        self._scheduleRestart(f"node-video: {self.source} ended without a picture{detail}")

    def _scheduleRestart(self, why: str) -> None:
        """Start the source again after the back-off; fail waiters when it keeps failing."""
        delay = min(RESTART_MAX, RESTART_FIRST * 2**self._failures)
        self._failures += 1
        self._restartCall = self.clock.callLater(delay, self._spawn)
        if self.lastKeyframe is None and self._failures >= 3:
            self.error = why
            self._failWaiters(why)

    # -- file source -------------------------------------------------------------------

    def _startFile(self) -> None:
        if not self._fileFrames:
            try:
                self._fileFrames = self._readFile()
            except OSError as e:
                self.error = f"node-video: {self.argument}: {e.strerror}"
            if not self._fileFrames and self.error is None:
                self.error = f"node-video: {self.argument}: no {self.codec} keyframe in it"
            if self.error is not None:
                log.error("{error}", error=self.error)
                self._failWaiters(self.error)
                return
        # Frame n is due at _loopStart + n / fps; a restarted feed goes on counting.
        self.playStart = self.clock.seconds() - self._fileCount / self.fps
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(1.0 / self.fps, now=True)

    def _readFile(self) -> list[AccessUnit]:
        parser = AccessUnitParser(self.codec)
        frames: list[AccessUnit] = []
        total = 0
        with open(self.argument, "rb") as f:
            while chunk := f.read(1024 * 1024):
                total += len(chunk)
                if total > MAX_FILE_BYTES:
                    raise OSError(0, f"larger than {MAX_FILE_BYTES} bytes")
                frames += parser.feed(chunk)
        frames += parser.flush()
        self._sizes = (parser.width, parser.height)
        return frames

    def _tick(self) -> None:
        """Emit the frames due since the last call: more than one when the reactor was
        late, so the stream keeps to the clock (up to one second of backlog; beyond
        that the frames are skipped, play goes on at the next keyframe, and the time stamps still
        follow the clock)."""
        frames = self._fileFrames
        elapsed = self.clock.seconds() - self.playStart
        due = int(elapsed * self.fps + 1e-6) + 1 - self._fileCount
        if due <= 0:
            return
        skipped = max(0, due - self.fps)
        if skipped:
            # A gap in the pictures: go on from a keyframe, or decoders break.
            self._fileCount += skipped
            self.skippedTicks += skipped
            self._skipToKey = True
        if self._skipToKey:
            self._skipToKey = False
            for step in range(len(frames)):
                if frames[(self._fileIndex + step) % len(frames)].key:
                    self._fileIndex = (self._fileIndex + step) % len(frames)
                    break
        for _ in range(due - skipped):
            au = frames[self._fileIndex]
            self._fileIndex = (self._fileIndex + 1) % len(frames)
            pts = self._fileCount * 1000 // self.fps
            self._fileCount += 1
            self._emit(au, pts)
