"""The session commands through the real process (issue 10 item 2): the appliance as
C{buildService} wires it, on loopback, and the C{p2pnet} command as a child process."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import defer, reactor, utils
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from p2pnet import Config, buildService
from p2pnet.protocols.rustdesk_client import ControlledPeer, RelayLegClient
from p2pnet.protocols.turn_client import TurnClientProtocol

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def until(predicate: Any, seconds: float = 10.0) -> Deferred[None]:
    """Poll C{predicate} every 50 ms (bounded)."""
    from twisted.internet.task import deferLater

    @defer.inlineCallbacks
    def poll() -> Any:
        for _ in range(int(seconds / 0.05)):
            if predicate():
                return
            yield deferLater(reactor, 0.05, lambda: None)
        raise AssertionError("condition not met in time")

    return poll()


class SessionCommandTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.dataDir = os.path.abspath(self.mktemp())
        self.root = buildService(Config(
            services=("stun", "turn", "rendezvous", "relay", "gateway"),
            listen=("127.0.0.1",), stun_port=0, tls_port=0, alt_port=0, rendezvous_port=0,
            relay_port=0, gateway_port=0, allow_loopback_peers=True,
            user=(("amy", "pw-1"), ("bob", "pw-2")), data_dir=self.dataDir), reactor)
        self.root.startService()
        self.addCleanup(self.root.stopService)
        gateway = self.root.getServiceNamed("gateway")
        self.url = f"ws://127.0.0.1:{gateway.ports[0].getHost().port}/"
        self.stunPort = self.root.getServiceNamed("stun").ports[0].getHost().port

    def p2pnet(self, *argv: str, status: int = 0) -> Deferred[str]:
        """Run C{p2pnet ARGV} with the gateway's URL and data directory; its output."""
        args = ["-c", "import sys; from p2pnet.cli import main; sys.exit(main())", *argv,
                "--url", self.url, "--data-dir", self.dataDir, "--timeout", "20"]
        env = dict(os.environ, PYTHONPATH=ROOT)
        d = utils.getProcessOutputAndValue(sys.executable, args, env=env, path=ROOT)

        def check(result: tuple[bytes, bytes, int]) -> str:
            out, err, code = result
            self.assertEqual(code, status, (out + err).decode())
            return (out if status == 0 else err).decode()

        return d.addCallback(check)

    @defer.inlineCallbacks
    def allocate(self, user: str, password: str) -> Any:
        client = TurnClientProtocol(("127.0.0.1", self.stunPort), user, password,
                                    reactor=reactor)
        port = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: client.close().addErrback(lambda _: None))
        allocation = yield client.allocate()
        return client, port, allocation

    @defer.inlineCallbacks
    def test_turnSessionsAndKill(self) -> Any:
        _, amyPort, amy = yield self.allocate("amy", "pw-1")
        yield self.allocate("bob", "pw-2")
        table = yield self.p2pnet("turn", "sessions")
        lines = table.splitlines()
        self.assertEqual(lines[0].split()[:3], ["USER", "CLIENT", "TRANSPORT"])
        self.assertEqual(sorted(line.split()[0] for line in lines[1:]), ["amy", "bob"])
        rows = json.loads((yield self.p2pnet("turn", "sessions", "--user", "amy", "--json")))
        self.assertEqual([r["user"] for r in rows], ["amy"])
        self.assertEqual(rows[0]["relayed"], [f"{h}:{p}" for h, p in amy.relayed])
        self.assertEqual(rows[0]["client"], f"127.0.0.1:{amyPort.getHost().port}")
        killed = yield self.p2pnet("turn", "kill", "--user", "amy")
        self.assertEqual(killed.strip(), "killed 1 allocation")
        left = json.loads((yield self.p2pnet("turn", "sessions", "--json")))
        self.assertEqual([r["user"] for r in left], ["bob"])
        byClient = yield self.p2pnet("turn", "kill", "--client", "127.0.0.1")
        self.assertEqual(byClient.strip(), "killed 1 allocation")
        self.assertEqual((yield self.p2pnet("turn", "sessions")).strip(), "none")

    @defer.inlineCallbacks
    def test_peersOnline(self) -> Any:
        ports = self.root.getServiceNamed("rendezvous").boundPorts
        peer = ControlledPeer(reactor, "127.0.0.1", ports["udp"], ports["tcp"], "123456789")
        yield peer.registerUDP()
        self.addCleanup(peer.udp.transport.stopListening)
        table = yield self.p2pnet("peers", "online")
        self.assertEqual(table.splitlines()[1].split()[:3],
                         ["123456789", f"127.0.0.1:{peer.udp.transport.getHost().port}", "udp"])

    @defer.inlineCallbacks
    def test_relayPairsAndKill(self) -> Any:
        relayPort = self.root.getServiceNamed("relay").boundPorts["tcp"]
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        legs = []
        for _ in range(2):
            leg = RelayLegClient("pair-uuid-1")
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", relayPort), leg)
            self.addCleanup(leg.transport.loseConnection)
            legs.append(leg)
        relay = self.root.getServiceNamed("relay")
        yield until(lambda: len(relay.activePairs) == 1)
        table = yield self.p2pnet("relay", "pairs")
        self.assertEqual(table.splitlines()[1].split()[0], "pair-uuid-1")
        ended = yield self.p2pnet("relay", "kill", "pair-uuid-1")
        self.assertEqual(ended.strip(), "ended relay pair pair-uuid-1")
        yield legs[0].closed
        yield legs[1].closed
        missing = yield self.p2pnet("relay", "kill", "pair-uuid-1", status=1)
        self.assertIn("no active relay pair pair-uuid-1", missing)
        self.assertEqual((yield self.p2pnet("relay", "pairs")).strip(), "none")

    @defer.inlineCallbacks
    def test_badTarget(self) -> Any:
        """A malformed --client is the command's usage error (status 2), nothing sent."""
        err = yield self.p2pnet("turn", "kill", "--client", "[::1", status=2)
        self.assertIn("--client", err)


