"""Tests for L{p2pnet.codecs.annexb}: bit reading, SPS sizes, access units, bad input.

Real encoder output is checked in L{test.interop.test_annexb_ffmpeg}; here the streams
are built bit by bit so each rule is exercised on its own.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.annexb import (
    H264,
    H265,
    AccessUnitParser,
    AnnexBError,
    BitReader,
    joinNalUnits,
    nalType,
    parseSps,
    splitNalUnits,
    unescapeRbsp,
)


class BitWriter:
    """Builds RBSPs for the tests: fixed-width fields and exp-Golomb codes."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> BitWriter:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]
        return self

    def ue(self, value: int) -> BitWriter:
        code = value + 1
        n = code.bit_length()
        return self.u(n - 1, 0).u(n, code)

    def se(self, value: int) -> BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = self.bits + [1]
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def escape(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes (the inverse of L{unescapeRbsp})."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def h264Sps(
    widthMbs: int,
    heightMbs: int,
    crop: tuple[int, int, int, int] | None = None,
    profile: int = 66,
    frameMbsOnly: int = 1,
    chroma: int = 1,
    scaling: bool = False,
    spsId: int = 0,
) -> bytes:
    w = BitWriter().u(8, profile).u(8, 0).u(8, 40).ue(spsId)
    if profile == 100:
        w.ue(chroma)
        if chroma == 3:
            w.u(1, 0)
        w.ue(0).ue(0).u(1, 0).u(1, int(scaling))
        if scaling:
            for i in range(8 if chroma != 3 else 12):
                w.u(1, 1)
                for _ in range(16 if i < 6 else 64):
                    w.se(-8)  # nextScale 0 on the first step: the rest is skipped
                    break
    w.ue(0).ue(1).u(1, 0).se(3).se(-2).ue(2).se(1).se(0)  # poc type 1 with a cycle
    w.ue(1).u(1, 0).ue(widthMbs - 1).ue(heightMbs - 1).u(1, frameMbsOnly)
    if not frameMbsOnly:
        w.u(1, 0)
    w.u(1, 1)
    w.u(1, crop is not None)
    for v in crop or ():
        w.ue(v)
    w.u(1, 0)  # vui_parameters_present_flag
    return bytes([0x67]) + escape(w.rbsp())


def h265Sps(
    width: int, height: int, window: tuple[int, int, int, int] | None = None, subLayers: int = 1
) -> bytes:
    w = BitWriter().u(4, 0).u(3, subLayers - 1).u(1, 1)
    w.u(2, 0).u(1, 0).u(5, 1).u(32, 0x60000000).u(4, 0b1001).u(43, 0).u(1, 0).u(8, 93)
    for _ in range(subLayers - 1):
        w.u(1, 1).u(1, 1)
    if subLayers > 1:
        for _ in range(subLayers - 1, 8):
            w.u(2, 0)
    for _ in range(subLayers - 1):
        w.u(32, 0).u(32, 0).u(24, 0).u(8, 90)
    w.ue(0).ue(1).ue(width).ue(height).u(1, window is not None)
    for v in window or ():
        w.ue(v)
    w.ue(0).ue(0)  # bit depths; the parser stops before them
    return bytes([33 << 1, 1]) + escape(w.rbsp())


# Minimal NAL units: a parameter set, a picture parameter set, slices.
H264_PPS = bytes([0x68]) + BitWriter().ue(0).ue(0).rbsp()
H264_AUD = bytes([0x09, 0xF0])


def h264Slice(idr: bool, first: bool = True, payload: bytes = b"\x55\x66") -> bytes:
    # first_mb_in_slice = 0 is the single bit 1; 5 is 00110.
    return bytes([0x65 if idr else 0x41, 0x88 if first else 0x30]) + payload


H265_VPS = bytes([32 << 1, 1, 0x0C, 0x01])
H265_PPS = bytes([34 << 1, 1]) + BitWriter().ue(0).ue(0).rbsp()


def h265Slice(t: int, first: bool = True) -> bytes:
    return bytes([t << 1, 1, 0xAF if first else 0x2F, 0x11])


