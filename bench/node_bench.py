#!/usr/bin/env python3
"""Benchmark of the KVM node's video feed (p2pnet.node.video); prints figures.

    .venv/bin/python bench/node_bench.py [--seconds 10] [--only 1080p60x4 ...]

A 1080p H.264 clip (ffmpeg's testsrc2, libx264, 8 Mbit/s, a keyframe every 2 s) is
made once with Debian's ffmpeg and played by a C{file:} source at 30 and 60 fps to 1
and 4 viewers on the real reactor. Each viewer does what the node's session does with a
frame before its transport: wraps it in a RustDesk C{Message{video_frame}} and
serializes it. Figures (docs/performance.md records them):

- frames delivered per second to each viewer (and frames lost, which should be 0);
- added latency: from the frame's due time on the source's clock (C{playStart + n / fps})
  to the viewer's C{sendFrame}, mean / 99th percentile / max; it
  holds the reactor's timer lateness and the feed's own work;
- node CPU per frame (user + system CPU of this process over the run / frames out) and
  as a share of one core;
- resident memory before the feed starts and at the end.

Also: the Annex-B parser's throughput on the clip (MB/s, access units/s).
The secure session and TCP transport are not in these figures; the end-to-end
benchmark through a real session adds them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from processes import rssKiB

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import reactor  # noqa: E402

from p2pnet.codecs.annexb import AccessUnitParser  # noqa: E402
from p2pnet.codecs.proto import message_pb2 as pb  # noqa: E402
from p2pnet.node.video import EncodedFrame, VideoFeed  # noqa: E402

CLIP_SECONDS = 10
CLIP_FPS = 60


def makeClip(path: str) -> None:
    """1080p H.264 Annex-B: testsrc2, 8 Mbit/s, a keyframe every 2 s at 60 fps."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("ffmpeg is needed (Debian package ffmpeg)")
    subprocess.run(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size=1920x1080:rate={CLIP_FPS}", "-frames:v",
         str(CLIP_SECONDS * CLIP_FPS), "-pix_fmt", "yuv420p", "-c:v", "libx264",
         "-preset", "ultrafast", "-tune", "zerolatency", "-b:v", "8M", "-maxrate", "8M",
         "-bufsize", "8M", "-g", str(2 * CLIP_FPS), "-bf", "0", "-f", "h264", path],
        check=True,
    )  # fmt: skip


class Viewer:
    """Wraps each frame as the session does and records when it came."""

    def __init__(self, feed: VideoFeed, start: list[float]) -> None:
        self.feed = feed
        self.start = start
        self.frames = 0
        self.bytes = 0
        self.latencies: list[float] = []

    def sendFrame(self, frame: EncodedFrame) -> None:
        now = time.time()
        video = pb.VideoFrame(display=0)
        video.h264s.frames.add(data=frame.data, key=frame.key, pts=frame.ptsMs)
        self.bytes += len(pb.Message(video_frame=video).SerializeToString())
        if self.frames and self.start:  # the first is the replayed keyframe
            due = self.start[0] + frame.ptsMs / 1000.0
            self.latencies.append(now - due)
        self.frames += 1

    def pendingBytes(self) -> int:
        return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def runCase(clip: str, fps: int, viewers: int, seconds: float) -> dict[str, Any]:
    """Play C{clip} at C{fps} to C{viewers} for C{seconds} on the reactor."""
    rssBefore = rssKiB(os.getpid())
    feed = VideoFeed(reactor, f"file:{clip}", fps=fps)
    start: list[float] = []
    watchers = [Viewer(feed, start) for _ in range(viewers)]
    result: dict[str, Any] = {}

    def begin() -> None:
        feed.startService()
        start.append(feed.playStart)  # frame n is due at playStart + n / fps
        for w in watchers:
            feed.subscribe(w)
        cpu0 = time.process_time()
        frames0 = feed.framesOut

        def end() -> None:
            cpu = time.process_time() - cpu0
            frames = feed.framesOut - frames0
            feed.stopService()
            lat = [x for w in watchers for x in w.latencies]
            result.update(
                framesOut=frames,
                fpsDelivered=sum(w.frames - 1 for w in watchers) / viewers / seconds,
                lost=sum(s.dropped for s in feed._subscriptions),
                latMeanMs=1000 * sum(lat) / len(lat),
                latP99Ms=1000 * percentile(lat, 0.99),
                latMaxMs=1000 * max(lat),
                cpuPerFrameUs=1e6 * cpu / max(frames, 1),
                corePct=100 * cpu / seconds,
                rssBeforeMiB=rssBefore / 1024,
                rssAfterMiB=rssKiB(os.getpid()) / 1024,
                mbitPerViewer=8 * sum(w.bytes for w in watchers) / viewers / seconds / 1e6,
            )
            reactor.crash()

        reactor.callLater(seconds, end)

    reactor.callWhenRunning(begin)
    reactor.run()
    return result


def parserThroughput(clip: str) -> tuple[float, float]:
    with open(clip, "rb") as f:
        data = f.read()
    best = 0.0
    count = 0
    for _ in range(3):
        t0 = time.perf_counter()
        parser = AccessUnitParser("h264")
        units = 0
        for i in range(0, len(data), 65536):
            units += len(parser.feed(data[i : i + 65536]))
        units += len(parser.flush())
        elapsed = time.perf_counter() - t0
        if best == 0 or elapsed < best:
            best, count = elapsed, units
    return len(data) / best / 1e6, count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only", nargs="*", default=None,
                        help="cases such as 1080p30x1 1080p60x4")  # fmt: skip
    parser.add_argument("--clip", help="an existing 1080p H.264 Annex-B file to play")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or os.path.join(tmp, "1080p.h264")
        if not args.clip:
            makeClip(clip)
        size = os.path.getsize(clip)
        mbs, aus = parserThroughput(clip)
        print(f"clip: {size / 1e6:.1f} MB, 1920x1080 H.264; parser {mbs:.0f} MB/s, "
              f"{aus:.0f} access units/s")  # fmt: skip
        print(
            f"{'case':<11} {'frames/s':>9} {'lost':>5} {'lat mean':>9} {'p99':>7} {'max':>7} "
            f"{'CPU/frame':>10} {'core':>6} {'RSS':>14} {'Mbit/s':>7}"
        )
        for fps in (30, 60):
            for viewers in (1, 4):
                name = f"1080p{fps}x{viewers}"
                if args.only and name not in args.only:
                    continue
                r = runCase(clip, fps, viewers, args.seconds)
                print(
                    f"{name:<11} {r['fpsDelivered']:>9.1f} {r['lost']:>5} "
                    f"{r['latMeanMs']:>7.2f}ms {r['latP99Ms']:>5.2f}ms {r['latMaxMs']:>5.1f}ms "
                    f"{r['cpuPerFrameUs']:>8.0f}µs {r['corePct']:>5.1f}% "
                    f"{r['rssBeforeMiB']:>5.0f}->{r['rssAfterMiB']:>4.0f}MiB "
                    f"{r['mbitPerViewer']:>7.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
