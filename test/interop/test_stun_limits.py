"""STUN limits on real loopback sockets: a UDP flood from one source against a second
client's latency (issue 14 item 14), and TLS connections over the per-address cap
(issue 14 item 18)."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.utils import getProcessOutput
from twisted.trial import unittest

from p2pnet.app import buildService
from p2pnet.config import Config
from p2pnet.services.stun import StunService
from test.interop.stunflood import percentile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The flood: at most this many requests, this many seconds, at this rate (the rate the
#: issue measured 401 answers at); the probe runs inside the flood's window.
FLOOD_COUNT, FLOOD_SECONDS, FLOOD_RATE = 60000, 3.0, 25000
PROBE_COUNT, PROBE_INTERVAL, PROBE_DELAY = 40, 0.03, 0.5


def _helper(*args: object) -> defer.Deferred[bytes]:
    return getProcessOutput(sys.executable, ["-m", "test.interop.stunflood",
                                             *map(str, args)],
                            env={**os.environ, "PYTHONPATH": REPO}, path=REPO,
                            errortoo=False)


class FloodTests(unittest.TestCase):
    """One source floods; another source's Binding latency stays low."""

    timeout = 30

    @defer.inlineCallbacks
    def test_secondClientDuringFlood(self) -> Any:
        """With the default budgets a flood of 25,000 Binding requests/s from 127.0.0.1
        is mostly dropped unanswered, and a client on 127.0.0.2 gets its answers (nine in
        ten at least), with a median round trip under 20 ms."""
        service = StunService(reactor, listen=("127.0.0.1",), port=0)
        service.startService()
        self.addCleanup(service.stopService)
        port = service.boundPorts["udp"]
        flooding = _helper("flood", "127.0.0.1", port, FLOOD_COUNT, FLOOD_SECONDS, FLOOD_RATE)
        probing = _helper("probe", "127.0.0.1", port, PROBE_COUNT, PROBE_INTERVAL,
                          PROBE_DELAY, "127.0.0.2")
        sent = int((yield flooding))
        times = json.loads((yield probing))
        answered = [t for t in times if t is not None]
        counters = service.stats.counters
        self.assertGreater(sent, 20000)
        self.assertGreater(counters["stun.dropped.request_rate"], sent // 2)
        # Loose bounds: the shared test machine can deschedule the server for a few
        # hundred ms, and meanwhile the kernel drops datagrams of every source alike
        # once the socket's buffer (about 10 ms of this flood) is full; docs/
        # performance.md has the measured figures (no loss, p95 ~1 ms).
        self.assertGreaterEqual(len(answered), PROBE_COUNT * 9 // 10, times)
        self.assertLess(percentile(answered, 0.5), 20.0, times)
        self.assertLess(percentile(answered, 0.95), 500.0, times)


class TlsCapTests(unittest.TestCase):
    """Connections over the TLS port's per-address cap are closed at once."""

    timeout = 30

    @defer.inlineCallbacks
    def test_overCapClosed(self) -> Any:
        """With max-connections-per-ip 2, twenty more plain TCP connections to the TLS
        port are each closed by the server within seconds, and nothing is logged as an
        error (trial fails a test that logs one)."""
        root = buildService(Config(services=("stun",), listen=("127.0.0.1",), stun_port=0,
                                   tls_port=0, alt_port=0, max_connections_per_ip=2,
                                   data_dir=self.mktemp()))
        root.startService()
        self.addCleanup(root.stopService)
        stun: Any = root.getServiceNamed("stun")
        port = stun.boundPorts["tls"]
        held = []
        for _ in range(22):
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.setblocking(False)
            held.append(sock)
        self.addCleanup(lambda: [s.close() for s in held])
        closed: set[int] = set()
        for _ in range(100):  # at most 5 s
            yield task.deferLater(reactor, 0.05, lambda: None)
            for index, sock in enumerate(held):
                try:
                    if sock.recv(1) == b"":
                        closed.add(index)
                except BlockingIOError:
                    pass
                except OSError:
                    closed.add(index)
            if len(closed) >= 20:
                break
        self.assertEqual(len(closed), 20)
        self.assertEqual(stun.stats.counters["stun.connections.refused"], 20)
        self.assertEqual(stun.stats.snapshot()["stun.connections"], 2)
