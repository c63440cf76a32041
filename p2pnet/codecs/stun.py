# -*- test-case-name: test.test_codecs_stun -*-
"""STUN messages (RFC 8489, RFC 5389, RFC 3489 classic, RFC 5780, TURN's attributes): bytes
in, L{Message} out, and back. Sans-IO: no sockets, no clocks, no Twisted.

A L{Message} keeps its attributes as C{(type, raw value)} pairs in wire order, so decoding
costs one pass and nothing is lost in a round trip; the C{encode*}/C{decode*} helpers turn
single values into typed ones. L{Message.encode} adds MESSAGE-INTEGRITY(-SHA256) and
FINGERPRINT last, as RFC 8489 section 14 orders them.

Errors a peer can cause raise L{StunDecodeError}; nothing else escapes L{decode}.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import stringprep
import struct
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "Attr",
    "FINGERPRINT_XOR",
    "HEADER_LENGTH",
    "MAGIC_COOKIE",
    "Message",
    "Method",
    "StunClass",
    "StunDecodeError",
    "decode",
    "isStun",
    "longTermKey",
    "newTransactionId",
    "userhash",
]

MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E

_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")
_XOR_V4 = struct.Struct("!BBHI")


class StunDecodeError(ValueError):
    """The bytes are not a well-formed STUN message (the peer broke the protocol)."""


class StunClass(IntEnum):
    """The two class bits of the message type (RFC 8489 section 5)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class Method(IntEnum):
    """STUN and TURN methods (IANA "STUN Methods")."""

    BINDING = 0x001
    SHARED_SECRET = 0x002  # RFC 3489 only
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C


class Attr(IntEnum):
    """STUN attribute types (IANA "STUN Attributes"), named as in the RFCs."""

    MAPPED_ADDRESS = 0x0001
    RESPONSE_ADDRESS = 0x0002  # RFC 3489
    CHANGE_REQUEST = 0x0003  # RFC 3489, RFC 5780
    SOURCE_ADDRESS = 0x0004  # RFC 3489
    CHANGED_ADDRESS = 0x0005  # RFC 3489
    USERNAME = 0x0006
    PASSWORD = 0x0007  # RFC 3489
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    REFLECTED_FROM = 0x000B  # RFC 3489
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    ACCESS_TOKEN = 0x001B
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    PADDING = 0x0026
    RESPONSE_PORT = 0x0027
    CONNECTION_ID = 0x002A
    ADDITIONAL_ADDRESS_FAMILY = 0x8000
    ADDRESS_ERROR_CODE = 0x8001
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    ICMP = 0x8004
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    TRANSACTION_TRANSMIT_COUNTER = 0x8025
    CACHE_TIMEOUT = 0x8027
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C


#: Reason phrases for the error codes STUN, TURN and RFC 5780 define.
REASONS: dict[int, str] = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    405: "Mobility Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    446: "Connection Already Exists",
    447: "Connection Timeout or Failure",
    486: "Allocation Quota Reached",
    487: "Role Conflict",
    500: "Server Error",
    508: "Insufficient Capacity",
}

#: PASSWORD-ALGORITHM numbers (RFC 8489 section 18.5).
PASSWORD_ALGORITHM_MD5 = 0x0001
PASSWORD_ALGORITHM_SHA256 = 0x0002

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02


def _messageType(method: int, cls: int) -> int:
    return (
        ((method & 0xF80) << 2)
        | ((method & 0x070) << 1)
        | (method & 0x00F)
        | ((cls & 0b10) << 7)
        | ((cls & 0b01) << 4)
    )


def _splitType(messageType: int) -> tuple[int, int]:
    method = (messageType & 0x000F) | ((messageType & 0x00E0) >> 1) | ((messageType & 0x3E00) >> 2)
    cls = ((messageType >> 7) & 0b10) | ((messageType >> 4) & 0b01)
    return method, cls


def newTransactionId() -> bytes:
    """96 random bits from the operating system's generator (RFC 8489 section 5)."""
    return os.urandom(12)


