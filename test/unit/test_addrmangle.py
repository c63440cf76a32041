"""Tests for L{p2pnet.codecs.addrmangle}: rustdesk.md §3 and §9.3."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs import addrmangle


class VectorTests(SynchronousTestCase):
    def test_ipv4Vectors(self) -> None:
        for host, port, tm, hexed in [
            ("192.168.1.10", 21116, 0x12345678, "f4a8f0ac682470fe6b38"),
            ("1.2.3.4", 80, 0, "50000000000002040608"),
            ("203.0.113.7", 50000, 0x18202240, "90e5804440301646223f"),
        ]:
            encoded = addrmangle.encode(host, port, tm)
            self.assertEqual(encoded.hex(), hexed)
            self.assertEqual(addrmangle.decode(encoded), (host, port))

    def test_ipv6Vector(self) -> None:
        encoded = addrmangle.encode("2001:db8::1", 21116, 0x12345678)
        self.assertEqual(encoded.hex(), "20010db80000000000000000000000017c52")
        self.assertEqual(addrmangle.decode(encoded), ("2001:db8::1", 21116))

    def test_v4MappedIsIPv4(self) -> None:
        self.assertEqual(addrmangle.encode("::ffff:1.2.3.4", 80, 0).hex(),
                         "50000000000002040608")
        # hbb_common keeps v4-mapped loopback as IPv6.
        self.assertEqual(addrmangle.unmapV4("::ffff:127.0.0.1"), "::ffff:7f00:1")

    def test_malformed(self) -> None:
        self.assertEqual(addrmangle.decode(b""), ("0.0.0.0", 0))
        self.assertEqual(addrmangle.decode(b"\x01" * 17), addrmangle.ANY)
        self.assertEqual(addrmangle.decode(b"\x01" * 19), addrmangle.ANY)

    def test_timestamp(self) -> None:
        self.assertEqual(addrmangle.timestampFor(1.5), 1_500_000)
        self.assertEqual(addrmangle.timestampFor(2**32 / 1e6), 0)

    @given(st.ip_addresses(v=4), st.integers(0, 65535), st.integers(0, 2**32 - 1))
    def test_roundTripV4(self, ip: object, port: int, tm: int) -> None:
        self.assertEqual(addrmangle.decode(addrmangle.encode(str(ip), port, tm)),
                         (str(ip), port))

    @given(st.ip_addresses(v=6), st.integers(0, 65535))
    def test_roundTripV6(self, ip: object, port: int) -> None:
        encoded = addrmangle.encode(str(ip), port, 7)
        if len(encoded) == 18:
            self.assertEqual(addrmangle.decode(encoded), (str(ip), port))

    @given(st.binary(max_size=40))
    def test_garbageNeverRaises(self, data: bytes) -> None:
        host, port = addrmangle.decode(data)
        self.assertIsInstance(host, str)
        self.assertTrue(0 <= port <= 65535)
