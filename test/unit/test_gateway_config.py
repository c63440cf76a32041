"""Tests for the gateway settings of L{p2pnet.config} and the service built from them."""

from __future__ import annotations

import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.app import AppContext, buildService
from p2pnet.config import ConfigError, loadConfig
from p2pnet.services.gateway import GatewayService


class GatewayConfigTests(SynchronousTestCase):
    def load(self, **flags: object) -> object:
        flags.setdefault("services", "gateway")
        return loadConfig({k.replace("_", "-"): v for k, v in flags.items()}, environ={})

    def failure(self, **flags: object) -> ConfigError:
        return self.assertRaises(ConfigError, self.load, **flags)

    def test_defaults(self) -> None:
        config = self.load()
        self.assertEqual((config.gateway_port, config.gateway_auth, config.handshake_timeout),
                         (18789, "", 10.0))

    def test_flags(self) -> None:
        config = self.load(gateway_auth="trusted-proxy", trusted_proxy=["10.0.0.0/8"],
                           gateway_proxy_user_header="X-User",
                           allowed_origin=["HTTPS://UI.example/"], handshake_timeout="3")
        self.assertEqual(config.trusted_proxy, ("10.0.0.0/8",))
        self.assertEqual(config.allowed_origin, ("https://ui.example",))
        self.assertEqual(config.handshake_timeout, 3.0)

    def test_environment(self) -> None:
        config = loadConfig({"services": "gateway"},
                            environ={"P2PNET_GATEWAY_TOKEN": "from-env",
                                     "P2PNET_GATEWAY_PASSWORD": "pw"})
        self.assertEqual((config.gateway_token, config.gateway_password), ("from-env", "pw"))

    def test_badValues(self) -> None:
        self.assertEqual(self.failure(gateway_auth="magic").key, "gateway-auth")
        self.assertEqual(self.failure(allowed_origin=["ftp://x"]).key, "allowed-origin")
        self.assertEqual(self.failure(trusted_proxy=["nope"]).key, "trusted-proxy")
        self.assertEqual(self.failure(handshake_timeout="0").key, "handshake-timeout")

    def test_secretNotEchoed(self) -> None:
        error = self.assertRaises(
            ConfigError, loadConfig, {"services": "nope", "gateway-token": "SECRET"}, None, {})
        self.assertNotIn("SECRET", str(error))

    def test_combinations(self) -> None:
        self.assertEqual(self.failure(gateway_auth="password").key, "gateway-password")
        self.assertEqual(self.failure(gateway_auth="trusted-proxy",
                                      trusted_proxy=["10.0.0.1"]).key,
                         "gateway-proxy-user-header")
        self.assertEqual(self.failure(gateway_auth="trusted-proxy",
                                      gateway_proxy_user_header="X-User").key, "trusted-proxy")
        self.assertEqual(self.failure(gateway_auth="trusted-proxy", gateway_token="t",
                                      gateway_proxy_user_header="X-User",
                                      trusted_proxy=["10.0.0.1"]).key, "gateway-token")
        self.assertEqual(self.failure(gateway_auth="none").key, "gateway-auth")
        self.assertEqual(self.failure(gateway_auth="none", listen=["0.0.0.0"]).key,
                         "gateway-auth")
        self.assertEqual(self.load(gateway_auth="none", listen=["127.0.0.1", "::1"])
                         .gateway_auth, "none")

    def test_passwordImpliesMode(self) -> None:
        config = self.load(gateway_password="pw", data_dir=self.mktemp())
        service = GatewayService.fromConfig(AppContext(config, MemoryReactorClock()))
        self.addCleanup(service.store.close)
        self.assertEqual((service.auth.mode, service.auth.password), ("password", "pw"))

    def test_generatedTokenPersists(self) -> None:
        dataDir = self.mktemp()
        config = self.load(data_dir=dataDir)
        first = GatewayService.fromConfig(AppContext(config, MemoryReactorClock()))
        first.store.close()
        self.assertEqual(len(first.auth.token), 43)
        again = GatewayService.fromConfig(AppContext(config, MemoryReactorClock()))
        again.store.close()
        self.assertEqual(again.auth.token, first.auth.token)
        self.assertTrue(os.path.exists(os.path.join(dataDir, "gateway.sqlite")))

    def test_configuredTokenWins(self) -> None:
        config = self.load(data_dir=self.mktemp(), gateway_token="mine")
        service = GatewayService.fromConfig(AppContext(config, MemoryReactorClock()))
        service.store.close()
        self.assertEqual(service.auth.token, "mine")
        self.assertIsNone(service.store.secret("gateway-token"))

    def test_builtByApp(self) -> None:
        root = buildService(self.load(data_dir=self.mktemp(), listen=["127.0.0.1"],
                                      gateway_port="0"), MemoryReactorClock())
        service = root.getServiceNamed("gateway")
        self.addCleanup(service.store.close)
        self.assertIsInstance(service, GatewayService)
