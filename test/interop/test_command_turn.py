# -*- test-case-name: test.interop.test_command_turn -*-
"""C{p2pnet turn} (L{p2pnet.commands.turn.turnMain}) against the real server on loopback:
over IPv6 (the relayed address follows the peer's family instead of failing with 443),
against a silent address (the Allocate ends within --timeout), and against a same-host
server that refuses loopback peers (the error names --allow-loopback-peers)."""

from __future__ import annotations

import argparse
import io
from typing import Any

from twisted.application.service import IService
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.trial import unittest

from p2pnet.app import buildService
from p2pnet.commands.turn import turnMain
from p2pnet.config import Config
from test.interop.test_interop_turn import ipv6Loopback


class CommandTests(unittest.TestCase):
    timeout = 30

    def server(self, host: str, **overrides: Any) -> int:
        """STUN+TURN on C{host}; its UDP port."""
        settings: dict[str, Any] = dict(
            services=("stun", "turn"), listen=(host,), stun_port=0, tls_port=0,
            data_dir=self.mktemp(), user=(("alice", "pw"),), allow_loopback_peers=True,
            relay_ports=(40000, 49999))
        settings.update(overrides)
        root = buildService(Config(**settings))
        root.startService()
        self.addCleanup(root.stopService)
        stun: Any = IService(root.getServiceNamed("stun"))
        return next(p.getHost().port for p in stun.ports
                    if getattr(p, "factory", None) is None)

    def command(self, host: str, port: int, timeout: float = 5.0) -> Deferred[Any]:
        out, err = io.StringIO(), io.StringIO()
        args = argparse.Namespace(host=host, port=port, user="alice", password="pw",
                                  peer=None, count=2, size=50, timeout=timeout)
        d = Deferred.fromCoroutine(turnMain(reactor, args, out, err))
        return d.addCallback(lambda status: (status, out.getvalue(), err.getvalue()))

    @defer.inlineCallbacks
    def test_ipv6(self) -> Any:
        """C{p2pnet turn ::1}: an IPv6 relayed address, the echo relayed, status 0."""
        if not ipv6Loopback():
            raise unittest.SkipTest("no IPv6 loopback on this host")
        port = self.server("::1")
        status, out, err = yield self.command("::1", port)
        self.assertEqual(status, 0, err)
        self.assertRegex(out, r"relayed address: ::1:\d+")
        self.assertRegex(out, r"round-trip time: [\d.]+ ms average")

    @defer.inlineCallbacks
    def test_timeoutCoversAllocate(self) -> Any:
        """Against an address where nothing answers, the command ends within --timeout
        (the STUN retransmissions alone would take 40 s) and says why."""
        silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        start = reactor.seconds()
        status, out, err = yield self.command("127.0.0.1", silent.getHost().port, timeout=0.5)
        self.assertEqual(status, 1)
        self.assertLess(reactor.seconds() - start, 5)
        self.assertIn("within 0.5 s", err)

    @defer.inlineCallbacks
    def test_sameHostNeedsLoopbackPeers(self) -> Any:
        """A same-host server on its defaults refuses the loopback echo peer; the
        command says which server flag relays to it."""
        port = self.server("127.0.0.1", allow_loopback_peers=False)
        status, out, err = yield self.command("127.0.0.1", port)
        self.assertEqual(status, 1)
        self.assertIn("403", err)
        self.assertIn("--allow-loopback-peers", err)
