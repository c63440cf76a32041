"""Tests for the one STUN attribute table (L{p2pnet.codecs.stun_attributes}), typed
access on L{p2pnet.codecs.stun.Message}, L{checkRequest}, header salvage and
L{p2pnet.codecs.channeldata.classify}."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs import channeldata
from p2pnet.codecs.stun import (
    ATTRIBUTES,
    Attr,
    Message,
    Method,
    StunAttributeError,
    StunClass,
    StunDecodeError,
    checkRequest,
    decode,
    decodeUnknownAttributes,
)
from p2pnet.codecs.stun_attributes import decodeValue, encodeValue

TID = bytes(range(12))

#: A typed sample of every attribute in the table.
SAMPLES: dict[Attr, object] = {
    Attr.MAPPED_ADDRESS: ("192.0.2.1", 3478),
    Attr.RESPONSE_ADDRESS: ("192.0.2.2", 1),
    Attr.CHANGE_REQUEST: (True, False),
    Attr.SOURCE_ADDRESS: ("2001:db8::1", 3479),
    Attr.CHANGED_ADDRESS: ("192.0.2.3", 3479),
    Attr.USERNAME: "alice",
    Attr.PASSWORD: b"pw",
    Attr.MESSAGE_INTEGRITY: bytes(20),
    Attr.ERROR_CODE: (438, "Stale Nonce"),
    Attr.UNKNOWN_ATTRIBUTES: [0x31, 0x7FFF],
    Attr.REFLECTED_FROM: ("192.0.2.4", 9),
    Attr.CHANNEL_NUMBER: 0x4001,
    Attr.LIFETIME: 600,
    Attr.XOR_PEER_ADDRESS: ("2001:db8::9", 50000),
    Attr.DATA: b"payload",
    Attr.REALM: "example.org",
    Attr.NONCE: b"obMatJos2nonce",
    Attr.XOR_RELAYED_ADDRESS: ("198.51.100.1", 49152),
    Attr.REQUESTED_ADDRESS_FAMILY: 2,
    Attr.EVEN_PORT: True,
    Attr.REQUESTED_TRANSPORT: 17,
    Attr.DONT_FRAGMENT: True,
    Attr.ACCESS_TOKEN: b"token",
    Attr.MESSAGE_INTEGRITY_SHA256: bytes(32),
    Attr.PASSWORD_ALGORITHM: (2, b""),
    Attr.USERHASH: bytes(32),
    Attr.XOR_MAPPED_ADDRESS: ("203.0.113.5", 40000),
    Attr.RESERVATION_TOKEN: b"12345678",
    Attr.PRIORITY: 0x6E0001FF,
    Attr.USE_CANDIDATE: True,
    Attr.PADDING: bytes(8),
    Attr.RESPONSE_PORT: 5000,
    Attr.CONNECTION_ID: 0xDEADBEEF,
    Attr.ADDITIONAL_ADDRESS_FAMILY: 2,
    Attr.ADDRESS_ERROR_CODE: (2, 440, "Address Family not Supported"),
    Attr.PASSWORD_ALGORITHMS: [(2, b""), (1, b"")],
    Attr.ALTERNATE_DOMAIN: "turn.example.org",
    Attr.ICMP: bytes(8),
    Attr.SOFTWARE: "p2pnet 1.0",
    Attr.ALTERNATE_SERVER: ("192.0.2.9", 3478),
    Attr.TRANSACTION_TRANSMIT_COUNTER: bytes(4),
    Attr.CACHE_TIMEOUT: 30,
    Attr.FINGERPRINT: 0x12345678,
    Attr.ICE_CONTROLLED: 0x0123456789ABCDEF,
    Attr.ICE_CONTROLLING: 2**64 - 1,
    Attr.RESPONSE_ORIGIN: ("192.0.2.1", 3478),
    Attr.OTHER_ADDRESS: ("192.0.2.2", 3479),
}


def request(*attributes: tuple[int, bytes]) -> Message:
    """A decoded Binding request carrying C{attributes}."""
    return decode(Message(Method.BINDING, StunClass.REQUEST, TID, list(attributes)).encode())


class TableTests(SynchronousTestCase):
    """ONE table of (type, name, decode, encode)."""

    def test_everyAttributeHasAnEntry(self) -> None:
        """Every type of L{Attr} is in the table, named as the RFCs spell it."""
        self.assertEqual(set(ATTRIBUTES), {int(a) for a in Attr})
        self.assertEqual(ATTRIBUTES[Attr.XOR_MAPPED_ADDRESS].name, "XOR-MAPPED-ADDRESS")
        self.assertEqual(set(SAMPLES), set(Attr))

    def test_roundTrip(self) -> None:
        """Every sample survives encode then decode through the table."""
        for attr, typed in SAMPLES.items():
            value = encodeValue(attr, typed, TID)
            self.assertEqual(decodeValue(attr, value, TID), typed, attr.name)

    def test_xorDependsOnTransaction(self) -> None:
        """XOR address forms are masked with the transaction (IPv6: with the ID)."""
        value = encodeValue(Attr.XOR_PEER_ADDRESS, ("2001:db8::9", 5), TID)
        self.assertNotEqual(decodeValue(Attr.XOR_PEER_ADDRESS, value, bytes(12)),
                            ("2001:db8::9", 5))

    def test_malformedNamesTheAttribute(self) -> None:
        """A malformed value raises L{StunAttributeError} naming its type."""
        error = self.assertRaises(StunAttributeError, decodeValue, Attr.LIFETIME, b"\0\0", TID)
        self.assertEqual(error.attrType, Attr.LIFETIME)
        self.assertIn("LIFETIME", str(error))
        self.assertIsInstance(error, StunDecodeError)

    def test_liberalWhereEncodersDiffer(self) -> None:
        """RESPONSE-PORT of length 2 (npm stun 2.1.0, stuntman), addresses with trailing
        bytes; flags with a value (issue 14 item 2: read what coturn reads)."""
        self.assertEqual(decodeValue(Attr.RESPONSE_PORT, b"\x13\x88", TID), 5000)
        self.assertEqual(decodeValue(Attr.MAPPED_ADDRESS,
                                     b"\0\x01\x0d\x96\xc0\0\x02\x01\0\0\0\0", TID),
                         ("192.0.2.1", 3478))
        self.assertTrue(decodeValue(Attr.DONT_FRAGMENT, b"\0\0\0\0", TID))

    def test_unknownTypeIsRaw(self) -> None:
        """A type outside the table reads and writes as bytes."""
        self.assertEqual(decodeValue(0x7777, b"abc", TID), b"abc")
        self.assertEqual(encodeValue(0x7777, b"abc", TID), b"abc")


class TypedAccessTests(SynchronousTestCase):
    """C{message[Attr.X]}, C{in}, L{Message.value}, L{Message.set}."""

    def test_typedValues(self) -> None:
        message = request((Attr.LIFETIME, b"\0\0\x02\x58"), (Attr.USERNAME, b"bob"))
        self.assertEqual(message[Attr.LIFETIME], 600)
        self.assertEqual(message[Attr.USERNAME], "bob")
        self.assertIn(Attr.LIFETIME, message)
        self.assertNotIn(Attr.REALM, message)
        self.assertIsNone(message.value(Attr.REALM))
        self.assertEqual(message.value(Attr.REALM, "x"), "x")
        self.assertRaises(KeyError, lambda: message[Attr.REALM])

    def test_firstOccurrence(self) -> None:
        """Of repeated attributes the first is read (RFC 8489 §14: "Any attribute type
        MAY appear more than once ... only the first occurrence needs to be processed")."""
        message = request((Attr.LIFETIME, b"\0\0\0\x01"), (Attr.LIFETIME, b"\0\0\0\x02"))
        self.assertEqual(message[Attr.LIFETIME], 1)

    def test_malformedRaises(self) -> None:
        message = request((Attr.LIFETIME, b"\0\0"))
        self.assertRaises(StunAttributeError, lambda: message[Attr.LIFETIME])

    def test_set(self) -> None:
        """L{Message.set} encodes through the table, XOR forms with the transaction."""
        reply = Message(Method.BINDING, StunClass.SUCCESS, TID)
        reply.set(Attr.XOR_MAPPED_ADDRESS, ("192.0.2.1", 1)).set(Attr.LIFETIME, 5)
        again = decode(reply.encode())
        self.assertEqual(again[Attr.XOR_MAPPED_ADDRESS], ("192.0.2.1", 1))
        self.assertEqual(again[Attr.LIFETIME], 5)

    def test_errorCode(self) -> None:
        self.assertEqual(Message(1, StunClass.REQUEST).errorReply(487).errorCode, 487)
        self.assertIsNone(Message(1, StunClass.SUCCESS).errorCode)


class CheckRequestTests(SynchronousTestCase):
    """The one path from a request's attributes to 420 and 400 (RFC 8489 §6.3.1)."""

    def test_fine(self) -> None:
        self.assertIsNone(checkRequest(request()))
        self.assertIsNone(checkRequest(request((Attr.SOFTWARE, b"x"), (0x8077, b"y"))))

    def test_unknownComprehensionRequired(self) -> None:
        """420 lists each unknown comprehension-required type once, in order."""
        reply = checkRequest(request((0x0031, b"a"), (0x8031, b"b"), (0x0032, b""),
                                     (0x0031, b"c")))
        assert reply is not None
        self.assertEqual(reply.errorCode, 420)
        self.assertEqual(reply.cls, StunClass.ERROR)
        self.assertEqual(decodeUnknownAttributes(reply.get(Attr.UNKNOWN_ATTRIBUTES) or b""),
                         [0x31, 0x32])

    def test_callerUnknown(self) -> None:
        """A caller names attributes it treats as unknown (DONT-FRAGMENT without DF)."""
        reply = checkRequest(request((Attr.DONT_FRAGMENT, b"")), unknown=(Attr.DONT_FRAGMENT,))
        assert reply is not None
        self.assertEqual(reply.errorCode, 420)

    def test_understoodSubset(self) -> None:
        """Types outside C{understood} are unknown even when the table knows them."""
        reply = checkRequest(request((Attr.LIFETIME, bytes(4))), frozenset({Attr.SOFTWARE}))
        assert reply is not None
        self.assertEqual(reply.errorCode, 420)

    def test_malformed(self) -> None:
        """A malformed known attribute is 400, and the transaction is the request's."""
        for attr, value in ((Attr.LIFETIME, b"\0"), (Attr.CHANGE_REQUEST, b"\0\0"),
                            (Attr.XOR_PEER_ADDRESS, b"\0\x07\0\0"),
                            (Attr.RESPONSE_PORT, b"\x01")):
            reply = checkRequest(request((attr, value)))
            assert reply is not None, attr
            self.assertEqual(reply.errorCode, 400)
            self.assertEqual(reply.transactionId, TID)

    def test_valuesCachedForHandlers(self) -> None:
        """After the check, handlers' reads are the decoded values."""
        message = request((Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0"))
        self.assertIsNone(checkRequest(message))
        self.assertEqual(message[Attr.REQUESTED_TRANSPORT], 17)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from([int(a) for a in Attr] + [0x31, 0x8031]),
                              st.binary(max_size=24)), max_size=6))
    def test_neverRaises(self, attributes: list[tuple[int, bytes]]) -> None:
        """Whatever the attributes, the check answers or passes; it never raises."""
        try:
            message = request(*attributes)
        except StunDecodeError:
            return  # e.g. a random FINGERPRINT
        reply = checkRequest(message)
        if reply is None:
            for attrType, _ in message.attributes:
                message.value(attrType)  # every read now succeeds
        else:
            self.assertIn(reply.errorCode, (400, 420))


