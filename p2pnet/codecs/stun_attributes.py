# -*- test-case-name: test.unit.test_codecs_stun_attributes -*-
"""STUN attribute values (RFC 8489, RFC 5389, RFC 3489, RFC 5780, RFC 8656, RFC 6062,
RFC 6156, RFC 8445): ONE table of C{(type, name, decode, encode)}, in the manner of
aioice's C{stun.py}, so a handler reads C{message[Attr.LIFETIME]} as an C{int} and a
malformed value is found in one place (L{p2pnet.codecs.stun.checkRequest}: 400).

Where encoders in the field differ the decoders read what coturn reads (RESPONSE-PORT of
length 2; address attributes with bytes after the address). Sans-IO.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = [
    "ATTRIBUTES",
    "Attr",
    "AttributeSpec",
    "REASONS",
    "StunAttributeError",
    "StunDecodeError",
]

MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E

_XOR_V4 = struct.Struct("!BBHI")


class StunDecodeError(ValueError):
    """The bytes are not a well-formed STUN message (the peer broke the protocol).

    @ivar request: when the bytes were a request whose RFC 5389 header was sound and only
        its attributes were broken, a bare request (method, transaction) to answer 400
        to (RFC 8489 §6.3); otherwise C{None}: nothing is answered.
    """

    request: Any = None


class StunAttributeError(StunDecodeError):
    """One attribute's value is malformed; the message around it is sound.

    @ivar attrType: the attribute's type.
    """

    def __init__(self, attrType: int, reason: str) -> None:
        super().__init__(reason)
        self.attrType = attrType


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

#: PASSWORD-ALGORITHM numbers (RFC 8489 §18.5).
PASSWORD_ALGORITHM_MD5 = 0x0001
PASSWORD_ALGORITHM_SHA256 = 0x0002

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02



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
    """XOR-MAPPED-ADDRESS form (RFC 8489 §14.2), also XOR-PEER/RELAYED-ADDRESS."""
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
    """ERROR-CODE: class, number and a UTF-8 reason phrase (RFC 8489 §14.8)."""
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
    """CHANGE-REQUEST flags (RFC 5780 §7.2)."""
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
    """PASSWORD-ALGORITHMS (RFC 8489 §14.11): C{(number, parameters)} entries."""
    out = bytearray()
    for number, parameters in algorithms:
        out += struct.pack("!HH", number, len(parameters)) + parameters
        if len(parameters) & 3:
            out += b"\0" * (4 - (len(parameters) & 3))
    return bytes(out)


def decodePasswordAlgorithms(value: bytes) -> list[tuple[int, bytes]]:
    """C{(number, parameters)} pairs from PASSWORD-ALGORITHMS; also reads the single
    entry of PASSWORD-ALGORITHM (RFC 8489 §14.12), which has the same form.

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


# -- TURN attribute values (RFC 8656, RFC 6062, RFC 6156) ------------------------------------

#: REQUESTED-TRANSPORT protocol numbers (IANA protocol numbers).
PROTOCOL_TCP = 6
PROTOCOL_UDP = 17



def _oneByteThenPadding(value: bytes, name: str) -> int:
    if len(value) != 4:
        raise StunDecodeError(f"{name} must be 4 bytes")
    return value[0]


def encodeRequestedTransport(protocol: int) -> bytes:
    """REQUESTED-TRANSPORT (RFC 8656 §18.11): a protocol number and RFFU."""
    return struct.pack("!B3x", protocol)


def decodeRequestedTransport(value: bytes) -> int:
    """The protocol number of a REQUESTED-TRANSPORT value."""
    return _oneByteThenPadding(value, "REQUESTED-TRANSPORT")


def encodeAddressFamily(family: int) -> bytes:
    """REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18):
    C{FAMILY_IPV4} or C{FAMILY_IPV6} and three bytes of RFFU."""
    return struct.pack("!B3x", family)


def decodeAddressFamily(value: bytes) -> int:
    """The family number of a *-ADDRESS-FAMILY value (not checked against the known ones)."""
    return _oneByteThenPadding(value, "ADDRESS-FAMILY")


def encodeChannelNumber(channel: int) -> bytes:
    """CHANNEL-NUMBER (RFC 8656 §18.1): the number and two bytes of RFFU."""
    return struct.pack("!HH", channel, 0)


