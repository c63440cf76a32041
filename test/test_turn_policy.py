"""Tests for L{p2pnet.services.turn_policy}: which peers a public TURN server relays to."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.services.turn_policy import CACHE_SIZE, PeerPolicy


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
