"""The KVM node's settings (C{node-*} in L{p2pnet.config})."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from p2pnet.config import DEFAULT_SERVICES, SERVICES, Config, ConfigError, loadConfig


class NodeConfigTests(TestCase):
    def bad(self, key: str, flags: dict[str, object]) -> None:
        error = self.assertRaises(ConfigError, loadConfig, {"services": "node", **flags})
        self.assertEqual(error.key, key)

    def test_notInTheDefaultServices(self) -> None:
        self.assertIn("node", SERVICES)
        self.assertNotIn("node", DEFAULT_SERVICES)
        self.assertEqual(loadConfig({}).services, DEFAULT_SERVICES)
        self.assertEqual(loadConfig({"services": "node"}).services, ("node",))

    def test_defaults(self) -> None:
        config = Config()
        self.assertEqual((config.node_transport, config.node_video, config.node_codec,
                          config.node_fps, config.node_bitrate, config.node_direct_port),
                         ("udp", "testsrc", "h264", 30, 4_000_000, 0))

    def test_values(self) -> None:
        config = loadConfig({"services": "node", "node-id": "kvm-office",
                             "node-server": "[2001:db8::1]:21116", "node-transport": "TCP",
                             "node-video": "pipe:ffmpeg -i x -f h264 -", "node-codec": "h265",
                             "node-bitrate": "2500k", "node-relay": "relay.example:21117",
                             "node-gateway": "wss://gw.example/", "node-gateway-token": "t"})
        self.assertEqual((config.node_id, config.node_transport, config.node_bitrate,
                          config.node_codec), ("kvm-office", "tcp", 2_500_000, "h265"))

    def test_badValuesNameTheirKey(self) -> None:
        for key, value in [("node-id", "abc"), ("node-id", "-abcdef"), ("node-id", "a" * 17),
                           ("node-transport", "quic"), ("node-video", "rtsp://x"),
                           ("node-video", "file:"), ("node-codec", "vp9"),
                           ("node-bitrate", "10"), ("node-bitrate", "fast"),
                           ("node-server", "a b"), ("node-server", "host:99999"),
                           ("node-gateway", "http://gw/"), ("node-fps", "0"),
                           ("node-max-viewers", "0")]:
            self.bad(key, {key: value})

    def test_combinations(self) -> None:
        self.bad("node-gateway-password", {"node-gateway": "ws://g/",
                                           "node-gateway-token": "a",
                                           "node-gateway-password": "b"})
        self.bad("node-gateway", {"node-gateway-token": "a"})
        self.bad("node-direct-port", {"services": "node,rendezvous",
                                      "node-direct-port": "21118"})

    def test_passwordFromEnvironmentAndFile(self) -> None:
        config = loadConfig({"services": "node"}, environ={"P2PNET_NODE_PASSWORD": "pw"})
        self.assertEqual(config.node_password, "pw")
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("from-file\n")
        config = loadConfig({"services": "node", "node-password-file": path}, environ={})
        self.assertEqual(config.node_password, "from-file")
        os.unlink(path)