def longTermKey(username: str, realm: str, password: str, algorithm: int = 1) -> bytes:
    """The long-term credential key (RFC 8489 section 9.2.2).

    MD5 (algorithm 1) or SHA-256 (algorithm 2) of C{username ":" realm ":" password},
    the realm and password prepared with L{saslprep}.
    """
    text = f"{username}:{saslprep(realm)}:{saslprep(password)}".encode()
    if algorithm == PASSWORD_ALGORITHM_SHA256:
        return hashlib.sha256(text).digest()
    return hashlib.md5(text).digest()


def userhash(username: str, realm: str) -> bytes:
    """USERHASH (RFC 8489 section 14.4): SHA-256 of C{username ":" realm}, both prepared
    with L{saslprep}."""
    return hashlib.sha256(f"{saslprep(username)}:{saslprep(realm)}".encode()).digest()


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013), the preparation RFC 5389 and the RFC 5769 vectors use.

    Characters "commonly mapped to nothing" are removed, non-ASCII spaces become ASCII
    space, the result is NFKC-normalised, and prohibited or unassigned characters and
    bad bidirectional text raise C{ValueError}. For ASCII text, the usual case, this is
    the identity, as RFC 8489's OpaqueString is.
    """
    if text.isascii() and text.isprintable():
        return text
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
        stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
        stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    for c in normal:
        if any(check(c) for check in prohibited):
            raise ValueError(f"character U+{ord(c):04X} is not allowed (RFC 4013)")
    if any(stringprep.in_table_d1(c) for c in normal):
        if any(stringprep.in_table_d2(c) for c in normal) or not (
            stringprep.in_table_d1(normal[0]) and stringprep.in_table_d1(normal[-1])
        ):
            raise ValueError("bad bidirectional text (RFC 3454 section 6)")
    return normal


# -- attribute values ------------------------------------------------------------------------


def encodeAddress(host: str, port: int) -> bytes:
    """MAPPED-ADDRESS form: family, port, address."""
    if ":" in host:
        return struct.pack("!BBH", 0, FAMILY_IPV6, port) + socket.inet_pton(socket.AF_INET6, host)
    return struct.pack("!BBH", 0, FAMILY_IPV4, port) + socket.inet_aton(host)


def decodeAddress(value: bytes) -> tuple[str, int]:
    """C{(host, port)} from a MAPPED-ADDRESS-form value; bytes after the address are
    ignored (as coturn does)."""
    if len(value) < 4:
        raise StunDecodeError("address attribute too short")
    _, family, port = struct.unpack_from("!BBH", value)
    if family == FAMILY_IPV4 and len(value) >= 8:
        return socket.inet_ntoa(value[4:8]), port
    if family == FAMILY_IPV6 and len(value) >= 20:
        return socket.inet_ntop(socket.AF_INET6, value[4:20]), port
    raise StunDecodeError(f"bad address family {family} or length {len(value)}")


def _xorBytes(transactionId: bytes, family: int) -> bytes:
    return MAGIC_COOKIE_BYTES + (transactionId if family == FAMILY_IPV6 else b"")


def encodeXorAddress(host: str, port: int, transactionId: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS form (RFC 8489 section 14.2), also XOR-PEER/RELAYED-ADDRESS."""
    if ":" not in host:  # the common case, kept cheap: one integer XOR
        address = int.from_bytes(socket.inet_aton(host), "big") ^ MAGIC_COOKIE
        return _XOR_V4.pack(0, FAMILY_IPV4, port ^ (MAGIC_COOKIE >> 16), address)
    plain = encodeAddress(host, port)
    family = plain[1]
    mask = _xorBytes(transactionId, family)
    xport = port ^ (MAGIC_COOKIE >> 16)
    addr = bytes(a ^ b for a, b in zip(plain[4:], mask, strict=False))
    return struct.pack("!BBH", 0, family, xport) + addr


def decodeXorAddress(value: bytes, transactionId: bytes) -> tuple[str, int]:
    """C{(host, port)} from an XOR-MAPPED-ADDRESS-form value."""
    if len(value) < 4:
        raise StunDecodeError("address attribute too short")
    family = value[1]
    mask = _xorBytes(transactionId, family)
    port = struct.unpack_from("!H", value, 2)[0] ^ (MAGIC_COOKIE >> 16)
    addr = bytes(a ^ b for a, b in zip(value[4:], mask, strict=False))
    return decodeAddress(value[:2] + struct.pack("!H", port) + addr)


