"""Tests for the RustDesk settings of L{p2pnet.config} and their wiring in L{p2pnet.app}."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from p2pnet.app import buildService
from p2pnet.config import Config
from p2pnet.errors import ConfigError


class WiringTests(TestCase):
    @defer.inlineCallbacks
    def test_startAndStop(self) -> Any:
        data = self.mktemp()
        config = Config(services=("rendezvous", "relay"), listen=("127.0.0.1",),
                        rendezvous_port=0, relay_port=0, data_dir=data, relay_key="-")
        root = buildService(config, reactor)
        root.startService()
        rendezvous = root.getServiceNamed("rendezvous")
        relay = root.getServiceNamed("relay")
        self.assertEqual(len(rendezvous.ports), 4)
        self.assertEqual(len(relay.ports), 2)
        self.assertEqual(relay.key, rendezvous.key.publicKey)
        self.assertTrue(os.path.exists(os.path.join(data, "peers.sqlite3")))
        self.assertIn("peers_online", rendezvous.stats.snapshot())
        yield root.stopService()

    def test_portInUse(self) -> None:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        self.addCleanup(sock.close)
        port = sock.getsockname()[1]
        config = Config(services=("relay",), listen=("127.0.0.1",), relay_port=port,
                        data_dir=self.mktemp())
        root = buildService(config, reactor)
        e = self.assertRaises(ConfigError, root.privilegedStartService)
        self.assertEqual(e.key, "relay-port")
