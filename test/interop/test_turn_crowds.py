# -*- test-case-name: test.interop.test_turn_crowds -*-
"""Issue 14 item 3: crowds behind one address on the default settings.

The real server (L{p2pnet.app.buildService}, STUN+TURN, every TURN setting at its
default) on 127.0.0.1 with kernel-chosen listening ports; the clients are p2pnet's own
TURN clients over real sockets, and coturn's C{turnutils_uclient} for RFC 6062 with ten
clients (C{-T -m 10}). From the one address 127.0.0.1:

- 300 UDP allocations and 150 TCP control connections with RFC 6062 TCP allocations
  all succeed at once (coturn's defaults grant them; p2pnet used to answer 486 after 64
  and refuse every TCP one);
- uclient C{-T -m 10} relays with zero loss;
- and still one address cannot take the server: past its automatic quota it gets 486
  while another address is served.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.application.service import IService
from twisted.internet import defer, reactor
from twisted.trial import unittest

from p2pnet.app import buildService
from p2pnet.config import Config
from p2pnet.protocols.stun_client import StunErrorResponse
from p2pnet.protocols.turn_client import TurnClientProtocol, connectTurnStream
from test.interop.test_interop_turn import requireCoturn
from test.interop.test_stun_clients import runClient, showRun

USER, PASSWORD = "crowd", "behind-one-nat"
UDP_CLIENTS = 300
TCP_CLIENTS = 150
#: Allocations started at once: a crowd arrives over seconds, not in one instant.
BATCH = 50


class CrowdMixin:
    """The server on its defaults, with the settings a loopback test cannot avoid."""

    def startServer(self, **overrides: Any) -> Any:
        test: Any = self
        settings: dict[str, Any] = dict(
            services=("stun", "turn"), listen=("127.0.0.1",), stun_port=0, tls_port=0,
            data_dir=test.mktemp(), user=((USER, PASSWORD),), allow_loopback_peers=True,
        )
        settings.update(overrides)
        root = buildService(Config(**settings))
        root.startService()
        test.addCleanup(root.stopService)
        stun: Any = IService(root.getServiceNamed("stun"))
        self.turn: Any = root.getServiceNamed("turn")
        self.udpPort = next(p.getHost().port for p in stun.ports
                            if getattr(p, "factory", None) is None)
        self.tcpPort = next(p.getHost().port for p in stun.ports
                            if getattr(p, "factory", None) is not None)
        return self.turn

    @staticmethod
    def stopTimers(client: Any) -> None:
        """Cancel a client's refresh timer (the server is gone; nothing to delete)."""
        timer = getattr(client, "_maintenance", None)
        if timer is not None and timer.active():
            timer.cancel()

    @defer.inlineCallbacks
    def udpAllocations(self, count: int, host: str = "127.0.0.1") -> Any:
        """Allocate C{count} times from C{host}, each on its own UDP socket; a list of
        relayed addresses or error codes, in order."""
        test: Any = self
        results: list[Any] = []
        for start in range(0, count, BATCH):
            waits = []
            for _ in range(min(BATCH, count - start)):
                client = TurnClientProtocol(("127.0.0.1", self.udpPort), USER, PASSWORD,
                                            reactor=reactor)
                port = reactor.listenUDP(0, client, interface=host)
                test.addCleanup(port.stopListening)
                test.addCleanup(self.stopTimers, client)
                d = client.allocate()
                d.addCallbacks(lambda a: a.relayed[0],
                               lambda f: f.trap(StunErrorResponse) and f.value.code)
                waits.append(d)
            results += (yield defer.gatherResults(waits))
        return results


class CrowdTests(CrowdMixin, unittest.TestCase):
    """Honest crowds from one address get their allocations on the defaults."""

    timeout = 180

    @defer.inlineCallbacks
    def test_udpFromOneAddress(self) -> Any:
        """300 UDP allocations from 127.0.0.1, all held at once, on the defaults."""
        turn = self.startServer()
        relayed = yield self.udpAllocations(UDP_CLIENTS)
        self.assertEqual([r for r in relayed if not isinstance(r, tuple)], [])
        self.assertEqual(len(set(relayed)), UDP_CLIENTS)
        self.assertEqual(len(turn.allocations), UDP_CLIENTS)

    @defer.inlineCallbacks
    def test_udpAndTcpFromOneAddress(self) -> Any:
        """300 UDP and 150 TCP (RFC 6062) allocations from 127.0.0.1, all held at once, on
        the pure defaults (STUN's max-connections-per-ip counts only connections that
        have not authenticated)."""
        turn = self.startServer()
        relayed = yield self.udpAllocations(UDP_CLIENTS)
        self.assertEqual([r for r in relayed if not isinstance(r, tuple)], [])
        controls = []
        for start in range(0, TCP_CLIENTS, BATCH):
            connected = yield defer.gatherResults([
                connectTurnStream("127.0.0.1", self.tcpPort, USER, PASSWORD, reactor=reactor)
                for _ in range(min(BATCH, TCP_CLIENTS - start))])
            controls += connected
            for control in connected:
                self.addCleanup(control.transport.loseConnection)
            allocations = yield defer.gatherResults([c.allocate(tcp=True) for c in connected])
            self.assertEqual(len(allocations), len(connected))
        self.assertEqual(len(turn.allocations), UDP_CLIENTS + TCP_CLIENTS)
        self.assertEqual(turn.stats.counters.get("turn.errors.486", 0), 0)
        self.assertEqual(len(controls), TCP_CLIENTS)

    @defer.inlineCallbacks
    def test_oneAddressCannotTakeTheServer(self) -> Any:
        """Past its automatic quota (a sixteenth of relay-ports) one address gets 486, and
        another address is still served. (The range is narrowed to keep the test small:
        the quota follows it.)"""
        turn = self.startServer(relay_ports=(50000, 51599))
        self.assertEqual(turn.ipQuota, 100)
        results = yield self.udpAllocations(110)
        self.assertEqual(sum(isinstance(r, tuple) for r in results), 100)
        self.assertEqual(results[100:], [486] * 10)
        other = yield self.udpAllocations(1, host="127.0.0.2")
        self.assertIsInstance(other[0], tuple)


class UclientCrowdTests(CrowdMixin, unittest.TestCase):
    """coturn's C{turnutils_uclient -T -m 10}: ten RFC 6062 clients from one address."""

    timeout = 120

    @defer.inlineCallbacks
    def test_tcpRelayTenClients(self) -> Any:
        """C{-T -m 10} on the defaults: every message relayed, none refused."""
        uclient = requireCoturn("turnutils_uclient")
        requireCoturn("turnutils_peer")
        self.startServer()
        argv = [uclient, "-u", USER, "-w", PASSWORD, "-p", str(self.tcpPort), "-n", "20",
                "-m", "10", "-l", "120", "-T", "127.0.0.1"]
        out, err, code = yield runClient(argv, timeout=90)
        text = out + err
        shown = showRun(argv, out, err, code)
        self.assertNotIn("limit reached", text, shown)
        lost = re.search(r"Total lost packets (\d+)", text)
        totals = re.search(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", text, re.M)
        self.assertIsNotNone(lost, shown)
        self.assertIsNotNone(totals, shown)
        self.assertEqual(int(lost.group(1)), 0, shown)
        self.assertGreater(int(totals.group(1)), 0, shown)
        self.assertEqual(totals.group(1), totals.group(2), shown)
        self.assertGreater(self.turn.stats.counters["turn.bytes.to_peer"], 0)