def decodeChannelNumber(value: bytes) -> int:
    """The channel of a CHANNEL-NUMBER value (range not checked: the caller says 400)."""
    if len(value) != 4:
        raise StunDecodeError("CHANNEL-NUMBER must be 4 bytes")
    return struct.unpack("!H", value[:2])[0]


def encodeEvenPort(reserve: bool) -> bytes:
    """EVEN-PORT (RFC 8656 §18.8): the R bit asks to reserve the next port."""
    return bytes([0x80 if reserve else 0])


def decodeEvenPort(value: bytes) -> bool:
    """Whether an EVEN-PORT value has its R (reserve the next higher port) bit set."""
    if len(value) != 1:
        raise StunDecodeError("EVEN-PORT must be 1 byte")
    return bool(value[0] & 0x80)


def encodeAddressErrorCode(family: int, code: int, reason: str | None = None) -> bytes:
    """ADDRESS-ERROR-CODE (RFC 8656 §18.13): a family, then ERROR-CODE's layout."""
    if reason is None:
        reason = REASONS.get(code, "")
    return struct.pack("!BBBB", family, 0, code // 100, code % 100) + reason.encode()[:763]


def decodeAddressErrorCode(value: bytes) -> tuple[int, int, str]:
    """C{(family, code, reason)} from an ADDRESS-ERROR-CODE value."""
    if len(value) < 4:
        raise StunDecodeError("ADDRESS-ERROR-CODE too short")
    return value[0], (value[2] & 0x07) * 100 + value[3], value[4:].decode("utf-8", "replace")


def encodeReservationToken(token: bytes) -> bytes:
    """RESERVATION-TOKEN (RFC 8656 §18.9): 8 opaque bytes."""
    if len(token) != 8:
        raise ValueError("a reservation token is 8 bytes")
    return token


def decodeReservationToken(value: bytes) -> bytes:
    """The 8 bytes of a RESERVATION-TOKEN value."""
    if len(value) != 8:
        raise StunDecodeError("RESERVATION-TOKEN must be 8 bytes")
    return value



# -- small value forms shared by the table ---------------------------------------------------


def _text(value: bytes, transactionId: bytes = b"") -> str:
    # UTF-8 (RFC 8489 §14.3, §14.9, §14.14); bad bytes never fail a request.
    return value.decode("utf-8", "replace")


def _encodeText(text: str, transactionId: bytes = b"") -> bytes:
    return text.encode()


def _opaque(value: bytes, transactionId: bytes = b"") -> bytes:
    return value


def _flag(value: bytes, transactionId: bytes = b"") -> bool:
    # DONT-FRAGMENT, USE-CANDIDATE: present or not; a value, if any, is ignored.
    return True


def _encodeFlag(present: bool, transactionId: bytes = b"") -> bytes:
    return b""


def decodeUInt64(value: bytes) -> int:
    """A 64-bit unsigned value (ICE-CONTROLLED/-CONTROLLING tie-breaker, RFC 8445 §16.1)."""
    if len(value) != 8:
        raise StunDecodeError("expected an 8-byte value")
    return int.from_bytes(value, "big")


def encodeUInt64(number: int) -> bytes:
    """A 64-bit unsigned value."""
    return number.to_bytes(8, "big")


def decodePasswordAlgorithm(value: bytes) -> tuple[int, bytes]:
    """PASSWORD-ALGORITHM (RFC 8489 §14.12): one C{(number, parameters)} entry."""
    entries = decodePasswordAlgorithms(value)
    if len(entries) != 1:
        raise StunDecodeError("PASSWORD-ALGORITHM holds one entry")
    return entries[0]


def decodeFingerprint(value: bytes) -> int:
    """The CRC of FINGERPRINT (checked by L{p2pnet.codecs.stun.decode})."""
    if len(value) != 4:
        raise StunDecodeError("FINGERPRINT must be 4 bytes")
    return int.from_bytes(value, "big")


def _withoutId(function: Callable[[bytes], Any]) -> Callable[[bytes, bytes], Any]:
    def decoder(value: bytes, transactionId: bytes) -> Any:
        return function(value)

    decoder.__name__ = function.__name__
    return decoder


def _encodeWithoutId(function: Callable[..., bytes], star: bool = False
                     ) -> Callable[[Any, bytes], bytes]:
    def encoder(typed: Any, transactionId: bytes) -> bytes:
        return function(*typed) if star else function(typed)

    encoder.__name__ = function.__name__
    return encoder


# -- the table -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """How one attribute type is read and written.

    @ivar type: the attribute type (an L{Attr} value).
    @ivar name: its name as the RFCs spell it.
    @ivar decode: C{(value, transactionId) -> typed value}, raising L{StunDecodeError}.
    @ivar encode: C{(typed value, transactionId) -> value}.
    """

    type: int
    name: str
    decode: Callable[[bytes, bytes], Any]
    encode: Callable[[Any, bytes], bytes]


_ADDRESS = (_withoutId(decodeAddress), _encodeWithoutId(encodeAddress, star=True))
_XOR_ADDRESS = (decodeXorAddress,
                lambda address, tid: encodeXorAddress(address[0], address[1], tid))
_TEXT = (_text, _encodeText)
_OPAQUE = (_opaque, _opaque)
_FLAG = (_flag, _encodeFlag)
_UINT32 = (_withoutId(decodeUInt32), _encodeWithoutId(encodeUInt32))

_FORMS: dict[Attr, tuple[Callable[[bytes, bytes], Any], Callable[[Any, bytes], bytes]]] = {
    Attr.MAPPED_ADDRESS: _ADDRESS,  # RFC 8489 §14.1
    Attr.RESPONSE_ADDRESS: _ADDRESS,  # RFC 3489 §11.2.2 (read, never honoured)
    Attr.CHANGE_REQUEST: (_withoutId(decodeChangeRequest),  # RFC 5780 §7.2
                          _encodeWithoutId(encodeChangeRequest, star=True)),
    Attr.SOURCE_ADDRESS: _ADDRESS,  # RFC 3489 §11.2.5
    Attr.CHANGED_ADDRESS: _ADDRESS,  # RFC 3489 §11.2.3
    Attr.USERNAME: _TEXT,  # RFC 8489 §14.3
    Attr.PASSWORD: _OPAQUE,  # RFC 3489 §11.2.7
    Attr.MESSAGE_INTEGRITY: _OPAQUE,  # RFC 8489 §14.5
    Attr.ERROR_CODE: (_withoutId(decodeErrorCode),  # RFC 8489 §14.8
                      _encodeWithoutId(encodeErrorCode, star=True)),
    Attr.UNKNOWN_ATTRIBUTES: (_withoutId(decodeUnknownAttributes),  # RFC 8489 §14.13
                              _encodeWithoutId(encodeUnknownAttributes)),
    Attr.REFLECTED_FROM: _ADDRESS,  # RFC 3489 §11.2.11
    Attr.CHANNEL_NUMBER: (_withoutId(decodeChannelNumber),  # RFC 8656 §18
                          _encodeWithoutId(encodeChannelNumber)),
    Attr.LIFETIME: _UINT32,  # RFC 8656 §18
    Attr.XOR_PEER_ADDRESS: _XOR_ADDRESS,  # RFC 8656 §18
    Attr.DATA: _OPAQUE,  # RFC 8656 §18
    Attr.REALM: _TEXT,  # RFC 8489 §14.9
    Attr.NONCE: _OPAQUE,  # RFC 8489 §14.10 (compared as bytes)
    Attr.XOR_RELAYED_ADDRESS: _XOR_ADDRESS,  # RFC 8656 §18
    Attr.REQUESTED_ADDRESS_FAMILY: (_withoutId(decodeAddressFamily),  # RFC 8656 §18
                                    _encodeWithoutId(encodeAddressFamily)),
    Attr.EVEN_PORT: (_withoutId(decodeEvenPort),  # RFC 8656 §18
                     _encodeWithoutId(encodeEvenPort)),
    Attr.REQUESTED_TRANSPORT: (_withoutId(decodeRequestedTransport),  # RFC 8656 §18
                               _encodeWithoutId(encodeRequestedTransport)),
    Attr.DONT_FRAGMENT: _FLAG,  # RFC 8656 §18
    Attr.ACCESS_TOKEN: _OPAQUE,  # RFC 7635
    Attr.MESSAGE_INTEGRITY_SHA256: _OPAQUE,  # RFC 8489 §14.6
    Attr.PASSWORD_ALGORITHM: (_withoutId(decodePasswordAlgorithm),  # RFC 8489 §14.12
                              lambda entry, tid: encodePasswordAlgorithms([entry])),
    Attr.USERHASH: _OPAQUE,  # RFC 8489 §14.4
    Attr.XOR_MAPPED_ADDRESS: _XOR_ADDRESS,  # RFC 8489 §14.2
    Attr.RESERVATION_TOKEN: (_withoutId(decodeReservationToken),  # RFC 8656 §18
                             _encodeWithoutId(encodeReservationToken)),
    Attr.PRIORITY: _UINT32,  # RFC 8445 §16.1
    Attr.USE_CANDIDATE: _FLAG,  # RFC 8445 §16.1
    Attr.PADDING: _OPAQUE,  # RFC 5780 §7.6
    Attr.RESPONSE_PORT: (_withoutId(decodeResponsePort),  # RFC 5780 §7.5
                         lambda port, tid: struct.pack("!HH", port, 0)),
    Attr.CONNECTION_ID: _UINT32,  # RFC 6062
    Attr.ADDITIONAL_ADDRESS_FAMILY: (_withoutId(decodeAddressFamily),  # RFC 8656 §18
                                     _encodeWithoutId(encodeAddressFamily)),
    Attr.ADDRESS_ERROR_CODE: (_withoutId(decodeAddressErrorCode),  # RFC 8656 §18
                              _encodeWithoutId(encodeAddressErrorCode, star=True)),
    Attr.PASSWORD_ALGORITHMS: (_withoutId(decodePasswordAlgorithms),  # RFC 8489 §14.11
                               _encodeWithoutId(encodePasswordAlgorithms)),
    Attr.ALTERNATE_DOMAIN: _TEXT,  # RFC 8489 §14.16
    Attr.ICMP: _OPAQUE,  # RFC 8656 §18
    Attr.SOFTWARE: _TEXT,  # RFC 8489 §14.14
    Attr.ALTERNATE_SERVER: _ADDRESS,  # RFC 8489 §14.15
    Attr.TRANSACTION_TRANSMIT_COUNTER: _OPAQUE,  # RFC 7982
    Attr.CACHE_TIMEOUT: _UINT32,  # RFC 5780
    Attr.FINGERPRINT: (_withoutId(decodeFingerprint),  # RFC 8489 §14.7
                       lambda crc, tid: struct.pack("!I", crc)),
    Attr.ICE_CONTROLLED: (_withoutId(decodeUInt64), _encodeWithoutId(encodeUInt64)),
    Attr.ICE_CONTROLLING: (_withoutId(decodeUInt64), _encodeWithoutId(encodeUInt64)),
    Attr.RESPONSE_ORIGIN: _ADDRESS,  # RFC 5780 §7.3
    Attr.OTHER_ADDRESS: _ADDRESS,  # RFC 5780 §7.4
}

#: Every attribute this code base reads or writes, by type: ONE table.
ATTRIBUTES: dict[int, AttributeSpec] = {
    int(a): AttributeSpec(int(a), a.name.replace("_", "-"), *_FORMS[a]) for a in Attr
}

#: The types in L{ATTRIBUTES}: what a server "understands" (RFC 8489 §6.3.1).
KNOWN_ATTRIBUTES = frozenset(ATTRIBUTES)


def decodeValue(attrType: int, value: bytes, transactionId: bytes) -> Any:
    """The typed value of one attribute through L{ATTRIBUTES}; raw bytes for a type the
    table does not know.

    @raise StunAttributeError: the value is malformed.
    """
    spec = ATTRIBUTES.get(attrType)
    if spec is None:
        return value
    try:
        return spec.decode(value, transactionId)
    except StunDecodeError as e:
        raise StunAttributeError(attrType, f"{spec.name}: {e}") from None


def encodeValue(attrType: int, typed: Any, transactionId: bytes) -> bytes:
    """The wire value of one typed attribute value through L{ATTRIBUTES}."""
    spec = ATTRIBUTES.get(attrType)
    if spec is None:
        return bytes(typed)
    return spec.encode(typed, transactionId)