class BitReaderTests(SynchronousTestCase):
    def test_fixedAndGolomb(self) -> None:
        data = BitWriter().u(3, 5).ue(0).ue(1).ue(254).se(-3).se(4).u(7, 99).rbsp()
        r = BitReader(data)
        self.assertEqual(
            [r.u(3), r.ue(), r.ue(), r.ue(), r.se(), r.se(), r.u(7)], [5, 0, 1, 254, -3, 4, 99]
        )

    def test_endOfData(self) -> None:
        r = BitReader(b"\x00")
        self.assertRaises(AnnexBError, r.ue)
        self.assertRaises(AnnexBError, BitReader(b"").u, 1)

    def test_unescape(self) -> None:
        self.assertEqual(unescapeRbsp(b"\x00\x00\x03\x01\x00\x00\x03"), b"\x00\x00\x01\x00\x00")
        self.assertEqual(unescapeRbsp(b"abc"), b"abc")
        for raw in (b"\x00\x00\x00\x00\x01", b"\x00\x00\x02\x00\x00\x03\x00"):
            self.assertEqual(unescapeRbsp(escape(raw)), raw)


class SpsTests(SynchronousTestCase):
    def test_h264Sizes(self) -> None:
        # 1920x1080: 120x68 macroblocks cropped by 4 chroma rows (8 luma rows) at the bottom.
        self.assertEqual(parseSps(H264, h264Sps(120, 68, (0, 0, 0, 4))).width, 1920)
        self.assertEqual(parseSps(H264, h264Sps(120, 68, (0, 0, 0, 4))).height, 1080)
        size = parseSps(H264, h264Sps(41, 23, (0, 2, 0, 3)))  # 656x368 -> 652x362
        self.assertEqual((size.width, size.height), (652, 362))
        size = parseSps(H264, h264Sps(80, 45))
        self.assertEqual((size.width, size.height), (1280, 720))

    def test_h264Interlaced(self) -> None:
        # frame_mbs_only_flag 0: map units are field macroblock pairs; crop unit Y doubles.
        size = parseSps(H264, h264Sps(45, 18, (0, 0, 0, 2), frameMbsOnly=0))
        self.assertEqual((size.width, size.height), (720, 576 - 8))

    def test_h264HighProfile(self) -> None:
        size = parseSps(H264, h264Sps(120, 68, (0, 0, 0, 4), profile=100, scaling=True))
        self.assertEqual((size.width, size.height), (1920, 1080))
        size = parseSps(H264, h264Sps(40, 30, (1, 1, 1, 1), profile=100, chroma=3, spsId=3))
        self.assertEqual((size.width, size.height, size.spsId), (638, 478, 3))

    def test_h265Sizes(self) -> None:
        size = parseSps(H265, h265Sps(1920, 1088, (0, 0, 0, 4)))
        self.assertEqual((size.width, size.height), (1920, 1080))
        size = parseSps(H265, h265Sps(648, 368, (0, 3, 0, 3), subLayers=3))
        self.assertEqual((size.width, size.height), (642, 362))

    def test_wrongNal(self) -> None:
        self.assertRaises(AnnexBError, parseSps, H264, H264_PPS)
        self.assertRaises(AnnexBError, parseSps, H265, H265_PPS)
        self.assertRaises(AnnexBError, parseSps, H264, h264Sps(120, 68)[:5])
        self.assertRaises(ValueError, parseSps, "vp9", b"\x67")

    @given(st.binary(max_size=64), st.sampled_from([H264, H265]))
    def test_garbage(self, data: bytes, codec: str) -> None:
        header = b"\x67" if codec == H264 else b"\x42\x01"
        try:
            size = parseSps(codec, header + data)
        except AnnexBError:
            return
        self.assertGreater(size.width, 0)
        self.assertGreater(size.height, 0)


def h264Stream(gops: int = 3, perGop: int = 4, inBandParams: bool = True) -> list[list[bytes]]:
    """Access units (lists of NAL units) of a synthetic H.264 stream."""
    sps = h264Sps(80, 45)
    aus = []
    for g in range(gops):
        for i in range(perGop):
            au = [H264_AUD]
            if i == 0 and (inBandParams or g == 0):
                au += [sps, H264_PPS]
            au += [
                h264Slice(i == 0, True, bytes([g + 0x10, i + 0x10, 1])),
                h264Slice(i == 0, False),
            ]
            aus.append(au)
    return aus


class SplitTests(SynchronousTestCase):
    def test_splitJoin(self) -> None:
        nals = [b"\x67\x01", b"\x68\x02\x00\x05", b"\x65\x88"]
        data = (
            b"junk\x00\x00\x00\x01" + nals[0] + b"\x00\x00\x01" + nals[1] + b"\x00\x00\x00\x00\x01"
        )
        data += nals[2] + b"\x00\x00"
        self.assertEqual(splitNalUnits(data), nals)
        self.assertEqual(splitNalUnits(joinNalUnits(nals)), nals)
        self.assertEqual(nalType(H264, nals[0]), 7)
        self.assertEqual(nalType(H265, H265_VPS), 32)
        self.assertRaises(AnnexBError, nalType, H264, b"")


