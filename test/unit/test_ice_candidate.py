"""Tests for L{p2pnet.codecs.ice_candidate}: round trips on lines as Chromium, Firefox,
aioice and libnice write them, field values, and rejection of broken lines."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.ice_candidate import Candidate, CandidateDecodeError, parseCandidate

# Written the way each implementation writes them (addresses from RFC 5737/3849).
CHROMIUM = [
    "candidate:2999745851 1 udp 2122260223 192.168.1.10 54400 typ host generation 0 "
    "ufrag EsAw network-id 1 network-cost 10",
    "candidate:1510613869 1 tcp 1518280447 192.168.1.10 9 typ host tcptype active "
    "generation 0 ufrag EsAw network-id 1 network-cost 10",
    "candidate:842163049 1 udp 1686052607 203.0.113.7 54400 typ srflx raddr 192.168.1.10 "
    "rport 54400 generation 0 ufrag EsAw network-id 1 network-cost 10",
    "candidate:3745134081 1 udp 41885439 198.51.100.2 61234 typ relay raddr 203.0.113.7 "
    "rport 54400 generation 0 ufrag EsAw network-id 1 network-cost 10",
    "candidate:1876313031 1 udp 2122262783 2001:db8::7 50001 typ host generation 0 "
    "ufrag EsAw network-id 2",
    "candidate:3442447574 1 udp 2122262783 9b36eaac-bb2e-49bb-bb78-21c41c499900.local 56143 "
    "typ host generation 0 ufrag EsAw network-id 1",
    "candidate:4241385209 1 udp 1685987071 203.0.113.7 54400 typ srflx raddr 0.0.0.0 "
    "rport 0 generation 0 ufrag EsAw network-id 1 network-cost 10",
]
FIREFOX = [
    "candidate:0 1 UDP 2122252543 192.168.1.10 52405 typ host",
    "candidate:2 1 TCP 2105524479 192.168.1.10 9 typ host tcptype active",
    "candidate:1 1 UDP 1686052863 203.0.113.7 52405 typ srflx raddr 192.168.1.10 rport 52405",
    "candidate:3 1 UDP 92217087 198.51.100.2 61234 typ relay raddr 198.51.100.2 rport 61234",
]
LIBNICE = [
    "candidate:1 1 UDP 2013266431 192.168.1.10 46123 typ host",
    "candidate:5 1 TCP 1019216383 192.168.1.10 9 typ host tcptype active",
    "candidate:6 1 TCP 1015022079 192.168.1.10 44709 typ host tcptype passive",
    "candidate:3 1 UDP 1677721855 203.0.113.7 46123 typ srflx raddr 192.168.1.10 rport 46123",
    "candidate:4 2 UDP 16777214 198.51.100.2 61235 typ relay raddr 203.0.113.7 rport 46124",
]
# aioice writes the value without "candidate:" (Candidate.to_sdp).
AIOICE = [
    "c4ad2ab6ca18d4d3fda55e68a4bb6e0f 1 udp 2130706431 192.168.1.10 38823 typ host",
    "8b0b2eaa4cbd7d8b1a3d8cba61e1ff8b 1 udp 1694498815 203.0.113.7 38823 typ srflx "
    "raddr 192.168.1.10 rport 38823",
    "07d6dd9f61b3e47e1bd8a1aa8b2e61e7 1 udp 16777215 198.51.100.2 49152 typ relay "
    "raddr 203.0.113.7 rport 38823",
    "3c5e0a1f4e4e0c18e2b0f6b8b2f57a43 1 tcp 1675624447 192.168.1.10 9 typ host "
    "tcptype active generation 0",
]


class RoundTripTests(SynchronousTestCase):
    """Every real-looking line parses and is written back unchanged."""

    def test_prefixed(self) -> None:
        """Chromium, Firefox and libnice lines come back byte for byte."""
        for line in CHROMIUM + FIREFOX + LIBNICE:
            self.assertEqual(parseCandidate(line).toLine(), line)

    def test_aioice(self) -> None:
        """aioice's unprefixed values come back unprefixed with C{prefix=False}."""
        for line in AIOICE:
            self.assertEqual(parseCandidate(line).toLine(prefix=False), line)
            self.assertEqual(parseCandidate(line).toLine(), "candidate:" + line)

    def test_sdpLine(self) -> None:
        """An C{a=} SDP line with trailing CRLF parses; C{a=} is never written."""
        candidate = parseCandidate("a=" + FIREFOX[2] + "\r\n")
        self.assertEqual(candidate.toLine(), FIREFOX[2])


