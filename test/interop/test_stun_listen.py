"""L{p2pnet.services.stun.StunService} binding real sockets (moved from the unit tests)."""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.errors import ConfigError
from p2pnet.services.stun import StunService


class ListenTests(SynchronousTestCase):
    """Binding real sockets."""

    def test_portInUse(self) -> None:
        """A taken port stops start-up with the setting named, and nothing stays bound."""
        from twisted.internet import reactor

        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        taken.bind(("127.0.0.1", 0))
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        service = StunService(reactor, listen=("127.0.0.1",), port=port)
        error = self.assertRaises(ConfigError, service.startService)
        self.assertEqual(error.key, "stun-port")
        self.assertIn(f"127.0.0.1:{port}", str(error))
        self.assertIn("address already in use", str(error))
        self.assertEqual(service.ports, [])
