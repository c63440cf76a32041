"""C{p2pnet config from-coturn} (L{p2pnet.commands.migrate})."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.commands.migrate import fromCoturn
from p2pnet.config import loadConfig

HERE = os.path.dirname(os.path.abspath(__file__))


class CoturnTests(SynchronousTestCase):
    def convert(self, path: str) -> tuple[object, object]:
        with open(path) as f:
            conversion = fromCoturn(f)
        out = self.mktemp()
        with open(out, "w") as f:
            f.write(conversion.toml())
        return conversion, loadConfig({}, out, environ={})

    def test_sample(self) -> None:
        """Every converted option loads as p2pnet's own TOML, with the same meaning."""
        conversion, config = self.convert(os.path.join(HERE, "data", "turnserver.conf"))
        self.assertEqual(config.stun_port, 3478)  # type: ignore[attr-defined]
        self.assertEqual(config.tls_port, 5349)  # type: ignore[attr-defined]
        self.assertEqual(config.listen, ("192.0.2.10", "2001:db8::10"))  # type: ignore[attr-defined]
        self.assertEqual(config.external_ip, ("203.0.113.50/192.0.2.10",))  # type: ignore[attr-defined]
        self.assertEqual(config.relay_ports, (49160, 49200))  # type: ignore[attr-defined]
        self.assertEqual(config.auth_secret, "north-wind")  # type: ignore[attr-defined]
        self.assertEqual(config.user, (("amy", "wonderland"),))  # type: ignore[attr-defined]
        self.assertEqual((config.max_allocations, config.user_quota, config.max_bps),  # type: ignore[attr-defined]
                         (500, 12, 64000))
        self.assertEqual(config.nonce_lifetime, 600)  # type: ignore[attr-defined]
        self.assertTrue(config.no_tcp_relay)  # type: ignore[attr-defined]
        self.assertEqual(config.deny_peer, ("10.0.0.0/8", "172.16.0.0/12"))  # type: ignore[attr-defined]
        self.assertEqual(config.allow_peer, ("10.0.0.5/32",))  # type: ignore[attr-defined]
        self.assertEqual(config.metrics_listen, "0.0.0.0:9641")  # type: ignore[attr-defined]
        unmapped = conversion.unmapped  # type: ignore[attr-defined]
        self.assertEqual(len(unmapped), 3)
        self.assertIn("bob", unmapped[0])
        self.assertIn("p2pnet users add", unmapped[0])
        self.assertTrue(unmapped[1].startswith("cipher-list"))
        self.assertEqual(unmapped[2], "dh2066")
