"""Tests for L{p2pnet.store.gateway}: state survives closing and reopening."""

from __future__ import annotations

import os

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from p2pnet.errors import ConfigError
from p2pnet.store.gateway import DeviceToken, GatewayStore, PairedDevice


class GatewayStoreTests(TestCase):
    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp() + "-gateway.sqlite")

    def open(self) -> GatewayStore:
        store = GatewayStore(self.path)
        self.addCleanup(store.close)
        return store

    @inlineCallbacks
    def test_survivesRestart(self):
        store = self.open()
        store.createSecret("gateway-token", "abc")
        device = PairedDevice("d1", "key", ("node",), (), "linux", "", "node-host", "kvm", 5)
        yield store.savePairedDevice(device)
        yield store.saveToken(DeviceToken("d1", "node", "tok", (), 6))
        yield store.revokeToken("d1", "node", 7)
        store.close()
        again = self.open()
        self.assertEqual(again.secret("gateway-token"), "abc")
        self.assertEqual(again.devices["d1"], device)
        self.assertEqual(again.tokens[("d1", "node")],
                         DeviceToken("d1", "node", "tok", (), 6, None, 7))
        self.assertIsNone(again.revokeToken("d1", "operator", 8))

    @inlineCallbacks
    def test_removeCascades(self):
        store = self.open()
        yield store.savePairedDevice(PairedDevice("d1", "key", ("node",), ()))
        yield store.saveToken(DeviceToken("d1", "node", "tok", (), 6))
        yield store.removeDevice("d1")
        self.assertEqual((store.devices, store.tokens), ({}, {}))
        store.close()
        again = self.open()
        self.assertEqual((again.devices, again.tokens), ({}, {}))

    def test_tokenNotInRepr(self) -> None:
        self.assertNotIn("s3cret", repr(DeviceToken("d", "node", "s3cret", (), 1)))

    def test_unreadable(self) -> None:
        with open(self.path, "wb") as f:
            f.write(b"not a database" * 100)
        e = self.assertRaises(ConfigError, GatewayStore, self.path)
        self.assertEqual(e.key, "data-dir")
