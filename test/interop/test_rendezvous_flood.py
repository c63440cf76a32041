"""Flood tests of the rendezvous server on loopback (issue 14 item 14): one client floods
the TCP port with PunchHoleRequests while a second client's RegisterPk round trips are
timed. Bounded in count and time; the flooder is a child process so that it does not
share this process's interpreter with the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from nacl.signing import SigningKey
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from p2pnet.codecs.proto.rendezvous_pb2 import RegisterPk, RendezvousMessage
from p2pnet.config import Config
from p2pnet.services.rendezvous import RendezvousService
from p2pnet.services.rendezvous_keys import loadServerKey
from p2pnet.store.peers import PeerStore

#: Seconds the flood lasts, and the most PunchHoleRequests it may write.
FLOOD_SECONDS = 2.0
FLOOD_LIMIT = 2_000_000

FLOODER = f"""
import socket, sys, time
sys.path.insert(0, {os.getcwd()!r})
from p2pnet.codecs.proto.rendezvous_pb2 import PunchHoleRequest, RendezvousMessage
from p2pnet.codecs.rustdesk_frame import encodeFrame
batch = b"".join(encodeFrame(RendezvousMessage(punch_hole_request=PunchHoleRequest(
    id="nobody%04d" % i, version="1")).SerializeToString()) for i in range(1000))
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.settimeout(0.1)
sent, end = 0, time.monotonic() + {FLOOD_SECONDS}
while time.monotonic() < end and sent < {FLOOD_LIMIT}:
    try:
        sock.sendall(batch)
    except (TimeoutError, socket.timeout):
        continue
    sent += 1000
print(sent)
"""


class Prober(DatagramProtocol):
    """Sends RegisterPk (a new id each time) and times each answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.pk = bytes(SigningKey.generate().verify_key)
        self.waiting: defer.Deferred[None] | None = None
        self.count = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self.waiting is not None:
            d, self.waiting = self.waiting, None
            d.callback(None)

    @defer.inlineCallbacks
    def roundTrip(self) -> Any:
        self.count += 1
        rk = RegisterPk(id=f"probe{self.count:06d}", uuid=b"probe-%d" % self.count, pk=self.pk)
        self.waiting = defer.Deferred()
        self.waiting.addTimeout(10, reactor)
        start = time.perf_counter()
        self.transport.write(RendezvousMessage(register_pk=rk).SerializeToString(),
                             ("127.0.0.1", self.port))
        yield self.waiting
        return time.perf_counter() - start


class TcpFloodTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_registrationDuringPunchRequestFlood(self) -> Any:
        data = self.mktemp()
        os.makedirs(data)
        defaults = Config()
        service = RendezvousService(
            reactor, PeerStore(os.path.join(data, "peers.sqlite3")), loadServerKey("", data),
            listen=("127.0.0.1",), port=0, udpRatePerIp=defaults.rendezvous_udp_rate,
            streamRatePerIp=defaults.rendezvous_tcp_rate,
            maxConnectionsPerIp=defaults.rendezvous_connections_per_ip)
        service.startService()
        self.addCleanup(service.stopService)
        lines: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(lines.append)
        self.addCleanup(globalLogPublisher.removeObserver, lines.append)
        prober = Prober(service.boundPorts["udp"])
        port = reactor.listenUDP(0, prober, interface="127.0.0.2")
        self.addCleanup(port.stopListening)

        quiet = []
        for _ in range(10):
            quiet.append((yield prober.roundTrip()))
        flooder = subprocess.Popen([sys.executable, "-c", FLOODER,
                                    str(service.boundPorts["tcp"])],
                                   stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: flooder.poll() is None and flooder.kill())
        yield deferLater(reactor, 0.3, lambda: None)
        busy = []
        while flooder.poll() is None and len(busy) < 100:
            busy.append((yield prober.roundTrip()))
            yield deferLater(reactor, 0.02, lambda: None)
        out, _ = flooder.communicate(timeout=30)
        sent = int(out.strip())

        busy.sort()
        p95 = busy[int(0.95 * len(busy))]
        self.assertGreaterEqual(len(busy), 10)
        # Without per-source budgets the same flood lifts this to seconds.
        self.assertLess(p95, 0.25, f"p95 {p95 * 1000:.0f} ms; quiet {max(quiet) * 1000:.1f}")
        handled = service.stats.counters["stream_punch_hole_request"]
        rate = defaults.rendezvous_tcp_rate
        self.assertLess(handled, rate * (FLOOD_SECONDS + 3) + 2 * rate)
        self.assertGreater(sent, handled)
        self.assertGreater(service.stats.counters["stream_throttled"], 0)
        self.assertLess(len(lines), 100)
        self.assertEqual(service.stats.counters["register_pk"], len(quiet) + len(busy))
