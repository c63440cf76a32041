"""Tests for L{p2pnet.codecs.websocket_frame}: RFC 6455 §5.7 vectors, the rules of
RFC 6455 §5.2 to §5.6, stream decoding three ways, and hypothesis round trips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.websocket_frame import (
    CLOSE_INVALID_DATA,
    CLOSE_NO_STATUS,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    MessageDecoder,
    MessageTooBig,
    WebSocketFrameError,
    applyMask,
    decodeClose,
    encodeClose,
    encodeFrame,
    encodeText,
)

MASK = bytes.fromhex("37fa213d")

# RFC 6455 §5.7, verbatim.
SINGLE_UNMASKED_TEXT = bytes.fromhex("810548656c6c6f")  # "Hello"
SINGLE_MASKED_TEXT = bytes.fromhex("818537fa213d7f9f4d5158")  # "Hello", masked
FRAGMENTED_TEXT = (bytes.fromhex("010348656c"), bytes.fromhex("80026c6f"))  # "Hel" + "lo"
UNMASKED_PING = bytes.fromhex("890548656c6c6f")
MASKED_PONG = bytes.fromhex("8a8537fa213d7f9f4d5158")
BINARY_256_HEADER = bytes.fromhex("827e0100")
BINARY_64K_HEADER = bytes.fromhex("827f0000000000010000")


def server() -> MessageDecoder:
    """A server's decoder: client frames must be masked."""
    return MessageDecoder(1 << 20)


def client() -> MessageDecoder:
    """A client's decoder: server frames must not be masked."""
    return MessageDecoder(1 << 20, masked=False)


class VectorTests(SynchronousTestCase):
    """RFC 6455 §5.7's examples, encoded and decoded."""

    def test_singleFrameUnmaskedText(self) -> None:
        self.assertEqual(encodeFrame(OP_TEXT, b"Hello"), SINGLE_UNMASKED_TEXT)
        self.assertEqual(encodeText("Hello"), SINGLE_UNMASKED_TEXT)
        self.assertEqual(client().feed(SINGLE_UNMASKED_TEXT), [(OP_TEXT, "Hello")])

    def test_singleFrameMaskedText(self) -> None:
        self.assertEqual(encodeFrame(OP_TEXT, b"Hello", mask=MASK), SINGLE_MASKED_TEXT)
        self.assertEqual(server().feed(SINGLE_MASKED_TEXT), [(OP_TEXT, "Hello")])

    def test_fragmentedUnmaskedText(self) -> None:
        first, last = FRAGMENTED_TEXT
        self.assertEqual(encodeFrame(OP_TEXT, b"Hel", fin=False), first)
        self.assertEqual(encodeFrame(OP_CONTINUATION, b"lo"), last)
        decoder = client()
        self.assertEqual(decoder.feed(first), [])
        self.assertEqual(decoder.feed(last), [(OP_TEXT, "Hello")])

    def test_pingAndMaskedPong(self) -> None:
        self.assertEqual(encodeFrame(OP_PING, b"Hello"), UNMASKED_PING)
        self.assertEqual(encodeFrame(OP_PONG, b"Hello", mask=MASK), MASKED_PONG)
        self.assertEqual(client().feed(UNMASKED_PING), [(OP_PING, b"Hello")])
        self.assertEqual(server().feed(MASKED_PONG), [(OP_PONG, b"Hello")])

    def test_binaryLengthForms(self) -> None:
        """256 bytes take the 16-bit length, 64 KiB the 64-bit one."""
        data = bytes(range(256))
        self.assertEqual(encodeFrame(OP_BINARY, data), BINARY_256_HEADER + data)
        big = b"\x00" * 65536
        self.assertEqual(encodeFrame(OP_BINARY, big), BINARY_64K_HEADER + big)
        self.assertEqual(client().feed(BINARY_64K_HEADER + big), [(OP_BINARY, big)])

    def test_textHeaderForms(self) -> None:
        """L{encodeText} and L{encodeFrame} agree at each length boundary."""
        for n in (0, 125, 126, 65535, 65536):
            text = "a" * n
            self.assertEqual(encodeText(text), encodeFrame(OP_TEXT, text.encode()), n)


