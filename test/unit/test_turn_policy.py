"""Tests for L{p2pnet.services.turn_policy}: which peers a public TURN server relays to."""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.services.turn_policy import (
    CACHE_SIZE,
    IPV4_SPECIAL,
    IPV6_SPECIAL,
    PeerPolicy,
    registryRow,
)


class DefaultPolicyTests(SynchronousTestCase):
    """Without rules: public unicast only."""

    def test_refused(self) -> None:
        policy = PeerPolicy()
        for host in ("127.0.0.1", "127.1.2.3", "::1", "10.1.2.3", "172.16.0.1",
                     "192.168.1.1", "100.64.0.1", "169.254.169.254", "fe80::1",
                     "fc00::1", "fd12::1", "224.0.0.1", "ff02::1", "0.0.0.0", "::",
                     "0.1.2.3", "255.255.255.255", "240.0.0.1", "::ffff:127.0.0.1",
                     "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::1", "fec0::1",
                     "not an address", "fe80::1%eth0"):
            self.assertFalse(policy.permitted(host), host)

    def test_permitted(self) -> None:
        policy = PeerPolicy()
        for host in ("8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8",
                     "64:ff9b::808:808"):
            self.assertTrue(policy.permitted(host), host)

    def test_loopbackSwitch(self) -> None:
        """allow-loopback-peers opens loopback, nothing else."""
        policy = PeerPolicy(allowLoopback=True)
        self.assertTrue(policy.permitted("127.0.0.1"))
        self.assertTrue(policy.permitted("::1"))
        self.assertTrue(policy.permitted("::ffff:127.0.0.1"))
        self.assertFalse(policy.permitted("10.0.0.1"))


class RuleTests(SynchronousTestCase):
    def test_allow(self) -> None:
        """allow-peer opens a refused range."""
        policy = PeerPolicy(allow=["10.0.0.0/8"])
        self.assertTrue(policy.permitted("10.9.9.9"))
        self.assertFalse(policy.permitted("192.168.0.1"))

    def test_deny(self) -> None:
        """deny-peer closes a public range."""
        policy = PeerPolicy(deny=["203.0.113.0/24"])
        self.assertFalse(policy.permitted("203.0.113.9"))
        self.assertTrue(policy.permitted("198.51.99.1"))

    def test_mostSpecificWins(self) -> None:
        """A longer prefix decides; a deny wins a tie."""
        policy = PeerPolicy(allow=["10.0.0.0/8", "10.1.2.3"], deny=["10.1.0.0/16", "10.9.0.0/16"])
        self.assertTrue(policy.permitted("10.2.0.1"))
        self.assertFalse(policy.permitted("10.1.0.1"))
        self.assertTrue(policy.permitted("10.1.2.3"))
        tie = PeerPolicy(allow=["8.8.8.0/24"], deny=["8.8.8.0/24"])
        self.assertFalse(tie.permitted("8.8.8.8"))

    def test_denyLoopbackDespiteSwitch(self) -> None:
        """A deny rule beats allow-loopback-peers."""
        policy = PeerPolicy(deny=["127.0.0.53"], allowLoopback=True)
        self.assertFalse(policy.permitted("127.0.0.53"))
        self.assertTrue(policy.permitted("127.0.0.1"))

    def test_mappedJudgedByIPv4Rules(self) -> None:
        """IPv4-mapped addresses follow the IPv4 rules."""
        policy = PeerPolicy(deny=["8.8.8.8"])
        self.assertFalse(policy.permitted("::ffff:8.8.8.8"))

    def test_cacheBounded(self) -> None:
        """The decision cache never grows past its size."""
        policy = PeerPolicy()
        for i in range(CACHE_SIZE + 10):
            policy.permitted(f"8.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
        self.assertLessEqual(len(policy._cache), CACHE_SIZE)


#: One address inside each registry row (not inside a more specific row), and whether
#: the default policy relays to it: the registry's "Globally Reachable" column.
REGISTRY_SAMPLES = {
    "0.0.0.0/0": ("8.8.8.8", True),
    "0.0.0.0/8": ("0.1.2.3", False),
    "0.0.0.0/32": ("0.0.0.0", False),
    "10.0.0.0/8": ("10.20.30.40", False),
    "100.64.0.0/10": ("100.127.255.254", False),
    "127.0.0.0/8": ("127.9.9.9", False),
    "169.254.0.0/16": ("169.254.169.254", False),
    "172.16.0.0/12": ("172.31.255.1", False),
    "192.0.0.0/24": ("192.0.0.100", False),
    "192.0.0.0/29": ("192.0.0.1", False),
    "192.0.0.8/32": ("192.0.0.8", False),
    "192.0.0.9/32": ("192.0.0.9", True),
    "192.0.0.10/32": ("192.0.0.10", True),
    "192.0.0.170/32": ("192.0.0.170", False),
    "192.0.0.171/32": ("192.0.0.171", False),
    "192.0.2.0/24": ("192.0.2.33", False),
    "192.31.196.0/24": ("192.31.196.1", True),
    "192.52.193.0/24": ("192.52.193.1", True),
    "192.88.99.0/24": ("192.88.99.1", False),
    "192.88.99.2/32": ("192.88.99.2", False),
    "192.168.0.0/16": ("192.168.1.1", False),
    "192.175.48.0/24": ("192.175.48.6", True),
    "198.18.0.0/15": ("198.19.0.1", False),
    "198.51.100.0/24": ("198.51.100.7", False),
    "203.0.113.0/24": ("203.0.113.9", False),
    "224.0.0.0/4": ("239.255.255.250", False),
    "240.0.0.0/4": ("250.1.2.3", False),
    "255.255.255.255/32": ("255.255.255.255", False),
    "::/0": ("4000::1", False),
    "2000::/3": ("2606:4700::1111", True),
    "ff00::/8": ("ff02::1", False),
    "::1/128": ("::1", False),
    "::/128": ("::", False),
    "::ffff:0:0/96": ("::ffff:10.0.0.1", False),
    "64:ff9b::/96": ("64:ff9b::a00:1", False),
    "64:ff9b:1::/48": ("64:ff9b:1::808:808", False),
    "100::/64": ("100::1", False),
    "100:0:0:1::/64": ("100:0:0:1::1", False),
    "2001::/23": ("2001:100::1", False),
    "2001::/32": ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),
    "2001:1::1/128": ("2001:1::1", True),
    "2001:1::2/128": ("2001:1::2", True),
    "2001:1::3/128": ("2001:1::3", True),
    "2001:2::/48": ("2001:2::1", False),
    "2001:3::/32": ("2001:3::1", True),
    "2001:4:112::/48": ("2001:4:112::1", True),
    "2001:10::/28": ("2001:10::1", False),
    "2001:20::/28": ("2001:20::1", True),
    "2001:30::/28": ("2001:30::1", True),
    "2001:db8::/32": ("2001:db8::1", False),
    "2002::/16": ("2002:a00:1::1", False),
    "2620:4f:8000::/48": ("2620:4f:8000::42", True),
    "3fff::/20": ("3fff::1", False),
    "5f00::/16": ("5f00::1", False),
    "fc00::/7": ("fd12:3456::1", False),
    "fe80::/10": ("fe80::1", False),
}