def encodeErrorCode(code: int, reason: str | None = None) -> bytes:
    """ERROR-CODE: class, number and a UTF-8 reason phrase (RFC 8489 section 14.8)."""
    if reason is None:
        reason = REASONS.get(code, "")
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()[:763]


def decodeErrorCode(value: bytes) -> tuple[int, str]:
    """C{(code, reason)} from an ERROR-CODE value."""
    if len(value) < 4:
        raise StunDecodeError("ERROR-CODE too short")
    code = (value[2] & 0x07) * 100 + value[3]
    return code, value[4:].decode("utf-8", "replace")


def encodeUnknownAttributes(types: Iterable[int]) -> bytes:
    """UNKNOWN-ATTRIBUTES: a list of 16-bit types."""
    types = list(types)
    return struct.pack(f"!{len(types)}H", *types)


def decodeUnknownAttributes(value: bytes) -> list[int]:
    """The attribute types listed in UNKNOWN-ATTRIBUTES."""
    return list(struct.unpack(f"!{len(value) // 2}H", value[: len(value) // 2 * 2]))


def encodeChangeRequest(changeIp: bool, changePort: bool) -> bytes:
    """CHANGE-REQUEST flags (RFC 5780 section 7.2)."""
    return struct.pack("!I", (4 if changeIp else 0) | (2 if changePort else 0))


def decodeChangeRequest(value: bytes) -> tuple[bool, bool]:
    """C{(changeIp, changePort)} from CHANGE-REQUEST."""
    if len(value) != 4:
        raise StunDecodeError("CHANGE-REQUEST must be 4 bytes")
    flags = struct.unpack("!I", value)[0]
    return bool(flags & 4), bool(flags & 2)


def encodeUInt32(number: int) -> bytes:
    """A 32-bit unsigned value (LIFETIME, PRIORITY...)."""
    return struct.pack("!I", number)


def decodeUInt32(value: bytes) -> int:
    """A 32-bit unsigned value."""
    if len(value) != 4:
        raise StunDecodeError("expected a 4-byte value")
    return struct.unpack("!I", value)[0]


def decodeResponsePort(value: bytes) -> int:
    """RESPONSE-PORT: a port followed by two bytes of padding (RFC 5780 §7.5).

    Any length of at least 2 is read, as coturn does: npm's C{stun} and stuntman send
    the bare 16-bit port (length 2)."""
    if len(value) < 2:
        raise StunDecodeError("RESPONSE-PORT shorter than a port")
    return (value[0] << 8) | value[1]


def encodePasswordAlgorithms(algorithms: Iterable[tuple[int, bytes]]) -> bytes:
    """PASSWORD-ALGORITHMS (RFC 8489 section 14.11): C{(number, parameters)} entries."""
    out = bytearray()
    for number, parameters in algorithms:
        out += struct.pack("!HH", number, len(parameters)) + parameters
        if len(parameters) & 3:
            out += b"\0" * (4 - (len(parameters) & 3))
    return bytes(out)


def decodePasswordAlgorithms(value: bytes) -> list[tuple[int, bytes]]:
    """C{(number, parameters)} pairs from PASSWORD-ALGORITHMS; also reads the single
    entry of PASSWORD-ALGORITHM (section 14.12), which has the same form.

    @raise StunDecodeError: when an entry runs past the value.
    """
    algorithms: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(value):
        if len(value) - offset < 4:
            raise StunDecodeError("truncated PASSWORD-ALGORITHMS entry")
        number, length = struct.unpack_from("!HH", value, offset)
        start = offset + 4
        if start + length > len(value):
            raise StunDecodeError("PASSWORD-ALGORITHMS parameters run past the value")
        algorithms.append((number, value[start : start + length]))
        offset = start + ((length + 3) & ~3)
    return algorithms


def isComprehensionRequired(attrType: int) -> bool:
    """Types 0x0000-0x7FFF must be understood or the request fails with 420."""
    return attrType < 0x8000


# -- messages --------------------------------------------------------------------------------


@dataclass(slots=True)
class Message:
    """One STUN message.

    @ivar method: a L{Method} value (any 12-bit number is kept).
    @ivar cls: a L{StunClass} value.
    @ivar transactionId: 12 bytes; with C{cookie} they are RFC 3489's 16-byte ID.
    @ivar attributes: C{(type, value)} pairs in wire order, without padding.
    @ivar cookie: the 4 bytes after the length: the magic cookie, unless C{classic}.
    @ivar raw: the bytes this message was decoded from (empty for a built one).
    """

    method: int
    cls: int
    transactionId: bytes = field(default_factory=newTransactionId)
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    cookie: bytes = MAGIC_COOKIE_BYTES
    raw: bytes = b""

    @property
    def classic(self) -> bool:
        """Whether this is an RFC 3489 message (no magic cookie)."""
        return self.cookie != MAGIC_COOKIE_BYTES

    def get(self, attrType: int) -> bytes | None:
        """The value of the first attribute of C{attrType}, or C{None}."""
        for t, v in self.attributes:
            if t == attrType:
                return v
        return None

    def add(self, attrType: int, value: bytes) -> Message:
        """Append an attribute; returns C{self} so calls chain."""
        self.attributes.append((attrType, value))
        return self

    def reply(self, cls: int = StunClass.SUCCESS) -> Message:
        """An empty response to this request: same method and transaction, class C{cls}."""
        return Message(self.method, cls, self.transactionId, [], self.cookie)

    def errorReply(self, code: int, reason: str | None = None) -> Message:
        """An error response carrying ERROR-CODE C{code}."""
        return self.reply(StunClass.ERROR).add(Attr.ERROR_CODE, encodeErrorCode(code, reason))

    def xorMapped(self, host: str, port: int) -> bytes:
        """An XOR-*-ADDRESS value for this message's transaction."""
        return encodeXorAddress(host, port, self.transactionId)

    def encode(
        self,
        key: bytes | None = None,
        *,
        sha256: bool = False,
        both: bool = False,
        fingerprint: bool = False,
    ) -> bytes:
        """The message as bytes.

        @param key: when given, add MESSAGE-INTEGRITY (HMAC-SHA1 with C{key}), or
            MESSAGE-INTEGRITY-SHA256 instead when C{sha256} is true, or both (SHA-1
            first, as RFC 8489 section 14.6 orders them) when C{both} is true.
        @param fingerprint: add FINGERPRINT last.
        """
        body = bytearray()
        for t, v in self.attributes:
            body += _ATTR_HEADER.pack(t, len(v))
            body += v
            if len(v) & 3:
                body += b"\0" * (4 - (len(v) & 3))
        msgType = _messageType(self.method, self.cls)
        trailer = self.cookie + self.transactionId
        if key is not None:
            kinds = []
            if both or not sha256:
                kinds.append((Attr.MESSAGE_INTEGRITY, 20, hashlib.sha1))
            if both or sha256:
                kinds.append((Attr.MESSAGE_INTEGRITY_SHA256, 32, hashlib.sha256))
            for attrType, size, hashFn in kinds:
                # The length field counts up to the end of this attribute (14.5, 14.6).
                head = struct.pack("!HH", msgType, len(body) + 4 + size) + trailer
                digest = hmac.new(key, head + body, hashFn).digest()
                body += _ATTR_HEADER.pack(attrType, size) + digest
        if fingerprint:
            head = struct.pack("!HH", msgType, len(body) + 8) + trailer
            crc = (zlib.crc32(head + body) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            body += _ATTR_HEADER.pack(Attr.FINGERPRINT, 4) + struct.pack("!I", crc)
        return struct.pack("!HH", msgType, len(body)) + trailer + body

    def checkIntegrity(self, key: bytes) -> bool:
        """Whether this decoded message's integrity attribute verifies with C{key}.

        MESSAGE-INTEGRITY-SHA256 is checked when present, else MESSAGE-INTEGRITY (RFC 8489
        section 14.6: a receiver that understands both prefers SHA-256). A truncated
        MESSAGE-INTEGRITY-SHA256 (16 to 32 bytes, a multiple of 4) is accepted as the
        RFC allows. Comparison is in constant time.
        """
        for attrType, hashFn in (
            (Attr.MESSAGE_INTEGRITY_SHA256, hashlib.sha256),
            (Attr.MESSAGE_INTEGRITY, hashlib.sha1),
        ):
            offset = _attributeOffset(self.raw, attrType)
            if offset is None:
                continue
            size = struct.unpack_from("!H", self.raw, offset + 2)[0]
            expected = self.raw[offset + 4 : offset + 4 + size]
            head = struct.pack("!HH", struct.unpack_from("!H", self.raw)[0], offset + 4 + size - 20)
            digest = hmac.new(key, head + self.raw[4:offset], hashFn).digest()
            return hmac.compare_digest(digest[:size], expected)
        return False

    def hasIntegrity(self) -> bool:
        """Whether the message carries MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256."""
        return any(
            t in (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256) for t, _ in self.attributes
        )


def _attributeOffset(raw: bytes, attrType: int) -> int | None:
    """Byte offset of the first attribute of C{attrType} in an encoded message."""
    offset = HEADER_LENGTH
    end = len(raw)
    while offset + 4 <= end:
        t, length = _ATTR_HEADER.unpack_from(raw, offset)
        if t == attrType:
            return offset
        offset += 4 + ((length + 3) & ~3)
    return None


def isStun(data: bytes) -> bool:
    """A cheap first test: the top two bits of a STUN message are zero.

    It is what RFC 7983 demultiplexes by; ChannelData starts with 0b01.
    """
    return len(data) >= HEADER_LENGTH and data[0] < 0x40


def iterAttributes(data: bytes, offset: int, end: int) -> Iterator[tuple[int, int, bytes]]:
    """C{(offset, type, value)} for each attribute in C{data[offset:end]}, lengths checked."""
    while offset < end:
        if end - offset < 4:
            raise StunDecodeError("truncated attribute header")
        t, length = _ATTR_HEADER.unpack_from(data, offset)
        start = offset + 4
        if start + length > end:
            raise StunDecodeError(f"attribute 0x{t:04x} runs past the message")
        yield offset, t, data[start : start + length]
        offset = start + ((length + 3) & ~3)
    if offset != end:
        raise StunDecodeError("attribute padding runs past the message")


def decode(data: bytes) -> Message:
    """Parse one whole STUN message (one UDP datagram, or one frame from a stream).

    Checks the header (top bits, length a multiple of 4 and equal to what follows),
    every attribute's length, and FINGERPRINT when present (it must then be last and
    match). RFC 8489 section 14.5: attributes after MESSAGE-INTEGRITY other than
    MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are ignored, so they are dropped here.

    @raise StunDecodeError: for anything that is not a well-formed message.
    """
    if len(data) < HEADER_LENGTH:
        raise StunDecodeError("shorter than a STUN header")
    msgType, length, _cookie, tid = _HEADER.unpack_from(data)
    if msgType & 0xC000:
        raise StunDecodeError("top two bits are not zero")
    if length & 3:
        raise StunDecodeError("length is not a multiple of 4")
    if HEADER_LENGTH + length != len(data):
        raise StunDecodeError("length field does not match the message size")
    method, cls = _splitType(msgType)
    attributes: list[tuple[int, bytes]] = []
    integrity = False
    fingerprinted = False
    for offset, t, v in iterAttributes(data, HEADER_LENGTH, len(data)):
        if fingerprinted:
            raise StunDecodeError("attribute after FINGERPRINT")
        if t == Attr.FINGERPRINT:
            if len(v) != 4:
                raise StunDecodeError("FINGERPRINT must be 4 bytes")
            crc = (zlib.crc32(data[:offset]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            if struct.unpack("!I", v)[0] != crc:
                raise StunDecodeError("FINGERPRINT does not match")
            fingerprinted = True
        elif integrity and t != Attr.MESSAGE_INTEGRITY_SHA256:
            continue
        elif t in (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256):
            integrity = True
        attributes.append((t, v))
    return Message(method, cls, tid, attributes, data[4:8], data)


# -- ChannelData (RFC 8656 section 12.4) -----------------------------------------------------


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


# -- stream framing (RFC 8489 section 6.2.2, RFC 8656 section 12.5) --------------------------


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


# -- TURN attribute values (RFC 8656, RFC 6062, RFC 6156) ------------------------------------

#: REQUESTED-TRANSPORT protocol numbers (IANA protocol numbers).
PROTOCOL_TCP = 6
PROTOCOL_UDP = 17

#: RFC 8656 section 12: the ChannelData header before the application data.
CHANNEL_HEADER_LENGTH = 4


def _oneByteThenPadding(value: bytes, name: str) -> int:
    if len(value) != 4:
        raise StunDecodeError(f"{name} must be 4 bytes")
    return value[0]


def encodeRequestedTransport(protocol: int) -> bytes:
    """REQUESTED-TRANSPORT (RFC 8656 section 18.11): a protocol number and RFFU."""
    return struct.pack("!B3x", protocol)


def decodeRequestedTransport(value: bytes) -> int:
    """The protocol number of a REQUESTED-TRANSPORT value."""
    return _oneByteThenPadding(value, "REQUESTED-TRANSPORT")


def encodeAddressFamily(family: int) -> bytes:
    """REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY (RFC 8656 sections 18.10,
    18.12): C{FAMILY_IPV4} or C{FAMILY_IPV6} and three bytes of RFFU."""
    return struct.pack("!B3x", family)


def decodeAddressFamily(value: bytes) -> int:
    """The family number of a *-ADDRESS-FAMILY value (not checked against the known ones)."""
    return _oneByteThenPadding(value, "ADDRESS-FAMILY")


def encodeChannelNumber(channel: int) -> bytes:
    """CHANNEL-NUMBER (RFC 8656 section 18.1): the number and two bytes of RFFU."""
    return struct.pack("!HH", channel, 0)


def decodeChannelNumber(value: bytes) -> int:
    """The channel of a CHANNEL-NUMBER value (range not checked: the caller says 400)."""
    if len(value) != 4:
        raise StunDecodeError("CHANNEL-NUMBER must be 4 bytes")
    return struct.unpack("!H", value[:2])[0]


def encodeEvenPort(reserve: bool) -> bytes:
    """EVEN-PORT (RFC 8656 section 18.8): the R bit asks to reserve the next port."""
    return bytes([0x80 if reserve else 0])


def decodeEvenPort(value: bytes) -> bool:
    """Whether an EVEN-PORT value has its R (reserve the next higher port) bit set."""
    if len(value) != 1:
        raise StunDecodeError("EVEN-PORT must be 1 byte")
    return bool(value[0] & 0x80)


def encodeAddressErrorCode(family: int, code: int, reason: str | None = None) -> bytes:
    """ADDRESS-ERROR-CODE (RFC 8656 section 18.13): a family, then ERROR-CODE's layout."""
    if reason is None:
        reason = REASONS.get(code, "")
    return struct.pack("!BBBB", family, 0, code // 100, code % 100) + reason.encode()[:763]


def decodeAddressErrorCode(value: bytes) -> tuple[int, int, str]:
    """C{(family, code, reason)} from an ADDRESS-ERROR-CODE value."""
    if len(value) < 4:
        raise StunDecodeError("ADDRESS-ERROR-CODE too short")
    return value[0], (value[2] & 0x07) * 100 + value[3], value[4:].decode("utf-8", "replace")


def encodeReservationToken(token: bytes) -> bytes:
    """RESERVATION-TOKEN (RFC 8656 section 18.9): 8 opaque bytes."""
    if len(token) != 8:
        raise ValueError("a reservation token is 8 bytes")
    return token


def decodeReservationToken(value: bytes) -> bytes:
    """The 8 bytes of a RESERVATION-TOKEN value."""
    if len(value) != 8:
        raise StunDecodeError("RESERVATION-TOKEN must be 8 bytes")
    return value


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
    (RFC 8656 section 12.5). The function form of L{ChannelData.encode}."""
    out = _CHANNEL_HEADER.pack(channel, len(data)) + data
    if pad and len(data) & 3:
        out += b"\0" * (4 - (len(data) & 3))
    return out
