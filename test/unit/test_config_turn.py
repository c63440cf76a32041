"""Tests for the TURN settings (L{p2pnet.config}) and the TURN wiring (L{p2pnet.app})."""

from __future__ import annotations

import os
import stat
from typing import Any

from twisted.application.service import IService
from twisted.persisted.sob import loadValueFromFile
from twisted.trial.unittest import TestCase

from p2pnet.app import buildService
from p2pnet.codecs.stun import longTermKey
from p2pnet.config import SERVICES, Config, ConfigError, loadConfig
from p2pnet.services.auth import StaticUsers
from p2pnet.services.turn_credentials import ChainedCredentials, RestCredentials
from p2pnet.testing import UDPMemoryReactor


class TurnSettingsTests(TestCase):
    def test_flags(self) -> None:
        """Every TURN flag of the issue parses to its typed value."""
        config = loadConfig({
            "services": "stun,turn", "realm": "example.org", "user": ["a:b", "c:d:e"],
            "auth-secret": "s3", "relay-ports": "50000-50100",
            "allow-loopback-peers": True, "allow-peer": ["10.0.0.0/8"],
            "deny-peer": ["203.0.113.9"], "max-allocations": "5", "user-quota": "2",
            "max-bps": "64000", "relay-ip": ["192.0.2.1", "2001:db8::1"],
        })
        self.assertEqual(config.services, ("stun", "turn"))
        self.assertEqual(config.relay_ports, (50000, 50100))
        self.assertEqual(config.user, (("a", "b"), ("c", "d:e")))
        self.assertEqual((config.allow_peer, config.deny_peer),
                         (("10.0.0.0/8",), ("203.0.113.9/32",)))
        self.assertEqual((config.max_allocations, config.user_quota, config.max_bps),
                         (5, 2, 64000))
        self.assertTrue(config.allow_loopback_peers)

    def test_externalIpAndNoTcpRelay(self) -> None:
        """external-ip is repeatable PUBLIC[/PRIVATE] in normal form; no-tcp-relay a
        switch; both reach the service."""
        config = loadConfig({"services": "stun,turn", "listen": ["127.0.0.1"],
                             "external-ip": ["203.0.113.5/10.0.0.5", "[2001:db8::5]"],
                             "no-tcp-relay": True})
        self.assertEqual(config.external_ip, ("203.0.113.5/10.0.0.5", "2001:db8::5"))
        self.assertTrue(config.no_tcp_relay)
        turn = buildService(config, UDPMemoryReactor()).getServiceNamed("turn")
        self.assertEqual(turn.relays.external.public("10.0.0.5"), "203.0.113.5")
        self.assertFalse(turn.allocate.limits.tcpRelays)
        for bad in (["0.0.0.0"], ["203.0.113.5/::1"], ["203.0.113.5", "203.0.113.6"]):
            with self.assertRaises(ConfigError) as caught:
                loadConfig({"services": "stun,turn", "external-ip": bad})
            self.assertEqual(caught.exception.key, "external-ip", bad)

    def test_serviceOrder(self) -> None:
        """turn comes right after stun."""
        self.assertEqual(SERVICES.index("turn"), SERVICES.index("stun") + 1)

    def test_bad(self) -> None:
        """Bad values name their key; the secret is not echoed."""
        for flags, key in (
            ({"relay-ports": "60000-50000"}, "relay-ports"),
            ({"relay-ports": "0-10"}, "relay-ports"),
            ({"relay-ports": "5000"}, "relay-ports"),
            ({"user-quota": "-1"}, "user-quota"),
            ({"allow-peer": ["nonsense"]}, "allow-peer"),
            ({"relay-ip": ["192.0.2.1", "192.0.2.2"]}, "relay-ip"),
            ({"relay-ip": ["0.0.0.0"]}, "relay-ip"),
            ({"max-lifetime": "300"}, "max-lifetime"),
            ({"stun-port": "50005", "relay-ports": "50000-50010"}, "relay-ports"),
        ):
            with self.assertRaises(ConfigError) as caught:
                loadConfig({"services": "stun,turn", **flags})
            self.assertEqual(caught.exception.key, key, flags)

    def test_turnChecksOnlyWithTurn(self) -> None:
        """Without the turn service, its combination checks do not apply."""
        loadConfig({"services": "stun", "stun-port": "50005", "relay-ports": "50000-50010"})


