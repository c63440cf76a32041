"""Tests for L{p2pnet.commands.gateway} against a gateway on real loopback sockets."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from p2pnet.certs import generateSelfSigned, loadServerTLS
from p2pnet.commands.gateway import call
from p2pnet.protocols.gateway_client import ClientOptions, GatewayError, TrustPolicy
from p2pnet.protocols.gateway_server import listenGateway
from p2pnet.services.gateway import GatewayService
from p2pnet.services.gateway_policy import AuthConfig
from test.gateway_helpers import MemoryStore


class CommandTests(TestCase):
    @inlineCallbacks
    def test_call(self):
        service = GatewayService(
            clock=reactor, store=MemoryStore(), auth=AuthConfig("token", token="t"),
            listen=lambda s: listenGateway(reactor, s, ("127.0.0.1",), 0, None))
        service.startService()
        self.addCleanup(service.stopService)
        url = f"ws://127.0.0.1:{service.ports[0].getHost().port}/"
        options = ClientOptions(clientId="cli", clientMode="cli", token="t",
                                scopes=("operator.read",))
        status = yield ensureDeferred(call(reactor, url, "status", None, options, 5))
        self.assertIn("gateway", status["services"])
        error = yield self.assertFailure(
            ensureDeferred(call(reactor, url, "device.pair.list", None, options, 5)),
            GatewayError)
        self.assertEqual(error.detailCode, "MISSING_SCOPE")
        wrong = ClientOptions(clientId="cli", clientMode="cli", token="x")
        error = yield self.assertFailure(
            ensureDeferred(call(reactor, url, "status", None, wrong, 5)), GatewayError)
        self.assertEqual(error.detailCode, "AUTH_TOKEN_MISMATCH")


class TLSCallTests(TestCase):
    timeout = 15

    @inlineCallbacks
    def test_wss(self):
        directory = self.mktemp()
        os.makedirs(directory)
        cert, key = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
        generateSelfSigned(cert, key)
        service = GatewayService(
            clock=reactor, store=MemoryStore(), auth=AuthConfig("token", token="t"),
            listen=lambda s: listenGateway(reactor, s, ("127.0.0.1",), 0,
                                           loadServerTLS(cert, key)))
        service.startService()
        self.addCleanup(service.stopService)
        url = f"wss://127.0.0.1:{service.ports[0].getHost().port}/"
        options = ClientOptions(clientId="cli", clientMode="cli", token="t")
        with open(cert, "rb") as f:
            trusted = TrustPolicy(f.read())
        health = yield ensureDeferred(call(reactor, url, "health", None, options, 5, trusted))
        self.assertTrue(health["ok"])
        health = yield ensureDeferred(call(reactor, url, "health", None, options, 5,
                                           TrustPolicy(verify=False)))
        self.assertTrue(health["ok"])
        other = os.path.join(directory, "other.pem")
        generateSelfSigned(other, os.path.join(directory, "other-key.pem"))
        with open(other, "rb") as f:
            wrong = TrustPolicy(f.read())
        error = yield self.assertFailure(
            ensureDeferred(call(reactor, url, "health", None, options, 5, wrong)), GatewayError)
        self.assertEqual(error.message, "connection lost before the upgrade")
