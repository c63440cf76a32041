"""The operator lists through the real process (issue 14 item 5): the appliance as
C{buildService} wires it, on loopback, and the C{p2pnet gateway call} command."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import defer, reactor, utils
from twisted.trial.unittest import TestCase

from p2pnet import Config, buildService
from p2pnet.protocols.rustdesk_client import ControlledPeer
from p2pnet.protocols.turn_client import TurnClientProtocol

P2PNET = os.path.join(os.path.dirname(sys.executable), "p2pnet")


class OperatorListTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        if not os.path.exists(P2PNET):
            self.skipTest(f"{P2PNET} is not installed")
        self.dataDir = self.mktemp()
        self.root = buildService(Config(
            services=("rendezvous", "relay", "gateway"), listen=("127.0.0.1",),
            rendezvous_port=0, relay_port=0, gateway_port=0, data_dir=self.dataDir), reactor)
        self.root.startService()
        self.addCleanup(self.root.stopService)
        gateway = self.root.getServiceNamed("gateway")
        self.url = f"ws://127.0.0.1:{gateway.ports[0].getHost().port}/"
        self.rendezvous = self.root.getServiceNamed("rendezvous")

    def call(self, method: str, params: dict[str, Any] | None = None) -> defer.Deferred[Any]:
        """C{p2pnet gateway call METHOD [JSON]} with the token of the data directory."""
        args = ["gateway", "call", method, *([json.dumps(params)] if params else []),
                "--url", self.url, "--data-dir", self.dataDir, "--timeout", "20"]
        d = utils.getProcessOutputAndValue(P2PNET, args, env=dict(os.environ),
                                           path=os.getcwd())

        def parse(result: tuple[bytes, bytes, int]) -> Any:
            out, err, code = result
            self.assertEqual(code, 0, err.decode())
            return json.loads(out)

        return d.addCallback(parse)

    @defer.inlineCallbacks
    def test_rendezvousPeersAndRelayPairs(self) -> Any:
        ports = self.rendezvous.boundPorts
        peers = []
        for peerId in ("111111111", "222222222"):
            peer = ControlledPeer(reactor, "127.0.0.1", ports["udp"], ports["tcp"], peerId)
            yield peer.registerUDP()
            self.addCleanup(peer.udp.transport.stopListening)
            peers.append(peer)
        listed = yield self.call("rendezvous.peers.list")
        self.assertEqual([p["id"] for p in listed["items"]], ["111111111", "222222222"])
        self.assertEqual(listed["items"][0]["address"][0], "127.0.0.1")
        self.assertEqual(listed["nextOffset"], None)
        page = yield self.call("rendezvous.peers.list", {"offset": 1, "limit": 1})
        self.assertEqual(([p["id"] for p in page["items"]], page["nextOffset"]),
                         (["222222222"], None))
        first = yield self.call("rendezvous.peers.list", {"limit": 1})
        self.assertEqual(first["nextOffset"], 1)
        pairs = yield self.call("relay.pairs.list")
        self.assertEqual(pairs, {"items": [], "offset": 0, "limit": 100, "nextOffset": None})


class TurnOperatorTests(TestCase):
    """turn.users.add|list|remove and turn.allocations.list through p2pnet gateway call,
    with an allocation made by p2pnet turn."""

    timeout = 60

    def setUp(self) -> None:
        if not os.path.exists(P2PNET):
            self.skipTest(f"{P2PNET} is not installed")
        self.dataDir = self.mktemp()
        self.root = buildService(Config(
            services=("stun", "turn", "gateway"), listen=("127.0.0.1",), stun_port=0,
            tls_port=0, alt_port=0, gateway_port=0, allow_loopback_peers=True,
            data_dir=self.dataDir), reactor)
        self.root.startService()
        self.addCleanup(self.root.stopService)
        gateway = self.root.getServiceNamed("gateway")
        self.url = f"ws://127.0.0.1:{gateway.ports[0].getHost().port}/"
        stun = self.root.getServiceNamed("stun")
        self.stunPort = stun.ports[0].getHost().port

    call = OperatorListTests.call

    @defer.inlineCallbacks
    def test_usersAndAllocations(self) -> Any:
        added = yield self.call("turn.users.add", {"name": "amy", "password": "pw-1"})
        self.assertEqual(added, {"name": "amy", "created": True})
        users = yield self.call("turn.users.list")
        self.assertIn("amy", [u["name"] for u in users["items"]])
        # The users table reloads at once; an allocation of amy's stays while we list.
        client = TurnClientProtocol(("127.0.0.1", self.stunPort), "amy", "pw-1",
                                    reactor=reactor)
        port = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        # Removing amy ends the allocation, so the client's own Refresh(0) gets 401.
        self.addCleanup(lambda: client.close().addErrback(lambda _: None))
        allocation = yield client.allocate()
        allocations = yield self.call("turn.allocations.list")
        self.assertEqual([a["user"] for a in allocations["items"]], ["amy"])
        self.assertEqual(allocations["items"][0]["relayed"],
                         [f"{h}:{p}" for h, p in allocation.relayed])
        self.assertEqual(allocations["items"][0]["client"].split(":")[0], "127.0.0.1")
        removed = yield self.call("turn.users.remove", {"name": "amy"})
        self.assertEqual((removed["name"], removed["removed"]), ("amy", True))
        after = yield self.call("turn.allocations.list")
        self.assertEqual(after["items"], [])
