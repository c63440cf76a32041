# -*- test-case-name: test.unit.test_codecs_turn,test.unit.test_codecs_stun_attributes -*-
"""TURN ChannelData (RFC 8656 §12.4), the first-byte demultiplexing of a STUN/TURN socket
(RFC 7983 §7) and the stream framing of STUN and ChannelData over TCP/TLS (RFC 8489
§6.2.2, RFC 8656 §12.5). Sans-IO."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from p2pnet.codecs.stun_attributes import StunDecodeError

__all__ = [
    "CHANNEL_HEADER_LENGTH",
    "CHANNEL_MAX",
    "CHANNEL_MAX_RFC5766",
    "CHANNEL_MIN",
    "ChannelData",
    "StreamDecoder",
    "classify",
    "decodeChannelData",
    "encodeChannelData",
    "splitChannelData",
]

HEADER_LENGTH = 20

CHANNEL_MIN = 0x4000
CHANNEL_MAX = 0x4FFF
#: RFC 5766 allowed channels up to 0x7FFE; coturn and its clients still use them.
CHANNEL_MAX_RFC5766 = 0x7FFE


@dataclass(slots=True, frozen=True)
class ChannelData:
    """A TURN ChannelData message: a channel number and application data."""

    channel: int
    data: bytes

    def encode(self, pad: bool = False) -> bytes:
        """The message; C{pad} rounds it to a multiple of 4 as streams require."""
        out = struct.pack("!HH", self.channel, len(self.data)) + self.data
        if pad and len(self.data) & 3:
            out += b"\0" * (4 - (len(self.data) & 3))
        return out


def decodeChannelData(data: bytes) -> ChannelData:
    """Parse a ChannelData datagram: trailing padding is allowed, a short one is not."""
    if len(data) < 4:
        raise StunDecodeError("ChannelData shorter than its header")
    channel, length = struct.unpack_from("!HH", data)
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunDecodeError(f"0x{channel:04x} is not a channel number")
    if 4 + length > len(data):
        raise StunDecodeError("ChannelData shorter than its length field")
    return ChannelData(channel, data[4 : 4 + length])





class StreamDecoder:
    """Splits a TCP/TLS byte stream into whole STUN messages and ChannelData frames.

    C{feed(bytes)} returns the frames completed so far, as C{bytes}; partial frames wait
    for more data. A STUN frame is 20 bytes plus its length field; a ChannelData frame is
    4 bytes plus its length rounded up to a multiple of 4 (the padding is part of the
    stream). The length fields are 16 bits, so a frame is never larger than 65,555 bytes
    and the buffer stays bounded by that plus one read. C{channelMax} (settable) is the
    highest channel number framed: L{CHANNEL_MAX}, or L{CHANNEL_MAX_RFC5766} while TURN
    serves RFC 5766 clients.

    @raise StunDecodeError: from L{feed} when the stream holds something that is neither;
        the stream cannot be resynchronised after that, so close the connection.
    """

    def __init__(self, channelMax: int = CHANNEL_MAX) -> None:
        self._buffer = bytearray()
        self.channelMax = channelMax

    def feed(self, data: bytes) -> list[bytes]:
        """Add C{data}; return every complete frame, oldest first."""
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        offset = 0
        while len(buf) - offset >= 4:
            first = buf[offset]
            length = (buf[offset + 2] << 8) | buf[offset + 3]
            if first < 0x40:
                size = HEADER_LENGTH + length
                if length & 3:
                    raise StunDecodeError("STUN length is not a multiple of 4")
            elif first < 0x50 or (first < 0x80 and self.channelMax > CHANNEL_MAX):
                # channels 0x4000-0x4FFF; up to 0x7FFE when RFC 5766 channels are on
                size = 4 + ((length + 3) & ~3)
            else:
                raise StunDecodeError("neither STUN nor ChannelData on the stream")
            if len(buf) - offset < size:
                break
            frames.append(bytes(buf[offset : offset + size]))
            offset += size
        if offset:
            del buf[:offset]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buffer)

    def takeBuffered(self) -> bytes:
        """The bytes held so far, removed (when the stream stops being STUN framed)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


#: RFC 8656 §12: the ChannelData header before the application data.
CHANNEL_HEADER_LENGTH = 4

_CHANNEL_HEADER = struct.Struct("!HH")


def splitChannelData(data: bytes, channelMax: int = CHANNEL_MAX) -> tuple[int, bytes]:
    """C{(channel, application data)} of a ChannelData frame without building an object
    (the relay hot path); the same checks as L{decodeChannelData}, with channels up to
    C{channelMax}."""
    if len(data) < CHANNEL_HEADER_LENGTH:
        raise StunDecodeError("ChannelData shorter than its header")
    channel, length = _CHANNEL_HEADER.unpack_from(data)
    if not CHANNEL_MIN <= channel <= channelMax:
        raise StunDecodeError(f"0x{channel:04x} is not a channel number")
    if CHANNEL_HEADER_LENGTH + length > len(data):
        raise StunDecodeError("ChannelData shorter than its length field")
    return channel, data[CHANNEL_HEADER_LENGTH : CHANNEL_HEADER_LENGTH + length]


def encodeChannelData(channel: int, data: bytes, pad: bool = False) -> bytes:
    """A ChannelData frame; C{pad} rounds it to a multiple of 4 as streams require
    (RFC 8656 §12.5). The function form of L{ChannelData.encode}."""
    out = _CHANNEL_HEADER.pack(channel, len(data)) + data
    if pad and len(data) & 3:
        out += b"\0" * (4 - (len(data) & 3))
    return out


#: What L{classify} says a datagram or frame is.
STUN, CHANNEL_DATA, OTHER = "stun", "channeldata", "other"


def classify(data: bytes, channelMax: int = CHANNEL_MAX) -> str:
    """L{STUN}, L{CHANNEL_DATA} or L{OTHER}, by the first byte (RFC 7983 §7): 0-3 STUN;
    0x40-0x4F ChannelData (up to 0x7F while RFC 5766 channels, C{channelMax} above
    L{CHANNEL_MAX}, are accepted); anything else (DTLS, RTP, garbage) is neither."""
    first = data[0] if data else 0xFF
    if first < 0x40:
        return STUN
    if first < 0x50 or (first < 0x80 and channelMax > CHANNEL_MAX):
        return CHANNEL_DATA
    return OTHER