class StreamTests(SynchronousTestCase):
    """Whole buffer, one byte at a time, and with bytes left over (as h11 tests)."""

    stream = (
        SINGLE_MASKED_TEXT
        + encodeFrame(OP_PING, b"p", mask=MASK)
        + encodeFrame(OP_BINARY, b"\x00" * 300, fin=False, mask=MASK)
        + encodeFrame(OP_PING, b"between fragments", mask=MASK)
        + encodeFrame(OP_CONTINUATION, b"\x01" * 70000, mask=MASK)
        + encodeFrame(OP_CLOSE, encodeClose(1000, "bye"), mask=MASK)
    )
    expected = [
        (OP_TEXT, "Hello"),
        (OP_PING, b"p"),
        (OP_PING, b"between fragments"),
        (OP_BINARY, b"\x00" * 300 + b"\x01" * 70000),
        (OP_CLOSE, encodeClose(1000, "bye")),
    ]

    def test_wholeBuffer(self) -> None:
        self.assertEqual(server().feed(self.stream), self.expected)

    def test_byteAtATime(self) -> None:
        decoder = server()
        out = []
        for i in range(len(self.stream)):
            out += decoder.feed(self.stream[i : i + 1])
        self.assertEqual(out, self.expected)

    def test_trickleIsNotRecopied(self) -> None:
        """A frame arriving in small reads is joined once, when complete: every read
        before that is only appended (issue 14 item 18: re-copying the buffer on each
        read made a slow trickle cost quadratic time)."""
        frame = encodeFrame(OP_BINARY, b"\x02" * 70000, mask=MASK)
        decoder = server()
        self.assertEqual(decoder.feed(frame[:20]), [])
        pieces = 1
        for i in range(20, len(frame) - 100, 100):
            self.assertEqual(decoder.feed(frame[i : i + 100]), [])
            pieces += 1
            # Nothing was joined: the reads are kept as they came.
            self.assertEqual(len(decoder._chunks), pieces)
        self.assertEqual(decoder.feed(frame[i + 100 :]), [(OP_BINARY, b"\x02" * 70000)])
        self.assertEqual(decoder._chunks, [])

    def test_trailingBytesKept(self) -> None:
        decoder = server()
        partial = SINGLE_MASKED_TEXT[:4]
        self.assertEqual(decoder.feed(SINGLE_MASKED_TEXT + partial), [(OP_TEXT, "Hello")])
        self.assertEqual(decoder.feed(SINGLE_MASKED_TEXT[4:]), [(OP_TEXT, "Hello")])


class RuleTests(SynchronousTestCase):
    """What a peer must not send raises L{WebSocketFrameError} with the close code."""

    def assertCode(self, data: bytes, code: int, decoder: MessageDecoder | None = None) -> None:
        with self.assertRaises(WebSocketFrameError) as caught:
            (decoder or server()).feed(data)
        self.assertEqual(caught.exception.code, code)

    def test_unmaskedFromClient(self) -> None:
        self.assertCode(SINGLE_UNMASKED_TEXT, CLOSE_PROTOCOL_ERROR)

    def test_maskedFromServer(self) -> None:
        self.assertCode(SINGLE_MASKED_TEXT, CLOSE_PROTOCOL_ERROR, client())

    def test_rsvBits(self) -> None:
        for bit in (0x40, 0x20, 0x10):
            frame = bytes((SINGLE_MASKED_TEXT[0] | bit,)) + SINGLE_MASKED_TEXT[1:]
            self.assertCode(frame, CLOSE_PROTOCOL_ERROR)

    def test_reservedOpcodes(self) -> None:
        for opcode in (3, 7, 0xB, 0xF):
            self.assertCode(encodeFrame(opcode, b"", mask=MASK), CLOSE_PROTOCOL_ERROR)

    def test_controlFrames(self) -> None:
        self.assertCode(encodeFrame(OP_PING, b"x" * 126, mask=MASK), CLOSE_PROTOCOL_ERROR)
        self.assertCode(encodeFrame(OP_PING, b"x", fin=False, mask=MASK), CLOSE_PROTOCOL_ERROR)

    def test_fragmentOrder(self) -> None:
        self.assertCode(encodeFrame(OP_CONTINUATION, b"x", mask=MASK), CLOSE_PROTOCOL_ERROR)
        opened = encodeFrame(OP_TEXT, b"a", fin=False, mask=MASK)
        self.assertCode(opened + encodeFrame(OP_TEXT, b"b", mask=MASK), CLOSE_PROTOCOL_ERROR)

    def test_lengthForms(self) -> None:
        """Lengths not in their shortest form, and a 64-bit length with the top bit."""
        self.assertCode(bytes.fromhex("81fe007d") + MASK, CLOSE_PROTOCOL_ERROR)
        self.assertCode(bytes.fromhex("81ff000000000000ffff") + MASK, CLOSE_PROTOCOL_ERROR)
        self.assertCode(bytes.fromhex("82ff8000000000000000"), CLOSE_PROTOCOL_ERROR)

    def test_invalidUtf8(self) -> None:
        self.assertCode(encodeFrame(OP_TEXT, b"\xff", mask=MASK), CLOSE_INVALID_DATA)
        split = encodeFrame(OP_TEXT, "é".encode()[:1], fin=False, mask=MASK)
        self.assertEqual(server().feed(split + encodeFrame(OP_CONTINUATION, "é".encode()[1:],
                                                           mask=MASK)), [(OP_TEXT, "é")])

    def test_closePayloads(self) -> None:
        self.assertEqual(decodeClose(b""), (CLOSE_NO_STATUS, ""))
        self.assertEqual(decodeClose(encodeClose(4001, "gateway auth changed")),
                         (4001, "gateway auth changed"))
        for bad in (b"\x03", (1005).to_bytes(2, "big"), (999).to_bytes(2, "big"),
                    (2999).to_bytes(2, "big"), (5000).to_bytes(2, "big")):
            self.assertRaises(WebSocketFrameError, decodeClose, bad)
        self.assertCode(encodeFrame(OP_CLOSE, b"\x03\xe8\xff", mask=MASK), CLOSE_INVALID_DATA)
        self.assertCode(encodeFrame(OP_CLOSE, b"\x03", mask=MASK), CLOSE_PROTOCOL_ERROR)

    def test_closeReasonCut(self) -> None:
        """A reason is cut to fit the 125-byte control payload, at a character boundary."""
        payload = encodeClose(1008, "é" * 100)
        self.assertLessEqual(len(payload), 125)
        self.assertEqual(decodeClose(payload), (1008, "é" * 61))


