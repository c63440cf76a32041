"""Tests for the TURN attribute values of L{p2pnet.codecs.stun} (RFC 8656, 6062, 6156)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs import stun
from p2pnet.codecs.stun import (
    CHANNEL_MAX,
    CHANNEL_MAX_RFC5766,
    FAMILY_IPV6,
    PROTOCOL_TCP,
    PROTOCOL_UDP,
    StreamDecoder,
    StunDecodeError,
)


class AttributeValueTests(SynchronousTestCase):
    def test_requestedTransport(self) -> None:
        """One protocol byte and three of RFFU (RFC 8656 §18.11)."""
        self.assertEqual(stun.encodeRequestedTransport(PROTOCOL_UDP), b"\x11\0\0\0")
        self.assertEqual(stun.decodeRequestedTransport(b"\x06\0\0\0"), PROTOCOL_TCP)
        self.assertRaises(StunDecodeError, stun.decodeRequestedTransport, b"\x11")

    def test_addressFamily(self) -> None:
        """REQUESTED-/ADDITIONAL-ADDRESS-FAMILY (18.10, 18.12)."""
        self.assertEqual(stun.encodeAddressFamily(FAMILY_IPV6), b"\x02\0\0\0")
        self.assertEqual(stun.decodeAddressFamily(b"\x01\0\0\0"), 1)
        self.assertRaises(StunDecodeError, stun.decodeAddressFamily, b"\x01\0")

    def test_channelNumber(self) -> None:
        """The number and two bytes of RFFU (18.1)."""
        self.assertEqual(stun.encodeChannelNumber(0x4001), b"\x40\x01\0\0")
        self.assertEqual(stun.decodeChannelNumber(b"\x7f\xfe\0\0"), 0x7FFE)
        self.assertRaises(StunDecodeError, stun.decodeChannelNumber, b"\x40\x01")

    def test_evenPort(self) -> None:
        """One byte, R in the top bit (18.8)."""
        self.assertEqual(stun.encodeEvenPort(True), b"\x80")
        self.assertTrue(stun.decodeEvenPort(b"\x80"))
        self.assertFalse(stun.decodeEvenPort(b"\x00"))
        self.assertRaises(StunDecodeError, stun.decodeEvenPort, b"\x80\0\0\0")

    def test_addressErrorCode(self) -> None:
        """Family, RFFU, class, number, reason (18.13)."""
        value = stun.encodeAddressErrorCode(FAMILY_IPV6, 440)
        self.assertEqual(value[:4], b"\x02\x00\x04\x28")
        self.assertEqual(stun.decodeAddressErrorCode(value),
                         (FAMILY_IPV6, 440, "Address Family not Supported"))
        self.assertRaises(StunDecodeError, stun.decodeAddressErrorCode, b"\x02")

    def test_reservationToken(self) -> None:
        """Eight opaque bytes (18.9)."""
        self.assertEqual(stun.encodeReservationToken(b"12345678"), b"12345678")
        self.assertRaises(ValueError, stun.encodeReservationToken, b"1234")
        self.assertRaises(StunDecodeError, stun.decodeReservationToken, b"123")


class ChannelDataTests(SynchronousTestCase):
    def test_splitAndEncode(self) -> None:
        """The function forms agree with L{stun.ChannelData}; padding only when asked."""
        frame = stun.encodeChannelData(0x4001, b"hello")
        self.assertEqual(frame, stun.ChannelData(0x4001, b"hello").encode())
        padded = stun.encodeChannelData(0x4001, b"hello", pad=True)
        self.assertEqual(len(padded), 12)
        self.assertEqual(stun.splitChannelData(padded), (0x4001, b"hello"))

    def test_ranges(self) -> None:
        """0x4000-0x4FFF by default; up to 0x7FFE for RFC 5766 clients."""
        frame = stun.encodeChannelData(0x7000, b"x")
        self.assertRaises(StunDecodeError, stun.splitChannelData, frame)
        self.assertEqual(stun.splitChannelData(frame, CHANNEL_MAX_RFC5766), (0x7000, b"x"))
        self.assertRaises(StunDecodeError, stun.splitChannelData, b"\x40\x00\x00\x09abc")
        self.assertRaises(StunDecodeError, stun.splitChannelData, b"\x40")

    def test_streamRange(self) -> None:
        """The stream decoder frames 0x5000-0x7FFE only when told to."""
        frame = stun.encodeChannelData(0x7000, b"abcde", pad=True)
        self.assertRaises(StunDecodeError, StreamDecoder().feed, frame)
        self.assertEqual(StreamDecoder(CHANNEL_MAX_RFC5766).feed(frame + frame[:3]), [frame])
        self.assertEqual(StreamDecoder(CHANNEL_MAX).feed(stun.encodeChannelData(0x4FFF, b"")),
                         [b"\x4f\xff\0\0"])

    def test_takeBuffered(self) -> None:
        """What is held is handed over once and the buffer is empty."""
        decoder = StreamDecoder()
        self.assertEqual(decoder.feed(b"\x00\x01\x00\x00"), [])
        self.assertEqual(decoder.takeBuffered(), b"\x00\x01\x00\x00")
        self.assertEqual(decoder.buffered, 0)

    @settings(max_examples=1000, deadline=None)
    @given(st.binary(max_size=64))
    def test_splitRandom(self, data: bytes) -> None:
        """Random bytes give a frame or the codec's own error."""
        try:
            channel, payload = stun.splitChannelData(data, CHANNEL_MAX_RFC5766)
        except StunDecodeError:
            return
        self.assertTrue(0x4000 <= channel <= CHANNEL_MAX_RFC5766)
        self.assertLessEqual(len(payload), len(data) - 4)
