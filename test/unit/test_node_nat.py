"""The node's NAT test (L{p2pnet.node.nat}) and the shared probe, without sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredQueue, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs.proto.rendezvous_pb2 import (
    NatType,
    RendezvousMessage,
    TestNatResponse,
)
from p2pnet.node.nat import NAT_TEST_TIMEOUT, NatTest, natTypeName
from p2pnet.protocols.rustdesk_client import natTestPorts


class FakeStream:
    """A connected MessageStream: records what is sent; the test answers."""

    def __init__(self, local: tuple[str, int]) -> None:
        self.localAddress = local
        self.sent: list[RendezvousMessage] = []
        self.queue: DeferredQueue[RendezvousMessage] = DeferredQueue()
        self.closed: Deferred[None] = Deferred()
        self.transport = self

    def send(self, message: RendezvousMessage) -> None:
        self.sent.append(message)

    def receive(self) -> Deferred[RendezvousMessage]:
        return self.queue.get()

    def loseConnection(self) -> None:
        if not self.closed.called:
            self.closed.callback(None)


class ProbeTests(SynchronousTestCase):
    """L{natTestPorts}: two requests from one local address, the ports each port saw."""

    def setUp(self) -> None:
        self.connects: list[tuple[int, tuple[str, int]]] = []
        self.streams: list[FakeStream] = []

    def connect(self, reactor: Any, host: str, port: int, local: tuple[str, int]) -> Any:
        self.connects.append((port, local))
        stream = FakeStream(("192.0.2.5", 40000))
        self.streams.append(stream)
        return succeed(stream)

    def answer(self, port: int) -> None:
        self.streams[-1].queue.put(RendezvousMessage(
            test_nat_response=TestNatResponse(port=port)))

    def test_samePortFromOneLocalAddress(self) -> None:
        d = natTestPorts(None, "198.51.100.1", 21116, 21115, connect=self.connect)
        self.answer(61000)
        self.answer(61001)
        local, first, second = self.successResultOf(d)
        self.assertEqual((first, second), (61000, 61001))
        self.assertEqual(local, ("192.0.2.5", 40000))
        # The second connection leaves from the first's local address, to PORT - 1.
        self.assertEqual(self.connects, [(21116, ("", 0)), (21115, ("192.0.2.5", 40000))])
        for stream in self.streams:
            self.assertEqual(stream.sent[0].WhichOneof("union"), "test_nat_request")
            self.assertTrue(stream.closed.called)

    def test_cancelClosesTheConnection(self) -> None:
        d = natTestPorts(None, "198.51.100.1", 21116, 21115, connect=self.connect)
        d.cancel()
        self.failureResultOf(d)
        self.assertTrue(self.streams[0].closed.called)
        self.assertEqual(len(self.connects), 1)


class NatTestTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.calls: list[tuple[Any, ...]] = []
        self.results: list[Deferred[Any]] = []

    def probe(self, *args: Any) -> Deferred[Any]:
        self.calls.append(args[1:])
        d: Deferred[Any] = Deferred()
        self.results.append(d)
        return d

    def test_asymmetric(self) -> None:
        test = NatTest(self.clock, ("198.51.100.1", 21116), probe=self.probe)
        d = test.run()
        self.assertEqual(self.calls, [("198.51.100.1", 21116, 21115)])
        self.results[0].callback((("192.0.2.5", 40000), 61000, 61000))
        self.assertEqual(self.successResultOf(d), NatType.ASYMMETRIC)
        self.assertEqual(natTypeName(test.natType), "asymmetric")

    def test_symmetric(self) -> None:
        test = NatTest(self.clock, ("198.51.100.1", 21116), natPort=3000, probe=self.probe)
        d = test.run()
        self.assertEqual(self.calls, [("198.51.100.1", 21116, 3000)])
        self.results[0].callback((("192.0.2.5", 40000), 61000, 61007))
        self.assertEqual(self.successResultOf(d), NatType.SYMMETRIC)

    def test_timeoutKeepsTheType(self) -> None:
        """No answer within the bound: the probe is cancelled and the type stays."""
        test = NatTest(self.clock, ("198.51.100.1", 21116), probe=self.probe)
        test.natType = NatType.SYMMETRIC
        d = test.run()
        self.clock.advance(NAT_TEST_TIMEOUT)
        self.assertEqual(self.successResultOf(d), NatType.SYMMETRIC)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_newRunCancelsTheOld(self) -> None:
        test = NatTest(self.clock, ("198.51.100.1", 21116), probe=self.probe)
        first = test.run()
        second = test.run()
        self.assertEqual(self.successResultOf(first), NatType.UNKNOWN_NAT)
        self.results[1].callback((("192.0.2.5", 40000), 1, 2))
        self.assertEqual(self.successResultOf(second), NatType.SYMMETRIC)
        test.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