class LimitTests(SynchronousTestCase):
    def test_exactLimit(self) -> None:
        decoder = MessageDecoder(10)
        self.assertEqual(decoder.feed(encodeFrame(OP_BINARY, b"x" * 10, mask=MASK)),
                         [(OP_BINARY, b"x" * 10)])

    def test_oversizedOnHeader(self) -> None:
        """The header alone is enough: nothing of the payload needs to arrive."""
        header = encodeFrame(OP_BINARY, b"x" * 11, mask=MASK)[:6]
        with self.assertRaises(MessageTooBig) as caught:
            MessageDecoder(10).feed(header)
        self.assertEqual((caught.exception.code, caught.exception.length), (CLOSE_TOO_BIG, 11))

    def test_fragmentsCountTogether(self) -> None:
        decoder = MessageDecoder(10)
        decoder.feed(encodeFrame(OP_TEXT, b"x" * 6, fin=False, mask=MASK))
        self.assertRaises(MessageTooBig, decoder.feed,
                          encodeFrame(OP_CONTINUATION, b"x" * 5, mask=MASK))

    def test_limitChangesBetweenFeeds(self) -> None:
        decoder = MessageDecoder(10)
        decoder.maxMessage = 20
        self.assertEqual(len(decoder.feed(encodeFrame(OP_BINARY, b"x" * 20, mask=MASK))), 1)


class RoundTripTests(SynchronousTestCase):
    @given(st.binary(max_size=70000), st.binary(min_size=4, max_size=4))
    def test_binary(self, data: bytes, mask: bytes) -> None:
        self.assertEqual(server().feed(encodeFrame(OP_BINARY, data, mask=mask)),
                         [(OP_BINARY, data)])
        self.assertEqual(client().feed(encodeFrame(OP_BINARY, data)), [(OP_BINARY, data)])

    @given(st.text(max_size=300), st.binary(min_size=4, max_size=4),
           st.integers(min_value=1, max_value=50))
    def test_textInPieces(self, text: str, mask: bytes, piece: int) -> None:
        """A text message split into fragments of C{piece} bytes, fed in chunks."""
        data = text.encode()
        chunks = [data[i : i + piece] for i in range(0, len(data), piece)] or [b""]
        wire = b"".join(
            encodeFrame(OP_TEXT if i == 0 else OP_CONTINUATION, chunk,
                        fin=i == len(chunks) - 1, mask=mask)
            for i, chunk in enumerate(chunks)
        )
        decoder = server()
        out = []
        for i in range(0, len(wire), 7):
            out += decoder.feed(wire[i : i + 7])
        self.assertEqual(out, [(OP_TEXT, text)])

    @given(st.binary(max_size=64), st.binary(min_size=4, max_size=4))
    def test_maskIsItsOwnInverse(self, data: bytes, mask: bytes) -> None:
        self.assertEqual(applyMask(applyMask(data, mask), mask), data)

    @given(st.binary(max_size=200))
    def test_garbage(self, data: bytes) -> None:
        """Random bytes decode or raise the codec's own error, nothing else."""
        for decoder in (server(), client(), MessageDecoder(16)):
            try:
                decoder.feed(data)
            except WebSocketFrameError:
                pass
