"""Tests for the RustDesk settings of L{p2pnet.config} and their wiring in L{p2pnet.app}."""

from __future__ import annotations

import ipaddress
import os

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.config import SERVICES, Config, loadConfig
from p2pnet.errors import ConfigError


class SettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        config = Config()
        self.assertEqual((config.rendezvous_port, config.relay_port, config.key),
                         (21116, 21117, "-"))
        self.assertEqual(SERVICES.index("rendezvous") + 1, SERVICES.index("relay"))

    def test_flags(self) -> None:
        config = loadConfig({"relay-servers": "r1, r2:30000,[2001:db8::1]:5",
                             "always-use-relay": True, "mask": "192.168.1.7/24",
                             "key": "", "services": "rendezvous,relay"}, environ={})
        self.assertEqual(config.relay_servers, ("r1", "r2:30000", "[2001:db8::1]:5"))
        self.assertTrue(config.always_use_relay)
        self.assertEqual(config.mask, ipaddress.IPv4Network("192.168.1.0/24"))
        self.assertEqual(config.services, ("rendezvous", "relay"))

    def test_toml(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('rendezvous-port = 31116\nrelay-port = 31117\nkey = "_"\n'
                    'always-use-relay = true\nrelay-servers = "a,b"\n')
        config = loadConfig({}, path, environ={})
        self.assertEqual((config.rendezvous_port, config.relay_port, config.key),
                         (31116, 31117, "_"))
        self.assertEqual(config.relay_servers, ("a", "b"))

    def test_localIpFromEnvironment(self) -> None:
        self.assertEqual(loadConfig({}, environ={"LOCAL_IP": "10.0.0.5"}).local_ip, "10.0.0.5")

    def test_rustdeskServerEnvironment(self) -> None:
        """rustdesk-server's variables, read where hbbs and hbbr read them."""
        config = loadConfig({}, environ={
            "KEY": "_", "RELAY_SERVERS": "r1.example,r2.example:21117",
            "ALWAYS_USE_RELAY": "Y", "SINGLE_BANDWIDTH": "64", "TOTAL_BANDWIDTH": "512",
            "LIMIT_SPEED": "8", "DOWNGRADE_THRESHOLD": "0.5", "DOWNGRADE_START_CHECK": "600"})
        self.assertEqual((config.key, config.relay_key), ("_", "_"))
        self.assertEqual(config.relay_servers, ("r1.example", "r2.example:21117"))
        self.assertTrue(config.always_use_relay)
        self.assertEqual((config.relay_bandwidth, config.relay_total_bandwidth,
                          config.relay_limit_speed, config.relay_downgrade_threshold,
                          config.relay_downgrade_start), (64, 512, 8, 0.5, 600))
        self.assertFalse(loadConfig({}, environ={"ALWAYS_USE_RELAY": "N"}).always_use_relay)
        error = self.assertRaises(ConfigError, loadConfig, {},
                                  environ={"ALWAYS_USE_RELAY": "maybe"})
        self.assertEqual(error.key, "always-use-relay")
        # The command line wins over the environment.
        self.assertFalse(loadConfig({"always-use-relay": False},
                                    environ={"ALWAYS_USE_RELAY": "Y"}).always_use_relay)

    def test_errorsNameTheKey(self) -> None:
        for flags, key in [
            ({"relay-servers": "bad host"}, "relay-servers"),
            ({"relay-servers": "h:99999"}, "relay-servers"),
            ({"mask": "nonsense"}, "mask"),
            ({"rendezvous-port": "65535"}, "rendezvous-port"),
            ({"relay-port": "65534"}, "relay-port"),
            ({"relay-port": "21115"}, "relay-port"),
            ({"relay-bandwidth": "-1"}, "relay-bandwidth"),
            ({"rendezvous-port": "3479"}, "rendezvous-port"),
        ]:
            e = self.assertRaises(ConfigError, loadConfig, flags, environ={})
            self.assertEqual(e.key, key, flags)

    def test_portsCheckedOnlyForRunningServices(self) -> None:
        config = loadConfig({"services": "stun", "relay-port": "3478"}, environ={})
        self.assertEqual(config.relay_port, 3478)


class TacTests(SynchronousTestCase):
    def test_rustdeskTac(self) -> None:
        from twisted.application.service import IService
        from twisted.persisted.sob import loadValueFromFile

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        cwd = os.getcwd()
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        os.chdir(work)
        self.addCleanup(os.chdir, cwd)
        application = loadValueFromFile(os.path.join(root, "tac", "rustdesk.tac"),
                                        "application")
        (appliance,) = list(IService(application))
        self.assertEqual([s.name for s in appliance], ["rendezvous", "relay"])
        self.assertTrue(os.path.exists(os.path.join(work, "p2pnet-data", "id_ed25519")))
        appliance.getServiceNamed("rendezvous").store.close()
