# -*- test-case-name: test.unit.test_codecs_stun -*-
"""STUN messages (RFC 8489, RFC 5389, RFC 3489 classic, RFC 5780, TURN's methods): bytes
in, L{Message} out, and back. Sans-IO: no sockets, no clocks, no Twisted.

A L{Message} keeps its attributes as C{(type, raw value)} pairs in wire order, so decoding
costs one pass and nothing is lost in a round trip. Typed values come from ONE table
(L{p2pnet.codecs.stun_attributes.ATTRIBUTES}): C{message[Attr.LIFETIME]} is an C{int},
C{message[Attr.XOR_PEER_ADDRESS]} a C{(host, port)}; L{checkRequest} is the one place a
request's unknown comprehension-required attribute becomes 420 and a malformed attribute
400. L{Message.encode} adds MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT last, as RFC 8489
§14 orders them.

Errors a peer can cause raise L{StunDecodeError}; nothing else escapes L{decode}. When
the header of a request was sound and only its attributes were broken, the error's
C{request} is a bare request to answer 400 to (header salvage).

The attribute value helpers (C{encodeAddress}, C{decodeXorAddress}...) and ChannelData
(L{p2pnet.codecs.channeldata}) are re-exported here for the callers that import them
from this module.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stringprep
import struct
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from p2pnet.codecs.channeldata import (  # noqa: F401 (re-exported)
    CHANNEL_HEADER_LENGTH,
    CHANNEL_MAX,
    CHANNEL_MAX_RFC5766,
    CHANNEL_MIN,
    ChannelData,
    StreamDecoder,
    decodeChannelData,
    encodeChannelData,
    splitChannelData,
)
from p2pnet.codecs.stun_attributes import (  # noqa: F401 (re-exported)
    ATTRIBUTES,
    FAMILY_IPV4,
    FAMILY_IPV6,
    FINGERPRINT_XOR,
    HEADER_LENGTH,
    KNOWN_ATTRIBUTES,
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    PASSWORD_ALGORITHM_MD5,
    PASSWORD_ALGORITHM_SHA256,
    PROTOCOL_TCP,
    PROTOCOL_UDP,
    REASONS,
    Attr,
    AttributeSpec,
    StunAttributeError,
    StunDecodeError,
    decodeAddress,
    decodeAddressErrorCode,
    decodeAddressFamily,
    decodeChangeRequest,
    decodeChannelNumber,
    decodeErrorCode,
    decodeEvenPort,
    decodePasswordAlgorithms,
    decodeRequestedTransport,
    decodeReservationToken,
    decodeResponsePort,
    decodeUInt32,
    decodeUnknownAttributes,
    decodeValue,
    decodeXorAddress,
    encodeAddress,
    encodeAddressErrorCode,
    encodeAddressFamily,
    encodeChangeRequest,
    encodeChannelNumber,
    encodeErrorCode,
    encodeEvenPort,
    encodePasswordAlgorithms,
    encodeRequestedTransport,
    encodeReservationToken,
    encodeUInt32,
    encodeUnknownAttributes,
    encodeValue,
    encodeXorAddress,
    isComprehensionRequired,
)

__all__ = [
    "Attr",
    "FINGERPRINT_XOR",
    "HEADER_LENGTH",
    "MAGIC_COOKIE",
    "Message",
    "Method",
    "StunClass",
    "StunDecodeError",
    "checkRequest",
    "decode",
    "isStun",
    "longTermKey",
    "newTransactionId",
    "userhash",
]

_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")


class StunClass(IntEnum):
    """The two class bits of the message type (RFC 8489 §5)."""

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
    """96 random bits from the operating system's generator (RFC 8489 §5)."""
    return os.urandom(12)


def longTermKey(username: str, realm: str, password: str, algorithm: int = 1) -> bytes:
    """The long-term credential key (RFC 8489 §9.2.2).

    MD5 (algorithm 1) or SHA-256 (algorithm 2) of C{username ":" realm ":" password},
    the realm and password prepared with L{saslprep}.
    """
    text = f"{username}:{saslprep(realm)}:{saslprep(password)}".encode()
    if algorithm == PASSWORD_ALGORITHM_SHA256:
        return hashlib.sha256(text).digest()
    return hashlib.md5(text).digest()


