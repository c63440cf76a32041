"""Routing across two rendezvous nodes (L{p2pnet.services.rendezvous_cluster}) on a
clock, with one shared in-memory store and presence table and in-memory inboxes."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pnet.codecs import addrmangle
from p2pnet.codecs.proto.rendezvous_pb2 import (
    PunchHoleRequest,
    PunchHoleSent,
    RegisterPk,
    RendezvousMessage,
)
from p2pnet.codecs.rustdesk_crypto import verifySignedIdPk
from p2pnet.services.rendezvous import RendezvousService
from p2pnet.services.rendezvous_cluster import ClusterRoutes
from p2pnet.services.rendezvous_keys import ServerKey
from p2pnet.store.peers import PeerRecord
from test.unit.test_rendezvous_service import PK, PUBLIC, SERVER, FakeLink, FakeStore, FakeUDP


class Shared(FakeStore):
    """The store, presence table and inboxes of a cluster, in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.presence: dict[str, tuple[str, tuple[str, int]]] = {}
        self.inboxes: dict[str, list[dict[str, Any]]] = {}

    def markOnline(self, peerId: str, node: str, addr: tuple[str, int],
                   ttl: float) -> defer.Deferred[None]:
        self.presence[peerId] = (node, addr)
        return defer.succeed(None)

    def online(self, peerIds: Any) -> defer.Deferred[set[str]]:
        return defer.succeed({i for i in peerIds if i in self.presence})

    def where(self, peerId: str) -> defer.Deferred[tuple[str, tuple[str, int]] | None]:
        return defer.succeed(self.presence.get(peerId))


class Inbox:
    def __init__(self, shared: Shared, node: str) -> None:
        self.shared, self.node = shared, node
        self.closed = False

    def send(self, node: str, payload: dict[str, Any]) -> defer.Deferred[None]:
        self.shared.inboxes.setdefault(node, []).append(payload)
        return defer.succeed(None)

    def receive(self, timeout: int = 1) -> defer.Deferred[list[dict[str, Any]]]:
        return defer.Deferred()  # the test hands messages over with deliverAll

    def close(self) -> None:
        self.closed = True


class ClusterRoutingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.shared = Shared()
        self.nodes: dict[str, RendezvousService] = {}
        self.udp: dict[str, FakeUDP] = {}
        for name in ("a", "b"):
            service = RendezvousService(self.clock, self.shared,  # type: ignore[arg-type]
                                        ServerKey(SERVER, PUBLIC))
            udp = FakeUDP()
            service.registerUDP(4, udp)
            service.registry.presence = self.shared
            service.registry.nodeName = name
            router = service.router
            router.cluster = ClusterRoutes(self.clock, Inbox(self.shared, name), self.shared,
                                           service.stats, router.deliverHere,
                                           router.remoteAnswer)
            self.nodes[name], self.udp[name] = service, udp

    def deliverAll(self) -> None:
        """Hand every queued inbox message to its node (what the inbox loop does)."""
        for _ in range(10):
            queued = [(n, m) for n, ms in self.shared.inboxes.items() for m in ms]
            self.shared.inboxes.clear()
            if not queued:
                return
            for node, payload in queued:
                self.nodes[node].router.cluster._received(payload)  # type: ignore[union-attr]

    def test_punchThroughTheHoldingNode(self) -> None:
        a, b = self.nodes["a"], self.nodes["b"]
        a.datagramReceived(RendezvousMessage(register_pk=RegisterPk(
            id="123456789", uuid=b"u", pk=PK)), ("203.0.113.5", 5000), self.udp["a"])
        self.assertEqual(self.shared.presence["123456789"], ("a", ("203.0.113.5", 5000)))
        self.udp["a"].pop()  # the RegisterPkResponse
        controller = FakeLink("198.51.100.7", 4000)
        b.streamMessage(RendezvousMessage(punch_hole_request=PunchHoleRequest(
            id="123456789", licence_key=PUBLIC, version="1")), controller)
        self.deliverAll()
        ((punch, to),) = self.udp["a"].pop()
        self.assertEqual(to, ("203.0.113.5", 5000))
        self.assertEqual(addrmangle.decode(punch.punch_hole.socket_addr),
                         ("198.51.100.7", 4000))
        # The peer answers node A over TCP; the answer reaches the controller at B.
        answer = FakeLink("203.0.113.5", 6000)
        a.streamMessage(RendezvousMessage(punch_hole_sent=PunchHoleSent(
            socket_addr=punch.punch_hole.socket_addr, id="123456789", version="1")), answer)
        self.deliverAll()
        phr = controller.sent[0].punch_hole_response
        self.assertEqual(addrmangle.decode(phr.socket_addr), ("203.0.113.5", 6000))
        self.assertEqual(verifySignedIdPk(bytes(SERVER.verify_key), phr.pk), ("123456789", PK))
        self.assertEqual(b.stats.counters["cluster_forwarded"], 1)
        self.assertEqual(a.stats.counters["cluster_answers_forwarded"], 1)

    def test_nobodyHoldsIt(self) -> None:
        b = self.nodes["b"]
        self.shared.records["123456789"] = PeerRecord("123456789", b"u", PK, "")
        controller = FakeLink("198.51.100.7", 4000)
        b.streamMessage(RendezvousMessage(punch_hole_request=PunchHoleRequest(
            id="123456789", licence_key=PUBLIC, version="1")), controller)
        self.assertEqual(controller.sent[0].punch_hole_response.failure,
                         controller.sent[0].punch_hole_response.OFFLINE)

    def test_badMessageCounted(self) -> None:
        routes = self.nodes["a"].router.cluster
        assert routes is not None
        routes._received({"kind": "deliver", "message": "not base64!"})
        self.assertEqual(self.nodes["a"].stats.counters["cluster_bad_messages"], 1)
        routes.stop()
        self.assertTrue(routes.inbox.closed)  # type: ignore[attr-defined]