class FieldTests(SynchronousTestCase):
    """Typed values of the fields."""

    def test_srflx(self) -> None:
        """A Chromium server-reflexive line: fields, related address and extensions."""
        c = parseCandidate(CHROMIUM[2])
        self.assertEqual(
            (c.foundation, c.component, c.transport, c.priority, c.host, c.port, c.type),
            ("842163049", 1, "udp", 1686052607, "203.0.113.7", 54400, "srflx"))
        self.assertEqual((c.relatedAddress, c.relatedPort), ("192.168.1.10", 54400))
        self.assertEqual((c.generation, c.ufrag), (0, "EsAw"))
        self.assertEqual(c.extension("network-cost"), "10")
        self.assertTrue(c.isUdp)
        self.assertEqual(c.address, ("203.0.113.7", 54400))

    def test_tcptype(self) -> None:
        """RFC 6544 C{tcptype} is read from the extensions; transport case is kept."""
        c = parseCandidate(LIBNICE[2])
        self.assertEqual((c.transport, c.tcptype, c.isUdp), ("TCP", "passive", False))
        self.assertIsNone(parseCandidate(FIREFOX[0]).tcptype)

    def test_withExtension(self) -> None:
        """C{withExtension} replaces a value in place or appends a new one."""
        c = parseCandidate(CHROMIUM[0]).withExtension("generation", "3")
        self.assertEqual(c.generation, 3)
        self.assertIn("generation 3 ufrag EsAw", c.toLine())
        self.assertTrue(parseCandidate(FIREFOX[0]).withExtension("ufrag", "abcd")
                        .toLine().endswith("typ host ufrag abcd"))

    def test_build(self) -> None:
        """A built candidate writes the RFC 8839 order: typ, raddr, rport, extensions."""
        c = Candidate("1", 1, "udp", 100, "198.51.100.2", 4000, "relay", "203.0.113.7", 5000,
                      (("generation", "0"),))
        self.assertEqual(c.toLine(), "candidate:1 1 udp 100 198.51.100.2 4000 typ relay "
                                     "raddr 203.0.113.7 rport 5000 generation 0")


class RejectTests(SynchronousTestCase):
    """Broken lines raise L{CandidateDecodeError} naming the problem."""

    def test_broken(self) -> None:
        for line in [
            "candidate:1 1 udp 2130706431 192.0.2.1 5000 host",  # no typ
            "candidate:1 1 udp 2130706431 192.0.2.1 5000 type host",
            "candidate:1 0 udp 2130706431 192.0.2.1 5000 typ host",  # component 0
            "candidate:1 1 udp 0 192.0.2.1 5000 typ host",  # priority 0
            "candidate:1 1 udp 4294967296 192.0.2.1 5000 typ host",
            "candidate:1 1 udp 1 192.0.2.1 70000 typ host",
            "candidate:1 1 udp 1 192.0.2.1 -1 typ host",
            "candidate:1 1 udp 1 192.0.2.1 5000 typ host generation",  # no value
            "candidate:a*b 1 udp 1 192.0.2.1 5000 typ host",  # not ice-chars
            "candidate:" + "a" * 33 + " 1 udp 1 192.0.2.1 5000 typ host",
            "candidate:1 1 udp 1 192.0.2.1 5000 typ srflx raddr 192.0.2.2 rport x",
            "",
        ]:
            self.assertRaises(CandidateDecodeError, parseCandidate, line)

    @given(st.text(max_size=200))
    def test_garbage(self, text: str) -> None:
        """Random text either parses to a candidate that round-trips, or raises the
        codec's own error; nothing else escapes."""
        try:
            c = parseCandidate(text)
        except CandidateDecodeError:
            return
        self.assertEqual(parseCandidate(c.toLine()), c)
