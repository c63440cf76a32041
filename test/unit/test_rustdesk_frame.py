"""Tests for L{p2pnet.codecs.rustdesk_frame}: rustdesk.md §2.1 and §9.1 vectors, fuzzing."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.rustdesk_frame import (
    MAX_FRAME,
    FrameDecoder,
    FrameError,
    FramePieces,
    FrameTooLarge,
    encodeFrame,
    encodeHeader,
)

# rustdesk.md §9.1: payload length -> header.
VECTORS = [
    (0, "00"), (1, "04"), (13, "34"), (63, "fc"), (64, "0101"), (100, "9101"),
    (255, "fd03"), (16383, "fdff"), (16384, "020001"), (65536, "020004"),
    (4194303, "feffff"), (4194304, "03000001"), (1073741823, "ffffffff"),
]


class HeaderTests(SynchronousTestCase):
    def test_vectors(self) -> None:
        for length, header in VECTORS:
            self.assertEqual(encodeHeader(length).hex(), header, length)

    def test_overflow(self) -> None:
        self.assertRaises(ValueError, encodeHeader, MAX_FRAME + 1)
        self.assertRaises(ValueError, encodeHeader, -1)


class DecoderTests(SynchronousTestCase):
    def decodeThreeWays(self, data: bytes, expected: list[bytes]) -> None:
        """Whole buffer, one byte at a time, and with a partial frame left over."""
        self.assertEqual(FrameDecoder().feed(data), expected)
        d = FrameDecoder()
        out: list[bytes] = []
        for i in range(len(data)):
            out += d.feed(data[i : i + 1])
        self.assertEqual(out, expected)
        self.assertEqual(d.buffered, 0)
        d = FrameDecoder()
        self.assertEqual(d.feed(data + b"\x91"), expected)
        self.assertEqual(d.buffered, 1)

    def test_twoByteHeader(self) -> None:
        payload = bytes(range(64))
        self.decodeThreeWays(bytes.fromhex("0101") + payload, [payload])

    def test_nonMinimalHeader(self) -> None:
        self.decodeThreeWays(bytes.fromhex("0500") + b"x", [b"x"])

    def test_partialHeaderWaits(self) -> None:
        d = FrameDecoder()
        self.assertEqual(d.feed(b"\x02\x00"), [])
        self.assertEqual(d.feed(b"\x01" + b"a" * 16383), [])
        self.assertEqual(d.feed(b"b"), [b"a" * 16383 + b"b"])

    def test_heartbeatsAndSeveral(self) -> None:
        data = b"\x00" + encodeFrame(b"abc") + b"\x00"
        self.decodeThreeWays(data, [b"", b"abc", b""])

    def test_registerPeerFramed(self) -> None:
        """rustdesk.md §9.2: RegisterPeer framed over TCP starts with 0x34."""
        payload = bytes.fromhex("320b0a09313233343536373839")
        self.assertEqual(encodeFrame(payload)[:1], b"\x34")
        self.decodeThreeWays(encodeFrame(payload), [payload])

    def test_oversizedRefusedBeforeBuffering(self) -> None:
        """A 1 GiB header is refused at once, not buffered for."""
        d = FrameDecoder(maxPayload=1000)
        with self.assertRaises(FrameTooLarge) as cm:
            d.feed(bytes.fromhex("ffffffff"))
        self.assertEqual(cm.exception.length, MAX_FRAME)
        self.assertRaises(FrameError, d.feed, b"\x00")

    def test_takeBuffered(self) -> None:
        d = FrameDecoder()
        self.assertEqual(d.feed(encodeFrame(b"first") + b"raw bytes", maxFrames=1),
                         [b"first"])
        self.assertEqual(d.takeBuffered(), b"raw bytes")
        self.assertEqual(d.buffered, 0)

    @given(st.lists(st.binary(max_size=300), max_size=8))
    def test_roundTrip(self, payloads: list[bytes]) -> None:
        data = b"".join(encodeFrame(p) for p in payloads)
        self.assertEqual(FrameDecoder().feed(data), payloads)

    @given(st.binary(max_size=2000), st.integers(min_value=1, max_value=64))
    def test_garbageRaisesOnlyFrameError(self, data: bytes, chunk: int) -> None:
        d = FrameDecoder(maxPayload=512)
        try:
            for i in range(0, len(data), chunk):
                for payload in d.feed(data[i : i + chunk]):
                    self.assertLessEqual(len(payload), 512)
        except FrameError:
            pass
        self.assertLessEqual(d.buffered, 512 + 4 + chunk)


class FramePiecesTests(SynchronousTestCase):
    """L{FramePieces} gives each frame's bytes as they arrive, never a whole frame held."""

    FRAMES = [b"", b"a", b"b" * 63, b"c" * 64, b"d" * 100, b"e" * 16384, b"f" * 70000]

    def reassemble(self, stream: bytes, chunk: int) -> list[bytes]:
        pieces = FramePieces(100_000)
        frames: list[bytes] = []
        current = b""
        for i in range(0, len(stream), chunk):
            for piece, first, last in pieces.feed(stream[i : i + chunk]):
                self.assertTrue(piece)
                self.assertEqual(first, current == b"")
                self.assertLessEqual(len(piece), chunk)
                current += piece
                if last:
                    frames.append(current)
                    current = b""
        self.assertEqual(current, b"")
        return frames

    def test_wholeByteAtATimeAndTrailing(self) -> None:
        stream = b"".join(encodeFrame(f) for f in self.FRAMES)
        expected = [f for f in self.FRAMES if f]  # empty frames are not passed on
        for chunk in (len(stream), 1, 3, 4096):
            self.assertEqual(self.reassemble(stream, chunk), expected, chunk)
        pieces = FramePieces()
        self.assertEqual(pieces.feed(encodeFrame(b"xy") + b"\x91"), [(b"xy", True, True)])
        self.assertEqual(pieces.feed(b"\x01" + b"z" * 10), [(b"z" * 10, True, False)])

    def test_nonMinimalHeader(self) -> None:
        self.assertEqual(FramePieces().feed(bytes.fromhex("0500") + b"q"), [(b"q", True, True)])

    def test_oversizedRefusedOnHeader(self) -> None:
        pieces = FramePieces(1000)
        self.assertRaises(FrameTooLarge, pieces.feed, encodeHeader(1001))
        self.assertRaises(FrameError, pieces.feed, b"\x00")