class RegistryTests(SynchronousTestCase):
    """The default policy follows the IANA special-purpose registries row by row."""

    def test_everyRowSampled(self) -> None:
        """Every row of both tables has a sample here, and only those rows."""
        rows = {str(r.network) for r in IPV4_SPECIAL + IPV6_SPECIAL}
        self.assertEqual(rows, set(REGISTRY_SAMPLES))

    def test_perRange(self) -> None:
        """Each sample falls in its own row and is relayed to exactly when the row (or,
        for blocks holding an IPv4 address, the IPv4 address) is globally reachable."""
        policy = PeerPolicy()
        for block, (host, expected) in REGISTRY_SAMPLES.items():
            row = registryRow(ipaddress.ip_address(host))
            self.assertEqual(str(row.network), block, host)
            self.assertEqual(policy.permitted(host), expected, f"{block} {host}")
            if not row.inner:
                self.assertEqual(expected, row.globallyReachable is True, block)

    def test_pythonIsPrivateMisses(self) -> None:
        """The ranges Python's is_private/is_global judged wrongly are refused."""
        policy = PeerPolicy()
        for host in ("192.0.0.1", "192.0.0.100", "192.0.0.255", "192.88.99.1",
                     "192.88.99.200", "64:ff9b:1::1", "5f00::1", "100:0:0:1::1"):
            self.assertFalse(policy.permitted(host), host)
        for host in ("192.0.0.9", "192.0.0.10", "2001:1::2"):
            self.assertTrue(policy.permitted(host), host)

    def test_embeddedPublic(self) -> None:
        """NAT64, 6to4 and IPv4-mapped forms of a public address are relayed to."""
        policy = PeerPolicy()
        for host in ("64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"):
            self.assertTrue(policy.permitted(host), host)
        self.assertFalse(policy.permitted("2002:c000:20a::1"))  # 6to4 of 192.0.2.10

    def test_teredoJudgedByClient(self) -> None:
        """A Teredo address leads to its (obfuscated) client IPv4 address."""
        policy = PeerPolicy()
        # Client 192.0.2.45 (documentation): refused; client 8.8.8.8: relayed to.
        client = int(ipaddress.IPv4Address("192.0.2.45")) ^ 0xFFFFFFFF
        host = ipaddress.IPv6Address((0x20010000 << 96) | client)
        self.assertFalse(policy.permitted(str(host)))
        client = int(ipaddress.IPv4Address("8.8.8.8")) ^ 0xFFFFFFFF
        host = ipaddress.IPv6Address((0x20010000 << 96) | client)
        self.assertTrue(policy.permitted(str(host)))
