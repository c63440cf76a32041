"""Interop tests: L{p2pnet.codecs.annexb} on real encoder output from Debian's ffmpeg.

Each test encodes a short clip with libx264 or libx265 at an awkward size, parses it, and
checks the picture size, the number of access units and keyframes against what ffprobe
reports for the same file; access units re-assembled by the parser decode with ffmpeg.

ffmpeg missing skips these tests with the reason, except under CI (C{CI} set), which
installs it (Makefile C{SYSTEM_PACKAGES}) and fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from twisted.trial import unittest

from p2pnet.codecs.annexb import (
    H264,
    H265,
    AccessUnitParser,
    joinNalUnits,
    nalType,
    splitNalUnits,
)


def requireTool(name: str = "ffmpeg") -> str:
    """The path of C{name} (ffmpeg, ffprobe): skip (or fail under CI) when it is absent."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian package ffmpeg)"
        if os.environ.get("CI"):
            raise unittest.FailTest(f"{reason}; CI must have it")
        raise unittest.SkipTest(reason)
    return path


def encodeClip(
    path: str,
    codec: str,
    width: int,
    height: int,
    frames: int,
    keyint: int = 10,
    rate: int = 30,
) -> str:
    """Encode C{frames} of ffmpeg's testsrc2 as an Annex-B file at C{path}; return it."""
    if codec == H264:
        enc = ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(keyint), "-bf", "0"]
        fmt = "h264"
    else:
        enc = [
            "-c:v", "libx265", "-preset", "ultrafast",
            "-x265-params", f"log-level=error:keyint={keyint}:min-keyint={keyint}:open-gop=0",
        ]  # fmt: skip
        fmt = "hevc"
    cmd = [
        requireTool("ffmpeg"), "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={rate}",
        "-frames:v", str(frames), "-pix_fmt", "yuv420p", *enc, "-f", fmt, path,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=120)
    return path


def probe(path: str) -> tuple[int, int, int, int]:
    """(width, height, packets, keyframes) of an elementary stream file, by ffprobe."""
    out = subprocess.run(
        [
            requireTool("ffprobe"), "-v", "error", "-select_streams", "v:0",
            "-show_entries", "stream=width,height:packet=flags", "-of", "json", path,
        ],  # fmt: skip
        check=True,
        capture_output=True,
        timeout=60,
    )
    info = json.loads(out.stdout)
    stream = info["streams"][0]
    packets = info["packets"]
    keys = sum("K" in p["flags"] for p in packets)
    return stream["width"], stream["height"], len(packets), keys


def decodedFrames(data: bytes, path: str) -> int:
    """How many pictures ffmpeg decodes from Annex-B C{data} (written to C{path})."""
    with open(path, "wb") as f:
        f.write(data)
    out = subprocess.run(
        [
            requireTool("ffprobe"), "-v", "error", "-count_frames", "-select_streams", "v:0",
            "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path,
        ],  # fmt: skip
        check=True,
        capture_output=True,
        timeout=60,
    )
    return int(out.stdout.strip() or 0)


class RealStreamTests(unittest.TestCase):
    """The parser agrees with ffprobe on libx264 and libx265 output."""

    def check(self, codec: str, width: int, height: int, frames: int = 12) -> None:
        path = encodeClip(self.mktemp() + "." + codec, codec, width, height, frames, keyint=5)
        data = open(path, "rb").read()
        pw, ph, packets, keys = probe(path)
        self.assertEqual((pw, ph), (width, height))
        for chunk in (len(data), 1 if len(data) < 300_000 else 97, 4096):
            p = AccessUnitParser(codec)
            out = []
            for i in range(0, len(data), chunk):
                out += p.feed(data[i : i + chunk])
            out += p.flush()
            self.assertEqual((p.width, p.height), (width, height), (codec, chunk))
            self.assertEqual(len(out), packets)
            self.assertEqual(sum(a.key for a in out), keys)
            self.assertTrue(out[0].key)
            self.assertEqual(b"".join(a.data for a in out).count(b"\x00\x00\x01"), sum(
                len(a.nalTypes) for a in out))  # fmt: skip
            self.assertEqual((p.droppedAccessUnits, p.droppedNals, p.droppedBytes), (0, 0, 0))

    def test_h264_642x362(self) -> None:
        self.check(H264, 642, 362)

    def test_h264_1280x720(self) -> None:
        self.check(H264, 1280, 720)

    def test_h264_1920x1080(self) -> None:
        self.check(H264, 1920, 1080, frames=6)

    def test_h265_642x362(self) -> None:
        self.check(H265, 642, 362)

    def test_h265_1280x720(self) -> None:
        self.check(H265, 1280, 720)

    def test_h265_1920x1080(self) -> None:
        self.check(H265, 1920, 1080, frames=6)

    def strippedStream(self, codec: str) -> tuple[bytes, int]:
        """A clip whose keyframes after the first carry no parameter sets."""
        path = encodeClip(self.mktemp() + "." + codec, codec, 642, 362, 15, keyint=5)
        nals = splitNalUnits(open(path, "rb").read())
        params = {7, 8} if codec == H264 else {32, 33, 34}
        seen = set()
        kept = []
        for nal in nals:
            t = nalType(codec, nal)
            if t in params and t in seen:
                continue
            seen.add(t)
            kept.append(nal)
        return joinNalUnits(kept), probe(path)[3]

    def checkLateStart(self, codec: str) -> None:
        # Start decoding at the last keyframe, which had no parameter sets of its own: the
        # parser inserted the cached ones, so ffmpeg decodes every picture from there.
        data, keys = self.strippedStream(codec)
        p = AccessUnitParser(codec)
        out = p.feed(data) + p.flush()
        keyIndexes = [i for i, a in enumerate(out) if a.key]
        self.assertEqual(len(keyIndexes), keys)
        tail = out[keyIndexes[-1] :]
        decoded = decodedFrames(b"".join(a.data for a in tail), self.mktemp())
        self.assertEqual(decoded, len(tail))

    def test_h264KeyframeGetsParameterSets(self) -> None:
        self.checkLateStart(H264)

    def test_h265KeyframeGetsParameterSets(self) -> None:
        self.checkLateStart(H265)