def userhash(username: str, realm: str) -> bytes:
    """USERHASH (RFC 8489 §14.4): SHA-256 of C{username ":" realm}, both prepared
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
            raise ValueError("bad bidirectional text (RFC 3454 §6)")
    return normal


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
    #: typed values read so far, by type (first occurrence only)
    _typed: dict[int, Any] | None = field(default=None, repr=False, compare=False)

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
        """Append an attribute's wire value; returns C{self} so calls chain."""
        self.attributes.append((attrType, value))
        return self

    def set(self, attrType: int, typed: Any) -> Message:
        """Append an attribute from its typed value, encoded through the table
        (C{reply.set(Attr.LIFETIME, 600)}); returns C{self} so calls chain."""
        self.attributes.append((attrType, encodeValue(attrType, typed, self.transactionId)))
        return self

    def __contains__(self, attrType: object) -> bool:
        return any(t == attrType for t, _ in self.attributes)

    def __getitem__(self, attrType: int) -> Any:
        """The typed value of the first attribute of C{attrType} (see L{ATTRIBUTES}).

        @raise KeyError: there is none.
        @raise StunAttributeError: its value is malformed (L{checkRequest} has already
            answered such a request with 400, so request handlers never see this).
        """
        typed = self._typed
        if typed is not None and attrType in typed:
            return typed[attrType]
        raw = self.get(attrType)
        if raw is None:
            raise KeyError(attrType)
        value = decodeValue(attrType, raw, self.transactionId)
        if typed is None:
            typed = self._typed = {}
        typed[attrType] = value
        return value

    def value(self, attrType: int, default: Any = None) -> Any:
        """The typed value of the first attribute of C{attrType}, or C{default}."""
        try:
            return self[attrType]
        except KeyError:
            return default

    @property
    def errorCode(self) -> int | None:
        """The code of this message's ERROR-CODE, or C{None} (none, or malformed)."""
        try:
            return int(self[Attr.ERROR_CODE][0])
        except (KeyError, StunDecodeError):
            return None

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
            first, as RFC 8489 §14.6 orders them) when C{both} is true.
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
        §14.6: a receiver that understands both prefers SHA-256). A truncated
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
    match). RFC 8489 §14.5: attributes after MESSAGE-INTEGRITY other than
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
    if length == 0:  # the common Binding request: nothing more to check
        return Message(method, cls, tid, [], data[4:8], data)
    try:
        attributes = _decodeAttributes(data)
    except StunFingerprintError:
        raise  # a failed FINGERPRINT is no proof the bytes are STUN: never answered
    except StunDecodeError as e:
        # Header salvage: a request with a sound RFC 5389 header and broken attributes
        # is answered 400 (RFC 8489 §6.3); the error carries the request to answer.
        if cls == StunClass.REQUEST and data[4:8] == MAGIC_COOKIE_BYTES:
            e.request = Message(method, cls, tid)
        raise
    return Message(method, cls, tid, attributes, data[4:8], data)


class StunFingerprintError(StunDecodeError):
    """FINGERPRINT is malformed, does not match, or is not last (RFC 8489 §14.7)."""


def _decodeAttributes(data: bytes) -> list[tuple[int, bytes]]:
    attributes: list[tuple[int, bytes]] = []
    integrity = False
    fingerprinted = False
    for offset, t, v in iterAttributes(data, HEADER_LENGTH, len(data)):
        if fingerprinted:
            raise StunFingerprintError("attribute after FINGERPRINT")
        if t == Attr.FINGERPRINT:
            if len(v) != 4:
                raise StunFingerprintError("FINGERPRINT must be 4 bytes")
            crc = (zlib.crc32(data[:offset]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            if struct.unpack("!I", v)[0] != crc:
                raise StunFingerprintError("FINGERPRINT does not match")
            fingerprinted = True
        elif integrity and t != Attr.MESSAGE_INTEGRITY_SHA256:
            continue
        elif t in (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256):
            integrity = True
        attributes.append((t, v))
    return attributes


def checkRequest(request: Message, understood: frozenset[int] = KNOWN_ATTRIBUTES,
                 unknown: tuple[int, ...] = ()) -> Message | None:
    """The one place a request's attributes are judged: the error response to send, or
    C{None} when the request may be handled.

    RFC 8489 §6.3.1: "If the request contains one or more unknown comprehension-required
    attributes, the server replies with an error response with an error code of 420
    (Unknown Attribute) and includes an UNKNOWN-ATTRIBUTES attribute" (types below
    0x8000 not in C{understood}, plus C{unknown}: attributes the caller treats as
    unknown, such as DONT-FRAGMENT where the DF bit cannot be set, RFC 8656 §7.2 step 4).
    Then every attribute the table knows is decoded once (the handlers' C{request[...]}
    reads are then free and cannot fail); a malformed one is 400 (Bad Request).
    """
    attributes = request.attributes
    if not attributes and not unknown:
        return None
    missing = [t for t, _ in attributes if t not in understood and t < 0x8000]
    missing += [t for t in unknown if t not in missing]
    if missing:
        reply = request.errorReply(420)
        return reply.add(Attr.UNKNOWN_ATTRIBUTES, encodeUnknownAttributes(dict.fromkeys(missing)))
    for t, _ in attributes:
        if t in ATTRIBUTES:
            try:
                request[t]
            except StunAttributeError as e:
                return request.errorReply(400, e.args[0][:100])
    return None