class SalvageTests(SynchronousTestCase):
    """A request with a sound header and broken attributes carries a bare request to
    answer 400 to; anything else carries none."""

    def broken(self, cls: int = StunClass.REQUEST, cookie: bool = True) -> bytes:
        data = bytearray(Message(Method.ALLOCATE, cls, TID, [(Attr.SOFTWARE, b"abcd")]).encode())
        struct.pack_into("!H", data, 22, 99)  # the attribute runs past the message
        if not cookie:
            data[4:8] = b"\0\0\0\0"
        return bytes(data)

    def test_request(self) -> None:
        error = self.assertRaises(StunDecodeError, decode, self.broken())
        self.assertEqual((error.request.method, error.request.cls, error.request.transactionId),
                         (Method.ALLOCATE, StunClass.REQUEST, TID))

    def test_notARequest(self) -> None:
        for data in (self.broken(StunClass.INDICATION), self.broken(StunClass.SUCCESS),
                     self.broken(cookie=False), b"\0\x01\0\x04" + bytes(16)):
            self.assertIsNone(self.assertRaises(StunDecodeError, decode, data).request)

    def test_badFingerprint(self) -> None:
        """A failed FINGERPRINT is no proof the bytes are STUN: nothing to answer."""
        data = bytearray(Message(Method.BINDING, StunClass.REQUEST, TID).encode(fingerprint=True))
        data[-1] ^= 1
        self.assertIsNone(self.assertRaises(StunDecodeError, decode, bytes(data)).request)


class ClassifyTests(SynchronousTestCase):
    """RFC 7983 §7 first-byte demultiplexing."""

    def test_kinds(self) -> None:
        self.assertEqual(channeldata.classify(b"\x00\x01"), channeldata.STUN)
        self.assertEqual(channeldata.classify(b"\x40\x00"), channeldata.CHANNEL_DATA)
        self.assertEqual(channeldata.classify(b"\x7f\xfe"), channeldata.OTHER)
        self.assertEqual(channeldata.classify(b"\x7f\xfe", channeldata.CHANNEL_MAX_RFC5766),
                         channeldata.CHANNEL_DATA)
        self.assertEqual(channeldata.classify(b"\x80"), channeldata.OTHER)
        self.assertEqual(channeldata.classify(b""), channeldata.OTHER)
