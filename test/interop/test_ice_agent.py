"""L{p2pnet.ice.Agent} on real loopback sockets: two agents in one process connect over
host candidates, and relay-only through p2pnet's TURN server over UDP, TCP and TLS with
long-term and REST credentials; both send and receive on the selected pair."""

from __future__ import annotations

import os
import random
import sys
from typing import Any

from twisted.internet import defer, reactor, utils
from twisted.internet.task import deferLater
from twisted.trial import unittest

from p2pnet.ice import Agent, TurnServer
from p2pnet.ice.core import IceState
from test.interop.ice_servers import PASSWORD, SECRET, USER, LoopbackTurn


def _signal(a: Agent, b: Agent) -> None:
    for x, y in ((a, b), (b, a)):
        description = x.localDescription()
        y.setRemote(description["ufrag"], description["pwd"], description["lite"])
        for line in description["candidates"]:
            y.addRemoteCandidate(line)
        y.endOfRemoteCandidates()


async def _exchange(test: unittest.TestCase, a: Agent, b: Agent) -> None:
    """Each side sends three datagrams; each receives all of the other's."""
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    a.onData = got["a"].append
    b.onData = got["b"].append
    for i in range(3):
        a.send(b"from a %d" % i)
        b.send(b"from b %d" % i)
    for _ in range(100):
        if len(got["a"]) == 3 and len(got["b"]) == 3:
            break
        await deferLater(reactor, 0.02)
    test.assertEqual(sorted(got["b"]), [b"from a %d" % i for i in range(3)])
    test.assertEqual(sorted(got["a"]), [b"from b %d" % i for i in range(3)])


class AgentTests(unittest.TestCase):
    """Two agents connect and carry data."""

    timeout = 30

    async def _connect(self, a: Agent, b: Agent) -> tuple[Any, Any]:
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(a.close()))
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(b.close()))
        await defer.gatherResults([defer.Deferred.fromCoroutine(a.gather()),
                                   defer.Deferred.fromCoroutine(b.gather())])
        _signal(a, b)
        pairs = await defer.gatherResults([a.connect(), b.connect()])
        await _exchange(self, a, b)
        return pairs[0], pairs[1]

    @defer.inlineCallbacks
    def test_host(self) -> Any:
        """Host candidates on 127.0.0.1."""
        a = Agent(reactor, controlling=True, hosts=["127.0.0.1"], rng=random.Random(1))
        b = Agent(reactor, controlling=False, hosts=["127.0.0.1"], rng=random.Random(2))
        pa, pb = yield defer.Deferred.fromCoroutine(self._connect(a, b))
        self.assertEqual((pa.local.type, pa.remote.type), ("host", "host"))
        self.assertEqual(pa.key, pb.key[::-1])
        self.assertEqual(a.state, IceState.CONNECTED)

    @defer.inlineCallbacks
    def test_lite(self) -> Any:
        """A full agent created controlled against a lite one: it takes control."""
        a = Agent(reactor, controlling=False, hosts=["127.0.0.1"])
        b = Agent(reactor, controlling=True, lite=True, hosts=["127.0.0.1"])
        yield defer.Deferred.fromCoroutine(self._connect(a, b))
        self.assertTrue(a.core.controlling)

    def _relayOnly(self, transport: str, rest: bool = False) -> Any:
        turn = LoopbackTurn(self)
        port = {"udp": turn.udp, "tcp": turn.tcp, "tls": turn.tls}[transport]
        tls = turn.tlsOptions() if transport == "tls" else None

        def server() -> TurnServer:
            if rest:
                return TurnServer.rest("127.0.0.1", port, SECRET, reactor.seconds(),
                                       user="ice", transport=transport, tlsOptions=tls)
            return TurnServer("127.0.0.1", port, USER, PASSWORD, transport, tls)

        a = Agent(reactor, controlling=True, hosts=["127.0.0.1"], turnServers=[server()],
                  relayOnly=True)
        b = Agent(reactor, controlling=False, hosts=["127.0.0.1"], turnServers=[server()],
                  relayOnly=True)

        async def run() -> None:
            pa, pb = await self._connect(a, b)
            self.assertEqual((pa.local.type, pa.remote.type), ("relay", "relay"))
            self.assertEqual((pb.local.type, pb.remote.type), ("relay", "relay"))
            self.assertTrue(all(c.type == "relay" for c in a.localCandidates()))
            if transport == "udp":
                # The selected peer got a channel: the data went as ChannelData.
                relay = a._paths[pa.local.base]
                self.assertIn(pa.remote.address, relay.client.channels)

        return defer.Deferred.fromCoroutine(run())

    def test_relayUdp(self) -> Any:
        """Relayed candidates only, allocations over UDP."""
        return self._relayOnly("udp")

    def test_relayTcp(self) -> Any:
        """Relayed candidates only, allocations over TCP."""
        return self._relayOnly("tcp")

    def test_relayTls(self) -> Any:
        """Relayed candidates only, allocations over TLS (certificate verified)."""
        return self._relayOnly("tls")

    def test_relayRest(self) -> Any:
        """TURN REST credentials from the shared secret."""
        return self._relayOnly("udp", rest=True)

    @defer.inlineCallbacks
    def test_srflx(self) -> Any:
        """Asking p2pnet's STUN server: on loopback the reflexive address is the host
        address, so the redundant candidate is not signalled (RFC 8445 §5.1.3)."""
        turn = LoopbackTurn(self)
        a = Agent(reactor, hosts=["127.0.0.1"], stunServers=[("127.0.0.1", turn.udp)])
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(a.close()))
        candidates = yield defer.Deferred.fromCoroutine(a.gather())
        self.assertEqual([c.type for c in candidates], ["host"])


class ExampleTests(unittest.TestCase):
    """docs/examples/ice_pair.py, which docs/ice.md shows, runs as documented."""

    timeout = 30

    @defer.inlineCallbacks
    def test_example(self) -> Any:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        script = os.path.join(root, "docs", "examples", "ice_pair.py")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root, *sys.path])
        out, err, code = yield utils.getProcessOutputAndValue(sys.executable, [script],
                                                              env=env, path=root)
        self.assertEqual(code, 0, err.decode())
        self.assertIn("selected: host ('127.0.0.1',", out.decode())
        self.assertIn("echoed: HELLO OVER ICE", out.decode())
