# -*- test-case-name: test.unit.test_rustdesk_frame -*-
"""RustDesk's TCP framing (hbb_common C{BytesCodec}), sans-IO.

A frame is a 1-4 byte little-endian header then the payload. The header's value is
C{(length << 2) | (headerLength - 1)}, so the low two bits of its first byte say how
long the header is. The encoder picks the shortest header; the decoder accepts any
header length (rustdesk.md §2.1), bounded here by a configurable maximum instead of 1 GiB.
"""

from __future__ import annotations

__all__ = [
    "MAX_FRAME",
    "DEFAULT_MAX_PAYLOAD",
    "FrameDecoder",
    "FrameError",
    "FramePieces",
    "FrameTooLarge",
    "encodeFrame",
    "encodeHeader",
]

#: The largest payload the header can express (30 bits).
MAX_FRAME = 0x3FFFFFFF

#: The default bound on a decoded payload: far above any rendezvous message, and the
#: 256 KiB hbb_common pre-allocates for a frame.
DEFAULT_MAX_PAYLOAD = 256 * 1024


class FrameError(ValueError):
    """The peer sent bytes that are not valid framing."""


class FrameTooLarge(FrameError):
    """A header announced a payload above the decoder's bound.

    @ivar length: the announced payload length.
    """

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit}")
        self.length = length


def encodeHeader(length: int) -> bytes:
    """The shortest header for a payload of C{length} bytes.

    @raise ValueError: C{length} is negative or above L{MAX_FRAME} (we misused the API).
    """
    if length < 0 or length > MAX_FRAME:
        raise ValueError(f"cannot frame {length} bytes (0..{MAX_FRAME})")
    if length <= 0x3F:
        return bytes(((length << 2),))
    if length <= 0x3FFF:
        return ((length << 2) | 1).to_bytes(2, "little")
    if length <= 0x3FFFFF:
        return ((length << 2) | 2).to_bytes(3, "little")
    return ((length << 2) | 3).to_bytes(4, "little")


def encodeFrame(payload: bytes) -> bytes:
    """C{payload} with its header in front."""
    return encodeHeader(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: feed bytes, take whole payloads.

    C{feed(data)} returns the payloads completed so far (possibly none); a partial header
    or payload waits for more input. A frame announcing more than C{maxPayload} bytes
    raises L{FrameTooLarge} before any of it is buffered, so the memory held per stream
    is at most C{maxPayload} plus one read.

    After an error the decoder is unusable; close the stream.

    @ivar maxPayload: the largest payload accepted.
    """

    def __init__(self, maxPayload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if not 0 <= maxPayload <= MAX_FRAME:
            raise ValueError("maxPayload must be within 0..MAX_FRAME")
        self.maxPayload = maxPayload
        self._buffer = bytearray()
        self._failed = False

    def feed(self, data: bytes, maxFrames: int | None = None) -> list[bytes]:
        """Add C{data}; return every payload now complete, oldest first.

        With C{maxFrames}, stop after that many payloads and keep the rest buffered
        (for a stream whose first frame decides how the rest is read).

        @raise FrameTooLarge: a header announced more than C{maxPayload}.
        @raise FrameError: called again after an error.
        """
        if self._failed:
            raise FrameError("decoder used after an error")
        buf = self._buffer
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end and (maxFrames is None or len(out) < maxFrames):
            headerLength = (buf[pos] & 3) + 1
            if end - pos < headerLength:
                break
            length = int.from_bytes(buf[pos : pos + headerLength], "little") >> 2
            if length > self.maxPayload:
                self._failed = True
                self._buffer = bytearray()
                raise FrameTooLarge(length, self.maxPayload)
            start = pos + headerLength
            if end - start < length:
                break
            out.append(bytes(buf[start : start + length]))
            pos = start + length
        if pos:
            del buf[:pos]
        return out

    def takeBuffered(self) -> bytes:
        """Remove and return the bytes not yet part of a whole frame.

        Used when a stream leaves framing for raw byte copying (the relay after pairing).
        """
        data = bytes(self._buffer)
        self._buffer = bytearray()
        return data

    @property
    def buffered(self) -> int:
        """How many bytes wait for the rest of their frame."""
        return len(self._buffer)


class FramePieces:
    """Incremental splitter that passes frames on in pieces, never holding one whole.

    C{feed(data)} returns C{(piece, first, last)} triples: the payload bytes that
    arrived, whether the piece starts its frame and whether it ends it. Memory held is
    at most a partial header (3 bytes), so a relay can re-frame a stream of large
    frames (a TCP leg paired with a WebSocket one) with back-pressure instead of
    buffering. Empty frames give nothing (the relay forwards no empty payloads).

    @ivar maxPayload: the largest frame accepted (L{FrameTooLarge} on its header).
    """

    def __init__(self, maxPayload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.maxPayload = maxPayload
        self._header = b""
        self._remaining = 0
        self._first = False
        self._failed = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool, bool]]:
        """The pieces of frames in C{data}, in order.

        @raise FrameTooLarge: a header announced more than C{maxPayload}.
        @raise FrameError: called again after an error.
        """
        if self._failed:
            raise FrameError("decoder used after an error")
        out: list[tuple[bytes, bool, bool]] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._remaining:
                n = min(self._remaining, end - pos)
                self._remaining -= n
                out.append((data[pos : pos + n], self._first, not self._remaining))
                self._first = False
                pos += n
                continue
            header = self._header + data[pos : pos + 4 - len(self._header)]
            headerLength = (header[0] & 3) + 1
            if len(header) < headerLength:
                self._header = header
                return out
            pos += headerLength - len(self._header)
            self._header = b""
            length = int.from_bytes(header[:headerLength], "little") >> 2
            if length > self.maxPayload:
                self._failed = True
                raise FrameTooLarge(length, self.maxPayload)
            self._remaining = length
            self._first = True
        return out
