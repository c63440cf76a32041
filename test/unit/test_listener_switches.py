"""no-tcp and no-tls (issue 14 item 10, coturn's no-tcp / no-tls): which STUN/TURN
listeners the appliance opens, driven in memory."""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.app import AppContext
from p2pnet.config import Config, loadConfig
from p2pnet.services.stun import StunService
from p2pnet.testing import UDPMemoryReactor
from test.unit.test_services_stun import MemorySockets


class ListenerSwitchTests(SynchronousTestCase):
    def start(self, **settings: Any) -> tuple[StunService, UDPMemoryReactor, str]:
        reactor = UDPMemoryReactor()
        data = self.mktemp()
        config = Config(services=("stun",), listen=("127.0.0.1",), stun_port=0, tls_port=0,
                        data_dir=data, **settings)
        service = StunService.fromConfig(AppContext(config, reactor))
        service.sockets = MemorySockets(reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service, reactor, data

    def test_default(self) -> None:
        service, reactor, _ = self.start()
        self.assertEqual(sorted(service.boundPorts), ["tcp", "tls", "udp"])
        self.assertEqual(len(reactor.streamPorts), 2)

    def test_noTcp(self) -> None:
        service, reactor, _ = self.start(no_tcp=True)
        self.assertEqual(sorted(service.boundPorts), ["tls", "udp"])
        self.assertEqual(len(reactor.streamPorts), 1)
        self.assertEqual(len(reactor.udpPorts), 1)

    def test_noTls(self) -> None:
        """No TLS listener, and no certificate made for one."""
        service, reactor, data = self.start(no_tls=True)
        self.assertEqual(sorted(service.boundPorts), ["tcp", "udp"])
        self.assertEqual(len(reactor.streamPorts), 1)
        self.assertFalse(os.path.exists(os.path.join(data, "tls-cert.pem")))

    def test_both(self) -> None:
        service, reactor, _ = self.start(no_tcp=True, no_tls=True)
        self.assertEqual(sorted(service.boundPorts), ["udp"])
        self.assertEqual(reactor.streamPorts, {})

    def test_rfc5780WithoutTcp(self) -> None:
        """The RFC 5780 UDP matrix is still bound; its TCP half is not."""
        service, reactor, _ = self.start(no_tcp=True, no_tls=True, alt_listen=("127.0.0.2",),
                                         alt_port=0)
        self.assertEqual(len(reactor.udpPorts), 4)
        self.assertEqual(reactor.streamPorts, {})
        self.assertIn("alt", service.boundPorts)

    def test_flags(self) -> None:
        config = loadConfig({"no-tcp": True, "no-tls": True}, environ={})
        self.assertTrue(config.no_tcp and config.no_tls)