class WiringTests(TestCase):
    def build(self, **settings: Any) -> Any:
        settings.setdefault("listen", ("127.0.0.1",))
        config = Config(stun_port=0, tls_port=0, data_dir=self.mktemp(), **settings)
        return buildService(config, UDPMemoryReactor())

    def test_turnImpliesStun(self) -> None:
        """--services turn builds the STUN service too, before TURN."""
        root = self.build(services=("turn",), user=(("a", "b"),))
        self.assertEqual([s.name for s in root], ["stun", "turn"])
        turn = root.getServiceNamed("turn")
        self.assertIs(turn.stun, root.getServiceNamed("stun"))

    def test_exactlyStunTurn(self) -> None:
        """--services stun,turn runs exactly those two."""
        root = self.build(services=("stun", "turn"), user=(("a", "b"),))
        self.assertEqual([s.name for s in root], ["stun", "turn"])

    def test_credentials(self) -> None:
        """Configured users, the durable table and the REST secret, in that order; the
        STUN service checks with the same chain once TURN starts."""
        root = self.build(services=("stun", "turn"), user=(("a", "b"),), auth_secret="s")
        turn, stun = root.getServiceNamed("turn"), root.getServiceNamed("stun")
        chain = turn.credentials
        self.assertIsInstance(chain, ChainedCredentials)
        self.assertIsInstance(chain.sources[0], StaticUsers)
        self.assertIs(chain.sources[1], turn.userTable)
        self.assertIsInstance(chain.sources[2], RestCredentials)
        turn.startService()  # TURN alone: it binds nothing, STUN's listeners stay closed
        self.addCleanup(turn.stopService)
        self.assertIs(stun.auth.credentials, chain)

    def test_generatedUser(self) -> None:
        """Without users or a secret, a user is generated into data-dir, mode 0600."""
        dataDir = self.mktemp()
        config = Config(services=("stun", "turn"), listen=("127.0.0.1",), stun_port=0,
                        tls_port=0, data_dir=dataDir)
        turn = buildService(config, UDPMemoryReactor()).getServiceNamed("turn")
        path = os.path.join(dataDir, "turn-user.txt")
        with open(path) as f:
            name, _, password = f.read().strip().partition(":")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        key = longTermKey(name, "p2pnet", password)
        self.assertEqual(turn.credentials.key(name, "p2pnet", 1), key)
        again = buildService(config, UDPMemoryReactor()).getServiceNamed("turn")
        self.assertEqual(again.credentials.key(name, "p2pnet", 1), key)


class TacTests(TestCase):
    """tac/turn.tac builds STUN and TURN, reading ./p2pnet.toml when present."""

    def test_turnTac(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        with open(os.path.join(work, "p2pnet.toml"), "w") as f:
            f.write('realm = "example.org"\nuser = ["alice:pw"]\n')
        cwd = os.getcwd()
        os.chdir(work)
        self.addCleanup(os.chdir, cwd)
        application = loadValueFromFile(os.path.join(root, "tac", "turn.tac"), "application")
        (appliance,) = list(IService(application))
        self.assertEqual([s.name for s in appliance], ["stun", "turn"])
        turn = appliance.getServiceNamed("turn")
        self.assertEqual(turn.credentials.key("alice", "example.org", 1),
                         longTermKey("alice", "example.org", "pw"))
        self.assertEqual(turn.stun.auth.realm, "example.org")