class ParserTests(SynchronousTestCase):
    def parse(self, codec: str, data: bytes, chunk: int | None = None) -> tuple:
        p = AccessUnitParser(codec)
        out = []
        if chunk is None:
            out += p.feed(data)
        else:
            for i in range(0, len(data), chunk):
                out += p.feed(data[i : i + chunk])
        out += p.flush()
        return p, out

    def test_h264AccessUnits(self) -> None:
        aus = h264Stream()
        data = b"".join(joinNalUnits(au) for au in aus)
        results = [self.parse(H264, data, chunk) for chunk in (None, 1, 7, 1000)]
        for p, out in results:
            self.assertEqual([a.data for a in out], [joinNalUnits(au) for au in aus])
            self.assertEqual([a.key for a in out], [True, False, False, False] * 3)
            self.assertEqual((p.width, p.height), (1280, 720))
            self.assertEqual(p.accessUnits, 12)
            self.assertEqual((p.droppedAccessUnits, p.droppedNals, p.droppedBytes), (0, 0, 0))

    def test_withoutDelimiters(self) -> None:
        # first_mb_in_slice == 0 alone separates pictures.
        aus = [[n for n in au if n != H264_AUD] for au in h264Stream()]
        data = b"".join(joinNalUnits(au) for au in aus)
        _, out = self.parse(H264, data, 5)
        self.assertEqual([a.data for a in out], [joinNalUnits(au) for au in aus])

    def test_leftovers(self) -> None:
        aus = h264Stream(1, 3)
        data = b"".join(joinNalUnits(au) for au in aus)
        p = AccessUnitParser(H264)
        out = p.feed(data)
        # The last access unit is not known to be complete until more arrives.
        self.assertEqual(len(out), 2)
        self.assertGreater(p.buffered, 0)
        out += p.feed(joinNalUnits([H264_AUD]))
        self.assertEqual(len(out), 2)
        out += p.feed(b"\x00\x00\x00\x01")
        self.assertEqual(len(out), 3)
        self.assertEqual(p.flush(), [])  # an AUD alone is not a picture
        self.assertEqual(p.droppedAccessUnits, 1)

    def test_endAccessUnit(self) -> None:
        # Each unit written whole, then a pause: the same units, each one unit earlier.
        aus = [joinNalUnits(au) for au in h264Stream()]
        p = AccessUnitParser(H264)
        out = []
        for au in aus:
            got = p.feed(au) + p.endAccessUnit()
            self.assertEqual([a.data for a in got], [au])
            out += got
        self.assertEqual(p.flush(), [])
        self.assertEqual((p.cutErrors, p.droppedBytes, p.droppedAccessUnits), (0, 0, 0))

    def test_endAccessUnitKeepsStartCodeZeros(self) -> None:
        # The pause fell inside the next start code: its zeros are kept for it.
        aus = [joinNalUnits(au) for au in h264Stream(1, 3)]
        p = AccessUnitParser(H264)
        out = p.feed(aus[0] + b"\x00\x00") + p.endAccessUnit()
        out += p.feed(aus[1][2:]) + p.endAccessUnit()
        self.assertEqual([a.data for a in out], aus[:2])
        self.assertEqual(p.cutErrors, 0)

    def test_endAccessUnitWrongGuess(self) -> None:
        aus = [joinNalUnits(au) for au in h264Stream(2, 3)]
        p = AccessUnitParser(H264)
        out = p.feed(aus[0]) + p.endAccessUnit()
        out += p.feed(aus[1][:-2]) + p.endAccessUnit()  # cut inside the last slice
        out += p.feed(aus[1][-2:] + aus[2])  # the rest of it, no start code: a wrong guess
        self.assertEqual(p.cutErrors, 1)
        out += p.feed(aus[3] + aus[4]) + p.flush()
        # Unit 2 (not a keyframe) is dropped; the stream resumes at keyframe 3.
        self.assertEqual([a.data for a in out], [aus[0], aus[1][:-2], aus[3], aus[4]])

    def test_parameterSetsPrepended(self) -> None:
        aus = h264Stream(3, 2, inBandParams=False)
        data = b"".join(joinNalUnits(au) for au in aus)
        p, out = self.parse(H264, data, 3)
        keys = [a for a in out if a.key]
        self.assertEqual(len(keys), 3)
        for k in keys:
            nals = splitNalUnits(k.data)
            self.assertEqual([nalType(H264, n) for n in nals][:3], [9, 7, 8])
        self.assertEqual(p.parameterSets(), [h264Sps(80, 45), H264_PPS])

    def test_keyWithoutParameterSets(self) -> None:
        # An IDR with no parameter set ever seen cannot start a decoder: dropped.
        data = joinNalUnits([h264Slice(True), h264Slice(False, True), h264Slice(False, True)])
        p, out = self.parse(H264, data)
        self.assertEqual(out, [])
        self.assertEqual(p.droppedAccessUnits, 3)

    def test_garbageBeforeStart(self) -> None:
        aus = h264Stream(1, 2)
        data = b"\x12\x34" * 1000 + b"".join(joinNalUnits(au) for au in aus)
        p, out = self.parse(H264, data, 100)
        self.assertEqual(len(out), 2)
        self.assertEqual(p.droppedBytes, 2000)
        self.assertLess(p.buffered, 200)

    def test_giantNalDropped(self) -> None:
        aus = h264Stream(3, 2)
        big = h264Slice(False, True, b"\x11" * 5000)
        stream = [joinNalUnits(au) for au in aus]
        stream.insert(3, joinNalUnits([H264_AUD, big]))
        p = AccessUnitParser(H264, maxNal=1000, maxAccessUnit=4000)
        out = []
        high = 0
        data = b"".join(stream)
        for i in range(0, len(data), 64):
            out += p.feed(data[i : i + 64])
            high = max(high, p.buffered)
        out += p.flush()
        self.assertLessEqual(high, 1000 + 64 + 4000)
        self.assertEqual(p.droppedNals, 1)
        # The big picture and the P picture after it (its reference is gone) are lost;
        # the stream resumes at the next keyframe.
        self.assertEqual([a.key for a in out], [True, False, True, True, False])
        self.assertEqual(p.droppedAccessUnits, 2)

    def test_forbiddenBit(self) -> None:
        aus = h264Stream(2, 2)
        aus[1].insert(1, b"\xe1\x00")
        data = b"".join(joinNalUnits(au) for au in aus)
        p, out = self.parse(H264, data)
        self.assertEqual([a.key for a in out], [True, True, False])
        self.assertEqual(p.droppedNals, 1)

    def test_h265(self) -> None:
        sps = h265Sps(648, 368, (0, 3, 0, 3))
        aus = []
        for _ in range(2):
            aus.append([bytes([35 << 1, 1, 0x50]), H265_VPS, sps, H265_PPS, h265Slice(19)])
            aus.append([h265Slice(1), h265Slice(1, first=False)])
            aus.append([bytes([39 << 1, 1, 5, 1, 0x80]), h265Slice(0)])
            aus.append([h265Slice(1)])
        data = b"".join(joinNalUnits(au) for au in aus)
        for chunk in (None, 1, 13):
            p, out = self.parse(H265, data, chunk)
            self.assertEqual([a.data for a in out], [joinNalUnits(au) for au in aus])
            self.assertEqual([a.key for a in out], [True, False, False, False] * 2)
            self.assertEqual((p.width, p.height), (642, 362))

    def test_h265CraGetsParameterSets(self) -> None:
        sps = h265Sps(640, 360)
        data = joinNalUnits([H265_VPS, sps, H265_PPS, h265Slice(19), h265Slice(1), h265Slice(21)])
        _, out = self.parse(H265, data)
        self.assertEqual(out[2].nalTypes, (32, 33, 34, 21))

    def test_badCodec(self) -> None:
        self.assertRaises(ValueError, AccessUnitParser, "vp8")

    @settings(max_examples=200)
    @given(
        st.lists(
            st.one_of(
                st.binary(max_size=300),
                st.sampled_from(
                    [
                        b"\x00\x00\x01",
                        b"\x00\x00\x00\x01",
                        b"\x00\x00\x01\x67",
                        b"\x00\x00\x01\x65\x88",
                    ]
                ),
            ),
            max_size=30,
        ),
        st.sampled_from([H264, H265]),
    )
    def test_randomBytes(self, chunks: list[bytes], codec: str) -> None:
        p = AccessUnitParser(codec, maxNal=256, maxAccessUnit=512)
        for c in chunks:
            for au in p.feed(c):
                self.assertLessEqual(len(au.data), 512 + 64 * 4)
            self.assertLessEqual(p.buffered, 256 + 300 + 512 + 4)
        p.flush()
        self.assertEqual(p.buffered, 0)
