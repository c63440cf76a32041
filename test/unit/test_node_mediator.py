"""The mediator's bounds and choices (L{p2pnet.node.mediator}) without sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import NatType, PunchHole, RendezvousMessage
from p2pnet.node.mediator import MAX_PENDING, Mediator
from p2pnet.stats import Stats


class Node:
    peerId = "123456789"

    def __init__(self) -> None:
        self.stats = Stats()


class Recording(Mediator):
    """Records what it would do instead of opening sockets."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.calls: list[tuple[str, Any]] = []
        self.pending: list[Deferred[None]] = []

    def _answerThenListen(self, build: Any, path: str, peerAddr: bytes, relay: str,
                          openNat: bool = False) -> Deferred[None]:
        self.calls.append((path, relay))
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d

    def answerRelay(self, peerAddr: bytes, relay: str, uuid: str, *, secure: bool,
                    initiate: bool) -> Deferred[None]:
        self.calls.append(("relay", relay))
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d


def punch(port: int, natType: int = NatType.ASYMMETRIC, relay: str = "") -> RendezvousMessage:
    return RendezvousMessage(punch_hole=PunchHole(
        socket_addr=addrmangle.encode("198.51.100.7", port, 1), nat_type=natType,
        relay_server=relay))


class MediatorTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.node = Node()
        self.mediator = Recording(self.clock, self.node, ("192.0.2.1", 21116))

    def test_pendingBounded(self) -> None:
        for i in range(MAX_PENDING + 10):
            self.clock.advance(1)
            self.mediator.handle(punch(1000 + i))
        self.assertEqual(len(self.mediator.calls), MAX_PENDING)
        self.assertEqual(self.node.stats.counters["request_dropped"], 10)
        self.mediator.pending[0].callback(None)
        self.mediator.handle(punch(5000))
        self.assertEqual(len(self.mediator.calls), MAX_PENDING + 1)

    def test_symmetricGoesToRelay(self) -> None:
        self.mediator.handle(punch(1, NatType.SYMMETRIC, "relay.example:21117"))
        self.assertEqual(self.mediator.calls, [("relay", "relay.example:21117")])

    def test_relayChoice(self) -> None:
        """rustdesk.md §6.2 step 2: own option, else the server's, else the server's host, port + 1."""
        self.assertEqual(self.mediator.relayFor(""), "192.0.2.1:21117")
        self.assertEqual(self.mediator.relayFor("r:1"), "r:1")
        self.mediator.relay = "mine:2"
        self.assertEqual(self.mediator.relayFor("r:1"), "mine:2")

    def test_duplicateDropped(self) -> None:
        self.mediator.handle(punch(7))
        self.mediator.handle(punch(7))
        self.assertEqual(len(self.mediator.calls), 1)
        self.assertEqual(self.node.stats.counters["duplicate_request"], 1)

    def test_webSocketModeAlwaysRelays(self) -> None:
        mediator = Recording(self.clock, self.node, ("192.0.2.1", 21116), forceRelay=True)
        mediator.handle(punch(9))
        self.assertEqual(mediator.calls, [("relay", "192.0.2.1:21117")])

    def test_ownSymmetricNatRelays(self) -> None:
        """Behind a symmetric NAT (the NAT test's answer) the node relays even when the
        controller could be punched (rustdesk.md §6.2 step 3)."""
        self.mediator.natType = NatType.SYMMETRIC
        self.mediator.handle(punch(11))
        self.assertEqual(self.mediator.calls, [("relay", "192.0.2.1:21117")])
        self.mediator.natType = NatType.ASYMMETRIC
        self.mediator.handle(punch(12))
        self.assertEqual(self.mediator.calls[1][0], "direct")
