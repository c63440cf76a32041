"""Tests for L{p2pnet.addresses}."""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from p2pnet import addresses


class AddressTests(SynchronousTestCase):
    def test_family(self) -> None:
        self.assertEqual(addresses.family("192.0.2.1"), 4)
        self.assertEqual(addresses.family("2001:db8::1"), 6)
        self.assertEqual(addresses.socketFamily("::1"), socket.AF_INET6)
        self.assertEqual(addresses.socketFamily("127.0.0.1"), socket.AF_INET)

    def test_unmapped(self) -> None:
        self.assertEqual(addresses.unmapped("::ffff:192.0.2.7"), "192.0.2.7")
        self.assertEqual(addresses.unmapped("fe80::1%eth0"), "fe80::1")
        self.assertEqual(addresses.unmapped("2001:db8::1"), "2001:db8::1")

    def test_normalizeIp(self) -> None:
        self.assertEqual(addresses.normalizeIp("[2001:db8::1]:443"), "2001:db8::1")
        self.assertEqual(addresses.normalizeIp("192.0.2.1:80"), "192.0.2.1")
        self.assertEqual(addresses.normalizeIp("::ffff:10.0.0.1"), "10.0.0.1")
        self.assertIsNone(addresses.normalizeIp("example.com"))
        self.assertIsNone(addresses.normalizeIp(""))
        self.assertIsNone(addresses.normalizeIp(None))

    def test_isLoopback(self) -> None:
        self.assertTrue(addresses.isLoopback("127.8.9.1"))
        self.assertTrue(addresses.isLoopback("::1"))
        self.assertTrue(addresses.isLoopback("::ffff:127.0.0.1"))
        self.assertFalse(addresses.isLoopback("192.0.2.1"))
        self.assertFalse(addresses.isLoopback("nonsense"))

    def test_sourceKeyGroupsAnIpv6Slash64(self) -> None:
        self.assertEqual(addresses.sourceKey("2001:db8:1:2::5"), "2001:db8:1:2::/64")
        self.assertEqual(addresses.sourceKey("2001:db8:1:2:ffff::9"), "2001:db8:1:2::/64")
        self.assertNotEqual(addresses.sourceKey("2001:db8:1:3::5"), "2001:db8:1:2::/64")
        self.assertEqual(addresses.sourceKey("198.51.100.4"), "198.51.100.4")
        self.assertEqual(addresses.sourceKey("::ffff:198.51.100.4"), "198.51.100.4")
        self.assertEqual(addresses.sourceKey("2001:db8::1", ipv6Prefix=128), "2001:db8::1/128")
        self.assertEqual(addresses.sourceKey("junk"), "junk")
