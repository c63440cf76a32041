"""L{p2pnet.ice.Agent} on an in-memory reactor (L{p2pnet.testing.UDPMemoryReactor}):
every timer is the injected clock's, datagrams are moved by hand."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.ice import Agent, IceFailed, NotConnected
from p2pnet.ice.core import IceState
from p2pnet.testing import UDPMemoryReactor


class AgentClockTests(SynchronousTestCase):
    """Two agents, one memory reactor, time advanced by the test."""

    def setUp(self) -> None:
        self.reactor = UDPMemoryReactor()
        self.dropping = False
        self.a = Agent(self.reactor, controlling=True, hosts=["192.0.2.1"],
                       rng=random.Random(1))
        self.b = Agent(self.reactor, controlling=False, hosts=["192.0.2.2"],
                       rng=random.Random(2))
        for agent in (self.a, self.b):
            gathered = defer.Deferred.fromCoroutine(agent.gather())
            self.assertEqual([c.type for c in self.successResultOf(gathered)], ["host"])
        for x, y in ((self.a, self.b), (self.b, self.a)):
            description = x.localDescription()
            y.setRemote(description["ufrag"], description["pwd"])
            for line in description["candidates"]:
                y.addRemoteCandidate(line)
            y.endOfRemoteCandidates()

    def deliver(self) -> None:
        """Move every datagram written so far to the port it was sent to."""
        for _ in range(100):
            moved = False
            for source, protocol in list(self.reactor.udpPorts.items()):
                transport: Any = protocol.transport
                written, transport.written = transport.written, []
                for data, destination in written:
                    moved = True
                    target = self.reactor.udpPorts.get(destination)
                    if target is not None and not self.dropping:
                        target.datagramReceived(data, source)
            if not moved:
                return

    def elapse(self, seconds: float, until: Any = None) -> None:
        for _ in range(int(seconds / 0.01)):
            self.deliver()
            if until is not None and until():
                return
            self.reactor.advance(0.01)
        self.deliver()

    def test_connectSendConsent(self) -> None:
        """They connect on the clock; data flows; with every datagram dropped consent
        expires 30 s later, the agent fails and refuses to send."""
        connected = defer.gatherResults([self.a.connect(), self.b.connect()])
        self.elapse(2.0, until=lambda: connected.called)
        pa, pb = self.successResultOf(connected)
        self.assertEqual(pa.key, (("192.0.2.1", 0), ("192.0.2.2", 0)))
        self.assertLess(self.reactor.seconds(), 0.5)
        got: list[bytes] = []
        self.b.onData = got.append
        self.a.send(b"ping")
        self.deliver()
        self.assertEqual(got, [b"ping"])
        self.elapse(60.0)  # consent checks keep it alive
        self.assertEqual(self.a.state, IceState.CONNECTED)
        self.dropping = True
        consent = self.a.core.consent
        assert consent is not None
        last = consent.lastResponse  # consent runs 30 s from the last answer
        self.elapse(last + 29.0 - self.reactor.seconds())
        self.assertEqual(self.a.state, IceState.CONNECTED)
        self.elapse(2.0)
        self.assertEqual(self.a.state, IceState.FAILED)
        self.assertRaises(NotConnected, self.a.send, b"late")
        self.failureResultOf(self.a.connect(), IceFailed)

    def test_closeCancelsTimers(self) -> None:
        """After close() no timer of the agents is left on the reactor."""
        connected = defer.gatherResults([self.a.connect(), self.b.connect()])
        self.elapse(2.0, until=lambda: connected.called)
        self.assertTrue(self.reactor.getDelayedCalls())
        for agent in (self.a, self.b):
            self.successResultOf(defer.Deferred.fromCoroutine(agent.close()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertTrue(all(p.transport.stopped for p in self.reactor.udpPorts.values()))
